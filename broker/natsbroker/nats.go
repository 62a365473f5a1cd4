// Package natsbroker is the NATS client behind broker.Broker (nats.go),
// its login check (Login) and the embedded NATS server that is the
// gateway's zero-setup default (StartEmbedded). Only cmd/wsbridge, which
// wires backends, imports it; it is what links nats.go and nats-server.
package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/keyring"
)

// Options configure a NATS broker.
type Options struct {
	// Endpoint's Address may be a nats:// URL as well as host:port.
	broker.Endpoint
	// PendingMessages bounds the messages a subscription may buffer in the
	// gateway; beyond it NATS drops them and the loss is logged.
	PendingMessages int
	// InProcess, when set, connects to an embedded server without a socket.
	InProcess nats.InProcessConnProvider
}

// Broker is a broker.Broker on nats.go. Topics are subjects as they are.
// The client reconnects by itself; subscriptions survive reconnects.
type Broker struct {
	o      Options
	nc     *nats.Conn
	closed chan struct{}
	// login logs a refused credential; the connection itself (nats.go
	// keeps trying) is the readiness check.
	login *broker.LoginCheck
	addr  string // host:port, for errors
	// cred is what the last (re)connect logged in with, taken from the
	// holder when nats.go asked for it.
	cred atomic.Pointer[keyring.Credential]
}

// New connects to NATS. A server that is down at startup is retried in
// the background; until then Publish and Subscribe return
// broker.ErrUnavailable.
func New(o Options) (*Broker, error) {
	if o.PendingMessages <= 0 {
		o.PendingMessages = 8192
	}
	o.Endpoint = o.WithDefaults()
	addr := strings.TrimPrefix(o.Address, "nats://")
	l := broker.Login{Endpoint: o.Endpoint, Protocol: "nats", Attempt: Login}
	l.Address = addr
	n := &Broker{o: o, addr: addr, closed: make(chan struct{}), login: broker.NewLoginCheck(l)}
	var once sync.Once
	opts := []nats.Option{
		nats.Name("wsbridge"),
		nats.Timeout(o.DialTimeout),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ClosedHandler(func(*nats.Conn) { once.Do(func() { close(n.closed) }) }),
		// A refused credential is retried like a lost server (nats.go
		// would otherwise close the connection for good after the second
		// refusal), so fixing the user on the server is enough; each
		// refusal goes to the login check, which logs it.
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { n.login.Observe(n.cred.Load(), err, refusal(err)) }),
		nats.ReconnectHandler(func(*nats.Conn) { n.login.Observe(n.cred.Load(), nil, "") }),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subject := ""
			if s != nil {
				subject = s.Subject
			}
			o.Log.Warn("nats subscription error; messages may have been dropped", "subject", subject, "error", err.Error())
		}),
	}
	if o.CredentialHolder.Load() != nil {
		// Asked at every (re)connect, so that a keyring reload reaches
		// the next.
		opts = append(opts, nats.UserInfoHandler(func() (string, string) {
			c := o.CredentialHolder.Load()
			n.cred.Store(c)
			if c == nil {
				return "", ""
			}
			return c.Username, c.Password.Reveal()
		}))
	}
	if o.InProcess != nil {
		opts = append(opts, nats.InProcessServer(o.InProcess))
	}
	if o.TLS != nil {
		opts = append(opts, nats.Secure(o.TLS))
	}
	nc, err := nats.Connect(o.Address, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats %s: %v", o.Address, err)
	}
	n.nc = nc
	return n, nil
}

// bounded gives ctx a deadline if it has none: nats.go's flush needs one.
func (n *Broker) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, n.o.DialTimeout)
}

// Publish implements broker.Broker. It returns after a round trip to the server,
// so the server has the message.
func (n *Broker) Publish(ctx context.Context, m broker.Message) error {
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	if !n.nc.IsConnected() {
		return n.notConnected()
	}
	msg := &nats.Msg{Subject: m.Topic, Data: m.Data}
	if m.ContentType != "" {
		msg.Header = nats.Header{"Content-Type": {m.ContentType}}
	}
	if err := n.nc.PublishMsg(msg); errors.Is(err, nats.ErrMaxPayload) {
		// max_payload counts headers too: a 1 MiB body with a Content-Type
		// does not fit NATS's default of exactly 1 MiB.
		return fmt.Errorf("nats: %d-byte message with its headers exceeds the server's max_payload of %d bytes: %w",
			len(m.Data), n.nc.MaxPayload(), broker.ErrTooLarge)
	} else if err != nil {
		return fmt.Errorf("nats: publish: %v: %w", err, broker.ErrUnavailable)
	}
	if err := n.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("nats: flush: %v: %w", err, broker.ErrUnavailable)
	}
	return nil
}

