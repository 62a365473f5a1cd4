package main

import (
	"errors"
	"flag"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

// unread is a stdin that fails the test when a command reads it.
type unread struct{ t *testing.T }

func (u unread) Read([]byte) (int, error) {
	u.t.Error("the command read standard input")
	return 0, nil
}

// flagNames are the flags a command registers.
func flagNames(c *command) map[string]bool {
	fs := c.flagSet()
	c.setup(fs)
	names := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	return names
}

// Every spelling of help works for every command and for the keyring
// group: it prints that command's usage and its own flags only, to
// stdout, reads no standard input and exits 0.
func TestHelpEverywhere(t *testing.T) {
	allFlags := map[string]bool{}
	for _, c := range commands {
		for f := range flagNames(c) {
			allFlags[f] = true
		}
	}
	for _, c := range commands {
		own := flagNames(c)
		spellings := [][]string{{"help", c.name}}
		for _, h := range []string{"-h", "-help", "--help", "help"} {
			spellings = append(spellings, append(strings.Fields(c.name), h))
		}
		if own["config"] {
			// Help is asked for even after other flags; the config is not read.
			spellings = append(spellings, append(strings.Fields(c.name), "-config", "nope.yaml", "-h"))
		}
		for _, args := range spellings {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var out, errOut strings.Builder
				code := run(t.Context(), args, unread{t}, &out, &errOut)
				if code != 0 || errOut.Len() > 0 {
					t.Fatalf("exit %d, stderr %q", code, errOut.String())
				}
				help := out.String()
				if !strings.HasPrefix(help, "usage: wsbridge "+c.name) || !strings.Contains(help, c.summary) {
					t.Fatalf("help does not start with the usage of %q:\n%s", c.name, help)
				}
				for f := range allFlags {
					listed := strings.Contains(help, "\n  -"+f+" ") || strings.Contains(help, "\n  -"+f+"\n")
					if listed != own[f] {
						t.Errorf("-%s listed: %v, want %v:\n%s", f, listed, own[f], help)
					}
				}
			})
		}
	}
	for _, args := range [][]string{{"keyring", "-h"}, {"keyring", "help"}, {"keyring", "--help"}, {"help", "keyring"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out, errOut strings.Builder
			if code := run(t.Context(), args, unread{t}, &out, &errOut); code != 0 || errOut.Len() > 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut.String())
			}
			for _, sub := range []string{"init", "set", "list", "delete"} {
				if !strings.Contains(out.String(), "\n  "+sub+" ") {
					t.Errorf("keyring help lacks %s:\n%s", sub, out.String())
				}
			}
		})
	}
}

// `wsbridge help`, -h, -help and --help list every command with its
// one-line description, the same each way, and exit 0.
func TestHelpListsEveryCommand(t *testing.T) {
	var first string
	for _, h := range [][]string{{"help"}, {"-h"}, {"-help"}, {"--help"}, {"help", "help"}} {
		var out, errOut strings.Builder
		if code := run(t.Context(), h, unread{t}, &out, &errOut); code != 0 || errOut.Len() > 0 {
			t.Fatalf("%s: exit %d, stderr %q", h, code, errOut.String())
		}
		if first == "" {
			first = out.String()
		} else if out.String() != first {
			t.Errorf("%s differs from help:\n%s", h, out.String())
		}
	}
	for _, c := range commands {
		if c.summary == "" || !strings.Contains(first, "\n  "+c.name+" ") || !strings.Contains(first, c.summary) {
			t.Errorf("help lacks %q with its description:\n%s", c.name, first)
		}
	}
}

// A wrong command line exits 2 and says what was wrong and where the
// usage is; a command that fails exits 1.
func TestCommandLineErrors(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"bogus"}, 2, []string{`unknown command "bogus"`, "\n  keyring init ", "\n  check "}},
		{[]string{"keyring"}, 2, []string{"name a subcommand: init, set, list or delete", "wsbridge keyring -h"}},
		{[]string{"keyring", "bogus"}, 2, []string{`unknown subcommand "bogus"`}},
		{[]string{"serve", "extra"}, 2, []string{`unexpected argument "extra"`, "wsbridge serve -h"}},
		{[]string{"-nope"}, 2, []string{"flag provided but not defined: -nope", "wsbridge serve -h"}},
		{[]string{"keyring", "init", "-username", "x"}, 2, []string{"flag provided but not defined: -username"}},
		{[]string{"keyring", "set"}, 2, []string{"missing argument", "NAME -username USER"}},
		{[]string{"keyring", "set", "rabbit"}, 2, []string{"-username is required"}},
		{[]string{"token"}, 2, []string{"-config FILE is required", "-config testdata/jwt.yaml -auth demo"}},
		{[]string{"token", "-config", "../../testdata/jwt.yaml", "-auth", "demo"}, 2, []string{"-sub SUBJECT are required"}},
		{[]string{"token", "-config", "../../testdata/jwt.yaml", "-auth", "nope", "-sub", "x"}, 1,
			[]string{`../../testdata/jwt.yaml has no jwt auth policy "nope" (it has demo)`}},
		{[]string{"check"}, 2, []string{"-config FILE is required"}},
		{[]string{"healthcheck"}, 2, []string{"missing argument"}},
		{[]string{"healthcheck", "localhost:8080/healthz"}, 2, []string{"is not an http:// or https:// URL"}},
		{[]string{"help", "bogus"}, 2, []string{`unknown command "bogus"`}},
		{[]string{"version", "extra"}, 2, []string{`unexpected argument "extra"`}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, errOut, code := wsbridge(t, "", tt.args...)
			if code != tt.code || out != "" {
				t.Fatalf("exit %d (want %d), stdout %q, stderr %q", code, tt.code, out, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
}

func TestVersionLine(t *testing.T) {
	settings := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	goVersion := " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
	tests := []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"go install of a release", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "wsbridge v1.2.3 (no VCS revision: built outside a git checkout or with -buildvcs=false)"},
		{"a build in a checkout", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261203140154-92a1e3139c0e+dirty"},
			Settings: settings("vcs", "git", "vcs.revision", "92a1e3139c0e8c2f8a366b445bf87b134c70b789", "vcs.time", "2026-12-03T14:01:54Z", "vcs.modified", "true")},
			"wsbridge v0.0.0-20261203140154-92a1e3139c0e+dirty (revision 92a1e3139c0e8c2f8a366b445bf87b134c70b789, 2026-12-03T14:01:54Z, modified)"},
		{"no build info", nil, "wsbridge (unknown) (no VCS revision"},
	}
	for _, tt := range tests {
		if got := versionLine(tt.bi); !strings.HasPrefix(got, tt.want) || !strings.HasSuffix(got, goVersion) {
			t.Errorf("%s: %q, want %q...%q", tt.name, got, tt.want, goVersion)
		}
	}
	// -version and --version as other tools answer them, not as a flag
	// of serve it does not know.
	for _, arg := range []string{"version", "-version", "--version"} {
		out, errOut, code := wsbridge(t, "", arg)
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "wsbridge ") || !strings.HasSuffix(out, goVersion+"\n") {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", arg, code, out, errOut)
		}
	}
}

