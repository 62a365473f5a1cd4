package amqp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/internal/authtest"
)

// aclEnv is a gateway route with the worked example's rules (and a test's
// own) in front of the real RabbitMQ, and a spy: a direct connection with
// the broker credential that owns the "secret" queues and looks at what
// reached them. Names carry run, as the broker is shared.
type aclEnv struct {
	url  string
	tap  *brokertest.TapProxy
	run  string
	spy  *amqp091.Connection
	spyC *amqp091.Channel // in confirm mode
}

// newACLEnv starts one; rules (nil for none) are added to the example's,
// made for the run's names.
func newACLEnv(t *testing.T, rules func(run string) []auth.Rule) *aclEnv {
	t.Helper()
	cred := brokertest.RabbitCredential(t)
	addr := brokertest.RabbitAMQP(t)
	tap := brokertest.NewTapProxy(t, addr)
	run := fmt.Sprintf("acl%x", time.Now().UnixNano())
	policy := authtest.JWTPolicy(t, func(o *auth.Options) {
		if rules != nil {
			o.Rules = append(o.Rules, rules(run)...)
		}
	})
	url, _ := startAuthRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred, Auth: policy}})
	spy, err := amqp091.DialConfig("amqp://"+addr+"/", amqp091.Config{
		SASL: []amqp091.Authentication{&amqp091.PlainAuth{Username: cred.Username, Password: cred.Password.Reveal()}},
	})
	if err != nil {
		t.Fatalf("spy: %v", err)
	}
	t.Cleanup(func() { spy.Close() })
	ch, err := spy.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return &aclEnv{url: url, tap: tap, run: run, spy: spy, spyC: ch}
}

