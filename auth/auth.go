// Package auth decides who a client is and what it may touch: it checks
// JWTs (HS256, RS256, ES256) and passwords from a users file, picks the
// broker credential for an identity (a fixed keyring entry or a template
// such as user/{sub}), and applies destination allow-lists per role,
// subject or token claim. It knows no wire format: adapters hand it the
// login fields and destinations they parsed.
package auth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/wsbridge/wsbridge/keyring"
)

// Classes of failure a caller branches on.
var (
	// ErrUnauthenticated: no credentials, or ones that do not check out.
	ErrUnauthenticated = errors.New("not authenticated")
	// ErrForbidden: the identity is known but may not do this.
	ErrForbidden = errors.New("forbidden")
	// ErrBusy: too many logins at once, from the client's address or in
	// all; nothing was checked, and the client may retry after RetryAfter.
	ErrBusy = errors.New("too many logins at once")
)

// Error is an authentication or authorization failure whose message is
// safe to send to the client: it never holds a token or password.
type Error struct {
	Msg string
	// RetryAfter is when an ErrBusy refusal may be retried; zero otherwise.
	RetryAfter time.Duration
	class      error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.class }

func unauthenticated(format string, args ...any) error {
	return &Error{Msg: fmt.Sprintf(format, args...), class: ErrUnauthenticated}
}

func busy(retry time.Duration, msg string) error {
	return &Error{Msg: msg, RetryAfter: retry, class: ErrBusy}
}

func forbidden(format string, args ...any) error {
	return &Error{Msg: fmt.Sprintf(format, args...), class: ErrForbidden}
}

// Identity is who is on the other end of a connection or request.
type Identity struct {
	Subject string
	Roles   []string
	// Expires is the token's exp; zero for never. Policy.EndsAt says when
	// a connection proven by it ends.
	Expires time.Time
	// Grants are allow-lists from a token claim, nil when the token had none.
	Grants *Grants
	// Method is how the identity was proven: none, jwt or users.
	Method string
}

// Anonymous is the identity of every client on a route with auth: none.
var Anonymous = &Identity{Method: "none"}

// Mode is how a route's clients prove who they are.
type Mode string

// Modes.
const (
	ModeNone  Mode = "none"
	ModeJWT   Mode = "jwt"
	ModeUsers Mode = "users"
)

// Carriers says where a token may come from.
type Carriers struct {
	Header bool   // Authorization: Bearer
	Cookie string // a cookie of this name; "" for none
	Query  bool   // the access_token query parameter
	Login  bool   // the protocol's own password field (STOMP passcode, MQTT password, AMQP PLAIN)
}

// Options configure a Policy.
type Options struct {
	Mode     Mode
	JWT      *JWT   // ModeJWT
	Users    *Users // ModeUsers
	Carriers Carriers
	// Credential names the keyring entry that carries an identity's broker
	// credential: a fixed name, or a template with {sub} or {role}. Empty:
	// the route's own credential.
	Credential string
	// Lookup reads a keyring entry; needed when Credential is set.
	Lookup func(name string) (keyring.Credential, error)
	// Rules are the route's allow-lists. With no rules and no grants in
	// the token, every destination is allowed (the broker's permissions for
	// the injected credential still apply).
	Rules []Rule
	// ExpiryGrace is how long a connection may outlive its token (its exp
	// plus the verifier's leeway).
	ExpiryGrace time.Duration
}

// Policy is one route's authentication, credential choice and ACL.
type Policy struct {
	o Options
}

