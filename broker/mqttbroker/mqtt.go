// Package mqttbroker is the MQTT 3.1.1 client behind broker.Broker
// (paho.mqtt.golang, for Mosquitto or RabbitMQ's MQTT plugin) and its
// login check (Login). Only cmd/wsbridge, which wires backends, imports
// it; it is what links paho.
package mqttbroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/keyring"
)

// Options configure an MQTT broker (Mosquitto, RabbitMQ's MQTT plugin).
type Options struct {
	broker.Endpoint
}

// Broker is a broker.Broker on paho.mqtt.golang. Topic "a.b" is MQTT topic "a/b".
// Messages are published and subscribed at QoS 1, so a publish returns
// after the broker's PUBACK. MQTT 3.1.1 has no content type: it is not
// carried. The session is clean: after a lost connection, subscriptions end
// (Done closes) and are made again by whoever needs them.
//
// paho keeps one callback per topic filter: a second Subscribe to a filter
// replaces the first's callback, and the first Unsubscribe removes both.
// So the broker is subscribed once per filter, whose callback calls every
// subscription's handler, and unsubscribed when the last one goes.
type Broker struct {
	o     Options
	c     mqtt.Client
	login *broker.LoginCheck // readiness, fed by every connect
	// cred is what the connect under way logs in with: taken from the
	// holder as it starts, for paho to ask for and the outcome to name.
	cred atomic.Pointer[keyring.Credential]

	mu   sync.Mutex
	lost chan struct{} // closed when the current connection is lost

	fmu     sync.Mutex
	filters map[string]*mqttFilter
}

// mqttFilter is one broker subscription and the handlers sharing it.
type mqttFilter struct {
	lost  chan struct{} // the connection it was made on
	ready chan struct{} // closed once the SUBACK (or a failure) is in
	err   error         // set before ready closes
	// fns is replaced, never changed, so the callback reads it unlocked.
	fns     atomic.Pointer[[]*mqttSub]
	closing bool          // its last subscription left; guarded by Broker.fmu
	gone    chan struct{} // closed once the broker unsubscription is done
}

// New returns an MQTT broker; it connects on first use.
func New(o Options) *Broker {
	o.Endpoint = o.WithDefaults()
	m := &Broker{o: o, lost: make(chan struct{}), filters: map[string]*mqttFilter{}}
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
	// Asked at every connect, so that a keyring reload reaches the next.
	opts.SetCredentialsProvider(func() (string, string) {
		if c := m.cred.Load(); c != nil {
			return c.Username, c.Password.Reveal()
		}
		return "", ""
	})
	m.c = mqtt.NewClient(opts)
	m.login = broker.NewLoginCheck(broker.Login{Endpoint: o.Endpoint, Protocol: "mqtt", Attempt: Login})
	return m
}

// mqttTopic maps a broker-neutral topic onto MQTT's separator.
func mqttTopic(topic string) string { return strings.ReplaceAll(topic, ".", "/") }

// pahoStillClosing is paho's (unexported) answer to a Connect while the
// last connection is still being wound down: for a moment after it is
// lost the client is neither open nor disconnected.
const pahoStillClosing = "status can only transition to connecting from disconnected"

// connect returns the channel closed when this connection is lost. Asked
// while paho still winds the lost connection down, it tries again for up
// to closingWait (paho has no event for the end of that), so that the
// error it returns is the broker's, such as a refused dial, not paho's
// state.
func (m *Broker) connect() (chan struct{}, error) {
	const closingWait, every = 500 * time.Millisecond, 10 * time.Millisecond
	for waited := time.Duration(0); ; waited += every {
		lost, closing, err := m.connectOnce()
		switch {
		case !closing:
			return lost, err
		case waited >= closingWait:
			return nil, broker.DialFailure("mqtt "+m.o.Address, err, "")
		}
		time.Sleep(every)
	}
}

// connectOnce is connect's one attempt; closing reports paho's
// pahoStillClosing answer, to be tried again.
func (m *Broker) connectOnce() (lost chan struct{}, closing bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.c.IsConnectionOpen() {
		cred := m.o.CredentialHolder.Load()
		m.cred.Store(cred)
		t := m.c.Connect()
		if !t.WaitTimeout(m.o.DialTimeout) {
			return nil, false, fmt.Errorf("mqtt %s: connect timed out: %w", m.o.Address, broker.ErrUnreachable)
		}
		if err := t.Error(); err != nil {
			if err.Error() == pahoStillClosing {
				return nil, true, err
			}
			said := refusal(err)
			m.login.Observe(cred, err, said)
			return nil, false, broker.DialFailure("mqtt "+m.o.Address, err, said)
		}
		m.login.Observe(cred, nil, "")
	}
	return m.lost, false, nil
}

