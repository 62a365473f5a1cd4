package stomp

import (
	"bytes"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/internal/authtest"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/validate"
)

// spy is a direct AMQP connection that watches RabbitMQ from behind the
// gateway: every message routed through amq.topic, amq.direct and
// amq.fanout, a secret queue holding one message, and a victim queue that
// must stay empty.
type spy struct {
	ch             *amqp.Channel
	secret, victim string

	mu   sync.Mutex
	seen []amqp.Delivery
	got  chan struct{}
}

func startSpy(t *testing.T, cred keyring.Credential, u string) *spy {
	t.Helper()
	conn, err := amqp.DialConfig("amqp://"+brokertest.RabbitAMQP(t)+"/", amqp.Config{
		SASL: []amqp.Authentication{&amqp.PlainAuth{Username: cred.Username, Password: cred.Password.Reveal()}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	s := &spy{ch: ch, secret: "secret-" + u, victim: "victim-" + u, got: make(chan struct{}, 1)}
	for _, q := range []string{s.secret, s.victim} {
		if _, err := ch.QueueDeclare(brokertest.RabbitQueue(t, q), false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Publish("", s.secret, false, false, amqp.Publishing{Body: []byte("secret-payload")}); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []struct{ ex, key string }{{"amq.topic", "#"}, {"amq.fanout", ""}, {"amq.direct", s.victim}, {"amq.direct", "secret." + u}} {
		if err := ch.QueueBind(q.Name, b.key, b.ex, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for d := range deliveries {
			s.mu.Lock()
			s.seen = append(s.seen, d)
			s.mu.Unlock()
			select {
			case s.got <- struct{}{}:
			default:
			}
		}
	}()
	return s
}

// waitFor waits until the spy has seen a message with this body.
func (s *spy) waitFor(t *testing.T, body string) amqp.Delivery {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		for _, d := range s.seen {
			if string(d.Body) == body {
				s.mu.Unlock()
				return d
			}
		}
		s.mu.Unlock()
		select {
		case <-s.got:
		case <-deadline:
			t.Fatalf("the spy never saw %q", body)
		}
	}
}

// queueDepth is how many messages a queue holds.
func (s *spy) queueDepth(t *testing.T, name string) int {
	t.Helper()
	q, err := s.ch.QueueDeclarePassive(name, false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}

// TestACLDifferentialRabbitMQ drives every destination form and header in
// docs/security.md's STOMP table through the gateway as an identity that
// may only use demo.* (topics and queues), while a spy on RabbitMQ itself
// proves that nothing outside demo.* was read or written.
func TestACLDifferentialRabbitMQ(t *testing.T) {
	cred := testCredential(t)
	u := strings.NewReplacer(".", "-", "_", "-").Replace(uniqueName(t))
	for _, q := range []string{"-rpc", "-dl", "-shared", "-args"} { // the /queue/ destinations below, made or refused
		brokertest.RabbitQueue(t, "demo."+u+q)
	}
	pol := authtest.JWTPolicy(t, func(o *auth.Options) {
		p := func(s string) auth.Pattern {
			pat, err := auth.ParsePattern(s)
			if err != nil {
				t.Fatal(err)
			}
			return pat
		}
		o.Rules = []auth.Rule{{Roles: []string{"writer"},
			Publish:   []auth.Pattern{p("demo.*"), p("queue:demo.*")},
			Subscribe: []auth.Pattern{p("demo.*"), p("queue:demo.*")}}}
	})
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: brokerAddr(t), Credential: &cred, Auth: pol}})
	sp := startSpy(t, cred, u)
	login := func(t *testing.T, sub string) *client {
		t.Helper()
		cl := dial(t, gw.url, http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}})
		cl.send(t, connectWith(sub, authtest.Token(t, sub, []string{"writer"}, time.Hour, nil)))
		if f := cl.frame(t); f.Command != validate.CmdConnected {
			t.Fatalf("%s: got %s %q", sub, f.Command, f.Raw)
		}
		return cl
	}
	attack := "attack-" + u
	topic := "/topic/demo." + u
	refused := []struct{ name, frame string }{
		{"reply-queue subscribe to a named queue", "SUBSCRIBE\nid:1\ndestination:/reply-queue/" + sp.secret + "\n\n\x00"},
		{"reply-queue send to a named queue", "SEND\ndestination:/reply-queue/" + sp.victim + "\n\n" + attack + "\x00"},
		{"bare name is a queue to RabbitMQ", "SEND\ndestination:" + sp.victim + "\n\n" + attack + "\x00"},
		{"bare name subscribe", "SUBSCRIBE\nid:1\ndestination:" + sp.secret + "\n\n\x00"},
		{"amq queue", "SUBSCRIBE\nid:1\ndestination:/amq/queue/" + sp.secret + "\n\n\x00"},
		{"leading space", "SEND\ndestination: /queue/" + sp.victim + "\n\n" + attack + "\x00"},
		{"second destination header", "SEND\ndestination:" + topic + "\ndestination:/queue/" + sp.victim + "\n\n" + attack + "\x00"},
		{"other exchange", "SEND\ndestination:/exchange/amq.fanout/demo." + u + "\n\n" + attack + "\x00"},
		{"direct exchange", "SEND\ndestination:/exchange/amq.direct/" + sp.victim + "\n\n" + attack + "\x00"},
		{"dead letters to a topic outside demo", "SUBSCRIBE\nid:1\ndestination:" + topic + "\nx-dead-letter-exchange:amq.topic\nx-dead-letter-routing-key:secret." + u + "\n\n\x00"},
		{"dead letters through a queue it may fill", "SEND\ndestination:/queue/demo." + u + "-dl\nx-dead-letter-exchange:amq.topic\nx-dead-letter-routing-key:secret." + u + "\nx-message-ttl:1\n\n" + attack + "\x00"},
		{"dead letters to the default exchange", "SUBSCRIBE\nid:1\ndestination:" + topic + "\nx-dead-letter-exchange:\nx-dead-letter-routing-key:" + sp.victim + "\n\n\x00"},
		{"dead-letter key alone", "SUBSCRIBE\nid:1\ndestination:" + topic + "\nx-dead-letter-routing-key:secret." + u + "\n\n\x00"},
		{"reply-to a foreign queue", "SEND\ndestination:" + topic + "\nreply-to:/queue/" + sp.victim + "\n\n" + attack + "\x00"},
		{"reply-to a foreign reply queue", "SEND\ndestination:" + topic + "\nreply-to:/reply-queue/" + sp.victim + "\n\n" + attack + "\x00"},
		{"x-queue-name of a foreign queue", "SUBSCRIBE\nid:1\ndestination:" + topic + "\nx-queue-name:" + sp.secret + "\n\n\x00"},
		{"shaping a shared queue", "SUBSCRIBE\nid:1\ndestination:/queue/demo." + u + "-shared\nx-max-length:1\n\n\x00"},
		{"queue arguments on send", "SEND\ndestination:/queue/demo." + u + "-args\nx-expires:1000\n\n" + attack + "\x00"},
		{"an unknown subscribe header", "SUBSCRIBE\nid:1\ndestination:" + topic + "\nselector:x = 1\n\n\x00"},
		{"an unparseable destination", "SEND\ndestination:/queue/demo.a/b\n\n" + attack + "\x00"},
	}
	for _, r := range refused {
		t.Run("refused/"+r.name, func(t *testing.T) {
			cl := login(t, "mallory")
			cl.send(t, r.frame)
			cl.expectError(t, "access refused", 1008)
		})
	}

	allowed := []struct{ name, frame string }{
		{"own subscription shaped", "SUBSCRIBE\nid:1\ndestination:" + topic + "\nx-message-ttl:60000\nx-max-length:10\nreceipt:r\n\n\x00"},
		{"dead letters inside demo", "SUBSCRIBE\nid:1\ndestination:" + topic + "\nx-dead-letter-exchange:amq.topic\nx-dead-letter-routing-key:demo." + u + "-dead\nreceipt:r\n\n\x00"},
		{"reply-to its own temp queue", "SEND\ndestination:" + topic + "\nreply-to:/temp-queue/r\nreceipt:r\n\nrequest\x00"},
		{"application headers on send", "SEND\ndestination:" + topic + "\nx-request-id:42\ncontent-type:text/plain\nreceipt:r\n\nhello\x00"},
	}
	for _, a := range allowed {
		t.Run("allowed/"+a.name, func(t *testing.T) {
			cl := login(t, "will")
			cl.send(t, a.frame)
			if f := cl.frame(t); f.Command != validate.CmdReceipt {
				t.Fatalf("got %s %q, want RECEIPT", f.Command, f.Raw)
			}
		})
	}

	t.Run("a responder answers the reply queue it was given, and no other", func(t *testing.T) {
		rpc := "/queue/demo." + u + "-rpc"
		responder := login(t, "rosa")
		responder.send(t, "SUBSCRIBE\nid:rpc\ndestination:"+rpc+"\nreceipt:r\n\n\x00")
		if f := responder.frame(t); f.Command != validate.CmdReceipt {
			t.Fatalf("got %s %q", f.Command, f.Raw)
		}
		requester := login(t, "quinn")
		requester.send(t, "SEND\ndestination:"+rpc+"\nreply-to:/temp-queue/answers\n\nquestion\x00")
		req := responder.frame(t)
		replyTo := header(t, req, "reply-to")
		if req.Command != validate.CmdMessage || !strings.HasPrefix(replyTo, "/reply-queue/") {
			t.Fatalf("responder got %s %q, want a MESSAGE with a /reply-queue/ reply-to", req.Command, req.Raw)
		}
		responder.send(t, "SEND\ndestination:"+replyTo+"\nreceipt:a\n\nanswer\x00")
		if f := responder.frame(t); f.Command != validate.CmdReceipt {
			t.Fatalf("the answer to a given reply queue: %s %q", f.Command, f.Raw)
		}
		if f := requester.frame(t); f.Command != validate.CmdMessage || string(f.Body()) != "answer" {
			t.Fatalf("requester got %s %q, want the answer", f.Command, f.Raw)
		}

		// Another client's reply queue, its name leaked: not given, refused.
		requester.send(t, "SEND\ndestination:"+topic+"\nreply-to:/temp-queue/other\n\nleak-"+u+"\x00")
		// RabbitMQ puts the bare queue name in the AMQP reply-to property.
		leaked := "/reply-queue/" + sp.waitFor(t, "leak-"+u).ReplyTo
		thief := login(t, "mallory")
		thief.send(t, "SEND\ndestination:"+leaked+"\n\n"+attack+"\x00")
		thief.expectError(t, "access refused", 1008)
	})

	// What RabbitMQ itself saw: nothing of the attacker's outside demo.*,
	// the secret still in its queue, the victim queue empty.
	done := login(t, "will")
	done.send(t, "SEND\ndestination:"+topic+"\n\ndone-"+u+"\x00")
	sp.waitFor(t, "done-"+u)
	sp.mu.Lock()
	for _, d := range sp.seen {
		if strings.Contains(string(d.Body), attack) {
			t.Errorf("the broker routed the attacker's message through %s with key %q", d.Exchange, d.RoutingKey)
		}
		// Only this test's keys: other tests share the broker's amq.topic.
		if d.Exchange == "amq.topic" && strings.Contains(d.RoutingKey, u) && !strings.HasPrefix(d.RoutingKey, "demo.") {
			t.Errorf("a message reached amq.topic with key %q, outside demo.*", d.RoutingKey)
		}
	}
	sp.mu.Unlock()
	if n := sp.queueDepth(t, sp.secret); n != 1 {
		t.Errorf("the secret queue holds %d messages, want its 1 untouched", n)
	}
	if n := sp.queueDepth(t, sp.victim); n != 0 {
		t.Errorf("the victim queue holds %d messages, want 0", n)
	}
}

// direct is a STOMP connection straight to RabbitMQ with the gateway's
// credential: a service of the operator's that never goes through the
// gateway, whose queues a client of the gateway must not reach.
type direct struct {
	conn net.Conn
	sc   *validate.STOMPScanner
	buf  []byte
}

func dialDirect(t *testing.T, cred keyring.Credential) *direct {
	t.Helper()
	conn, err := net.DialTimeout("tcp", brokerAddr(t), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	d := &direct{conn: conn, sc: validate.NewSTOMPScanner(validate.STOMPLimits{MaxFrameBytes: 1 << 20}, true)}
	d.send(t, "CONNECT\naccept-version:1.2\nhost:/\nlogin:"+cred.Username+"\npasscode:"+cred.Password.Reveal()+"\n\n\x00")
	if f := d.frame(t); f.Command != validate.CmdConnected {
		t.Fatalf("direct connection: %s %q", f.Command, f.Raw)
	}
	return d
}

func (d *direct) send(t *testing.T, s string) {
	t.Helper()
	if _, err := d.conn.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// frame reads the next frame, skipping heart-beats.
func (d *direct) frame(t *testing.T) validate.STOMPFrame {
	t.Helper()
	d.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, f, err := d.sc.Next(d.buf)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			var out validate.STOMPFrame
			if f != nil {
				out = *f
				out.Raw = bytes.Clone(f.Raw)
			}
			d.buf = d.buf[n:]
			if f != nil {
				return out
			}
			continue
		}
		b := make([]byte, 64<<10)
		k, err := d.conn.Read(b)
		if err != nil {
			t.Fatalf("direct connection: %v", err)
		}
		d.buf = append(d.buf, b[:k]...)
	}
}

// receipt sends frame, which asks for receipt r, and waits for it.
func (d *direct) receipt(t *testing.T, frame string) {
	t.Helper()
	d.send(t, frame)
	if f := d.frame(t); f.Command != validate.CmdReceipt {
		t.Fatalf("direct connection: got %s %q, want RECEIPT", f.Command, f.Raw)
	}
}

// TestDurableSubscriptionsStayTheIdentitys: RabbitMQ names a durable
// subscription's queue after its routing key and subscription id alone, so
// any client of the broker user that subscribes durably with the same key
// and id consumes from the same queue, whatever the exchange. Through the
// gateway, a restricted identity's durable subscription gets a queue of its
// own: it cannot attach to a service's durable subscription on another
// exchange (and read what that exchange routes there), nor to another
// identity's (and take its backlog); and a durable UNSUBSCRIBE deletes no
// queue but its own.
func TestDurableSubscriptionsStayTheIdentitys(t *testing.T) {
	cred := testCredential(t)
	u := strings.NewReplacer(".", "-", "_", "-").Replace(uniqueName(t))
	topic, key := "/topic/demo."+u, "demo."+u
	// Durable queues outlive their connections, and a failed subtest
	// unsubscribes nothing: whatever is still bound under this test's key
	// (the gateway's queues on amq.topic, the service's on amq.direct,
	// which RabbitMQ keeps after an UNSUBSCRIBE, as it deletes durable
	// queues on UNSUBSCRIBE for /topic/ only) goes when the test ends.
	t.Cleanup(func() {
		brokertest.DeleteRabbitQueues(t, cred, append(boundTo(t, "amq.topic", key), boundTo(t, "amq.direct", key)...)...)
	})
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: brokerAddr(t), Credential: &cred, Auth: authtest.JWTPolicy(t, nil)}})
	login := func(t *testing.T, sub, role string) *client {
		t.Helper()
		cl := dial(t, gw.url, http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}})
		cl.send(t, connectWith(sub, authtest.Token(t, sub, []string{role}, time.Hour, nil)))
		if f := cl.frame(t); f.Command != validate.CmdConnected {
			t.Fatalf("%s: got %s %q", sub, f.Command, f.Raw)
		}
		return cl
	}
	receipt := func(t *testing.T, cl *client, frame string) {
		t.Helper()
		cl.send(t, frame)
		if f := cl.frame(t); f.Command != validate.CmdReceipt {
			t.Fatalf("got %s %q, want RECEIPT", f.Command, f.Raw)
		}
	}
	// quiet fails if cl gets a MESSAGE within a moment.
	quiet := func(t *testing.T, cl *client) {
		t.Helper()
		select {
		case m := <-cl.msgs:
			if len(bytes.Trim(m.data, "\r\n")) > 0 {
				t.Fatalf("got %q", m.data)
			}
		case <-time.After(500 * time.Millisecond):
		}
	}
	durable := "\ndurable:true\nauto-delete:false\n"

	t.Run("another exchange's durable subscription", func(t *testing.T) {
		// A service subscribes durably to amq.direct with a key that reads
		// as demo.* and the id "svc"; a private message waits in its queue.
		svc := dialDirect(t, cred)
		sub := "SUBSCRIBE\nid:svc\ndestination:/exchange/amq.direct/" + key + durable
		svc.receipt(t, sub+"receipt:s\n\n\x00")
		svc.receipt(t, "UNSUBSCRIBE\nid:svc\nreceipt:u\n\n\x00") // the queue stays
		svc.receipt(t, "SEND\ndestination:/exchange/amq.direct/"+key+"\nreceipt:p\n\nprivate-"+u+"\x00")

		rita := login(t, "rita", "reader")
		receipt(t, rita, "SUBSCRIBE\nid:svc\ndestination:"+topic+durable+"receipt:r\n\n\x00")
		quiet(t, rita)
		// The durable UNSUBSCRIBE deletes rita's own queue, not the service's.
		receipt(t, rita, "UNSUBSCRIBE\nid:svc\ndurable:true\nreceipt:u\n\n\x00")

		svc.receipt(t, sub+"receipt:s3\n\n\x00")
		if f := svc.frame(t); f.Command != validate.CmdMessage || string(f.Body()) != "private-"+u {
			t.Fatalf("the service got %s %q, want its private message", f.Command, f.Raw)
		}
		svc.receipt(t, "UNSUBSCRIBE\nid:svc\nreceipt:u3\n\n\x00")
	})

	t.Run("another identity's durable subscription", func(t *testing.T) {
		rita := login(t, "rita", "reader")
		receipt(t, rita, "SUBSCRIBE\nid:d\ndestination:"+topic+durable+"receipt:r\n\n\x00")
		rita.send(t, "DISCONNECT\n\n\x00")
		rita.closed(t)
		will := login(t, "will", "writer")
		receipt(t, will, "SEND\ndestination:"+topic+"\nreceipt:p\n\nfor-rita-"+u+"\x00")
		// will subscribes with the same topic and id: his own queue, which
		// was not there when the message came.
		receipt(t, will, "SUBSCRIBE\nid:d\ndestination:"+topic+durable+"receipt:r\n\n\x00")
		quiet(t, will)
		receipt(t, will, "UNSUBSCRIBE\nid:d\ndurable:true\nreceipt:u\n\n\x00")
		rita = login(t, "rita", "reader")
		rita.send(t, "SUBSCRIBE\nid:d\ndestination:"+topic+durable+"\n\x00")
		if f := rita.frame(t); f.Command != validate.CmdMessage || string(f.Body()) != "for-rita-"+u {
			t.Fatalf("rita got %s %q, want her backlog", f.Command, f.Raw)
		}
		receipt(t, rita, "UNSUBSCRIBE\nid:d\ndurable:true\nreceipt:u\n\n\x00")
	})

	t.Run("unsubscribe deletes no foreign queue", func(t *testing.T) {
		sp := startSpy(t, cred, u)
		for _, frame := range []string{
			// x-queue-name names the queue a durable UNSUBSCRIBE deletes.
			"UNSUBSCRIBE\nid:1\ndurable:true\nx-queue-name:" + sp.secret + "\n\n\x00",
			"UNSUBSCRIBE\nid:1\npersistent:true\nx-queue-name:" + sp.secret + "\n\n\x00",
			// Without it, the one RabbitMQ derives from the key and id:
			// another client's, as this subscription was not durable.
			"UNSUBSCRIBE\nid:1\ndurable:true\n\n\x00",
		} {
			rita := login(t, "rita", "reader")
			receipt(t, rita, "SUBSCRIBE\nid:1\ndestination:"+topic+"\nreceipt:r\n\n\x00")
			rita.send(t, frame)
			rita.expectError(t, "access refused", 1008)
		}
		if n := sp.queueDepth(t, sp.secret); n != 1 {
			t.Fatalf("the secret queue holds %d messages, want its 1", n)
		}
	})
}

