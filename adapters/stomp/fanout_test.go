package stomp

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/amqpbroker"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/broker/mqttbroker"
	"github.com/wsbridge/wsbridge/broker/natsbroker"
	"github.com/wsbridge/wsbridge/broker/stompbroker"
	"github.com/wsbridge/wsbridge/memory"
)

// backends are the brokers translate mode maps onto, each behind the
// Shared layer as cmd/wsbridge wires them.
func backends(t *testing.T) map[string]func(t *testing.T) broker.Broker {
	cred := testCredential(t)
	return map[string]func(t *testing.T) broker.Broker{
		"nats": func(t *testing.T) broker.Broker {
			n, err := natsbroker.New(natsbroker.Options{Endpoint: broker.Endpoint{Address: "nats://" + brokertest.NATS(t)}})
			if err != nil {
				t.Fatal(err)
			}
			return n
		},
		"amqp": func(t *testing.T) broker.Broker {
			return amqpbroker.New(amqpbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.RabbitAMQP(t), Credential: &cred}})
		},
		"mqtt": func(t *testing.T) broker.Broker {
			return mqttbroker.New(mqttbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.Mosquitto(t)}})
		},
		"stomp": func(t *testing.T) broker.Broker {
			return stompbroker.New(stompbroker.Options{Endpoint: broker.Endpoint{Address: brokerAddr(t), Credential: &cred}})
		},
	}
}

// Any number of STOMP clients on one topic each get every message, on
// every backend, through one upstream subscription; and the others keep
// getting them after one leaves (paho keeps one callback per filter: a
// second subscription used to replace the first, and the first
// unsubscribe cut both).
func TestTranslateSubscribersShareATopic(t *testing.T) {
	for name, mk := range backends(t) {
		t.Run(name, func(t *testing.T) {
			b := mk(t)
			t.Cleanup(func() { b.Close() })
			shared := broker.NewShared(b)
			gw := startGateway(t, Options{Broker: shared})
			topic := fmt.Sprintf("/topic/wsbridge.fanout.%s.%d", name, time.Now().UnixNano())
			var clients []*stomp.Conn
			var subs []*stomp.Subscription
			for range 3 {
				c := stompOverWS(t, gw.url)
				sub, err := c.Subscribe(topic, stomp.AckAuto)
				if err != nil {
					t.Fatal(err)
				}
				clients, subs = append(clients, c), append(subs, sub)
			}
			// A receipted SEND on each connection: its earlier SUBSCRIBE is in.
			for _, c := range clients {
				if err := c.Send("/topic/wsbridge.warmup", "", nil, stomp.SendOpt.Receipt); err != nil {
					t.Fatal(err)
				}
			}
			if n := shared.Topics(); n != 1 {
				t.Fatalf("%d upstream subscriptions for one topic, want 1", n)
			}
			if err := clients[0].Send(topic, "text/plain", []byte("first"), stomp.SendOpt.Receipt); err != nil {
				t.Fatal(err)
			}
			for i, sub := range subs {
				if m := recv(t, sub); string(m.Body) != "first" {
					t.Fatalf("subscriber %d got %q", i, m.Body)
				}
			}
			if err := subs[0].Unsubscribe(); err != nil {
				t.Fatal(err)
			}
			clients[0].Send("/topic/wsbridge.warmup", "", nil, stomp.SendOpt.Receipt)
			if err := clients[0].Send(topic, "text/plain", []byte("second"), stomp.SendOpt.Receipt); err != nil {
				t.Fatal(err)
			}
			for i, sub := range subs[1:] {
				if m := recv(t, sub); string(m.Body) != "second" {
					t.Fatalf("subscriber %d after another left got %q", i+1, m.Body)
				}
			}
		})
	}
}