func wait(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Publish implements broker.Broker.
func (m *Broker) Publish(ctx context.Context, msg broker.Message) error {
	if _, err := m.connect(); err != nil {
		return err
	}
	if err := wait(ctx, m.c.Publish(mqttTopic(msg.Topic), 1, false, msg.Data)); err != nil {
		return fmt.Errorf("mqtt: publish: %v: %w", err, broker.ErrUnavailable)
	}
	return nil
}

// Subscribe implements broker.Broker.
func (m *Broker) Subscribe(ctx context.Context, topic string, fn func(broker.Message)) (broker.Subscription, error) {
	lost, err := m.connect()
	if err != nil {
		return nil, err
	}
	mt := mqttTopic(topic)
	s := &mqttSub{m: m, topic: mt, lost: lost, fn: func(pm mqtt.Message) { fn(broker.Message{Topic: topic, Data: pm.Payload()}) }}
	for {
		m.fmu.Lock()
		f := m.filters[mt]
		if f != nil && f.closing {
			// Its UNSUBSCRIBE is on the way: a SUBSCRIBE sent now would be
			// undone by it, here and at the broker.
			m.fmu.Unlock()
			select {
			case <-f.gone:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("mqtt: subscribe %q: %v: %w", mt, ctx.Err(), broker.ErrUnavailable)
			}
		}
		if f == nil || f.lost != lost { // none, or one the lost connection took
			f = &mqttFilter{lost: lost, ready: make(chan struct{}), gone: make(chan struct{})}
			m.filters[mt] = f
			f.add(s)
			m.fmu.Unlock()
			f.err = m.subscribe(ctx, mt, f)
			close(f.ready)
			if f.err != nil {
				m.fmu.Lock()
				if m.filters[mt] == f {
					delete(m.filters, mt)
				}
				m.fmu.Unlock()
				return nil, f.err
			}
			s.f = f
			return s, nil
		}
		f.add(s)
		m.fmu.Unlock()
		select {
		case <-f.ready:
		case <-ctx.Done():
			m.fmu.Lock()
			f.remove(s)
			m.fmu.Unlock()
			return nil, fmt.Errorf("mqtt: subscribe %q: %v: %w", mt, ctx.Err(), broker.ErrUnavailable)
		}
		if f.err != nil {
			return nil, f.err
		}
		s.f = f
		return s, nil
	}
}

// subscribe makes f's broker subscription to filter mt.
func (m *Broker) subscribe(ctx context.Context, mt string, f *mqttFilter) error {
	t := m.c.Subscribe(mt, 1, func(_ mqtt.Client, pm mqtt.Message) {
		for _, s := range *f.fns.Load() {
			s.fn(pm)
		}
	})
	if err := wait(ctx, t); err != nil {
		return fmt.Errorf("mqtt: subscribe %q: %v: %w", mt, err, broker.ErrUnavailable)
	}
	if code := t.(*mqtt.SubscribeToken).Result()[mt]; code == 0x80 {
		return fmt.Errorf("mqtt: the broker refused the subscription to %q", mt)
	}
	return nil
}

// add and remove change f's handlers; call with Broker.fmu held.
func (f *mqttFilter) add(s *mqttSub) {
	var fns []*mqttSub
	if p := f.fns.Load(); p != nil {
		fns = append(fns, *p...)
	}
	fns = append(fns, s)
	f.fns.Store(&fns)
}

func (f *mqttFilter) remove(s *mqttSub) (left int) {
	var fns []*mqttSub
	for _, x := range *f.fns.Load() {
		if x != s {
			fns = append(fns, x)
		}
	}
	f.fns.Store(&fns)
	return len(fns)
}

type mqttSub struct {
	m     *Broker
	topic string
	lost  chan struct{}
	fn    func(mqtt.Message)
	f     *mqttFilter
	once  sync.Once
}

func (s *mqttSub) Done() <-chan struct{} { return s.lost }

// Unsubscribe removes s's handler; the last handler of a filter takes the
// broker subscription with it.
func (s *mqttSub) Unsubscribe() error {
	var err error
	s.once.Do(func() {
		m, f := s.m, s.f
		m.fmu.Lock()
		last := f.remove(s) == 0 && m.filters[s.topic] == f
		f.closing = last
		m.fmu.Unlock()
		if !last {
			return
		}
		defer func() {
			m.fmu.Lock()
			if m.filters[s.topic] == f {
				delete(m.filters, s.topic)
			}
			m.fmu.Unlock()
			close(f.gone)
		}()
		select {
		case <-f.lost:
			return // a lost clean session has no subscriptions left
		default:
		}
		if !m.c.IsConnectionOpen() {
			return
		}
		t := m.c.Unsubscribe(s.topic)
		t.WaitTimeout(m.o.DialTimeout)
		err = t.Error()
	})
	return err
}

// Ready implements broker.Broker.
func (m *Broker) Ready(ctx context.Context) error { return m.login.Ready(ctx) }

// Close implements broker.Broker. paho reports no loss for a disconnect
// it was asked for, so Close ends the connection's subscriptions itself.
func (m *Broker) Close() error {
	m.c.Disconnect(250)
	m.mu.Lock()
	close(m.lost)
	m.lost = make(chan struct{})
	m.mu.Unlock()
	return nil
}

// Login is broker.LoginFunc for MQTT: it connects with a clean session
// under a client identifier of its own, so that no one's session is taken
// over.
func Login(_ context.Context, l broker.Login, timeout time.Duration) (said string, err error) {
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
		return refusal(err), err
	}
	c.Disconnect(0)
	return "", nil
}

// refusal is what the broker said when err is a CONNACK refusing the
// credential, "" otherwise.
func refusal(err error) string {
	if errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		return "CONNACK: " + err.Error()
	}
	return ""
}
