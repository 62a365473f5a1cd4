// Package amqpbroker is the AMQP 0-9-1 client behind broker.Broker
// (amqp091-go, for RabbitMQ) and its login check (Login). Only
// cmd/wsbridge, which wires backends, imports it; it is what links
// amqp091-go.
package amqpbroker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/wsbridge/wsbridge/broker"
)

// Options configure an AMQP 0-9-1 broker (RabbitMQ).
type Options struct {
	broker.Endpoint
	VHost string // the virtual host (default /)
	// Exchange is the topic exchange topics are routing keys on (default
	// amq.topic).
	Exchange string
	// Prefetch bounds unacknowledged deliveries per subscription, so a
	// subscription's buffer in the gateway is bounded too (default 256).
	Prefetch int
}

// Broker is a broker.Broker on amqp091-go. Topics are routing keys on a topic
// exchange (default amq.topic); each subscription is an exclusive,
// auto-delete queue bound with the topic as its key. Publishes wait for
// the broker's confirm. The connection is dialled on first use and again
// after it is lost.
type Broker struct {
	o Options

	login *broker.LoginCheck // readiness, fed by every dial

	mu    sync.Mutex
	conn  *amqp.Connection
	pubCh *amqp.Channel
}

// New returns an AMQP broker; it connects lazily.
func New(o Options) *Broker {
	if o.Exchange == "" {
		o.Exchange = "amq.topic"
	}
	if o.VHost == "" {
		o.VHost = "/"
	}
	if o.Prefetch <= 0 {
		o.Prefetch = 256
	}
	o.Endpoint = o.WithDefaults()
	return &Broker{o: o, login: broker.NewLoginCheck(broker.Login{Endpoint: o.Endpoint, Protocol: "amqp", VHost: o.VHost,
		Attempt: Login})}
}

// connection returns the live connection, dialling if needed. Call with
// a.mu held.
func (a *Broker) connection() (*amqp.Connection, error) {
	if a.conn != nil && !a.conn.IsClosed() {
		return a.conn, nil
	}
	cfg := amqp.Config{
		Vhost:     a.o.VHost,
		Heartbeat: 10 * time.Second,
		Dial:      amqp.DefaultDial(a.o.DialTimeout),
		Properties: amqp.Table{
			"connection_name": "wsbridge",
		},
	}
	cred := a.o.CredentialHolder.Load()
	if c := cred; c != nil {
		cfg.SASL = []amqp.Authentication{&amqp.PlainAuth{Username: c.Username, Password: c.Password.Reveal()}}
	}
	scheme := "amqp://"
	if a.o.TLS != nil {
		scheme, cfg.TLSClientConfig = "amqps://", a.o.TLS
	}
	// Credentials go through SASL, never the URL, so no error can echo them.
	conn, err := amqp.DialConfig(scheme+a.o.Address+"/", cfg)
	if err != nil {
		said := refusal(err, a.o.VHost)
		a.login.Observe(cred, err, said)
		return nil, broker.DialFailure("amqp "+a.o.Address, err, said)
	}
	a.login.Observe(cred, nil, "")
	a.conn, a.pubCh = conn, nil
	return conn, nil
}

// Publish implements broker.Broker.
func (a *Broker) Publish(ctx context.Context, m broker.Message) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	conn, err := a.connection()
	if err != nil {
		return err
	}
	if a.pubCh == nil || a.pubCh.IsClosed() {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("amqp: opening a channel: %v: %w", err, broker.ErrUnavailable)
		}
		if err := ch.Confirm(false); err != nil {
			ch.Close()
			return fmt.Errorf("amqp: enabling confirms: %v: %w", err, broker.ErrUnavailable)
		}
		a.pubCh = ch
	}
	dc, err := a.pubCh.PublishWithDeferredConfirmWithContext(ctx, a.o.Exchange, m.Topic, false, false,
		amqp.Publishing{ContentType: m.ContentType, Body: m.Data})
	if err != nil {
		return fmt.Errorf("amqp: publish: %v: %w", err, broker.ErrUnavailable)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("amqp: waiting for the broker's confirm: %v: %w", err, broker.ErrUnavailable)
	}
	if !ok {
		if a.pubCh.IsClosed() { // amqp091-go answers a confirm its channel's close cut short as a nack
			return fmt.Errorf("amqp: the channel closed before the broker confirmed the message: %w", broker.ErrUnavailable)
		}
		return fmt.Errorf("amqp: the broker refused the message (nack): %w", broker.ErrUnavailable)
	}
	return nil
}

