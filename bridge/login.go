package bridge

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/go-stomp/stomp/v3"
	stompframe "github.com/go-stomp/stomp/v3/frame"
	"github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/wsbridge/wsbridge/keyring"
)

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

// BackendLogin is how the gateway logs in to one backend with its own
// credential: what a readiness check and `wsbridge check -login` try.
type BackendLogin struct {
	Backend  string // the backend's name, for messages
	Protocol string // amqp, stomp, mqtt or nats
	Address  string // host:port
	// VHost is the AMQP virtual host or the STOMP host header (default /).
	VHost string
	// Credential is what the gateway logs in with; nil: it sends none, and
	// there is no login to try.
	Credential *keyring.Credential
	// CredentialHolder, when set, supersedes Credential: each login takes
	// the credential it holds then, so that a keyring reload is tried at
	// once.
	CredentialHolder *CredentialHolder
	// CredentialName is Credential's keyring entry, for the operator.
	CredentialName string
	TLS            *tls.Config   // reach the broker over TLS
	DialTimeout    time.Duration // default 5s; ctx may shorten it
}

// Try logs in to the broker once, as the gateway's relays and brokers do,
// and logs out again. It returns nil when the broker accepted the
// credential, a *LoginError (errors.Is ErrLoginRefused) when it refused it,
// and an error wrapping ErrUnavailable when it could not be asked (not
// reachable, no answer in time). Without a Credential it only dials.
func (l BackendLogin) Try(ctx context.Context) error {
	l = l.current()
	timeout := l.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return fmt.Errorf("%s: no time left to log in: %w", l.Address, ErrUnavailable)
	}
	if l.Credential == nil {
		if err := DialCheck(l.Address)(ctx); err != nil {
			return fmt.Errorf("%w: %w", err, ErrUnavailable)
		}
		return nil
	}
	var said string
	var err error
	switch l.Protocol {
	case "amqp":
		said, err = l.tryAMQP(timeout)
	case "stomp":
		said, err = l.trySTOMP(ctx, timeout)
	case "mqtt":
		said, err = l.tryMQTT(timeout)
	case "nats":
		said, err = l.tryNATS(timeout)
	default:
		return fmt.Errorf("no login to try for protocol %q", l.Protocol)
	}
	if said != "" {
		return &LoginError{Backend: l.Backend, Entry: l.CredentialName, Said: l.scrub(said)}
	}
	if err != nil {
		return fmt.Errorf("%s: logging in: %v: %w", l.Address, err, ErrUnavailable)
	}
	return nil
}

// current is l with the credential its holder holds now.
func (l BackendLogin) current() BackendLogin {
	if l.CredentialHolder != nil {
		l.Credential = l.CredentialHolder.Load()
	}
	return l
}

// fix is the WARN's hint for a refused login.
func (l BackendLogin) fix() string {
	if h := l.CredentialHolder; h != nil && h.fix != "" {
		return h.fix
	}
	return fmt.Sprintf(defaultFix, l.CredentialName)
}

// scrub removes the password from what a broker said, should one ever
// echo it.
func (l BackendLogin) scrub(said string) string {
	if l.Credential == nil {
		return said
	}
	if pw := l.Credential.Password.Reveal(); pw != "" {
		said = strings.ReplaceAll(said, pw, "[redacted]")
	}
	return said
}

// tryAMQP logs in with SASL PLAIN (never the URL, so no error can echo
// the password) and opens the virtual host. said is set when the broker
// refused; amqp091-go reports a refused login as ErrCredentials, having
// lost the broker's text, and a refused virtual host as ErrVhost.
func (l BackendLogin) tryAMQP(timeout time.Duration) (said string, err error) {
	vhost := l.VHost
	if vhost == "" {
		vhost = "/"
	}
	cfg := amqp.Config{Vhost: vhost, Dial: amqp.DefaultDial(timeout), Properties: amqp.Table{"connection_name": "wsbridge login check"},
		SASL: []amqp.Authentication{&amqp.PlainAuth{Username: l.Credential.Username, Password: l.Credential.Password.Reveal()}}}
	scheme := "amqp://"
	if l.TLS != nil {
		scheme, cfg.TLSClientConfig = "amqps://", l.TLS
	}
	conn, err := amqp.DialConfig(scheme+l.Address+"/", cfg)
	if err != nil {
		return amqpRefusal(err, vhost), err
	}
	return "", conn.Close()
}