// rule is an ACL rule for roles.
func rule(t *testing.T, roles []string, publish, subscribe []string) auth.Rule {
	t.Helper()
	parse := func(ss []string) []auth.Pattern {
		var ps []auth.Pattern
		for _, s := range ss {
			p, err := auth.ParsePattern(s)
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
		return ps
	}
	return auth.Rule{Roles: roles, Publish: parse(publish), Subscribe: parse(subscribe)}
}

// client connects through the gateway as "mallory" with roles; perFrame
// sends every frame as a WebSocket message of its own.
func (e *aclEnv) client(t *testing.T, perFrame bool, roles ...string) *amqp091.Connection {
	t.Helper()
	token := authtest.Token(t, "mallory", roles, time.Hour, nil)
	conn, err := amqp091.DialConfig("amqp://gateway/", amqp091.Config{
		SASL: []amqp091.Authentication{&amqp091.PlainAuth{Username: "mallory", Password: token}},
		Dial: func(network, addr string) (net.Conn, error) {
			c := dialWS(t, e.url)
			c.perFrame = perFrame
			return c, nil
		},
	})
	if err != nil {
		t.Fatalf("through the gateway: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// queue declares a spy queue (server-named for ""), not exclusive so that
// the client under test can try it, bound as binds say ({exchange, key});
// it goes when the test ends (or, should the test die, expires).
func (e *aclEnv) queue(t *testing.T, name string, binds ...[2]string) string {
	t.Helper()
	q, err := e.spyC.QueueDeclare(name, false, false, false, false, amqp091.Table{"x-expires": int32(600000)})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range binds {
		if err := e.spyC.QueueBind(q.Name, b[1], b[0], false, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if ch, err := e.spy.Channel(); err == nil {
			ch.QueueDelete(q.Name, false, false, false)
			ch.Close()
		}
	})
	return q.Name
}

// exchange declares a spy exchange of kind that goes when the test ends.
func (e *aclEnv) exchange(t *testing.T, name, kind string) {
	t.Helper()
	if err := e.spyC.ExchangeDeclare(name, kind, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ch, err := e.spy.Channel(); err == nil {
			ch.ExchangeDelete(name, false, false)
			ch.Close()
		}
	})
}

// put publishes as the spy and waits until the broker has routed it.
func (e *aclEnv) put(t *testing.T, ex, key string, msg amqp091.Publishing) {
	t.Helper()
	dc, err := e.spyC.PublishWithDeferredConfirmWithContext(context.Background(), ex, key, false, false, msg)
	if err != nil {
		t.Fatal(err)
	}
	if !dc.Wait() {
		t.Fatalf("spy publish to %q %q not confirmed", ex, key)
	}
}

// take drains a spy queue.
func (e *aclEnv) take(t *testing.T, q string) []amqp091.Delivery {
	t.Helper()
	var got []amqp091.Delivery
	for {
		d, ok, err := e.spyC.Get(q, true)
		if err != nil {
			t.Fatalf("spy get %s: %v", q, err)
		}
		if !ok {
			return got
		}
		got = append(got, d)
	}
}

func bodies(ds []amqp091.Delivery) []string {
	var s []string
	for _, d := range ds {
		s = append(s, string(d.Body))
	}
	return s
}

// attempt runs do on a fresh channel of c, then one round trip on it, and
// returns how the channel ended: nil while it is open. A refused publish
// has no answer of its own; the round trip meets the channel's close.
func attempt(t *testing.T, c *amqp091.Connection, do func(ch *amqp091.Channel) error) *amqp091.Error {
	t.Helper()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	done := make(chan error, 1)
	go func() {
		err := do(ch)
		if err == nil {
			err = ch.Qos(0, 0, false)
		}
		done <- err
	}()
	select {
	case err = <-done:
		if err == nil {
			ch.Close()
			return nil
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer from the gateway")
	}
	select {
	case e := <-closed:
		if e == nil {
			t.Fatalf("the channel failed (%v) without a close", err)
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatalf("the channel failed (%v) but was not closed", err)
	}
	return nil
}

func refused(t *testing.T, c *amqp091.Connection, mention string, do func(ch *amqp091.Channel) error) {
	t.Helper()
	e := attempt(t, c, do)
	if e == nil {
		t.Fatalf("allowed; want 403 naming %q", mention)
	}
	if e.Code != replyAccessRefused || !strings.Contains(e.Reason, mention) {
		t.Fatalf("channel closed with %v; want 403 naming %q", e, mention)
	}
}

func allowed(t *testing.T, c *amqp091.Connection, do func(ch *amqp091.Channel) error) {
	t.Helper()
	if e := attempt(t, c, do); e != nil {
		t.Fatalf("refused: %v", e)
	}
}

// publish publishes in confirm mode and waits for the broker's confirm,
// so that once it returns what it published has been routed.
func publish(ex, key string, msg amqp091.Publishing) func(*amqp091.Channel) error {
	return func(ch *amqp091.Channel) error {
		if err := ch.Confirm(false); err != nil {
			return err
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), ex, key, false, false, msg)
		if err != nil {
			return err
		}
		if !dc.Wait() {
			return errors.New("publish not confirmed")
		}
		return nil
	}
}

func body(s string) amqp091.Publishing { return amqp091.Publishing{Body: []byte(s)} }

// ownQueue declares a server-named queue on ch: the client's own.
func ownQueue(ch *amqp091.Channel, args amqp091.Table) (string, error) {
	q, err := ch.QueueDeclare("", false, true, true, false, args)
	return q.Name, err
}

// TestACLServerNamedQueues: a name starting amq.gen- is private only when
// the broker gave it to this connection. Another connection's server-named
// queue, not exclusive, whose name leaked, is as closed as any queue.
func TestACLServerNamedQueues(t *testing.T) {
	t.Parallel()
	e := newACLEnv(t, nil)
	victim := e.queue(t, "")
	e.put(t, "", victim, body("victim-secret"))
	c := e.client(t, false, "writer")
	for _, tt := range []struct {
		name string
		do   func(ch *amqp091.Channel) error
	}{
		{"basic.get", func(ch *amqp091.Channel) error { _, _, err := ch.Get(victim, false); return err }},
		{"basic.consume", func(ch *amqp091.Channel) error {
			_, err := ch.Consume(victim, "", false, false, false, false, nil)
			return err
		}},
		{"queue.bind", func(ch *amqp091.Channel) error { return ch.QueueBind(victim, "demo."+e.run, "amq.topic", false, nil) }},
		{"queue.unbind", func(ch *amqp091.Channel) error { return ch.QueueUnbind(victim, "demo."+e.run, "amq.topic", nil) }},
		{"queue.purge", func(ch *amqp091.Channel) error { _, err := ch.QueuePurge(victim, false); return err }},
		{"queue.delete", func(ch *amqp091.Channel) error { _, err := ch.QueueDelete(victim, false, false, false); return err }},
		{"passive queue.declare", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclarePassive(victim, false, false, false, false, nil)
			return err
		}},
		{"publish through the default exchange", publish("", victim, body("sneaky-default"))},
	} {
		t.Run(tt.name, func(t *testing.T) { refused(t, c, "queue:"+victim, tt.do) })
	}
	if got := bodies(e.take(t, victim)); !slices.Equal(got, []string{"victim-secret"}) {
		t.Fatalf("the victim's queue holds %q, want just its own message", got)
	}

	var mine string
	t.Run("its own are private by name", func(t *testing.T) {
		allowed(t, c, func(ch *amqp091.Channel) error {
			var err error
			if mine, err = ownQueue(ch, nil); err != nil {
				return err
			}
			if err := ch.QueueBind(mine, "demo."+e.run, "amq.topic", false, nil); err != nil {
				return err
			}
			if err := publish("", mine, body("to myself"))(ch); err != nil {
				return err
			}
			if d, ok, err := ch.Get(mine, true); err != nil || !ok || string(d.Body) != "to myself" {
				return fmt.Errorf("get %q %v %v", d.Body, ok, err)
			}
			if _, err := ch.Consume(mine, "", true, false, false, false, nil); err != nil {
				return err
			}
			if _, err := ch.QueuePurge(mine, false); err != nil {
				return err
			}
			_, err = ch.QueueDelete(mine, false, false, false)
			return err
		})
	})
	t.Run("another connection's are not", func(t *testing.T) {
		other := e.client(t, false, "writer")
		allowed(t, c, func(ch *amqp091.Channel) error { mine, _ = ownQueue(ch, nil); return nil })
		refused(t, other, "queue:"+mine, func(ch *amqp091.Channel) error { _, _, err := ch.Get(mine, false); return err })
	})
}

// TestACLQueueArguments: queue.declare arguments are read as a field table.
// Dead-lettering is a publish to its target; arguments that shape storage
// are for the connection's own server-named queue; others are refused.
func TestACLQueueArguments(t *testing.T) {
	t.Parallel()
	e := newACLEnv(t, func(run string) []auth.Rule {
		return []auth.Rule{rule(t, []string{"owner"}, []string{"queue:" + run + ".*"}, []string{"queue:" + run + ".*"})}
	})
	shared := e.run + ".shared"
	dead := e.queue(t, "", [2]string{"amq.topic", "demo." + e.run}, [2]string{"amq.topic", "secret." + e.run})
	c := e.client(t, false, "writer", "owner")
	own := func(args amqp091.Table) func(ch *amqp091.Channel) error {
		return func(ch *amqp091.Channel) error { _, err := ownQueue(ch, args); return err }
	}
	named := func(args amqp091.Table) func(ch *amqp091.Channel) error {
		return func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare(shared, false, true, false, false, args)
			return err
		}
	}
	for _, tt := range []struct {
		name    string
		do      func(ch *amqp091.Channel) error
		mention string // "" when allowed
	}{
		{"dead-lettering to any key of the topic exchange", own(amqp091.Table{"x-dead-letter-exchange": "amq.topic"}), "publish to #"},
		{"dead-lettering to a key outside the rules", own(amqp091.Table{"x-dead-letter-exchange": "amq.topic", "x-dead-letter-routing-key": "secret." + e.run}), "secret."},
		{"dead-lettering into another queue", own(amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}), "queue:" + dead},
		{"dead-lettering to a fanout", own(amqp091.Table{"x-dead-letter-exchange": "amq.fanout", "x-dead-letter-routing-key": "demo.x"}), "exchange:amq.fanout:#"},
		{"a dead-letter key alone", own(amqp091.Table{"x-dead-letter-routing-key": "demo.x"}), "without x-dead-letter-exchange"},
		{"a dead-letter exchange that is not a string", own(amqp091.Table{"x-dead-letter-exchange": []byte("amq.topic")}), "long string"},
		{"an argument not on the list", own(amqp091.Table{"x-whatever": "x"}), `"x-whatever"`},
		{"a shared queue's length", named(amqp091.Table{"x-max-length": int32(0)}), "own server-named queue"},
		{"a shared queue's TTL", named(amqp091.Table{"x-message-ttl": int32(0)}), "own server-named queue"},
		{"a shared queue's expiry", named(amqp091.Table{"x-expires": int32(1000)}), "own server-named queue"},
		{"a shared queue's type", named(amqp091.Table{"x-queue-type": "classic"}), "own server-named queue"},
		{"storage arguments on its own queue", own(amqp091.Table{"x-message-ttl": int32(60000), "x-max-length": int32(10),
			"x-overflow": "reject-publish", "x-queue-mode": "lazy", "x-max-priority": int32(3)}), ""},
		{"dead-lettering where it may publish", own(amqp091.Table{"x-dead-letter-exchange": "amq.topic", "x-dead-letter-routing-key": "demo." + e.run}), ""},
		{"a passive declare's arguments, which the broker ignores", func(ch *amqp091.Channel) error {
			q, err := ownQueue(ch, nil)
			if err != nil {
				return err
			}
			_, err = ch.QueueDeclarePassive(q, false, true, false, false, amqp091.Table{"x-whatever": "x"})
			return err
		}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.mention == "" {
				allowed(t, c, tt.do)
			} else {
				refused(t, c, tt.mention, tt.do)
			}
		})
	}
	// The shared queue, had any of those declares created it, would hold
	// their arguments; it is the spy's to shape.
	e.queue(t, shared)
	if got := bodies(e.take(t, dead)); len(got) != 0 {
		t.Fatalf("dead-lettered into the spy's queue: %q", got)
	}

	t.Run("dead-lettering reaches what it may", func(t *testing.T) {
		allowed(t, c, func(ch *amqp091.Channel) error {
			q, err := ownQueue(ch, amqp091.Table{"x-dead-letter-exchange": "amq.topic", "x-dead-letter-routing-key": "demo." + e.run})
			if err != nil {
				return err
			}
			return publish("", q, amqp091.Publishing{Body: []byte("expired"), Expiration: "0"})(ch)
		})
		d := e.await(t, dead)
		if string(d.Body) != "expired" || d.RoutingKey != "demo."+e.run {
			t.Fatalf("dead-lettered %q with key %q", d.Body, d.RoutingKey)
		}
	})
}

