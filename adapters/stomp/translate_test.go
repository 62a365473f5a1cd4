package stomp

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3"
	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/amqpbroker"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/broker/natsbroker"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/validate"
)

// embeddedNATS is a real NATS server in the test process.
func embeddedNATS(t testing.TB) *natsbroker.Broker {
	t.Helper()
	e, err := natsbroker.StartEmbedded(natsbroker.EmbeddedOptions{Port: -1, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	n, err := natsbroker.New(natsbroker.Options{Endpoint: broker.Endpoint{Address: "nats://" + e.Addr()}, InProcess: e.Server()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); e.Shutdown() })
	return n
}

func startTranslator(t *testing.T, o Options) (*gateway, *natsbroker.Broker) {
	t.Helper()
	n := embeddedNATS(t)
	o.Broker = n
	return startGateway(t, o), n
}

func TestTranslateTopicsQueuesReceipts(t *testing.T) {
	gw, _ := startTranslator(t, Options{})
	a, b := stompOverWS(t, gw.url), stompOverWS(t, gw.url)
	subA, err := a.Subscribe("/topic/chat.room1", stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	subB, err := b.Subscribe("/topic/chat.room1", stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	// go-stomp's Subscribe does not wait; a receipted frame after it does,
	// and the gateway handles a connection's frames in order.
	b.Send("/topic/warmup", "", nil, stomp.SendOpt.Receipt)
	if err := a.Send("/topic/chat.room1", "text/plain", []byte("hello all"), stomp.SendOpt.Receipt); err != nil {
		t.Fatalf("send with receipt: %v", err)
	}
	for _, sub := range []*stomp.Subscription{subA, subB} {
		m := recv(t, sub)
		if string(m.Body) != "hello all" || m.ContentType != "text/plain" || m.Destination != "/topic/chat.room1" {
			t.Fatalf("got %q %q %q", m.Body, m.ContentType, m.Destination)
		}
	}

	// /queue/: each message reaches exactly one of the consumers. The
	// consumers are drained while sending: go-stomp stops reading frames
	// (receipts included) when a subscription's channel is full.
	qa, _ := a.Subscribe("/queue/jobs", stomp.AckAuto)
	qb, _ := b.Subscribe("/queue/jobs", stomp.AckAuto)
	b.Send("/topic/warmup", "", nil, stomp.SendOpt.Receipt)
	const n = 20
	delivered := make(chan string, 2*n)
	for _, q := range []*stomp.Subscription{qa, qb} {
		go func() {
			for m := range q.C {
				if m.Err != nil {
					return
				}
				delivered <- string(m.Body)
			}
		}()
	}
	for i := range n {
		if err := a.Send("/queue/jobs", "", []byte(fmt.Sprint(i)), stomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]int{}
	for range n {
		select {
		case body := <-delivered:
			got[body]++
		case <-time.After(10 * time.Second):
			t.Fatalf("queue delivered %d of %d", len(got), n)
		}
	}
	for k, c := range got {
		if c != 1 {
			t.Fatalf("queue message %s delivered %d times", k, c)
		}
	}
	if len(got) != n {
		t.Fatalf("queue delivered %d distinct messages, want %d", len(got), n)
	}
	if err := a.Disconnect(); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	b.Disconnect()
}

// After UNSUBSCRIBE (with its RECEIPT) nothing more arrives for that id.
// Raw frames: go-stomp's own Unsubscribe shares receipt ids with
// subscription ids and stalls under load.
func TestTranslateUnsubscribe(t *testing.T) {
	gw, _ := startTranslator(t, Options{})
	c := dial(t, gw.url, nil)
	c.connect(t)
	c.send(t, "SUBSCRIBE\nid:u\ndestination:/topic/unsub\n\n\x00SUBSCRIBE\nid:probe\ndestination:/topic/unsub\nreceipt:s\n\n\x00")
	if f := c.frame(t); f.Command != validate.CmdReceipt {
		t.Fatalf("got %s", f.Command)
	}
	c.send(t, "UNSUBSCRIBE\nid:u\nreceipt:gone\n\n\x00")
	if f := c.frame(t); f.Command != validate.CmdReceipt || header(t, f, "receipt-id") != "gone" {
		t.Fatalf("got %s %q", f.Command, f.Raw)
	}
	c.send(t, "SEND\ndestination:/topic/unsub\nreceipt:sent\n\nafter\x00")
	var probe, receipt bool
	for !probe || !receipt {
		f := c.frame(t)
		switch {
		case f.Command == validate.CmdReceipt:
			receipt = true
		case header(t, f, "subscription") == "probe":
			probe = true
		default:
			t.Fatalf("unsubscribed id still got %q", f.Raw)
		}
	}
}

func TestTranslateTransactions(t *testing.T) {
	gw, _ := startTranslator(t, Options{})
	c := stompOverWS(t, gw.url)
	sub, _ := c.Subscribe("/topic/tx", stomp.AckAuto)
	tx, _ := c.BeginWithError()
	tx.Send("/topic/tx", "", []byte("aborted"))
	tx.Abort()
	tx, _ = c.BeginWithError()
	tx.Send("/topic/tx", "", []byte("one"))
	tx.Send("/topic/tx", "", []byte("two"))
	// A plain SEND after the transactional ones must arrive first: the
	// gateway publishes in order, so anything published before COMMIT
	// would come ahead of it.
	if err := c.Send("/topic/tx", "", []byte("outside"), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, sub); string(m.Body) != "outside" {
		t.Fatalf("%q delivered before COMMIT (or the aborted send leaked)", m.Body)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, sub); string(m.Body) != "one" {
		t.Fatalf("got %q, want one (the aborted send leaked?)", m.Body)
	}
	if m := recv(t, sub); string(m.Body) != "two" {
		t.Fatalf("got %q", m.Body)
	}
}

// The per-connection bounds on subscriptions and open transactions hold.
// Open transactions hold at most maxTxBytes of message bodies, however
// they are split into frames and messages.
func TestTranslateTransactionBytes(t *testing.T) {
	gw, _ := startTranslator(t, Options{})
	c := dial(t, gw.url, nil)
	c.connect(t)
	c.send(t, "BEGIN\ntransaction:a\n\n\x00BEGIN\ntransaction:b\n\n\x00")
	frame := "SEND\ndestination:/topic/lim\ntransaction:%s\n\n" + strings.Repeat("x", 1<<20) + "\x00"
	for i := range maxTxBytes>>20 + 1 {
		c.send(t, fmt.Sprintf(frame, []string{"a", "b"}[i%2]))
	}
	c.expectError(t, fmt.Sprintf("hold more than %d bytes", maxTxBytes), bridge.ClosePolicy)
}

func TestTranslateLimits(t *testing.T) {
	gw, _ := startTranslator(t, Options{})
	var subs, txs strings.Builder
	for i := range maxSubscriptions + 1 {
		fmt.Fprintf(&subs, "SUBSCRIBE\nid:%d\ndestination:/topic/lim.s%d\n\n\x00", i, i)
	}
	for i := range maxTransactions + 1 {
		fmt.Fprintf(&txs, "BEGIN\ntransaction:t%d\n\n\x00", i)
	}
	tooMany := strings.Repeat("SEND\ndestination:/topic/lim\ntransaction:big\n\nx\x00", maxTxMessages+1)

	for _, tt := range []struct{ name, frames, mention string }{
		{"subscriptions", subs.String(), fmt.Sprintf("more than %d subscriptions", maxSubscriptions)},
		{"open transactions", txs.String(), fmt.Sprintf("more than %d open transactions", maxTransactions)},
		{"messages in a transaction", "BEGIN\ntransaction:big\n\n\x00" + tooMany, fmt.Sprintf("more than %d messages", maxTxMessages)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, gw.url, nil)
			c.connect(t)
			c.send(t, tt.frames)
			c.expectError(t, tt.mention, bridge.ClosePolicy)
		})
	}
}

func TestTranslateRefusals(t *testing.T) {
	gw, _ := startTranslator(t, Options{})
	tests := []struct {
		name, frames, mention string
		code                  uint16
	}{
		{"unsupported destination", "SEND\ndestination:/exchange/x\n\nx\x00", "use /topic/", bridge.ClosePolicy},
		{"wildcard topic", "SUBSCRIBE\nid:1\ndestination:/topic/a.*\n\n\x00", "wildcard", bridge.ClosePolicy},
		{"duplicate subscription id", "SUBSCRIBE\nid:1\ndestination:/topic/a\n\n\x00SUBSCRIBE\nid:1\ndestination:/topic/b\n\n\x00", "already in use", bridge.ClosePolicy},
		{"unknown subscription", "UNSUBSCRIBE\nid:9\n\n\x00", "no subscription", bridge.ClosePolicy},
		{"commit without begin", "COMMIT\ntransaction:t\n\n\x00", "not open", bridge.ClosePolicy},
		{"malformed frame", "SEND\ndestination:/topic/a\nx:\\q\n\n\x00", "escape", bridge.CloseProtocolError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, gw.url, nil)
			c.connect(t)
			c.send(t, tt.frames)
			c.expectError(t, tt.mention, tt.code)
		})
	}
}

