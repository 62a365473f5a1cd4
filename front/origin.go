package front

import (
	"fmt"
	"net/http"
	"strings"
)

// Origins is an allow-list of browser origins. Each entry is an exact origin
// ("https://app.example.com"), an origin with any port
// ("http://localhost:*"), or "*" for any origin. Requests without an Origin
// header come from non-browser clients, which cannot be abused by a foreign
// page, and are allowed.
type Origins struct {
	any      bool
	exact    map[string]bool
	anyPort  []string // "scheme://host:" prefixes
	patterns []string
}

// NewOrigins checks and compiles an allow-list.
func NewOrigins(list []string) (*Origins, error) {
	o := &Origins{exact: map[string]bool{}, patterns: list}
	for _, p := range list {
		switch {
		case p == "*":
			o.any = true
		case strings.HasSuffix(p, ":*"):
			base := strings.TrimSuffix(p, "*")
			if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
				return nil, fmt.Errorf("origin %q: must start with http:// or https://", p)
			}
			o.anyPort = append(o.anyPort, strings.ToLower(base))
		case strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://"):
			if strings.Count(p, "/") != 2 || strings.ContainsAny(p, "*?#") {
				return nil, fmt.Errorf("origin %q: an origin is scheme://host[:port] with no path", p)
			}
			o.exact[strings.ToLower(p)] = true
		default:
			return nil, fmt.Errorf("origin %q: use scheme://host[:port], scheme://host:* or *", p)
		}
	}
	return o, nil
}

// Allowed reports whether a request carrying this Origin header may proceed.
func (o *Origins) Allowed(origin string) bool {
	if origin == "" || o.any {
		return true
	}
	origin = strings.ToLower(origin)
	if o.exact[origin] {
		return true
	}
	for _, base := range o.anyPort {
		if port, ok := strings.CutPrefix(origin, base); ok && port != "" && isDigits(port) {
			return true
		}
		// "http://localhost:*" also covers the default port.
		if origin+":" == base {
			return true
		}
	}
	return false
}

// Check answers 403 with a reason and returns false when r's origin is not
// allowed.
func (o *Origins) Check(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if o.Allowed(origin) {
		return true
	}
	Error(w, http.StatusForbidden, fmt.Sprintf("origin %q is not in allowed_origins", origin))
	return false
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Error writes a plain-text HTTP error with a reason a user can act on.
func Error(w http.ResponseWriter, status int, reason string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintf(w, "%d %s: %s\n", status, http.StatusText(status), reason)
}