// A client that subscribes and then never reads its socket is dropped at
// its queue's bound, and only it: a second client on the same topic keeps
// getting every message, and the gateway's heap stays near what the
// bounds allow instead of growing with what the broker sends.
func TestTranslateSlowClientIsDroppedAlone(t *testing.T) {
	ws := bridge.DefaultWSOptions()
	ws.WriteTimeout = 500 * time.Millisecond // how long the ERROR may wait on the stalled socket
	gw, _ := startTranslator(t, Options{RouteOptions: bridge.RouteOptions{WS: ws}})
	topic := "/topic/wsbridge.slow"

	// The stalled client: raw WebSocket, subscribes, never reads again.
	stalled := dialRawSTOMP(t, gw.url, "SUBSCRIBE\nid:0\ndestination:"+topic+"\nreceipt:r\n\n\x00")
	defer stalled.Close()
	good := stompOverWS(t, gw.url)
	sub, err := good.Subscribe(topic, stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	good.Send("/topic/wsbridge.warmup", "", nil, stomp.SendOpt.Receipt)

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	pub := stompOverWS(t, gw.url)
	body := strings.Repeat("x", 64<<10)
	const n = 1000 // 64 MiB in all: far past what the stalled client may hold
	// The publisher keeps at most window messages (1 MiB) ahead of the
	// good subscriber: a client that keeps up is never a queue's 4 MiB
	// behind, however slowly a loaded machine (or -race) runs it, while
	// the stalled one falls ever further behind.
	const window = 16
	credit := make(chan struct{}, window)
	for range window {
		credit <- struct{}{}
	}
	done := make(chan error, 1)
	go func() {
		for i := range n {
			<-credit
			if err := pub.Send(topic, "text/plain", []byte(fmt.Sprint(i, body))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := range n {
		m := recv(t, sub)
		if !strings.HasPrefix(string(m.Body), fmt.Sprint(i, "x")) {
			t.Fatalf("message %d: got %.10q", i, m.Body)
		}
		credit <- struct{}{}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Dropped as soon as its queue overflows, or its blocked write times
	// out, whichever comes first on this machine.
	closed := "remote=" + stalled.LocalAddr().String() + " identity=anonymous outcome="
	gw.logs.waitFor(t, closed)
	if logs := gw.logs.String(); !strings.Contains(logs, closed+"slow_consumer") && !strings.Contains(logs, closed+"write_timeout") {
		t.Fatalf("the stalled client ended otherwise:\n%s", logs)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 4*maxQueueBytes+16<<20 {
		t.Fatalf("heap grew by %d MiB while a client stalled", grew>>20)
	}
}

// A client that stops reading is dropped as soon as its queue overflows,
// not a write timeout later: the write blocked on its socket is cut short
// and its goodbye goes only where the socket has room. Until then it kept
// its queue's budget, its blocked frame and its connection slot for
// websocket.write_timeout (10 s by default; a minute here).
func TestTranslateSlowConsumerIsDroppedAtOnce(t *testing.T) {
	ws := bridge.DefaultWSOptions()
	ws.WriteTimeout = time.Minute
	budget := memory.NewBudget(memory.DefaultBudgetBytes)
	ws.Budget = budget
	gw, _ := startTranslator(t, Options{RouteOptions: bridge.RouteOptions{WS: ws}})
	topic := fmt.Sprintf("/topic/wsbridge.stalled.%d", time.Now().UnixNano())
	stalled := dialRawSTOMP(t, gw.url, "SUBSCRIBE\nid:0\ndestination:"+topic+"\nreceipt:r\n\n\x00")
	defer stalled.Close()

	pub := stompOverWS(t, gw.url)
	body := []byte(strings.Repeat("x", 64<<10))
	// 24 MiB: past the queue's 4 MiB and whatever the kernel's buffers
	// take of a client that reads nothing.
	for range 384 {
		if err := pub.Send(topic, "text/plain", body); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Send(topic, "text/plain", body, stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	published := time.Now()
	gw.logs.waitFor(t, "remote="+stalled.LocalAddr().String()+" identity=anonymous outcome=slow_consumer")
	if d := time.Since(published); d > ws.WriteTimeout/2 {
		t.Fatalf("dropped %s after the last message was published", d)
	}
	// What its queue held is back in the budget. Deliveries still on their
	// way to the closed session give theirs back as they land, with no
	// event to wait on, so the budget is polled for a while.
	deadline := time.Now().Add(5 * time.Second)
	for budget.Used() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if used := budget.Used(); used != 0 {
		t.Fatalf("%d bytes of the budget still held after the slow consumer was dropped", used)
	}
}

// dialRawSTOMP opens a STOMP WebSocket on a bare socket, sends CONNECT and
// then frames, reads up to the receipt, and from then on reads nothing.
func dialRawSTOMP(t *testing.T, url, frames string) net.Conn {
	t.Helper()
	host := strings.TrimPrefix(url, "ws://")
	host, path, _ := strings.Cut(host, "/")
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n", path, host)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	for _, f := range []string{connect12, frames} {
		c.Write(append([]byte{0x81, 0x80 | 126, byte(len(f) >> 8), byte(len(f)), 0, 0, 0, 0}, f...))
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for got := ""; !strings.Contains(got, "RECEIPT"); {
		line, err := br.ReadString(0)
		if err != nil {
			t.Fatalf("waiting for the receipt: %v (%q)", err, got)
		}
		got += line
	}
	return c // from here on nothing is read
}
