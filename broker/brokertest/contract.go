package brokertest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/keyring"
)

// Harness is what Run needs to hold one broker.Broker implementation to
// the contract.
type Harness struct {
	// New makes the broker under test, connected to a real broker.
	New func(t *testing.T) broker.Broker
	// At makes one for a broker at addr (host:port) with a dial timeout of
	// about a second: a closed port, or one that hangs up on every
	// connection.
	At func(t *testing.T, addr string) broker.Broker
	// Refusing, when set, makes one whose broker refuses its credential,
	// and returns the password of the user it names: no error may carry
	// it.
	Refusing func(t *testing.T) (b broker.Broker, password string)
	// ContentType says the protocol carries a message's content type.
	ContentType bool
	// MaxPayload, when set, is the largest message the broker New reaches
	// takes: a larger publish is ErrTooLarge.
	MaxPayload int
	// Background says the client connects and reconnects on its own
	// (nats.go) rather than when it is used: a refusal shows in Ready
	// first, and its dials cannot be counted per attempt.
	Background bool
}

// Run holds the implementation to the contract of broker.Broker against
// real brokers: messages arrive in order with body (and content type)
// unchanged; Unsubscribe stops delivery and is not a loss; several
// subscriptions to a topic, direct or through broker.Shared, each get
// every message; Close ends subscriptions; a broker that is down is
// ErrUnavailable and not ready, a refused credential ErrLoginRefused, and
// a message past the broker's limit ErrTooLarge.
func Run(t *testing.T, h Harness) {
	t.Run("publish and subscribe", func(t *testing.T) { publishSubscribe(t, h) })
	t.Run("in order", func(t *testing.T) { inOrder(t, h) })
	t.Run("shared", func(t *testing.T) { shared(t, h) })
	t.Run("close ends subscriptions", func(t *testing.T) { closeEnds(t, h) })
	t.Run("down", func(t *testing.T) { down(t, h) })
	t.Run("hang-up fails once with the cause", func(t *testing.T) { hangUpOnce(t, h) })
	if h.Refusing != nil {
		t.Run("refused login", func(t *testing.T) { refusedLogin(t, h) })
	}
	if h.MaxPayload > 0 {
		t.Run("too large", func(t *testing.T) { tooLarge(t, h) })
	}
}

// ready makes a broker with h.New and waits until it is ready.
func ready(t *testing.T, h Harness) (broker.Broker, context.Context) {
	t.Helper()
	b := h.New(t)
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if err := b.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	return b, ctx
}

// topic is a topic of the test's own on the shared brokers.
func topic(what string) string {
	return fmt.Sprintf("wsbridge.contract.%s.%d", what, time.Now().UnixNano())
}