// dialFailure is what Publish and Subscribe return when the broker
// connection they need could not be made: ErrUnreachable, or, when said
// (what a refusal classifier made of err) says the broker refused the
// gateway's credential, ErrLoginRefused and ErrUnavailable; so that a
// caller can tell the operator which it is rather than only that the
// broker is unavailable.
func dialFailure(what string, err error, said string) error {
	if said != "" {
		return fmt.Errorf("%s: %w: %v: %w", what, ErrLoginRefused, err, ErrUnavailable)
	}
	return fmt.Errorf("%s: %v: %w", what, err, ErrUnreachable)
}

// amqpRefusal is what the broker said when err is its refusal of the
// gateway's login or of the virtual host, "" otherwise. amqp091-go
// reports a refused login as ErrCredentials, the broker's text lost.
func amqpRefusal(err error, vhost string) string {
	var ae *amqp.Error
	switch {
	case errors.Is(err, amqp.ErrCredentials):
		return "ACCESS_REFUSED: " + amqp.ErrCredentials.Reason
	case errors.Is(err, amqp.ErrVhost):
		return fmt.Sprintf("NOT_ALLOWED: no access to virtual host %q", vhost)
	case errors.As(err, &ae) && (ae.Code == amqp.AccessRefused || ae.Code == amqp.NotAllowed):
		return ae.Reason
	}
	return ""
}

// trySTOMP sends CONNECT with the credential; a broker ERROR instead of
// CONNECTED is a refusal (RabbitMQ: "Access refused for user 'gw'").
func (l BackendLogin) trySTOMP(ctx context.Context, timeout time.Duration) (said string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := l.dial(ctx)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	// go-stomp waits for CONNECTED without a deadline of its own.
	nc.SetDeadline(time.Now().Add(timeout))
	vhost := l.VHost
	if vhost == "" {
		vhost = "/"
	}
	// What the probe found is its return value; go-stomp's own lines about
	// this throwaway connection would only reach stderr unstructured.
	conn, err := stomp.Connect(nc, stomp.ConnOpt.Host(vhost), stomp.ConnOpt.Login(l.Credential.Username, l.Credential.Password.Reveal()),
		stomp.ConnOpt.Logger(stompLog{slog.New(slog.DiscardHandler)}))
	if err != nil {
		return stompRefusal(err), err
	}
	return "", conn.MustDisconnect()
}

// stompRefusal is what the broker said when err is an ERROR frame in
// answer to CONNECT (RabbitMQ: "Access refused for user 'gw'"), ""
// otherwise.
func stompRefusal(err error) string {
	var se stomp.Error
	if errors.As(err, &se) && se.Frame != nil && se.Frame.Command == stompframe.ERROR {
		return strings.TrimSpace(se.Message + ": " + string(se.Frame.Body))
	}
	return ""
}

// tryMQTT connects with a clean session under a client identifier of its
// own, so that no one's session is taken over.
func (l BackendLogin) tryMQTT(timeout time.Duration) (said string, err error) {
	var id [6]byte
	rand.Read(id[:])
	scheme := "tcp://"
	if l.TLS != nil {
		scheme = "ssl://"
	}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(scheme + l.Address).SetTLSConfig(l.TLS).
		SetClientID("wsbridge-check-" + hex.EncodeToString(id[:])).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(timeout).
		SetUsername(l.Credential.Username).SetPassword(l.Credential.Password.Reveal()))
	t := c.Connect()
	if !t.WaitTimeout(timeout + time.Second) {
		return "", errors.New("connect timed out")
	}
	if err := t.Error(); err != nil {
		return mqttRefusal(err), err
	}
	c.Disconnect(0)
	return "", nil
}

// mqttRefusal is what the broker said when err is a CONNACK refusing the
// credential, "" otherwise.
func mqttRefusal(err error) string {
	if errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		return "CONNACK: " + err.Error()
	}
	return ""
}

