package front

import (
	"errors"
	"net/http"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/outcome"
)

// Authenticate authenticates an HTTP request against p (nil: anonymous).
// login says whether the protocol's own login may still prove the identity
// later; then a request that carries nothing passes with a nil identity.
// A password check refused because too many are in progress fails with
// auth.ErrBusy (see BusyFor): nothing was checked.
func Authenticate(r *http.Request, p *auth.Policy, login bool) (*auth.Identity, error) {
	if p == nil {
		return auth.Anonymous, nil
	}
	id, err := p.FromRequest(r, ClientIP(r))
	if err == nil && id == nil && !(login && p.LoginAccepted()) {
		err = p.Missing()
	}
	return id, err
}

// RefuseLogin answers a request Authenticate failed: 401 with the reason
// and the scheme to use, or, for auth.ErrBusy, 429 with Retry-After.
func RefuseLogin(w http.ResponseWriter, p *auth.Policy, err error) {
	if b, busy := BusyFor(err); busy {
		RefuseHTTP(w, b)
		return
	}
	if p.Mode() == auth.ModeUsers {
		w.Header().Set("WWW-Authenticate", `Basic realm="wsbridge", charset="UTF-8"`)
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer realm="wsbridge", error="invalid_token"`)
	}
	Error(w, http.StatusUnauthorized, "authentication failed: "+err.Error())
}

// LoginOutcome names a failed login for logs: busy when it was refused
// unchecked (auth.ErrBusy: the client should retry), unauthenticated
// otherwise.
func LoginOutcome(err error) outcome.Outcome {
	if errors.Is(err, auth.ErrBusy) {
		return outcome.Busy
	}
	return outcome.Unauthenticated
}