func TestTranslateHeartBeats(t *testing.T) {
	gw, _ := startTranslator(t, Options{HeartBeat: 50 * time.Millisecond})
	c := dial(t, gw.url, nil)
	c.send(t, "CONNECT\naccept-version:1.2\nheart-beat:0,50\n\n\x00")
	f := c.frame(t)
	if header(t, f, "heart-beat") != "50,50" || header(t, f, "version") != "1.2" {
		t.Fatalf("CONNECTED %q", f.Raw)
	}
	for beats := 0; beats < 3; {
		if m := c.next(t); string(m.data) == "\n" {
			beats++
		}
	}
	// A client that promises beats and goes silent is dropped.
	silent := dial(t, gw.url, nil)
	silent.send(t, "CONNECT\naccept-version:1.2\nheart-beat:50,0\n\n\x00")
	silent.frame(t)
	silent.expectError(t, "no heart-beat", bridge.CloseGoingAway)
}

func TestTranslateBinaryAndEscapes(t *testing.T) {
	gw, _ := startTranslator(t, Options{})
	c := dial(t, gw.url, nil)
	c.connect(t)
	c.send(t, "SUBSCRIBE\nid:s\\c1\ndestination:/topic/bin\nack:client-individual\nreceipt:r\n\n\x00")
	if f := c.frame(t); f.Command != validate.CmdReceipt {
		t.Fatalf("got %s", f.Command)
	}
	// ACK and NACK are accepted (and have no effect on NATS core).
	c.send(t, "ACK\nid:1\nreceipt:a\n\n\x00NACK\nid:2\nreceipt:n\n\n\x00")
	for _, want := range []string{"a", "n"} {
		if f := c.frame(t); f.Command != validate.CmdReceipt || header(t, f, "receipt-id") != want {
			t.Fatalf("got %s %q", f.Command, f.Raw)
		}
	}
	body := "\x00\xff\xfe"
	send := fmt.Sprintf("SEND\ndestination:/topic/bin\ncontent-type:application/octet-stream\ncontent-length:%d\n\n%s\x00", len(body), body)
	if err := c.conn.WriteMessage(gws.OpcodeBinary, []byte(send)); err != nil {
		t.Fatal(err)
	}
	m := c.next(t)
	if !strings.HasPrefix(string(m.data), "MESSAGE\n") || !strings.Contains(string(m.data), "subscription:s\\c1\n") || !strings.Contains(string(m.data), "\nack:") {
		t.Fatalf("got %q", m.data)
	}
	if m.op != gws.OpcodeBinary || !strings.HasSuffix(string(m.data), "\n\n"+body+"\x00") {
		t.Fatalf("binary MESSAGE sent as opcode %d", m.op)
	}
}

