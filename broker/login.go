package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/wsbridge/wsbridge/keyring"
)

// DefaultDialTimeout bounds a dial to a broker (a client's, a relay
// session's, a login check's) where none is configured.
const DefaultDialTimeout = 5 * time.Second

// ErrLoginRefused means a broker refused the gateway's credential: the
// keyring entry holds a password (or user) the broker does not accept, or
// that user may not use the virtual host. Retrying does not help; the
// operator has to fix the keyring or the broker.
var ErrLoginRefused = errors.New("login refused")

// LoginError is a broker's refusal of the gateway's credential. Its Error
// is the bare "login refused", which anyone may read (a /readyz answer);
// Said, the broker's own words, may name the broker user and is for the
// operator's log only.
type LoginError struct {
	Backend string // the backend's name
	Entry   string // the keyring entry whose credential was refused
	Said    string // what the broker said (never the password)
}

func (e *LoginError) Error() string { return ErrLoginRefused.Error() }

// Unwrap makes errors.Is(err, ErrLoginRefused) hold.
func (e *LoginError) Unwrap() error { return ErrLoginRefused }

// LoginFunc is one client library's login: it logs in to l.Address once
// with l.Credential (never nil here), within timeout, as the gateway's own
// connections do, and logs out again. said is what the broker said when it
// refused the credential or the virtual host ("" when it did not refuse);
// err is the library's error. Each client package offers one
// (natsbroker.Login, amqpbroker.Login, ...).
type LoginFunc func(ctx context.Context, l Login, timeout time.Duration) (said string, err error)

// Login is how the gateway logs in to one backend with its own
// credential: what a readiness check and `wsbridge check -login` try.
// Without a Credential (or a holder holding one) there is no login to
// try, only a dial; Log is where a LoginCheck logs refusals.
type Login struct {
	Endpoint
	Protocol string // amqp, stomp, mqtt or nats, for messages
	// VHost is the AMQP virtual host or the STOMP host header (default /).
	VHost string
	// Attempt is the client library's login for Protocol. Without one a
	// login with a credential cannot be tried, and Try says so.
	Attempt LoginFunc
}

// Try logs in to the broker once, as the gateway's relays and brokers do,
// and logs out again. It returns nil when the broker accepted the
// credential, a *LoginError (errors.Is ErrLoginRefused) when it refused it,
// and an error wrapping ErrUnavailable when it could not be asked (not
// reachable, no answer in time). Without a Credential it only dials.
func (l Login) Try(ctx context.Context) error {
	l = l.current()
	timeout := l.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return fmt.Errorf("%s: no time left to log in: %w", l.Address, ErrUnavailable)
	}
	if l.Credential == nil {
		if err := dialCheck(ctx, l.Address); err != nil {
			return fmt.Errorf("%w: %w", err, ErrUnavailable)
		}
		return nil
	}
	if l.Attempt == nil {
		return fmt.Errorf("no login to try for protocol %q", l.Protocol)
	}
	said, err := l.Attempt(ctx, l, timeout)
	if said != "" {
		return l.refusal(said)
	}
	if err != nil {
		return fmt.Errorf("%s: logging in: %v: %w", l.Address, err, ErrUnavailable)
	}
	return nil
}

// current is l with the credential its holder holds now.
func (l Login) current() Login {
	if l.CredentialHolder != nil {
		l.Credential = l.CredentialHolder.Load()
	}
	return l
}

// refusal is the LoginError for what the broker said refusing l's
// credential.
func (l Login) refusal(said string) *LoginError {
	return &LoginError{Backend: l.Backend, Entry: l.CredentialName, Said: l.scrub(said)}
}

// fix is the WARN's hint for a refused login.
func (l Login) fix() string {
	if h := l.CredentialHolder; h != nil && h.fix != "" {
		return h.fix
	}
	return fmt.Sprintf(defaultFix, l.CredentialName)
}

// scrub removes the password from what a broker said, should one ever
// echo it.
func (l Login) scrub(said string) string {
	if l.Credential == nil {
		return said
	}
	if pw := l.Credential.Password.Reveal(); pw != "" {
		said = strings.ReplaceAll(said, pw, "[redacted]")
	}
	return said
}

// Dial opens a TCP connection to l.Address, over TLS when l.TLS is set:
// for a LoginFunc whose library takes a connection rather than an address.
func (l Login) Dial(ctx context.Context) (net.Conn, error) {
	d := &net.Dialer{}
	if l.TLS != nil {
		return (&tls.Dialer{NetDialer: d, Config: l.TLS}).DialContext(ctx, "tcp", l.Address)
	}
	return d.DialContext(ctx, "tcp", l.Address)
}

// dialCheck opens and closes a TCP connection to addr.
func dialCheck(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("%s unreachable", addr)
	}
	return c.Close()
}

// DialFailure is what a client's Publish and Subscribe return when the
// broker connection they need could not be made: ErrUnreachable, or, when
// said (what the client's refusal classifier made of err) says the broker
// refused the gateway's credential, ErrLoginRefused and ErrUnavailable; so
// that a caller can tell the operator which it is rather than only that
// the broker is unavailable.
func DialFailure(what string, err error, said string) error {
	if said != "" {
		return fmt.Errorf("%s: %w: %v: %w", what, ErrLoginRefused, err, ErrUnavailable)
	}
	return fmt.Errorf("%s: %v: %w", what, err, ErrUnreachable)
}