// await waits for the next message in a spy queue.
func (e *aclEnv) await(t *testing.T, q string) amqp091.Delivery {
	t.Helper()
	ch, err := e.spy.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	ds, err := ch.Consume(q, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-ds:
		return d
	case <-time.After(10 * time.Second):
		t.Fatalf("nothing arrived in %s", q)
	}
	return amqp091.Delivery{}
}

// TestACLExchangeArguments: an alternate exchange gets whatever the
// exchange cannot route, under any key; other arguments are refused.
func TestACLExchangeArguments(t *testing.T) {
	t.Parallel()
	own := func(run string, i int) string { return fmt.Sprintf("%s.own%d", run, i) }
	e := newACLEnv(t, func(run string) []auth.Rule {
		return []auth.Rule{rule(t, []string{"exchanger"}, []string{"exchange:" + own(run, 1) + ":#", "exchange:" + own(run, 2) + ":#", "exchange:" + own(run, 3) + ":#"}, nil)}
	})
	fanout := e.queue(t, "", [2]string{"amq.fanout", ""})
	c := e.client(t, false, "writer", "exchanger")
	declare := func(name string, args amqp091.Table) func(ch *amqp091.Channel) error {
		return func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare(name, "direct", false, true, false, false, args)
		}
	}
	t.Cleanup(func() {
		if ch, err := e.spy.Channel(); err == nil {
			for i := 1; i <= 3; i++ {
				ch.ExchangeDelete(own(e.run, i), false, false)
			}
		}
	})
	refused(t, c, "alternate-exchange: publish to exchange:amq.fanout:#", declare(own(e.run, 1), amqp091.Table{"alternate-exchange": "amq.fanout"}))
	refused(t, c, "alternate-exchange: publish to #", declare(own(e.run, 1), amqp091.Table{"alternate-exchange": "amq.topic"}))
	refused(t, c, "long string", declare(own(e.run, 1), amqp091.Table{"alternate-exchange": []byte(own(e.run, 2))}))
	refused(t, c, `"x-whatever"`, declare(own(e.run, 1), amqp091.Table{"x-whatever": "x"}))
	// Had one of those declared own1, an unroutable publish to it would
	// now reach the spy through amq.fanout; the broker does not know own1.
	if ae := attempt(t, c, publish(own(e.run, 1), "nowhere", body("sneaky-unroutable"))); ae == nil || ae.Code != 404 {
		t.Fatalf("publish to the refused exchange: %v, want 404", ae)
	}
	if got := bodies(e.take(t, fanout)); len(got) != 0 {
		t.Fatalf("reached amq.fanout: %q", got)
	}
	allowed(t, c, declare(own(e.run, 2), nil))
	allowed(t, c, declare(own(e.run, 3), amqp091.Table{"alternate-exchange": own(e.run, 2)}))
}