// Subscribe implements broker.Broker.
func (a *Broker) Subscribe(_ context.Context, topic string, fn func(broker.Message)) (broker.Subscription, error) {
	a.mu.Lock()
	conn, err := a.connection()
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqp: opening a channel: %v: %w", err, broker.ErrUnavailable)
	}
	fail := func(what string, err error) (broker.Subscription, error) {
		ch.Close()
		return nil, fmt.Errorf("amqp: %s for topic %q: %v: %w", what, topic, err, broker.ErrUnavailable)
	}
	if err := ch.Qos(a.o.Prefetch, 0, false); err != nil {
		return fail("setting prefetch", err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return fail("declaring a queue", err)
	}
	if err := ch.QueueBind(q.Name, topic, a.o.Exchange, false, nil); err != nil {
		return fail("binding to "+a.o.Exchange, err)
	}
	// Not ConsumeWithContext: ctx is the first subscriber's request, and the
	// subscription outlives it.
	tag := "wsbridge-" + q.Name
	deliveries, err := ch.Consume(q.Name, tag, false, true, false, false, nil)
	if err != nil {
		return fail("consuming", err)
	}
	s := &amqpSub{ch: ch, tag: tag, done: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(s.ended)
		for d := range deliveries {
			fn(broker.Message{Topic: topic, Data: d.Body, ContentType: d.ContentType})
			if err := d.Ack(false); err != nil {
				break
			}
		}
		s.once.Do(func() { close(s.done) })
	}()
	return s, nil
}

type amqpSub struct {
	ch    *amqp.Channel
	tag   string // the consumer's
	once  sync.Once
	done  chan struct{} // closed when the subscription ends by itself
	ended chan struct{} // closed when the delivery goroutine has returned
}

func (s *amqpSub) Done() <-chan struct{} { return s.done }

// Unsubscribe cancels the consumer and waits for the delivery loop to
// have acked what it was handed before closing the channel: an ack sent
// after the channel's close reached RabbitMQ is a method on a closed
// channel, which it answers by closing the whole connection (504
// CHANNEL_ERROR), taking the publisher's channel and every other
// subscription with it.
func (s *amqpSub) Unsubscribe() error {
	s.once.Do(func() {}) // an unsubscribe is not a loss: Done stays open
	cerr := s.ch.Cancel(s.tag, false)
	<-s.ended // the deliveries channel closes once the cancel is through
	err := s.ch.Close()
	if cerr != nil {
		return cerr
	}
	return err
}

// Ready implements broker.Broker: the broker accepts the credential (LoginCheck).
func (a *Broker) Ready(ctx context.Context) error { return a.login.Ready(ctx) }

// Close implements broker.Broker.
func (a *Broker) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn == nil {
		return nil
	}
	err := a.conn.Close()
	a.conn, a.pubCh = nil, nil
	return err
}

// Login is broker.LoginFunc for AMQP 0-9-1: it logs in with SASL PLAIN
// (never the URL, so no error can echo the password) and opens the
// virtual host. amqp091-go reports a refused login as ErrCredentials,
// having lost the broker's text, and a refused virtual host as ErrVhost.
func Login(_ context.Context, l broker.Login, timeout time.Duration) (said string, err error) {
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
		return refusal(err, vhost), err
	}
	return "", conn.Close()
}

// refusal is what the broker said when err is its refusal of the
// gateway's login or of the virtual host, "" otherwise. amqp091-go
// reports a refused login as ErrCredentials, the broker's text lost.
func refusal(err error, vhost string) string {
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
