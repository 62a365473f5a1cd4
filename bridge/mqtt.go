package bridge

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/wsbridge/wsbridge/keyring"
)

// MQTTOptions configure an MQTT broker (Mosquitto, RabbitMQ's MQTT plugin).
type MQTTOptions struct {
	Address     string // host:port
	Credential  *keyring.Credential
	DialTimeout time.Duration
	// TLS, when set, reaches the broker over TLS (mqtts).
	TLS *tls.Config
	Log *slog.Logger
}

// MQTT is a Broker on paho.mqtt.golang. Topic "a.b" is MQTT topic "a/b".
// Messages are published and subscribed at QoS 1, so a publish returns
// after the broker's PUBACK. MQTT 3.1.1 has no content type: it is not
// carried. The session is clean: after a lost connection, subscriptions end
// (Done closes) and are made again by whoever needs them.
type MQTT struct {
	o MQTTOptions
	c mqtt.Client

	mu   sync.Mutex
	lost chan struct{} // closed when the current connection is lost
}

// NewMQTT returns an MQTT broker; it connects on first use.
func NewMQTT(o MQTTOptions) *MQTT {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	m := &MQTT{o: o, lost: make(chan struct{})}
	var id [6]byte
	rand.Read(id[:])
	scheme := "tcp://"
	if o.TLS != nil {
		scheme = "ssl://"
	}
	opts := mqtt.NewClientOptions().
		AddBroker(scheme + o.Address).
		SetTLSConfig(o.TLS).
		SetClientID("wsbridge-" + hex.EncodeToString(id[:])).
		SetCleanSession(true).
		SetOrderMatters(true).
		SetAutoReconnect(false).
		SetConnectTimeout(o.DialTimeout).
		SetWriteTimeout(o.DialTimeout).
		SetConnectionLostHandler(func(mqtt.Client, error) {
			m.mu.Lock()
			close(m.lost)
			m.lost = make(chan struct{})
			m.mu.Unlock()
		})
	if c := o.Credential; c != nil {
		opts.SetUsername(c.Username).SetPassword(c.Password.Reveal())
	}
	m.c = mqtt.NewClient(opts)
	return m
}

// mqttTopic maps a broker-neutral topic onto MQTT's separator.
func mqttTopic(topic string) string { return strings.ReplaceAll(topic, ".", "/") }

// connect returns the channel closed when this connection is lost.
func (m *MQTT) connect() (chan struct{}, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.c.IsConnectionOpen() {
		t := m.c.Connect()
		if !t.WaitTimeout(m.o.DialTimeout) {
			return nil, fmt.Errorf("mqtt %s: connect timed out: %w", m.o.Address, ErrUnavailable)
		}
		if err := t.Error(); err != nil {
			return nil, fmt.Errorf("mqtt %s: %v: %w", m.o.Address, err, ErrUnavailable)
		}
	}
	return m.lost, nil
}

func wait(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Publish implements Broker.
func (m *MQTT) Publish(ctx context.Context, msg Message) error {
	if _, err := m.connect(); err != nil {
		return err
	}
	if err := wait(ctx, m.c.Publish(mqttTopic(msg.Topic), 1, false, msg.Data)); err != nil {
		return fmt.Errorf("mqtt: publish: %v: %w", err, ErrUnavailable)
	}
	return nil
}

// Subscribe implements Broker.
func (m *MQTT) Subscribe(ctx context.Context, topic string, fn func(Message)) (Subscription, error) {
	lost, err := m.connect()
	if err != nil {
		return nil, err
	}
	mt := mqttTopic(topic)
	t := m.c.Subscribe(mt, 1, func(_ mqtt.Client, pm mqtt.Message) {
		fn(Message{Topic: topic, Data: pm.Payload()})
	})
	if err := wait(ctx, t); err != nil {
		return nil, fmt.Errorf("mqtt: subscribe %q: %v: %w", mt, err, ErrUnavailable)
	}
	if code := t.(*mqtt.SubscribeToken).Result()[mt]; code == 0x80 {
		return nil, fmt.Errorf("mqtt: the broker refused the subscription to %q", mt)
	}
	return &mqttSub{m: m, topic: mt, lost: lost}, nil
}

type mqttSub struct {
	m     *MQTT
	topic string
	lost  chan struct{}
}

func (s *mqttSub) Done() <-chan struct{} { return s.lost }

func (s *mqttSub) Unsubscribe() error {
	if !s.m.c.IsConnectionOpen() {
		return nil // a lost clean session has no subscriptions left
	}
	t := s.m.c.Unsubscribe(s.topic)
	t.WaitTimeout(s.m.o.DialTimeout)
	return t.Error()
}

// Ready implements Broker.
func (m *MQTT) Ready(ctx context.Context) error { return DialCheck(m.o.Address)(ctx) }

// Close implements Broker.
func (m *MQTT) Close() error {
	m.c.Disconnect(250)
	return nil
}
