package auth

import (
	"strings"
	"testing"
)

// instances returns concrete names a filter matches: each single-segment
// wildcard as "x", each multi-segment one as nothing (where it may match
// zero segments), one and two segments.
func instances(filter string) []string {
	var out []string
	for _, multi := range []string{"", "x", "x.y"} {
		segs := segments(filter)
		var b []string
		for _, s := range segs {
			switch s {
			case "*", "+":
				b = append(b, "x")
			case "#":
				if multi != "" {
					b = append(b, multi)
				}
			case ">":
				if multi == "" {
					b = append(b, "x")
				} else {
					b = append(b, multi)
				}
			default:
				b = append(b, s)
			}
		}
		out = append(out, strings.Join(b, "."))
	}
	return out
}

// FuzzPatternCovers checks the ACL's one hard judgement: when a pattern is
// said to cover a subscription filter, it must match every concrete topic
// that filter can match; a pattern covers itself; a pattern that starts
// with a wildcard covers nothing that starts with '$'; nothing panics.
func FuzzPatternCovers(f *testing.F) {
	for _, s := range [][2]string{
		{"demo.*", "demo.+"}, {"demo.#", "demo/#"}, {"demo.>", "demo.*.#"}, {"*.x", "+/x"},
		{"demo.*", "demo"}, {"a.#", "#"}, {"queue:jobs.*", "jobs.a"}, {"exchange:e:k.#", "k.x"},
		{"#", "$SYS/#"}, {"*.x", "$SYS.x"}, {"$SYS.#", "$SYS/broker/x"}, {"$share.*.demo.*", "$share/g/demo/x"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, filter string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		d := Dest{Kind: p.kind, Exchange: p.exchange, Name: filter}
		if !p.Covers(Dest{Kind: p.kind, Exchange: p.exchange, Name: strings.Join(p.segs, ".")}) {
			t.Fatalf("%q does not cover itself", pattern)
		}
		if !p.Covers(d) {
			return
		}
		if len(p.segs) > 0 && wildcard(p.segs[0]) && strings.HasPrefix(filter, "$") {
			t.Fatalf("%q starts with a wildcard but covers %q", pattern, filter)
		}
		for _, name := range instances(filter) {
			if !p.Covers(Dest{Kind: p.kind, Exchange: p.exchange, Name: name}) {
				t.Fatalf("%q covers filter %q but not its instance %q", pattern, filter, name)
			}
		}
	})
}