// boundTo lists the queues bound to exchange with key, as rabbitmqctl
// sees them.
func boundTo(t *testing.T, exchange, key string) []string {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "list_bindings", "source_name", "destination_name", "routing_key", "-q", "-s").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl: %v: %s", err, out)
	}
	var qs []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == exchange && f[2] == key {
			qs = append(qs, f[1])
		}
	}
	return qs
}

// TestSubscribeNamedQueueIsAWrite: x-queue-name on a topic subscription
// binds that queue to the topic, so everything published there is written
// into it, and declares it with the frame's queue arguments if it is new:
// it takes publishing to the queue as well as reading it, and no shaping.
func TestSubscribeNamedQueueIsAWrite(t *testing.T) {
	cred := testCredential(t)
	u := strings.NewReplacer(".", "-", "_", "-").Replace(uniqueName(t))
	jobs := brokertest.RabbitQueue(t, "jobs-"+u)
	brokertest.RabbitQueue(t, "new-"+u) // should the gateway let the reader make it
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: brokerAddr(t), Credential: &cred, Auth: authtest.JWTPolicy(t, nil)}})
	sp := startSpy(t, cred, u)
	if _, err := sp.ch.QueueDeclare(jobs, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	// gina may read the queues, not write to them.
	grants := authtest.Claims{"wsbridge": map[string]any{"subscribe": []string{"demo.*", "queue:" + jobs, "queue:new-" + u}}}
	for _, frame := range []string{
		"SUBSCRIBE\nid:1\ndestination:/topic/demo." + u + "\nx-queue-name:" + jobs + "\n\n\x00",
		"SUBSCRIBE\nid:1\ndestination:/topic/demo." + u + "\nx-queue-name:new-" + u + "\nx-max-length:0\n\n\x00",
	} {
		cl := dial(t, gw.url, http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}})
		cl.send(t, connectWith("", authtest.Token(t, "gina", []string{"reader"}, time.Hour, grants)))
		if f := cl.frame(t); f.Command != validate.CmdConnected {
			t.Fatalf("got %s %q", f.Command, f.Raw)
		}
		cl.send(t, frame)
		cl.expectError(t, "access refused", 1008)
	}
	// A passive declare of a missing queue closes its channel: not the spy's.
	conn, err := amqp.DialConfig("amqp://"+brokertest.RabbitAMQP(t)+"/", amqp.Config{
		SASL: []amqp.Authentication{&amqp.PlainAuth{Username: cred.Username, Password: cred.Password.Reveal()}}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclarePassive("new-"+u, false, false, false, false, nil); err == nil {
		t.Error("the gateway let a reader create a named queue")
	}
}

// TestSubscribeWordWildcardHoldsSlashes: a '*' in a RabbitMQ binding key
// matches one word, and a word may hold '/', which the rules read as a
// separator: /topic/demo.* receives demo.x/secret, which demo.* does not
// cover (and whose subscription the gateway refuses). So a '*' word is as
// wide as '>' to the ACL, as MQTT's '+' is.
func TestSubscribeWordWildcardHoldsSlashes(t *testing.T) {
	cred := testCredential(t)
	u := strings.NewReplacer(".", "-", "_", "-").Replace(uniqueName(t))
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: brokerAddr(t), Credential: &cred, Auth: authtest.JWTPolicy(t, nil)}})
	login := func(t *testing.T) *client {
		t.Helper()
		cl := dial(t, gw.url, http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}})
		cl.send(t, connectWith("rita", authtest.Token(t, "rita", []string{"reader"}, time.Hour, nil)))
		if f := cl.frame(t); f.Command != validate.CmdConnected {
			t.Fatalf("got %s %q", f.Command, f.Raw)
		}
		return cl
	}
	for _, dest := range []string{"/topic/demo.*", "/exchange/amq.topic/demo.*", "/topic/demo." + u + "%2F*", "/topic/demo." + u + "%2Fsecret"} {
		t.Run(dest, func(t *testing.T) {
			cl := login(t)
			cl.send(t, "SUBSCRIBE\nid:1\ndestination:"+dest+"\n\n\x00")
			cl.expectError(t, "access refused", 1008)
		})
	}
	// What demo.* still allows: the topics themselves, and a '*' that is
	// not a word of its own, which RabbitMQ matches literally.
	cl := login(t)
	for _, dest := range []string{"/topic/demo." + u, "/topic/demo%2F*"} {
		cl.send(t, "SUBSCRIBE\nid:"+dest+"\ndestination:"+dest+"\nreceipt:r\n\n\x00")
		if f := cl.frame(t); f.Command != validate.CmdReceipt {
			t.Fatalf("%s: got %s %q, want RECEIPT", dest, f.Command, f.Raw)
		}
	}
}