// LoginCheckInterval is how long a login check's result stands: /readyz
// logs in to a broker at most this often, however often it is asked.
const LoginCheckInterval = 30 * time.Second

// loginRetryInterval is how long a login that could not be made (the
// broker unreachable or silent) stands: a broker coming back is seen
// soon, and a flood of /readyz still costs at most one attempt per
// interval.
const loginRetryInterval = time.Second

// LoginCheck is a readiness check (front.ReadyCheck) that the broker accepts the gateway's
// credential, with a real login at most once per LoginCheckInterval and
// the result kept in between; every call still dials, so a broker gone
// down shows at once. A refusal is logged at WARN with the backend and
// keyring entry. Logins the gateway makes anyway report their outcome
// (Observe), which then counts as a fresh check.
//
// The login runs on a goroutine of its own, bounded by the dial timeout,
// and callers wait for it only as long as their context allows: a broker
// may take seconds to refuse (RabbitMQ answers a wrong AMQP password after
// about 3 s), longer than a readiness probe waits. Meanwhile they get the
// previous result, or that the check is still running.
type LoginCheck struct {
	login Login

	mu      sync.Mutex
	at      time.Time // when err was found
	err     error
	cred    *keyring.Credential // what err is the outcome of: another one held since makes it stale
	warned  time.Time           // the last refusal logged
	warnedC *keyring.Credential // the credential whose refusal was logged
	running chan struct{}       // while a login runs; closed when it is done
}

// NewLoginCheck checks l, logging refusals to l.Log.
func NewLoginCheck(l Login) *LoginCheck {
	l.Endpoint = l.WithDefaults()
	return &LoginCheck{login: l}
}

// ErrLoginCheckRunning is Ready's answer when the first login has not
// finished within the caller's context.
var ErrLoginCheckRunning = errors.New("login check still running")

// Ready reports whether the broker accepts the credential.
func (c *LoginCheck) Ready(ctx context.Context) error {
	if err := dialCheck(ctx, c.login.Address); err != nil || c.login.current().Credential == nil {
		return err
	}
	c.mu.Lock()
	if err, fresh := c.fresh(); fresh {
		c.mu.Unlock()
		return err
	}
	done := c.running
	if done == nil {
		done = make(chan struct{})
		c.running = done
		go c.run(done)
	}
	c.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() {
		return ErrLoginCheckRunning
	}
	return c.err
}

// run makes one login; its time is bounded by the dial timeout (twice:
// the dial, then the broker's answer).
func (c *LoginCheck) run(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*c.login.DialTimeout)
	defer cancel()
	l := c.login.current()
	c.observe(l.Credential, l.Try(ctx))
	c.mu.Lock()
	c.running = nil
	c.mu.Unlock()
	close(done)
}

// fresh is the last result and whether it still stands: not once the
// holder has another credential (a keyring reload), whose login is then
// tried at once. Call with c.mu held.
func (c *LoginCheck) fresh() (error, bool) {
	keep := LoginCheckInterval
	if c.err != nil && !errors.Is(c.err, ErrLoginRefused) {
		keep = loginRetryInterval
	}
	return c.err, !c.at.IsZero() && time.Since(c.at) < keep && c.cred == c.login.current().Credential
}

// Failed is the last result when it was a failure, else nil: a client
// that is not connected reports it as the cause.
func (c *LoginCheck) Failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Refused is the last result when it was a refusal, else nil.
func (c *LoginCheck) Refused() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if errors.Is(c.err, ErrLoginRefused) {
		return c.err
	}
	return nil
}

// Observe records the outcome of a login the gateway made anyway with
// cred, which then counts as a fresh check: err is the client library's
// (nil: accepted), said what its refusal classifier made of err ("": not
// a refusal). A refusal is logged at WARN, at most once per
// LoginCheckInterval while it lasts.
func (c *LoginCheck) Observe(cred *keyring.Credential, err error, said string) {
	if said != "" {
		l := c.login
		l.Credential = cred
		err = l.refusal(said)
	}
	c.observe(cred, err)
}

// observe records the outcome of a login with cred. A refusal of a
// credential a reload brought is logged at once, whenever the last one
// was.
func (c *LoginCheck) observe(cred *keyring.Credential, err error) {
	c.mu.Lock()
	c.at, c.err, c.cred = time.Now(), err, cred
	var le *LoginError
	warn := errors.As(err, &le) && (time.Since(c.warned) >= LoginCheckInterval || cred != c.warnedC)
	if warn {
		c.warned, c.warnedC = c.at, cred
	} else if err == nil {
		c.warned, c.warnedC = time.Time{}, nil
	}
	c.mu.Unlock()
	if warn {
		c.login.Log.Warn(c.login.Protocol+" broker refused the gateway's credential", "backend", c.login.Backend,
			"keyring_entry", c.login.CredentialName, "address", c.login.Address, "broker_said", le.Said,
			"fix", c.login.fix())
	}
}