// TestACLBindArguments: a headers exchange routes by a binding's
// arguments, and the standard fanout and headers exchanges ignore the
// key: binding there reads the whole exchange.
func TestACLBindArguments(t *testing.T) {
	t.Parallel()
	e := newACLEnv(t, func(run string) []auth.Rule {
		return []auth.Rule{rule(t, []string{"headers"}, []string{"exchange:" + run + ".mine:#"},
			[]string{"exchange:" + run + ".hx:demo.*", "exchange:amq.headers:demo.*", "exchange:amq.fanout:demo.*"})}
	})
	hx, mine := e.run+".hx", e.run+".mine"
	e.exchange(t, hx, "headers")
	t.Cleanup(func() {
		if ch, err := e.spy.Channel(); err == nil {
			ch.ExchangeDelete(mine, false, false)
		}
	})
	c := e.client(t, false, "writer", "headers")
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ownQueue(ch, nil)
	if err != nil {
		t.Fatal(err)
	}
	match := amqp091.Table{"x-match": "any", "secret": e.run}
	refused(t, c, "exchange:"+hx+":#", func(ch *amqp091.Channel) error { return ch.QueueBind(q, "demo.x", hx, false, match) })
	refused(t, c, "exchange:amq.headers:#", func(ch *amqp091.Channel) error { return ch.QueueBind(q, "demo.x", "amq.headers", false, nil) })
	refused(t, c, "exchange:amq.fanout:#", func(ch *amqp091.Channel) error { return ch.QueueBind(q, "demo.x", "amq.fanout", false, nil) })
	refused(t, c, "exchange:"+hx+":#", func(ch *amqp091.Channel) error {
		if err := ch.ExchangeDeclare(mine, "fanout", false, true, false, false, nil); err != nil {
			return err
		}
		return ch.ExchangeBind(mine, "demo.x", hx, false, match)
	})
	allowed(t, c, func(ch *amqp091.Channel) error { return ch.QueueBind(q, "demo.x", "amq.topic", false, nil) })
	secret := amqp091.Publishing{Headers: amqp091.Table{"secret": e.run}, Body: []byte("headers-secret")}
	e.put(t, hx, "", secret)
	e.put(t, "amq.headers", "", secret)
	e.put(t, "amq.fanout", "", secret)
	if d, ok, err := ch.Get(q, true); err != nil || ok {
		t.Fatalf("the client's queue got %q (%v)", d.Body, err)
	}
}

// TestACLReplyTo: a responder publishes its reply to the request's
// reply-to on the client's behalf, so reply-to is a publish there.
func TestACLReplyTo(t *testing.T) {
	t.Parallel()
	for _, perFrame := range []bool{false, true} {
		t.Run(fmt.Sprintf("perFrame=%v", perFrame), func(t *testing.T) {
			e := newACLEnv(t, nil)
			topic := "demo." + e.run
			requests := e.queue(t, "", [2]string{"amq.topic", topic})
			victim := e.queue(t, e.run+".victim")
			leaked := e.queue(t, "")
			c := e.client(t, perFrame, "writer")
			to := func(replyTo string) func(*amqp091.Channel) error {
				return publish("amq.topic", topic, amqp091.Publishing{ReplyTo: replyTo, Body: []byte("request to " + replyTo)})
			}
			refused(t, c, "reply-to: publish to queue:"+victim, to(victim))
			refused(t, c, "reply-to: publish to queue:"+leaked, to(leaked))
			refused(t, c, "reply-to: publish to queue:amq.rabbitmq.reply-to.", to("amq.rabbitmq.reply-to.g1h2AA5yZXBseUAzMjY5OTk2NgAAAAEAAAAAYgAAAAA="))
			allowed(t, c, func(ch *amqp091.Channel) error {
				if _, err := ch.Consume("amq.rabbitmq.reply-to", "", true, false, false, false, nil); err != nil {
					return err
				}
				return to("amq.rabbitmq.reply-to")(ch)
			})
			allowed(t, c, func(ch *amqp091.Channel) error {
				q, err := ownQueue(ch, nil)
				if err != nil {
					return err
				}
				return to(q)(ch)
			})
			for _, d := range e.take(t, requests) {
				if d.ReplyTo == victim || d.ReplyTo == leaked || !strings.HasPrefix(d.ReplyTo, "amq.") {
					t.Fatalf("a request reached the broker with reply-to %q", d.ReplyTo)
				}
			}
		})
	}
}

