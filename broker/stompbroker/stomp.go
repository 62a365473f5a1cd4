// Package stompbroker is the STOMP client behind broker.Broker (go-stomp,
// for RabbitMQ's STOMP plugin) and its login check (Login). Only
// cmd/wsbridge, which wires backends, imports it; it is what links
// go-stomp's client. (The STOMP relay and translate routes parse client
// frames with validate, never with go-stomp.)
package stompbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/go-stomp/stomp/v3"
	stompframe "github.com/go-stomp/stomp/v3/frame"
	"github.com/wsbridge/wsbridge/broker"
)

// Options configure a STOMP broker used through broker.Broker.
type Options struct {
	broker.Endpoint
	VHost string // CONNECT host; RabbitMQ reads it as the vhost (default /)
}

// Broker is a broker.Broker on go-stomp. Topic "x" is destination /topic/x;
// publishes wait for a RECEIPT. A lost connection ends its subscriptions;
// the next use dials again.
type Broker struct {
	o     Options
	login *broker.LoginCheck // readiness, fed by every dial

	mu   sync.Mutex
	conn *stomp.Conn
	lost chan struct{} // closed when conn fails
}

// New returns a STOMP broker; it connects on first use.
func New(o Options) *Broker {
	o.Endpoint = o.WithDefaults()
	if o.VHost == "" {
		o.VHost = "/"
	}
	return &Broker{o: o, login: broker.NewLoginCheck(broker.Login{Endpoint: o.Endpoint, Protocol: "stomp", VHost: o.VHost,
		Attempt: Login})}
}

func (s *Broker) connection(ctx context.Context) (*stomp.Conn, chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		return s.conn, s.lost, nil
	}
	d := &net.Dialer{Timeout: s.o.DialTimeout}
	var nc net.Conn
	var err error
	if s.o.TLS != nil {
		nc, err = (&tls.Dialer{NetDialer: d, Config: s.o.TLS}).DialContext(ctx, "tcp", s.o.Address)
	} else {
		nc, err = d.DialContext(ctx, "tcp", s.o.Address)
	}
	if err != nil {
		return nil, nil, broker.DialFailure("stomp "+s.o.Address, err, "")
	}
	opts := []func(*stomp.Conn) error{stomp.ConnOpt.Host(s.o.VHost), stomp.ConnOpt.HeartBeat(10*time.Second, 10*time.Second),
		// go-stomp v3.1.5's Unsubscribe at times waits out this timeout
		// (30 s by default) for a RECEIPT it seems to miss (seen in CI)
		// while an SSE topic is being let go; bound it.
		stomp.ConnOpt.UnsubscribeReceiptTimeout(s.o.DialTimeout),
		stomp.ConnOpt.Logger(stompLog{s.o.Log.With("backend", s.o.Backend, "address", s.o.Address)})}
	cred := s.o.CredentialHolder.Load()
	if c := cred; c != nil {
		opts = append(opts, stomp.ConnOpt.Login(c.Username, c.Password.Reveal()))
	}
	conn, err := stomp.Connect(nc, opts...)
	if err != nil {
		nc.Close()
		said := refusal(err)
		s.login.Observe(cred, err, said)
		return nil, nil, broker.DialFailure("stomp "+s.o.Address, err, said)
	}
	s.login.Observe(cred, nil, "")
	s.conn, s.lost = conn, make(chan struct{})
	return conn, s.lost, nil
}

// drop forgets a failed connection so the next use dials again, and ends
// its subscriptions.
func (s *Broker) drop(conn *stomp.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == conn {
		close(s.lost)
		s.conn = nil
		conn.MustDisconnect()
	}
}

// Publish implements broker.Broker.
func (s *Broker) Publish(ctx context.Context, m broker.Message) error {
	conn, _, err := s.connection(ctx)
	if err != nil {
		return err
	}
	if err := conn.Send("/topic/"+m.Topic, m.ContentType, m.Data, stomp.SendOpt.Receipt); err != nil {
		s.drop(conn)
		return fmt.Errorf("stomp: send: %v: %w", err, broker.ErrUnavailable)
	}
	return nil
}