// New checks o and returns its Policy.
func New(o Options) (*Policy, error) {
	switch o.Mode {
	case "":
		o.Mode = ModeNone
	case ModeNone:
	case ModeJWT:
		if o.JWT == nil {
			return nil, errors.New("auth: jwt mode needs a verifier")
		}
		c := o.Carriers
		if !c.Header && c.Cookie == "" && !c.Query && !c.Login {
			return nil, errors.New("auth: jwt mode needs at least one token carrier")
		}
	case ModeUsers:
		if o.Users == nil {
			return nil, errors.New("auth: users mode needs a users file")
		}
	default:
		return nil, fmt.Errorf("auth: unknown mode %q", o.Mode)
	}
	if o.Credential != "" {
		if o.Lookup == nil {
			return nil, errors.New("auth: a credential template needs a keyring")
		}
		if o.Mode == ModeNone && strings.Contains(o.Credential, "{") {
			return nil, errors.New("auth: anonymous clients have no {sub} or {role} to fill a credential template")
		}
		if err := checkTemplate(o.Credential); err != nil {
			return nil, err
		}
	}
	return &Policy{o: o}, nil
}

// Mode reports the policy's mode.
func (p *Policy) Mode() Mode { return p.o.Mode }

// EndsAt is when a connection proven by id must end; zero when id does
// not expire. A token is admitted until its exp plus the verifier's
// leeway, so that is when its connections end too (plus ExpiryGrace): a
// token inside the leeway is never admitted only to be ended at once.
func (p *Policy) EndsAt(id *Identity) time.Time {
	if p == nil || id == nil || id.Expires.IsZero() {
		return time.Time{}
	}
	end := id.Expires.Add(p.o.ExpiryGrace)
	if p.o.JWT != nil {
		end = end.Add(p.o.JWT.o.Leeway)
	}
	return end
}

// PerIdentityCredential reports whether the broker credential depends on
// the identity (a template or fixed entry of the auth block's own).
func (p *Policy) PerIdentityCredential() bool { return p.o.Credential != "" }

// FromRequest authenticates an HTTP request (a WebSocket upgrade, an SSE
// stream, a publish) from client, the client's address. It returns nil and
// no error when the request carries nothing and the protocol's login may
// still prove the identity.
func (p *Policy) FromRequest(r *http.Request, client string) (*Identity, error) {
	switch p.o.Mode {
	case ModeNone:
		return Anonymous, nil
	case ModeUsers:
		if user, pass, ok := r.BasicAuth(); ok {
			return p.o.Users.Check(client, user, pass)
		}
		return nil, nil
	}
	c := p.o.Carriers
	if h := r.Header.Get("Authorization"); h != "" && c.Header {
		scheme, tok, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return nil, unauthenticated("the Authorization header must be \"Bearer <token>\"")
		}
		return p.o.JWT.Verify(strings.TrimSpace(tok))
	}
	if c.Cookie != "" {
		if ck, err := r.Cookie(c.Cookie); err == nil && ck.Value != "" {
			return p.o.JWT.Verify(ck.Value)
		}
	}
	if c.Query {
		if tok := r.URL.Query().Get("access_token"); tok != "" {
			return p.o.JWT.Verify(tok)
		}
	}
	return nil, nil
}

// LoginAccepted reports whether the protocol's login fields may carry the
// proof: always for users mode, by configuration for JWTs.
func (p *Policy) LoginAccepted() bool {
	return p.o.Mode == ModeUsers || (p.o.Mode == ModeJWT && p.o.Carriers.Login)
}

// Missing is the error for a client that proved nothing.
func (p *Policy) Missing() error {
	switch {
	case p.o.Mode == ModeUsers:
		return unauthenticated("log in with a username and password")
	case p.o.Carriers.Login:
		return unauthenticated("a token is required (Authorization: Bearer, cookie, access_token, or the protocol's password field)")
	}
	return unauthenticated("a token is required (%s)", p.carrierList())
}

func (p *Policy) carrierList() string {
	var l []string
	c := p.o.Carriers
	if c.Header {
		l = append(l, "Authorization: Bearer")
	}
	if c.Cookie != "" {
		l = append(l, "cookie "+c.Cookie)
	}
	if c.Query {
		l = append(l, "access_token query parameter")
	}
	return strings.Join(l, ", ")
}