// Translation works on any broker.Broker for /topic/: an external NATS
// server and RabbitMQ over AMQP here.
func TestTranslateOnExternalBrokers(t *testing.T) {
	cred := testCredential(t)
	brokers := map[string]func(t *testing.T) broker.Broker{
		"external nats": func(t *testing.T) broker.Broker {
			n, err := natsbroker.New(natsbroker.Options{Endpoint: broker.Endpoint{Address: "nats://" + brokertest.NATS(t)}})
			if err != nil {
				t.Fatal(err)
			}
			return n
		},
		"amqp": func(t *testing.T) broker.Broker {
			return amqpbroker.New(amqpbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.RabbitAMQP(t), Credential: &cred}})
		},
	}
	for name, mk := range brokers {
		t.Run(name, func(t *testing.T) {
			b := mk(t)
			t.Cleanup(func() { b.Close() })
			gw := startGateway(t, Options{Broker: b})
			c := stompOverWS(t, gw.url)
			topic := fmt.Sprintf("/topic/wsbridge.translate.%d", time.Now().UnixNano())
			sub, err := c.Subscribe(topic, stomp.AckAuto)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Send(topic, "text/plain", []byte("via "+name), stomp.SendOpt.Receipt); err != nil {
				t.Fatal(err)
			}
			if m := recv(t, sub); string(m.Body) != "via "+name {
				t.Fatalf("got %q", m.Body)
			}
			c.Disconnect()
		})
	}
}

// TestTranslateTransactionsTakeFromTheBudget: what a transaction holds
// until COMMIT comes out of limits.memory_bytes, as partial frames do; a
// client could otherwise hold maxTransactions * maxTxMessages frames of
// the largest size (16 GiB at the 1 MiB default) on one connection.
func TestTranslateTransactionsTakeFromTheBudget(t *testing.T) {
	ws := bridge.DefaultWSOptions()
	budget := memory.NewBudget(256 << 10)
	ws.Budget = budget
	gw, _ := startTranslator(t, Options{RouteOptions: bridge.RouteOptions{WS: ws}})
	body := strings.Repeat("x", 100<<10)
	send := func(tx string) string {
		return fmt.Sprintf("SEND\ndestination:/topic/tx.budget\ntransaction:%s\ncontent-length:%d\n\n%s\x00", tx, len(body), body)
	}

	c := dial(t, gw.url, nil)
	c.connect(t)
	c.send(t, "BEGIN\ntransaction:t\n\n\x00")
	c.send(t, send("t"))
	c.send(t, send("t"))
	c.send(t, "COMMIT\ntransaction:t\nreceipt:c\n\n\x00") // gives back what it held
	if f := c.frame(t); f.Command != validate.CmdReceipt {
		t.Fatalf("got %s %q, want RECEIPT", f.Command, f.Raw)
	}
	c.send(t, "BEGIN\ntransaction:t2\n\n\x00")
	for range 3 {
		c.send(t, send("t2"))
	}
	c.expectError(t, "limits.memory_bytes", bridge.CloseTryAgainLater)
	deadline := time.Now().Add(5 * time.Second)
	for budget.Used() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the ended session still holds %d bytes of the budget", budget.Used())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