// Subscribe implements broker.Broker.
func (s *Broker) Subscribe(ctx context.Context, topic string, fn func(broker.Message)) (broker.Subscription, error) {
	conn, lost, err := s.connection(ctx)
	if err != nil {
		return nil, err
	}
	sub, err := conn.Subscribe("/topic/"+topic, stomp.AckAuto)
	if err != nil {
		s.drop(conn)
		return nil, fmt.Errorf("stomp: subscribe: %v: %w", err, broker.ErrUnavailable)
	}
	ss := &stompSub{sub: sub, done: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(ss.ended)
		for m := range sub.C {
			if m.Err != nil {
				if !ss.unsubscribed() {
					s.drop(conn)
				}
				break
			}
			fn(broker.Message{Topic: topic, Data: m.Body, ContentType: m.ContentType})
		}
		ss.once.Do(func() { close(ss.done) })
	}()
	go func() { // a loss seen by another user of the connection ends this one too
		select {
		case <-lost:
			ss.once.Do(func() { close(ss.done) })
		case <-ss.ended:
		}
	}()
	return ss, nil
}

type stompSub struct {
	sub   *stomp.Subscription
	once  sync.Once
	done  chan struct{}
	ended chan struct{}
	unsub sync.Once
	gone  bool
	mu    sync.Mutex
}

func (s *stompSub) unsubscribed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gone
}

func (s *stompSub) Done() <-chan struct{} { return s.done }

func (s *stompSub) Unsubscribe() error {
	var err error
	s.unsub.Do(func() {
		s.mu.Lock()
		s.gone = true
		s.mu.Unlock()
		s.once.Do(func() {}) // not a loss: Done stays open
		err = s.sub.Unsubscribe()
		<-s.ended
	})
	return err
}

// Ready implements broker.Broker: the broker accepts the credential (LoginCheck).
func (s *Broker) Ready(ctx context.Context) error { return s.login.Ready(ctx) }

// Close implements broker.Broker.
func (s *Broker) Close() error {
	s.mu.Lock()
	conn := s.conn
	s.conn = nil
	s.mu.Unlock()
	if conn != nil {
		return conn.Disconnect()
	}
	return nil
}

// stompLog carries go-stomp's own log lines, which it would print to
// stderr with the standard log package, into the gateway's logger. What
// it reports at INFO (a subscription ended by its connection closing, a
// MESSAGE for a subscription already gone) the gateway sees and handles
// itself, so it goes at DEBUG; its warnings and errors (an ERROR frame from
// the broker, ending the connection) at WARN, as the gateway recovers by
// dialing again on the next use.
type stompLog struct{ l *slog.Logger }

func (s stompLog) log(level slog.Level, msg string) {
	s.l.Log(context.Background(), level, "stomp client: "+msg)
}

func (s stompLog) logf(level slog.Level, format string, v []any) {
	if s.l.Enabled(context.Background(), level) { // format only what is kept
		s.log(level, fmt.Sprintf(format, v...))
	}
}

func (s stompLog) Debugf(format string, v ...any)   { s.logf(slog.LevelDebug, format, v) }
func (s stompLog) Infof(format string, v ...any)    { s.logf(slog.LevelDebug, format, v) }
func (s stompLog) Warningf(format string, v ...any) { s.logf(slog.LevelWarn, format, v) }
func (s stompLog) Errorf(format string, v ...any)   { s.logf(slog.LevelWarn, format, v) }
func (s stompLog) Debug(msg string)                 { s.log(slog.LevelDebug, msg) }
func (s stompLog) Info(msg string)                  { s.log(slog.LevelDebug, msg) }
func (s stompLog) Warning(msg string)               { s.log(slog.LevelWarn, msg) }
func (s stompLog) Error(msg string)                 { s.log(slog.LevelWarn, msg) }

// Login is broker.LoginFunc for STOMP: it sends CONNECT with the
// credential; a broker ERROR instead of CONNECTED is a refusal (RabbitMQ:
// "Access refused for user 'gw'").
func Login(ctx context.Context, l broker.Login, timeout time.Duration) (said string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := l.Dial(ctx)
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
		return refusal(err), err
	}
	return "", conn.MustDisconnect()
}

// refusal is what the broker said when err is an ERROR frame in answer to
// CONNECT (RabbitMQ: "Access refused for user 'gw'"), "" otherwise.
func refusal(err error) string {
	var se stomp.Error
	if errors.As(err, &se) && se.Frame != nil && se.Frame.Command == stompframe.ERROR {
		return strings.TrimSpace(se.Message + ": " + string(se.Frame.Body))
	}
	return ""
}
