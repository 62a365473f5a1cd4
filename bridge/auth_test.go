package bridge

import "testing"

// The broker user is redacted where it stands as a name of its own, not
// inside a longer one, so a short user name does not mangle the text.
func TestRedactWord(t *testing.T) {
	cases := []struct {
		text, word, want string
		redacted         bool
	}{
		{"Access refused for user 'gw'", "gw", "Access refused for user '[redacted]'", true},
		{"ACCESS_REFUSED - access to exchange 'x' in vhost '/' refused for user 'gw_user'", "gw_user",
			"ACCESS_REFUSED - access to exchange 'x' in vhost '/' refused for user '[redacted]'", true},
		{"gw at the start, and gw at the end: gw", "gw", "[redacted] at the start, and [redacted] at the end: [redacted]", true},
		{"gwen and gw.x and x-gw and gw@host are other names", "gw", "gwen and gw.x and x-gw and gw@host are other names", false},
		{"user \"gw\" and gwen", "gw", "user \"[redacted]\" and gwen", true},
		{"refused for user gw. Retry", "gw", "refused for user [redacted]. Retry", true},
		{"users a.gw, gw-b and gw- are not all gw", "gw", "users a.gw, gw-b and [redacted]- are not all [redacted]", true},
		{"no user named", "gw", "no user named", false},
		{"an empty user name redacts nothing", "", "an empty user name redacts nothing", false},
	}
	for _, c := range cases {
		t.Run(c.text, func(t *testing.T) {
			got, redacted := redactWord(c.text, c.word)
			if got != c.want || redacted != c.redacted {
				t.Fatalf("got %q, %v; want %q, %v", got, redacted, c.want, c.redacted)
			}
		})
	}
}