// check's help says -config is required, where the commands that fall
// back to the embedded default say so.
func TestConfigFlagHelp(t *testing.T) {
	for _, tc := range []struct{ cmd, want, not string }{
		{"check", "YAML config FILE (required)", "default"},
		{"keyring init", "(default: the embedded default)", "required"},
		{"serve", "(default: the embedded default)", "required"},
	} {
		out, _, code := wsbridge(t, "", append(strings.Fields(tc.cmd), "-h")...)
		_, config, _ := strings.Cut(out, "\n  -config FILE")
		config, _, _ = strings.Cut(config, "\n  -")
		if code != 0 || !strings.Contains(config, tc.want) || strings.Contains(config, tc.not) {
			t.Errorf("%s -h: exit %d, -config says %q; want %q and no %q", tc.cmd, code, config, tc.want, tc.not)
		}
	}
}

// healthcheck exits 0 only for a 200, names what it got otherwise, and
// gives up at its timeout.
func TestHealthcheck(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte("ok"))
		case "/readyz":
			http.Error(w, "backend rabbitmq: connection refused", http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/healthz", http.StatusFound)
		case "/hang":
			select {
			case <-r.Context().Done():
			case <-release:
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // before srv.Close, which waits for handlers
	tls := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	tls.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is the point
	tls.StartTLS()
	t.Cleanup(tls.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{srv.URL + "/healthz"}, 0, "200 OK"},
		{[]string{srv.URL + "/readyz"}, 1, "answered 503 Service Unavailable"},
		{[]string{srv.URL + "/moved"}, 1, "answered 302 Found"},
		{[]string{srv.URL + "/missing"}, 1, "answered 404 Not Found"},
		{[]string{"-timeout", "200ms", srv.URL + "/hang"}, 1, "context deadline exceeded"},
		{[]string{closed.URL + "/healthz"}, 1, "connection refused"},
		{[]string{tls.URL}, 1, "certificate"},
		{[]string{"-insecure", tls.URL}, 0, "200 OK"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			start := time.Now()
			out, errOut, code := wsbridge(t, "", append([]string{"healthcheck"}, tt.args...)...)
			if code != tt.code || !strings.Contains(out+errOut, tt.want) {
				t.Fatalf("exit %d (want %d), stdout %q, stderr %q (want %q)", code, tt.code, out, errOut, tt.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %s", d)
			}
		})
	}
}

// The built binary exits with run's status, and `wsbridge version` names
// the commit it was built from: the go command stamps it in a git clone
// (not in a linked worktree, whose .git is a file the go command does not
// read as a repository).
func TestBuiltBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git not installed")
	}
	bin := filepath.Join(t.TempDir(), "wsbridge")
	if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{{[]string{"help"}, 0}, {[]string{"keyring", "init", "-h"}, 0}, {[]string{"bogus"}, 2}, {[]string{"check", "-config", "nope.yaml"}, 1}} {
		err := exec.Command(bin, tc.args...).Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code {
			t.Errorf("wsbridge %v: exit %d, want %d", tc.args, code, tc.code)
		}
	}

	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	top, err := exec.Command(git, "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git checkout: %v", err)
	}
	st, err := os.Stat(filepath.Join(strings.TrimSpace(string(top)), ".git"))
	if err != nil || !st.IsDir() {
		if !strings.Contains(string(out), "(no VCS revision") {
			t.Fatalf("version in a worktree: %q", out)
		}
		t.Skipf("a linked worktree: the go command stamps no revision (%q)", strings.TrimSpace(string(out)))
	}
	head, err := exec.Command(git, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "(revision " + strings.TrimSpace(string(head)); !strings.Contains(string(out), want) {
		t.Fatalf("version %q lacks %q", out, want)
	}
}
