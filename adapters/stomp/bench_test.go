package stomp

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/internal/authtest"
	"github.com/wsbridge/wsbridge/validate"
)

// benchWindow bounds the messages in flight, as a real publisher with
// flow control would.
const benchWindow = 256

// counter counts MESSAGE frames and frees a window slot for each.
type counter struct {
	n     atomic.Int64
	slots chan struct{}
	done  chan struct{}
	want  int64
}

func (c *counter) saw(cmd validate.STOMPCommand) {
	if cmd != validate.CmdMessage {
		return
	}
	<-c.slots
	if c.n.Add(1) == c.want {
		close(c.done)
	}
}

// pubSub sends b.N SEND frames of about 128 bytes on one connection that
// is subscribed to the same queue, and waits until all came back.
func pubSub(b *testing.B, write func([]byte) error, c *counter, queue string) {
	frame := []byte(fmt.Sprintf("SEND\ndestination:%s\ncontent-type:text/plain\n\n%s\x00", queue, strings.Repeat("x", 64)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c.slots <- struct{}{}
		if err := write(frame); err != nil {
			b.Fatal(err)
		}
	}
	<-c.done
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

type benchWS struct {
	gws.BuiltinEventHandler
	c       *counter
	ready   chan struct{}
	scanner *validate.STOMPScanner
}

func (h *benchWS) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	data := m.Bytes()
	for len(data) > 0 {
		n, f, err := h.scanner.Next(data)
		if err != nil || n == 0 {
			return
		}
		if f != nil {
			switch f.Command {
			case validate.CmdReceipt:
				close(h.ready)
			default:
				h.c.saw(f.Command)
			}
		}
		data = data[n:]
	}
}

// BenchmarkRelayPubSub measures messages through the gateway: the client
// over WebSocket, the gateway relaying to RabbitMQ's STOMP port. Compare
// with BenchmarkDirectPubSub in the same run.
func BenchmarkRelayPubSub(b *testing.B) {
	cred := testCredential(b)
	relayPubSub(b, Options{RouteOptions: bridge.RouteOptions{Address: brokerAddr(b), Credential: &cred}}, connect12)
}

// BenchmarkRelayPubSubWithACL is BenchmarkRelayPubSub with a JWT login and
// an allow-list checked on every SEND: what auth costs per message.
func BenchmarkRelayPubSubWithACL(b *testing.B) {
	cred := testCredential(b)
	pol := authtest.JWTPolicy(b, func(o *auth.Options) {
		pat, _ := auth.ParsePattern("queue:*")
		o.Rules = []auth.Rule{{Roles: []string{"bench"}, Publish: []auth.Pattern{pat}, Subscribe: []auth.Pattern{pat}}}
	})
	relayPubSub(b, Options{RouteOptions: bridge.RouteOptions{Address: brokerAddr(b), Credential: &cred, Auth: pol}},
		connectWith("", authtest.Token(b, "bench", []string{"bench"}, time.Hour, nil)))
}

func relayPubSub(b *testing.B, o Options, connect string) {
	queue := "/queue/" + uniqueQueue(b)
	gw := startGateway(b, o)
	c := &counter{slots: make(chan struct{}, benchWindow), done: make(chan struct{}), want: int64(b.N)}
	h := &benchWS{c: c, ready: make(chan struct{}), scanner: validate.NewSTOMPScanner(validate.STOMPLimits{}, true)}
	conn, _, err := gws.NewClient(h, &gws.ClientOption{Addr: gw.url, RequestHeader: http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}})
	if err != nil {
		b.Fatal(err)
	}
	go conn.ReadLoop()
	defer conn.WriteClose(1000, nil)
	conn.WriteString(connect + "SUBSCRIBE\nid:1\ndestination:" + queue + "\nreceipt:ok\n\n\x00")
	select {
	case <-h.ready:
	case <-time.After(10 * time.Second):
		b.Fatalf("no RECEIPT for the SUBSCRIBE; gateway logs:\n%s", gw.logs)
	}
	pubSub(b, func(p []byte) error { return conn.WriteMessage(gws.OpcodeText, p) }, c, queue)
}

// BenchmarkDirectPubSub is the ceiling: the same load on a plain TCP STOMP
// connection to RabbitMQ.
func BenchmarkDirectPubSub(b *testing.B) {
	addr := brokerAddr(b)
	cred := testCredential(b)
	queue := "/queue/" + uniqueQueue(b)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := &counter{slots: make(chan struct{}, benchWindow), done: make(chan struct{}), want: int64(b.N)}
	ready := make(chan struct{})
	go func() {
		r := bufio.NewReaderSize(conn, 64<<10)
		sc := validate.NewSTOMPScanner(validate.STOMPLimits{}, true)
		var buf []byte
		chunk := make([]byte, 64<<10)
		for {
			n, err := r.Read(chunk)
			if err != nil {
				return
			}
			buf = append(buf, chunk[:n]...)
			for {
				k, f, err := sc.Next(buf)
				if err != nil || k == 0 {
					break
				}
				if f != nil {
					if f.Command == validate.CmdReceipt {
						close(ready)
					} else {
						c.saw(f.Command)
					}
				}
				buf = buf[k:]
			}
			buf = append([]byte(nil), buf...)
		}
	}()
	fmt.Fprintf(conn, "CONNECT\naccept-version:1.2\nhost:/\nlogin:%s\npasscode:%s\n\n\x00SUBSCRIBE\nid:1\ndestination:%s\nreceipt:ok\n\n\x00",
		cred.Username, cred.Password.Reveal(), queue)
	<-ready
	pubSub(b, func(p []byte) error { _, err := conn.Write(p); return err }, c, queue)
}

// BenchmarkACLSend is a restricted identity's check of a SEND with the
// headers stompjs sends, to the same destination as the one before: it
// must not allocate.
func BenchmarkACLSend(b *testing.B) {
	pol := authtest.JWTPolicy(b, nil)
	id := &auth.Identity{Subject: "will", Roles: []string{"writer"}}
	a := &acl{topicExchange: "amq.topic", given: &replyQueues{},
		allow: func(act auth.Action, d auth.Dest) error { return pol.Allow(id, act, d) },
		deny:  func(_, msg string) error { return &auth.Error{Msg: msg} }}
	frame := []byte("CONNECT\naccept-version:1.2\n\n\x00SEND\ndestination:/topic/demo.x\ncontent-type:text/plain\ncontent-length:5\nreceipt:r1\n\nhello\x00")
	sc := validate.NewSTOMPScanner(validate.STOMPLimits{}, false)
	n, _, _ := sc.Next(frame)
	_, f, err := sc.Next(frame[n:])
	if _, aerr := a.authorize(f, sc.Version); err != nil || aerr != nil {
		b.Fatal("the SEND should be allowed", err, aerr)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.authorize(f, sc.Version); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}