// TestACLSenderSelected: RabbitMQ routes a message again under each key in
// its CC and BCC headers; each is a publish of its own.
func TestACLSenderSelected(t *testing.T) {
	t.Parallel()
	for _, perFrame := range []bool{false, true} {
		t.Run(fmt.Sprintf("perFrame=%v", perFrame), func(t *testing.T) {
			e := newACLEnv(t, nil)
			secret := e.queue(t, "", [2]string{"amq.topic", "secret." + e.run})
			copies := e.queue(t, "", [2]string{"amq.topic", "demo." + e.run + "b"})
			c := e.client(t, perFrame, "writer")
			with := func(h amqp091.Table) func(*amqp091.Channel) error {
				return publish("amq.topic", "demo."+e.run, amqp091.Publishing{Headers: h, Body: []byte("sneaky-cc")})
			}
			refused(t, c, "header CC: publish to secret.", with(amqp091.Table{"CC": []any{"demo.x", "secret." + e.run}}))
			refused(t, c, "header BCC: publish to secret.", with(amqp091.Table{"BCC": []any{"secret." + e.run}}))
			refused(t, c, "header CC must be an array", with(amqp091.Table{"CC": "secret." + e.run}))
			allowed(t, c, with(amqp091.Table{"CC": []any{"demo." + e.run + "b"}, "trace": "ok"}))
			if got := bodies(e.take(t, secret)); len(got) != 0 {
				t.Fatalf("copies reached secret.*: %q", got)
			}
			if got := bodies(e.take(t, copies)); len(got) != 1 {
				t.Fatalf("the allowed copy: %q", got)
			}
		})
	}
}

// TestACLMoreForms: the remaining ways around a rule, each closed.
func TestACLMoreForms(t *testing.T) {
	t.Parallel()
	e := newACLEnv(t, func(run string) []auth.Rule {
		return []auth.Rule{
			rule(t, []string{"shortcut"}, []string{"queue:" + run + ".*"}, []string{"*", "queue:" + run + ".*"}),
			rule(t, []string{"hx"}, []string{"exchange:" + run + ".hx:demo.*", "exchange:amq.fanout:demo.*"}, nil),
		}
	})
	run := e.run

	t.Run("queue.unbind of someone else's binding", func(t *testing.T) {
		tapped := e.queue(t, run+".tapped", [2]string{"amq.topic", "demo." + run})
		c := e.client(t, false, "writer")
		refused(t, c, "queue:"+tapped, func(ch *amqp091.Channel) error { return ch.QueueUnbind(tapped, "demo."+run, "amq.topic", nil) })
		e.put(t, "amq.topic", "demo."+run, body("still bound"))
		if got := bodies(e.take(t, tapped)); len(got) != 1 {
			t.Fatalf("the spy's binding lost its message: %q", got)
		}
	})
	t.Run("queue.bind with no queue and no key", func(t *testing.T) {
		// The broker binds with the channel's last declared queue's name as
		// the key: here a topic ("RUN.mine") the identity may not read.
		c := e.client(t, false, "shortcut")
		ch, err := c.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclare(run+".mine", false, true, true, false, nil); err != nil {
			t.Fatal(err)
		}
		refused(t, c, "subscribe to #", func(ch *amqp091.Channel) error {
			if _, err := ch.QueueDeclare(run+".mine", false, true, true, false, nil); err != nil {
				return err
			}
			return ch.QueueBind("", "", "amq.topic", false, nil)
		})
		e.put(t, "amq.topic", run+".mine", body("not yours"))
		if d, ok, err := ch.Get(run+".mine", true); err != nil || ok {
			t.Fatalf("read %q (%v)", d.Body, err)
		}
	})
	t.Run("passive exchange.declare probes", func(t *testing.T) {
		e.exchange(t, run+".spyex", "fanout")
		c := e.client(t, false, "writer")
		refused(t, c, "exchange:"+run+".spyex:#", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclarePassive(run+".spyex", "fanout", false, true, false, false, nil)
		})
		allowed(t, c, func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclarePassive("amq.topic", "topic", true, false, false, false, nil)
		})
	})
	t.Run("consumer arguments", func(t *testing.T) {
		c := e.client(t, false, "writer")
		consume := func(args amqp091.Table) func(ch *amqp091.Channel) error {
			return func(ch *amqp091.Channel) error {
				q, err := ownQueue(ch, nil)
				if err != nil {
					return err
				}
				_, err = ch.Consume(q, "", true, false, false, false, args)
				return err
			}
		}
		refused(t, c, `consumer argument "x-whatever"`, consume(amqp091.Table{"x-whatever": int32(1)}))
		allowed(t, c, consume(amqp091.Table{"x-priority": int32(5)}))
	})
	t.Run("headers on an exchange that may route by them", func(t *testing.T) {
		e.exchange(t, run+".hx", "headers")
		secret := e.queue(t, "")
		if err := e.spyC.QueueBind(secret, "", run+".hx", false, amqp091.Table{"x-match": "any", "secret": run}); err != nil {
			t.Fatal(err)
		}
		c := e.client(t, false, "hx")
		refused(t, c, "headers (a headers exchange routes by them", publish(run+".hx", "demo.x",
			amqp091.Publishing{Headers: amqp091.Table{"secret": run}, Body: []byte("sneaky-headers")}))
		refused(t, c, "exchange:amq.fanout:#", publish("amq.fanout", "demo.x", body("sneaky-fanout")))
		allowed(t, c, publish(run+".hx", "demo.x", body("no headers")))
		if got := bodies(e.take(t, secret)); len(got) != 0 {
			t.Fatalf("reached the headers binding: %q", got)
		}
	})
}

