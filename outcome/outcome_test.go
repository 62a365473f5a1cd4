package outcome

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// declared parses outcome.go and returns each Outcome constant's name,
// value and doc comment, in order.
func declared(t *testing.T) (names, values, docs []string) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "outcome.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			v := spec.(*ast.ValueSpec)
			if id, ok := v.Type.(*ast.Ident); !ok || id.Name != "Outcome" {
				t.Errorf("constant %s is not of type Outcome", v.Names[0].Name)
				continue
			}
			lit, ok := v.Values[0].(*ast.BasicLit)
			if !ok {
				t.Errorf("%s: not a string literal", v.Names[0].Name)
				continue
			}
			s, _ := strconv.Unquote(lit.Value)
			names, values, docs = append(names, v.Names[0].Name), append(values, s), append(docs, v.Doc.Text())
		}
	}
	return names, values, docs
}

// TestVocabulary walks every outcome: one word each, none twice, each
// documented with whose doing it is, each in All, and each in the
// README's log section, where operators look them up.
func TestVocabulary(t *testing.T) {
	names, values, docs := declared(t)
	if len(names) != len(All()) {
		t.Errorf("%d constants, All has %d", len(names), len(All()))
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// The log section: the bullet that begins "- Logs:", to the next
	// top-level bullet.
	_, readme, _ = bytes.Cut(readme, []byte("\n- Logs:"))
	readme, _, _ = bytes.Cut(readme, []byte("\n- "))
	word := regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)
	seen := map[string]string{}
	for i, name := range names {
		v := values[i]
		t.Run(name, func(t *testing.T) {
			if !word.MatchString(v) {
				t.Errorf("%q is not a lower_snake word", v)
			}
			if other, dup := seen[v]; dup {
				t.Errorf("%q is also %s", v, other)
			}
			seen[v] = name
			if All()[i] != Outcome(v) {
				t.Errorf("All()[%d] = %q, want %q (the order of the declarations)", i, All()[i], v)
			}
			doc := docs[i]
			if !strings.HasPrefix(doc, name+" (the ") {
				t.Errorf("doc comment %q does not begin %q", doc, name+" (the ...'s doing)")
			}
			parties := 0
			for _, p := range []string{"(the client's doing)", "(the broker's doing)", "(the gateway's doing)"} {
				if strings.Contains(doc, p) {
					parties++
				}
			}
			if parties != 1 {
				t.Errorf("doc comment %q names %d parties, want 1", doc, parties)
			}
			if !bytes.Contains(readme, []byte("`"+v+"`")) {
				t.Errorf("the README's log section does not list `%s`", v)
			}
		})
	}
}

// TestLogged checks that logs print an outcome as the bare word, as they
// printed the strings it replaced.
func TestLogged(t *testing.T) {
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("closed", "outcome", BrokerLost)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("closed", "outcome", BrokerLost)
	if !strings.Contains(text.String(), " outcome=broker_lost\n") {
		t.Errorf("text: %q", text.String())
	}
	if !strings.Contains(js.String(), `"outcome":"broker_lost"`) {
		t.Errorf("json: %q", js.String())
	}
}

// TestLevel: the ways sessions end every day log at INFO, the rest at
// WARN.
func TestLevel(t *testing.T) {
	for _, o := range All() {
		want := slog.LevelWarn
		switch o {
		case ClientClosed, Disconnected, Shutdown:
			want = slog.LevelInfo
		}
		if got := o.Level(); got != want {
			t.Errorf("%s.Level() = %v, want %v", o, got, want)
		}
	}
}