// FromLogin authenticates the protocol's login fields sent from client (the
// client's address): user and password against the users file, or the
// password as a JWT (user is ignored).
func (p *Policy) FromLogin(client, user, password string) (*Identity, error) {
	switch {
	case p.o.Mode == ModeUsers:
		if user == "" && password == "" {
			// A login that sent nothing is told what to send, as an HTTP
			// request is, and costs no password check.
			return nil, p.Missing()
		}
		return p.o.Users.Check(client, user, password)
	case p.o.Mode == ModeJWT && p.o.Carriers.Login:
		if password == "" {
			return nil, p.Missing()
		}
		return p.o.JWT.Verify(password)
	case p.o.Mode == ModeNone:
		return Anonymous, nil
	}
	return nil, p.Missing()
}

// Credential returns the broker credential for id and the name of its
// keyring entry (for logs): nil when the route's own credential applies,
// or an ErrForbidden error when the identity has no keyring entry (never a
// fallback to something more privileged).
func (p *Policy) Credential(id *Identity) (*keyring.Credential, string, error) {
	if p.o.Credential == "" {
		return nil, "", nil
	}
	for _, name := range expand(p.o.Credential, id) {
		c, err := p.o.Lookup(name)
		if err == nil {
			return &c, name, nil
		}
	}
	return nil, "", forbidden("no broker credential is provisioned for this identity")
}

func checkTemplate(t string) error {
	rest := t
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return fmt.Errorf("auth: credential template %q has an unclosed {", t)
		}
		switch ph := rest[i : i+j+1]; ph {
		case "{sub}", "{role}":
		default:
			return fmt.Errorf("auth: credential template %q: unknown placeholder %s (use {sub} or {role})", t, ph)
		}
		rest = rest[i+j+1:]
	}
	if strings.Count(t, "{role}") > 1 {
		return fmt.Errorf("auth: credential template %q uses {role} twice", t)
	}
	return nil
}

// expand fills a credential template: one name, or one per role (in the
// token's order) when it uses {role}. Values that could step outside the
// template's own namespace are skipped.
func expand(t string, id *Identity) []string {
	if !strings.Contains(t, "{") {
		return []string{t}
	}
	if !safeValue(id.Subject) && strings.Contains(t, "{sub}") {
		return nil
	}
	t = strings.ReplaceAll(t, "{sub}", id.Subject)
	if !strings.Contains(t, "{role}") {
		return []string{t}
	}
	var names []string
	for _, r := range id.Roles {
		if safeValue(r) {
			names = append(names, strings.Replace(t, "{role}", r, 1))
		}
	}
	return names
}

func safeValue(v string) bool {
	if v == "" || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x21 || c == 0x7f || c == '/' || c == '{' || c == '}' {
			return false
		}
	}
	return true
}

// Unrestricted reports whether id may touch every destination (no rules
// on the route, no grants in its token), so callers can skip Allow.
func (p *Policy) Unrestricted(id *Identity) bool {
	return p == nil || (len(p.o.Rules) == 0 && (id == nil || id.Grants == nil))
}

// Allow decides whether id may act on d. With no rules on the route and no
// grants in the token, everything is allowed; otherwise only what a rule
// that applies to id, or a grant, allows.
func (p *Policy) Allow(id *Identity, act Action, d Dest) error {
	if d.Kind == Private || (len(p.o.Rules) == 0 && id.Grants == nil) {
		return nil
	}
	for i := range p.o.Rules {
		r := &p.o.Rules[i]
		if !r.appliesTo(id) {
			continue
		}
		if (act == Publish && anyCovers(r.Publish, d)) || (act == Subscribe && anyCovers(r.Subscribe, d)) {
			return nil
		}
	}
	if g := id.Grants; g != nil {
		if (act == Publish && anyCovers(g.Publish, d)) || (act == Subscribe && anyCovers(g.Subscribe, d)) {
			return nil
		}
	}
	return forbidden("%s to %s is not allowed", act, d)
}

// String is how an identity appears in logs: who, never how.
func (id *Identity) String() string {
	if id == nil {
		return "unauthenticated"
	}
	if id.Subject == "" {
		return "anonymous"
	}
	if len(id.Roles) == 0 {
		return id.Subject
	}
	return id.Subject + " (" + strings.Join(id.Roles, ",") + ")"
}