// TestACLDifferential drives every AMQP form in docs/security.md through
// the gateway as an identity that may publish and subscribe demo.* only,
// and compares each decision with the table. Then the spy, which has
// bound every exchange used with a catch-all and owns the secret queues,
// shows that nothing outside demo.* was written or read, whatever the
// decisions were. Frames go as one message per write, and one per frame
// (a publish apart from its header).
func TestACLDifferential(t *testing.T) {
	t.Parallel()
	for _, perFrame := range []bool{false, true} {
		t.Run(fmt.Sprintf("perFrame=%v", perFrame), func(t *testing.T) {
			t.Parallel()
			differential(t, perFrame)
		})
	}
}

func differential(t *testing.T, perFrame bool) {
	e := newACLEnv(t, nil)
	run, topic := e.run, "demo."+e.run
	spyEx := run + ".spyex"
	e.exchange(t, spyEx, "fanout")
	topicAll := e.queue(t, "", [2]string{"amq.topic", "#"})
	others := map[string]string{ // catch-alls that nothing may reach
		"amq.fanout":  e.queue(t, "", [2]string{"amq.fanout", ""}),
		"amq.headers": e.queue(t, "", [2]string{"amq.headers", ""}),
		"amq.direct":  e.queue(t, "", [2]string{"amq.direct", "secret." + run}),
		spyEx:         e.queue(t, "", [2]string{spyEx, ""}),
	}
	secret := e.queue(t, run+".secret")
	gen := e.queue(t, "") // a server-named queue of the spy's whose name leaked
	e.put(t, "", secret, body("secret-1"))
	e.put(t, "", secret, body("secret-2"))
	e.put(t, "", gen, body("gen-1"))
	c := e.client(t, perFrame, "writer")

	// Every body carries the run: the broker is shared, and the spy's
	// catch-alls see other tests' messages too.
	pub := func(ex, key string, m amqp091.Publishing) func(*amqp091.Channel) error {
		if len(m.Body) == 0 {
			m.Body = []byte("sneaky " + ex + " " + key)
		}
		m.Body = append(m.Body, " "+run...)
		return publish(ex, key, m)
	}
	ours := func(ds []amqp091.Delivery) []amqp091.Delivery {
		return slices.DeleteFunc(ds, func(d amqp091.Delivery) bool { return !strings.HasSuffix(string(d.Body), " "+run) })
	}
	q := func(do func(ch *amqp091.Channel, q string) error) func(*amqp091.Channel) error {
		return func(ch *amqp091.Channel) error {
			name, err := ownQueue(ch, nil)
			if err != nil {
				return err
			}
			return do(ch, name)
		}
	}
	declare := func(name string, passive bool, args amqp091.Table) func(*amqp091.Channel) error {
		return func(ch *amqp091.Channel) error {
			if passive {
				_, err := ch.QueueDeclarePassive(name, false, true, true, false, args)
				return err
			}
			_, err := ch.QueueDeclare(name, false, true, true, false, args)
			return err
		}
	}
	get := func(name string) func(*amqp091.Channel) error {
		return func(ch *amqp091.Channel) error { _, _, err := ch.Get(name, false); return err }
	}
	consume := func(name string, args amqp091.Table) func(*amqp091.Channel) error {
		return func(ch *amqp091.Channel) error {
			_, err := ch.Consume(name, "", true, false, false, false, args)
			return err
		}
	}
	forms := []struct {
		name    string
		do      func(ch *amqp091.Channel) error
		mention string // "" for allowed
	}{
		// basic.publish: exchange and key, then the properties
		{"publish to the topic outside demo", pub("amq.topic", "secret."+run, amqp091.Publishing{}), "publish to secret."},
		{"publish to #", pub("amq.topic", "#", amqp091.Publishing{}), "publish to #"},
		{"publish to demo.#", pub("amq.topic", "demo.#", amqp091.Publishing{}), "publish to demo.#"},
		{"CC outside demo", pub("amq.topic", topic, amqp091.Publishing{Headers: amqp091.Table{"CC": []any{"secret." + run}}}), "header CC"},
		{"BCC outside demo", pub("amq.topic", topic, amqp091.Publishing{Headers: amqp091.Table{"BCC": []any{"secret." + run}}}), "header BCC"},
		{"reply-to a named queue", pub("amq.topic", topic, amqp091.Publishing{ReplyTo: secret}), "reply-to"},
		{"reply-to a leaked server-named queue", pub("amq.topic", topic, amqp091.Publishing{ReplyTo: gen}), "reply-to"},
		{"the default exchange into a named queue", pub("", secret, amqp091.Publishing{}), "queue:" + secret},
		{"the default exchange into a leaked queue", pub("", gen, amqp091.Publishing{}), "queue:" + gen},
		{"amq.fanout", pub("amq.fanout", topic, amqp091.Publishing{}), "exchange:amq.fanout:#"},
		{"amq.headers", pub("amq.headers", topic, amqp091.Publishing{Headers: amqp091.Table{"k": "v"}}), "exchange:amq.headers:#"},
		{"amq.direct", pub("amq.direct", "secret."+run, amqp091.Publishing{}), "exchange:amq.direct:secret."},
		{"another exchange", pub(spyEx, topic, amqp091.Publishing{}), "exchange:" + spyEx},
		{"a body larger than a frame", pub("amq.topic", "secret."+run, amqp091.Publishing{Body: []byte("sneaky " + strings.Repeat("x", 200<<10))}), "secret."},
		// reading and managing queues
		{"basic.get a named queue", get(secret), "queue:" + secret},
		{"basic.get a leaked queue", get(gen), "queue:" + gen},
		{"basic.consume a named queue", consume(secret, nil), "queue:" + secret},
		{"basic.consume a leaked queue", consume(gen, nil), "queue:" + gen},
		{"queue.purge", func(ch *amqp091.Channel) error { _, err := ch.QueuePurge(secret, false); return err }, "queue:" + secret},
		{"queue.purge a leaked queue", func(ch *amqp091.Channel) error { _, err := ch.QueuePurge(gen, false); return err }, "queue:" + gen},
		{"queue.delete", func(ch *amqp091.Channel) error { _, err := ch.QueueDelete(secret, false, false, false); return err }, "queue:" + secret},
		{"queue.delete a leaked queue", func(ch *amqp091.Channel) error { _, err := ch.QueueDelete(gen, false, false, false); return err }, "queue:" + gen},
		{"passive queue.declare", declare(secret, true, nil), "queue:" + secret},
		{"queue.declare of a named queue", declare(secret, false, nil), "queue:" + secret},
		{"queue.bind a named queue", func(ch *amqp091.Channel) error { return ch.QueueBind(secret, topic, "amq.topic", false, nil) }, "queue:" + secret},
		{"queue.unbind the spy's catch-all", func(ch *amqp091.Channel) error { return ch.QueueUnbind(topicAll, "#", "amq.topic", nil) }, "queue:" + topicAll},
		{"queue.bind #", q(func(ch *amqp091.Channel, q string) error { return ch.QueueBind(q, "#", "amq.topic", false, nil) }), "subscribe to #"},
		{"queue.bind outside demo", q(func(ch *amqp091.Channel, q string) error {
			return ch.QueueBind(q, "secret."+run, "amq.topic", false, nil)
		}), "secret."},
		{"queue.bind demo.#", q(func(ch *amqp091.Channel, q string) error { return ch.QueueBind(q, "demo.#", "amq.topic", false, nil) }), "demo.#"},
		// A '*' word matches demo.x/y, which demo.* does not cover.
		{"queue.bind demo.*", q(func(ch *amqp091.Channel, q string) error { return ch.QueueBind(q, "demo.*", "amq.topic", false, nil) }), "demo.>"},
		{"queue.bind with arguments", q(func(ch *amqp091.Channel, q string) error {
			return ch.QueueBind(q, topic, "amq.topic", false, amqp091.Table{"x-match": "any"})
		}), "subscribe to #"},
		{"queue.bind to amq.fanout", q(func(ch *amqp091.Channel, q string) error { return ch.QueueBind(q, topic, "amq.fanout", false, nil) }), "amq.fanout:#"},
		{"queue.bind to amq.headers", q(func(ch *amqp091.Channel, q string) error { return ch.QueueBind(q, topic, "amq.headers", false, nil) }), "amq.headers:#"},
		{"queue.bind to another exchange", q(func(ch *amqp091.Channel, q string) error { return ch.QueueBind(q, topic, spyEx, false, nil) }), spyEx},
		{"queue.bind with no queue and no key", q(func(ch *amqp091.Channel, q string) error { return ch.QueueBind("", "", "amq.topic", false, nil) }), "subscribe to #"},
		// queue arguments
		{"dead-lettering to a fanout", declare("", false, amqp091.Table{"x-dead-letter-exchange": "amq.fanout"}), "x-dead-letter-exchange"},
		{"dead-lettering into a named queue", declare("", false, amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": secret}), "x-dead-letter-exchange"},
		{"dead-lettering outside demo", declare("", false, amqp091.Table{"x-dead-letter-exchange": "amq.topic", "x-dead-letter-routing-key": "secret." + run}), "x-dead-letter-exchange"},
		{"an unknown queue argument", declare("", false, amqp091.Table{"x-whatever": int32(1)}), `"x-whatever"`},
		{"an unknown consumer argument", q(func(ch *amqp091.Channel, q string) error {
			return consume(q, amqp091.Table{"x-whatever": int32(1)})(ch)
		}), `"x-whatever"`},
		// exchanges
		{"exchange.declare", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare(run+".mallory", "fanout", false, true, false, false, nil)
		}, "exchange:" + run + ".mallory:#"},
		{"passive exchange.declare", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclarePassive(spyEx, "fanout", false, true, false, false, nil)
		}, "exchange:" + spyEx},
		{"exchange.delete", func(ch *amqp091.Channel) error { return ch.ExchangeDelete(spyEx, false, false) }, "exchange:" + spyEx},
		{"exchange.bind into another exchange", func(ch *amqp091.Channel) error { return ch.ExchangeBind(spyEx, topic, "amq.topic", false, nil) }, "exchange:" + spyEx},
		{"exchange.bind into the topic exchange", func(ch *amqp091.Channel) error { return ch.ExchangeBind("amq.topic", "", spyEx, false, nil) }, "publish to #"},
		{"exchange.unbind", func(ch *amqp091.Channel) error { return ch.ExchangeUnbind(spyEx, topic, "amq.topic", false, nil) }, "exchange:" + spyEx},

		// what demo.* allows
		{"publish to demo", pub("amq.topic", topic, amqp091.Publishing{Body: []byte("allowed plain")}), ""},
		{"publish with CC inside demo", pub("amq.topic", topic, amqp091.Publishing{Body: []byte("allowed cc"), Headers: amqp091.Table{"CC": []any{"demo.other"}, "app": "x"}}), ""},
		{"direct reply-to", func(ch *amqp091.Channel) error {
			if err := consume("amq.rabbitmq.reply-to", nil)(ch); err != nil {
				return err
			}
			return pub("amq.topic", topic, amqp091.Publishing{Body: []byte("allowed direct reply-to"), ReplyTo: "amq.rabbitmq.reply-to"})(ch)
		}, ""},
		{"reply-to its own queue", q(func(ch *amqp091.Channel, q string) error {
			return pub("amq.topic", topic, amqp091.Publishing{Body: []byte("allowed own reply-to"), ReplyTo: q})(ch)
		}), ""},
		{"its own queue, bound inside demo", q(func(ch *amqp091.Channel, q string) error {
			if err := ch.QueueBind(q, topic, "amq.topic", false, nil); err != nil {
				return err
			}
			if err := pub("", q, amqp091.Publishing{Body: []byte("allowed to itself")})(ch); err != nil {
				return err
			}
			if d, ok, err := ch.Get(q, true); err != nil || !ok || string(d.Body) != "allowed to itself "+run {
				return fmt.Errorf("get: %q %v %v", d.Body, ok, err)
			}
			return consume(q, amqp091.Table{"x-priority": int32(1)})(ch)
		}), ""},
		{"its own queue, shaped and dead-lettering inside demo", declare("", false, amqp091.Table{"x-message-ttl": int32(1000),
			"x-dead-letter-exchange": "amq.topic", "x-dead-letter-routing-key": topic}), ""},
		{"passive exchange.declare of the topic exchange", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclarePassive("amq.topic", "topic", true, false, false, false, nil)
		}, ""},
	}
	for _, f := range forms {
		e := attempt(t, c, f.do)
		switch {
		case f.mention == "" && e != nil:
			t.Errorf("%s: refused (%v); the table allows it", f.name, e)
		case f.mention != "" && e == nil:
			t.Errorf("%s: allowed; the table refuses it", f.name)
		case f.mention != "" && (e.Code != replyAccessRefused || !strings.Contains(e.Reason, f.mention)):
			t.Errorf("%s: closed with %v; want 403 naming %q", f.name, e, f.mention)
		}
	}

	// The spy's view, which holds whatever the decisions were.
	var allowedBodies []string
	for _, d := range ours(e.take(t, topicAll)) {
		if rest, ok := strings.CutPrefix(d.RoutingKey, "demo."); !ok || strings.ContainsAny(rest, "./") {
			t.Errorf("a message reached the topic exchange under %q: %q", d.RoutingKey, d.Body)
		}
		if d.ReplyTo != "" && !strings.HasPrefix(d.ReplyTo, "amq.") || d.ReplyTo == gen {
			t.Errorf("a message went out with reply-to %q", d.ReplyTo)
		}
		if _, ok := d.Headers["BCC"]; ok {
			t.Errorf("a message kept its BCC: %v", d.Headers)
		}
		allowedBodies = append(allowedBodies, strings.TrimSuffix(string(d.Body), " "+run))
	}
	slices.Sort(allowedBodies)
	want := []string{"allowed cc", "allowed direct reply-to", "allowed own reply-to", "allowed plain"}
	if !slices.Equal(allowedBodies, want) {
		t.Errorf("the topic exchange got %q, want %q", allowedBodies, want)
	}
	for ex, q := range others {
		if got := bodies(ours(e.take(t, q))); len(got) != 0 {
			t.Errorf("reached %s: %q", ex, got)
		}
	}
	if got := bodies(e.take(t, secret)); !slices.Equal(got, []string{"secret-1", "secret-2"}) {
		t.Errorf("the named secret queue holds %q", got)
	}
	if got := bodies(e.take(t, gen)); !slices.Equal(got, []string{"gen-1"}) {
		t.Errorf("the leaked server-named queue holds %q", got)
	}
	if strings.Contains(e.tap.Sent(), "sneaky") {
		t.Error("a refused message reached RabbitMQ")
	}
}