// tryNATS connects once, without the reconnecting the gateway's own
// connection does.
func (l BackendLogin) tryNATS(timeout time.Duration) (said string, err error) {
	opts := []nats.Option{nats.Name("wsbridge login check"), nats.Timeout(timeout), nats.NoReconnect(),
		nats.UserInfo(l.Credential.Username, l.Credential.Password.Reveal())}
	if l.TLS != nil {
		opts = append(opts, nats.Secure(l.TLS))
	}
	nc, err := nats.Connect("nats://"+l.Address, opts...)
	if err != nil {
		return natsRefusal(err), err
	}
	nc.Close()
	return "", nil
}

// natsRefusal is what the server said when err is its refusal of the
// client's credential, "" otherwise.
func natsRefusal(err error) string {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) {
		return err.Error()
	}
	return ""
}

func (l BackendLogin) dial(ctx context.Context) (net.Conn, error) {
	d := &net.Dialer{}
	if l.TLS != nil {
		return (&tls.Dialer{NetDialer: d, Config: l.TLS}).DialContext(ctx, "tcp", l.Address)
	}
	return d.DialContext(ctx, "tcp", l.Address)
}

// LoginCheckInterval is how long a login check's result stands: /readyz
// logs in to a broker at most this often, however often it is asked.
const LoginCheckInterval = 30 * time.Second

// loginRetryInterval is how long a login that could not be made (the
// broker unreachable or silent) stands: a broker coming back is seen
// soon, and a flood of /readyz still costs at most one attempt per
// interval.
const loginRetryInterval = time.Second

// LoginCheck is a ReadyCheck that the broker accepts the gateway's
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
	login BackendLogin
	log   *slog.Logger

	mu      sync.Mutex
	at      time.Time // when err was found
	err     error
	cred    *keyring.Credential // what err is the outcome of: another one held since makes it stale
	warned  time.Time           // the last refusal logged
	warnedC *keyring.Credential // the credential whose refusal was logged
	running chan struct{}       // while a login runs; closed when it is done
}

// NewLoginCheck checks l, logging refusals to log.
func NewLoginCheck(l BackendLogin, log *slog.Logger) *LoginCheck {
	if log == nil {
		log = slog.Default()
	}
	if l.DialTimeout <= 0 {
		l.DialTimeout = 5 * time.Second
	}
	return &LoginCheck{login: l, log: log}
}

// ErrLoginCheckRunning is Ready's answer when the first login has not
// finished within the caller's context.
var ErrLoginCheckRunning = errors.New("login check still running")

// Ready implements ReadyCheck.
func (c *LoginCheck) Ready(ctx context.Context) error {
	if err := DialCheck(c.login.Address)(ctx); err != nil || c.login.current().Credential == nil {
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

// failed is the last result when it was a failure, else nil.
func (c *LoginCheck) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// refused is the last result when it was a refusal, else nil.
func (c *LoginCheck) refused() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if errors.Is(c.err, ErrLoginRefused) {
		return c.err
	}
	return nil
}

// observeLogin records the outcome of a login the gateway made anyway
// with cred: err is the client library's, said what refusal classified it
// as ("": none).
func (c *LoginCheck) observeLogin(cred *keyring.Credential, err error, said string) {
	if said != "" {
		l := c.login
		l.Credential = cred
		err = &LoginError{Backend: l.Backend, Entry: l.CredentialName, Said: l.scrub(said)}
	}
	c.observe(cred, err)
}

// Observe records the outcome of a login to the broker with the checked
// credential: nil for accepted, an error wrapping ErrLoginRefused for
// refused (logged at WARN, at most once per LoginCheckInterval while it
// lasts), anything else for not reachable.
func (c *LoginCheck) Observe(err error) { c.observe(c.login.current().Credential, err) }

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
		c.log.Warn(c.login.Protocol+" broker refused the gateway's credential", "backend", c.login.Backend,
			"keyring_entry", c.login.CredentialName, "address", c.login.Address, "broker_said", le.Said,
			"fix", c.login.fix())
	}
}