// Subscribe implements broker.Broker.
func (n *Broker) Subscribe(ctx context.Context, topic string, fn func(broker.Message)) (broker.Subscription, error) {
	return n.subscribe(ctx, topic, "", fn)
}

var _ broker.QueueSubscriber = (*Broker)(nil)

// QueueSubscribe is Subscribe within a queue group: each message goes to
// one member of the group.
func (n *Broker) QueueSubscribe(ctx context.Context, topic, group string, fn func(broker.Message)) (broker.Subscription, error) {
	return n.subscribe(ctx, topic, group, fn)
}

func (n *Broker) subscribe(ctx context.Context, topic, group string, fn func(broker.Message)) (broker.Subscription, error) {
	ctx, cancel := n.bounded(ctx)
	defer cancel()
	if !n.nc.IsConnected() {
		return nil, n.notConnected()
	}
	sub, err := n.nc.QueueSubscribe(topic, group, func(m *nats.Msg) {
		fn(broker.Message{Topic: topic, Data: m.Data, ContentType: m.Header.Get("Content-Type")})
	})
	if err != nil {
		return nil, fmt.Errorf("nats: subscribe %q: %v: %w", topic, err, broker.ErrUnavailable)
	}
	if err := sub.SetPendingLimits(n.o.PendingMessages, 64<<20); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("nats: %w", err)
	}
	// The SUB must reach the server before we report the subscription live,
	// or a message published right after could be missed.
	if err := n.nc.FlushWithContext(ctx); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("nats: subscribe %q: %v: %w", topic, err, broker.ErrUnavailable)
	}
	return natsSub{sub, n.closed}, nil
}

// notConnected is Publish's and Subscribe's error while nats.go is
// reconnecting: ErrUnreachable with its last attempt's error, or
// ErrLoginRefused (and ErrUnavailable) when the server refused the
// credential then, which is the cause to report rather than the missing
// connection.
func (n *Broker) notConnected() error {
	addr := n.addr
	err := n.login.Failed()
	switch {
	case errors.Is(err, broker.ErrLoginRefused):
		return fmt.Errorf("nats %s: not connected: %w: %w", addr, err, broker.ErrUnavailable)
	case err != nil:
		return fmt.Errorf("nats %s: not connected: %v: %w", addr, err, broker.ErrUnreachable)
	}
	return fmt.Errorf("nats %s: not connected: %w", addr, broker.ErrUnreachable)
}

type natsSub struct {
	s      *nats.Subscription
	closed chan struct{}
}

func (s natsSub) Done() <-chan struct{} { return s.closed }
func (s natsSub) Unsubscribe() error    { return s.s.Unsubscribe() }

// Ready implements broker.Broker: the connection nats.go keeps is up, or, when
// it is not because the server refused the credential, ErrLoginRefused.
func (n *Broker) Ready(context.Context) error {
	if n.nc.IsConnected() {
		return nil
	}
	if err := n.login.Refused(); err != nil {
		return err
	}
	return fmt.Errorf("nats %s: not connected", n.o.Address)
}

// Close implements broker.Broker.
func (n *Broker) Close() error {
	n.nc.Close()
	return nil
}

// Login is broker.LoginFunc for NATS: it connects once, without the
// reconnecting the gateway's own connection does.
func Login(_ context.Context, l broker.Login, timeout time.Duration) (said string, err error) {
	opts := []nats.Option{nats.Name("wsbridge login check"), nats.Timeout(timeout), nats.NoReconnect(),
		nats.UserInfo(l.Credential.Username, l.Credential.Password.Reveal())}
	if l.TLS != nil {
		opts = append(opts, nats.Secure(l.TLS))
	}
	nc, err := nats.Connect("nats://"+l.Address, opts...)
	if err != nil {
		return refusal(err), err
	}
	nc.Close()
	return "", nil
}

// refusal is what the server said when err is its refusal of the
// client's credential, "" otherwise.
func refusal(err error) string {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) {
		return err.Error()
	}
	return ""
}