// TestACLBindTheLastDeclaredQueue: a queue.bind naming queue "" binds the
// channel's most recently declared queue, and a declare may name a queue
// one may read but not write. Binding it feeds it: it takes publishing to
// that queue, as binding it by name does.
func TestACLBindTheLastDeclaredQueue(t *testing.T) {
	t.Parallel()
	e := newACLEnv(t, func(run string) []auth.Rule {
		return []auth.Rule{rule(t, []string{"worker"}, nil, []string{"queue:" + run + ".jobs"})}
	})
	jobs := e.run + ".jobs"
	if _, err := e.spyC.QueueDeclare(jobs, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.spyC.QueueDelete(jobs, false, false, false) })
	topic := "demo." + e.run
	c := e.client(t, false, "reader", "worker")
	bindLast := func(passive bool) func(*amqp091.Channel) error {
		return func(ch *amqp091.Channel) error {
			var err error
			if passive {
				_, err = ch.QueueDeclarePassive(jobs, false, false, false, false, nil)
			} else {
				_, err = ch.QueueDeclare(jobs, false, false, false, false, nil)
			}
			if err != nil {
				return err
			}
			return ch.QueueBind("", topic, "amq.topic", false, nil)
		}
	}
	refused(t, c, "publish to queue:"+jobs, bindLast(true))
	refused(t, c, "publish to queue:"+jobs, bindLast(false))
	// The channel's own server-named queue is still its to bind.
	allowed(t, c, func(ch *amqp091.Channel) error {
		if _, err := ownQueue(ch, nil); err != nil {
			return err
		}
		return ch.QueueBind("", topic, "amq.topic", false, nil)
	})
	e.put(t, "amq.topic", topic, body("fed"))
	if got := bodies(e.take(t, jobs)); len(got) != 0 {
		t.Fatalf("the read-only queue was fed %q", got)
	}
}