// A subscription made before a publish gets it, body unchanged, content
// type carried where the protocol has one; after Unsubscribe nothing more
// arrives and Done stays open.
func publishSubscribe(t *testing.T, h Harness) {
	b, ctx := ready(t, h)
	topic := topic("pubsub")
	got := make(chan broker.Message, 16)
	sub, err := b.Subscribe(ctx, topic, func(m broker.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("line 1\n\x00\xffbinary")
	if err := b.Publish(ctx, broker.Message{Topic: topic, Data: body, ContentType: "application/x-test"}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if string(m.Data) != string(body) || m.Topic != topic {
			t.Fatalf("got %q on %q", m.Data, m.Topic)
		}
		if h.ContentType && m.ContentType != "application/x-test" {
			t.Fatalf("content type %q", m.ContentType)
		}
	case <-ctx.Done():
		t.Fatal("no message")
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, broker.Message{Topic: topic, Data: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	// A second subscription proves "after" went out; the first must not
	// have had it.
	probe := make(chan broker.Message, 1)
	sub2, err := b.Subscribe(ctx, topic, func(m broker.Message) { probe <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Unsubscribe()
	b.Publish(ctx, broker.Message{Topic: topic, Data: []byte("probe")})
	select {
	case <-probe:
	case <-ctx.Done():
		t.Fatal("probe not delivered")
	}
	select {
	case m := <-got:
		t.Fatalf("unsubscribed handler got %q", m.Data)
	case <-sub.Done():
		t.Fatal("Done closed by Unsubscribe")
	default:
	}

	// Two more subscriptions to the topic: all three get each message, and
	// unsubscribing one leaves the others. (paho keeps one callback per
	// filter: before MQTT shared one, the last subscription took the
	// others' messages and the first Unsubscribe ended them all.)
	more := []chan broker.Message{probe, make(chan broker.Message, 1), make(chan broker.Message, 1)}
	for _, c := range more[1:] {
		s, err := b.Subscribe(ctx, topic, func(m broker.Message) { c <- m })
		if err != nil {
			t.Fatal(err)
		}
		defer s.Unsubscribe()
	}
	expectAll(t, ctx, b, topic, more, "to three")
	if err := sub2.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	expectAll(t, ctx, b, topic, more[1:], "to two")
}

// expectAll publishes body to topic and waits until each of chans has it.
func expectAll(t *testing.T, ctx context.Context, b broker.Broker, topic string, chans []chan broker.Message, body string) {
	t.Helper()
	if err := b.Publish(ctx, broker.Message{Topic: topic, Data: []byte(body)}); err != nil {
		t.Fatal(err)
	}
	for i, c := range chans {
		select {
		case m := <-c:
			if string(m.Data) != body {
				t.Fatalf("subscription %d got %q, want %q", i, m.Data, body)
			}
		case <-ctx.Done():
			t.Fatalf("subscription %d of %d did not get %q", i, len(chans), body)
		}
	}
}

// Messages published one after another arrive in that order, one handler
// call at a time.
func inOrder(t *testing.T, h Harness) {
	b, ctx := ready(t, h)
	topic := topic("order")
	const n = 200
	got := make(chan string, n)
	var inside atomic.Int32
	sub, err := b.Subscribe(ctx, topic, func(m broker.Message) {
		if inside.Add(1) != 1 {
			t.Error("handler called again before it returned")
		}
		got <- string(m.Data)
		inside.Add(-1)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for i := range n {
		if err := b.Publish(ctx, broker.Message{Topic: topic, Data: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		select {
		case m := <-got:
			if want := fmt.Sprint(i); m != want {
				t.Fatalf("message %d is %q: out of order", i, m)
			}
		case <-ctx.Done():
			t.Fatalf("only %d of %d messages arrived", i, n)
		}
	}
}

// Two subscribers to a topic through broker.Shared share one upstream
// subscription and each get every message; the first leaving does not
// end the other's, and the last ends the upstream one.
func shared(t *testing.T, h Harness) {
	b, ctx := ready(t, h)
	s := broker.NewShared(b)
	topic := topic("shared")
	a, c := make(chan broker.Message, 4), make(chan broker.Message, 4)
	subA, err := s.Subscribe(ctx, topic, func(m broker.Message) { a <- m })
	if err != nil {
		t.Fatal(err)
	}
	subC, err := s.Subscribe(ctx, topic, func(m broker.Message) { c <- m })
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Topics(); n != 1 {
		t.Fatalf("%d upstream subscriptions for one topic", n)
	}
	expectAll(t, ctx, s, topic, []chan broker.Message{a, c}, "to both")
	if err := subA.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	expectAll(t, ctx, s, topic, []chan broker.Message{c}, "to one")
	select {
	case m := <-a:
		t.Fatalf("the subscriber that left got %q", m.Data)
	case <-subC.Done():
		t.Fatal("the other subscription ended")
	default:
	}
	if err := subC.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if n := s.Topics(); n != 0 {
		t.Fatalf("%d upstream subscriptions left after the last subscriber", n)
	}
	// A subscription of its own proves the next message went out; those
	// that left must not have had it.
	probe := make(chan broker.Message, 1)
	sub, err := b.Subscribe(ctx, topic, func(m broker.Message) { probe <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	expectAll(t, ctx, b, topic, []chan broker.Message{probe}, "to none")
	select {
	case m := <-a:
		t.Fatalf("a subscriber that left got %q", m.Data)
	case m := <-c:
		t.Fatalf("a subscriber that left got %q", m.Data)
	default:
	}
}

// Close ends every subscription: Done closes.
func closeEnds(t *testing.T, h Harness) {
	b, ctx := ready(t, h)
	var subs []broker.Subscription
	for i := range 2 {
		sub, err := b.Subscribe(ctx, topic(fmt.Sprint("close", i)), func(broker.Message) {})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for i, sub := range subs {
		select {
		case <-sub.Done():
		case <-ctx.Done():
			t.Fatalf("subscription %d outlived Close", i)
		}
	}
}

// A broker that is not there is ErrUnavailable to Publish and Subscribe,
// and not ready.
func down(t *testing.T, h Harness) {
	b := h.At(t, DeadAddr(t))
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Publish(ctx, broker.Message{Topic: "a", Data: []byte("x")}); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("publish with the broker down: %v", err)
	}
	if _, err := b.Subscribe(ctx, "a", func(broker.Message) {}); !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("subscribe with the broker down: %v", err)
	}
	if b.Ready(ctx) == nil {
		t.Error("ready with the broker down")
	}
}

// A subscription through Shared whose broker cannot be reached fails at
// once with the broker client's own error, after one attempt: not after
// dialling the broker over and over until the caller's context ends, with
// nothing but "context deadline exceeded" to show for it (an SSE stream
// was held that long and its log line had no cause).
func hangUpOnce(t *testing.T, h Harness) {
	addr, dials := hangUp(t)
	var perAttempt int64
	if !h.Background {
		// One attempt of the client itself, for its count of dials (paho
		// tries MQTT 3.1.1, then 3.1).
		alone := h.At(t, addr)
		t.Cleanup(func() { alone.Close() })
		if _, err := alone.Subscribe(context.Background(), "a", func(broker.Message) {}); err == nil {
			t.Fatal("subscribed through a broker that hangs up")
		}
		perAttempt = dials.Swap(0)
	}
	b := h.At(t, addr)
	t.Cleanup(func() { b.Close() })
	shared := broker.NewShared(b)
	const patience = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	start := time.Now()
	_, err := shared.Subscribe(ctx, "a", func(broker.Message) {})
	took := time.Since(start)
	if !errors.Is(err, broker.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the broker client's error wrapping ErrUnavailable", err)
	}
	if took > patience/2 {
		t.Fatalf("failed after %s, want well within the caller's %s", took, patience)
	}
	if n := dials.Load(); !h.Background && n != perAttempt {
		t.Fatalf("%d dials, want %d (one attempt)", n, perAttempt)
	}
	if shared.Topics() != 0 {
		t.Fatalf("%d upstream subscriptions left", shared.Topics())
	}
}

// hangUp is a loopback address that takes every connection and closes it
// at once, as a broker going down does; it counts them.
func hangUp(t *testing.T) (addr string, dials *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dials = new(atomic.Int64)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			c.Close()
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String(), dials
}

// A broker refusing the gateway's credential makes Subscribe and Publish
// fail with ErrLoginRefused as well as ErrUnavailable, so the SSE hub can
// tell the operator which it is; the error carries no password.
func refusedLogin(t *testing.T, h Harness) {
	b, password := h.Refusing(t)
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, broker.ErrLoginRefused) || !errors.Is(err, broker.ErrUnavailable) {
			t.Fatalf("%s: %v, want ErrLoginRefused and ErrUnavailable", what, err)
		}
		if strings.Contains(err.Error(), password) {
			t.Fatalf("%s: the error carries the password: %v", what, err)
		}
	}
	if h.Background {
		// The client learns of the refusal from its first attempt, which
		// has no event of its own outside its package: readiness says
		// when.
		for !errors.Is(b.Ready(ctx), broker.ErrLoginRefused) {
			if ctx.Err() != nil {
				t.Fatal("the refusal never showed")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	_, err := b.Subscribe(ctx, "a", func(broker.Message) {})
	check("subscribe", err)
	check("publish", b.Publish(ctx, broker.Message{Topic: "a", Data: []byte("x")}))
}

// A message past the broker's limit is ErrTooLarge, not ErrUnavailable:
// retrying does not help. One within it still goes through.
func tooLarge(t *testing.T, h Harness) {
	b, ctx := ready(t, h)
	topic := topic("large")
	err := b.Publish(ctx, broker.Message{Topic: topic, Data: make([]byte, h.MaxPayload+1), ContentType: "application/octet-stream"})
	if !errors.Is(err, broker.ErrTooLarge) || errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("publishing %d bytes past a limit of %d: %v, want ErrTooLarge", h.MaxPayload+1, h.MaxPayload, err)
	}
	if err := b.Publish(ctx, broker.Message{Topic: topic, Data: make([]byte, h.MaxPayload/2)}); err != nil {
		t.Fatalf("publishing half the limit after a refusal: %v", err)
	}
}

// RunTLS holds the implementation to reaching its broker over TLS,
// trusting a CA file: mk makes a broker whose broker side presents a
// certificate from ca, and whose client trusts conf. A broker whose
// certificate the CA did not sign cannot be published to.
func RunTLS(t *testing.T, mk func(t *testing.T, ca *CA, conf *tls.Config) broker.Broker) {
	ca := NewCA(t)
	t.Run("over tls", func(t *testing.T) {
		conf, err := front.ClientTLS{CAFile: ca.File}.Config("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		b := mk(t, ca, conf)
		t.Cleanup(func() { b.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		topic := topic("tls")
		got := make(chan broker.Message, 1)
		if _, err := b.Subscribe(ctx, topic, func(m broker.Message) { got <- m }); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, broker.Message{Topic: topic, Data: []byte("over tls")}); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if string(m.Data) != "over tls" {
				t.Fatalf("got %q", m.Data)
			}
		case <-ctx.Done():
			t.Fatal("no message over TLS")
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		other, err := front.ClientTLS{CAFile: NewCA(t).File}.Config("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		b := mk(t, ca, other)
		t.Cleanup(func() { b.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := b.Publish(ctx, broker.Message{Topic: "wsbridge.tls.untrusted", Data: []byte("x")}); err == nil {
			t.Fatal("published to a broker whose certificate is not trusted")
		}
	})
}

// RunLogin holds a LoginFunc to what readiness and a CLI check rely on,
// through l.Try against a broker that knows user with password: the right
// password is accepted; a wrong one (and, with vhost, a virtual host the
// user may not open) is ErrLoginRefused whose text names no one, with the
// broker's words kept for the log and no password in them.
func RunLogin(t *testing.T, l broker.Login, user, password string, vhost bool) {
	right := &keyring.Credential{Username: user, Password: keyring.NewSecret(password)}
	wrong := &keyring.Credential{Username: user, Password: keyring.NewSecret("not-" + password)}
	ok, bad, novhost := l, l, l
	ok.Credential, bad.Credential = right, wrong
	novhost.Credential, novhost.VHost = right, "wsbridge-no-such-vhost"
	type loginCase struct {
		name   string
		login  broker.Login
		refuse bool
	}
	cases := []loginCase{{"right password", ok, false}, {"wrong password", bad, true}}
	if vhost {
		cases = append(cases, loginCase{"vhost not allowed", novhost, true})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := tc.login.Try(ctx)
			if !tc.refuse {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var le *broker.LoginError
			if !errors.Is(err, broker.ErrLoginRefused) || !errors.As(err, &le) {
				t.Fatalf("got %v, want a refusal", err)
			}
			if err.Error() != "login refused" || le.Backend != l.Backend || le.Entry != l.CredentialName || le.Said == "" {
				t.Fatalf("refusal %q %+v", err, le)
			}
			if strings.Contains(le.Said, password) {
				t.Fatalf("the broker's words carry the password: %q", le.Said)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		l := ok
		l.Address, l.DialTimeout = DeadAddr(t), time.Second
		if err := l.Try(context.Background()); !errors.Is(err, broker.ErrUnavailable) || errors.Is(err, broker.ErrLoginRefused) {
			t.Fatalf("got %v, want unavailable", err)
		}
	})
}

// Stranger is a user name of the test's own and a password for it: a
// broker that does not know the user refuses it as it does a wrong
// password.
func Stranger() (user, password string) {
	var b [8]byte
	rand.Read(b[:])
	return "wsbridge-test-" + hex.EncodeToString(b[:4]), hex.EncodeToString(b[4:])
}

// WrongLogin is a credential no broker accepts: a Stranger's user with
// another password than the one it returns, which no log, error or client
// may ever show.
func WrongLogin() (wrong *keyring.Credential, password string) {
	user, password := Stranger()
	return &keyring.Credential{Username: user, Password: keyring.NewSecret("not-" + password)}, password
}
