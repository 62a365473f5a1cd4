package bridge

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// panicky is an adapter session whose message handling panics.
type panicky struct {
	Session
	closed chan struct{}
}

func (p *panicky) GoAway(string)    {}
func (p *panicky) OnMessage([]byte) { panic("adapter bug") }
func (p *panicky) OnClose(error)    { p.Ended(nil, "client_closed"); close(p.closed) }
func (p *panicky) Begin(ws *gws.Conn, remote string, release func()) {
	p.Start(ws, remote, release, DefaultWSOptions(), func() {})
}

type probe struct {
	gws.BuiltinEventHandler
	closed chan error
}

func (p *probe) OnClose(_ *gws.Conn, err error) { p.closed <- err }

// A panic in one session's handler closes that connection with 1011 and
// leaves the process serving.
func TestHandlerRecoversFromPanics(t *testing.T) {
	sess := &panicky{closed: make(chan struct{})}
	ups := NewUpgraders(Handler{}, DefaultWSOptions(), nil, func() gws.SessionStorage { return sess })
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := ups.Upgrade(w, r)
		if err != nil {
			return
		}
		sess.Begin(ws, r.RemoteAddr, func() {})
		go ws.ReadLoop()
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p := &probe{closed: make(chan error, 1)}
	c, _, err := gws.NewClient(p, &gws.ClientOption{Addr: "ws://" + ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	go c.ReadLoop()
	c.WriteString("boom")
	select {
	case err := <-p.closed:
		var ce *gws.CloseError
		if !errors.As(err, &ce) || ce.Code != CloseInternal {
			t.Fatalf("closed with %v, want 1011", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed after the panic")
	}
	<-sess.closed
}

// quiet is an adapter session that does nothing with messages.
type quiet struct{ Session }

func (q *quiet) GoAway(string)    { q.Finish("shutdown", "", CloseGoingAway, 0, nil) }
func (q *quiet) OnMessage([]byte) {}
func (q *quiet) OnClose(err error) {
	q.Ended(err, "client_closed")
	q.Release()
}
func (q *quiet) Begin(ws *gws.Conn, remote string, release func()) {
	q.Start(ws, remote, release, DefaultWSOptions(), func() {})
}

// Admission refuses the connection over the limit with 503 and a reason,
// and a closed connection gives its slot back.
func TestAdmissionConnectionLimit(t *testing.T) {
	conns := NewConns(1, 0)
	origins, _ := NewOrigins(nil)
	a := &Admission{Protocol: "test", Route: "/", Origins: origins, Conns: conns, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Upgraders: NewUpgraders(Handler{}, DefaultWSOptions(), nil, func() gws.SessionStorage { return &quiet{} })}
	srv := &http.Server{Handler: a}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := "ws://" + ln.Addr().String()

	first := &probe{closed: make(chan error, 1)}
	c1, _, err := gws.NewClient(first, &gws.ClientOption{Addr: url})
	if err != nil {
		t.Fatal(err)
	}
	go c1.ReadLoop()
	waitLen := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for conns.Len() != n { // the server registers and releases on its own goroutine
			if time.Now().After(deadline) {
				t.Fatalf("%d connections registered, want %d", conns.Len(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitLen(1) // the 101 reaches the client before the server registers it
	_, resp, err := gws.NewClient(&probe{closed: make(chan error, 1)}, &gws.ClientOption{Addr: url})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second connection over a limit of 1: %v %v", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "connection limit") {
		t.Fatalf("503 body %q", body)
	}
	c1.WriteClose(1000, nil)
	<-first.closed
	waitLen(0)
	c3, _, err := gws.NewClient(&probe{closed: make(chan error, 1)}, &gws.ClientOption{Addr: url})
	if err != nil {
		t.Fatalf("a freed slot was not reusable: %v", err)
	}
	c3.NetConn().Close()
}

// collector records every message a client gets, with its opcode, and
// the close.
type collector struct {
	gws.BuiltinEventHandler
	msgs   chan string
	closed chan error
}

func (c *collector) OnClose(_ *gws.Conn, err error) { c.closed <- err }

func (c *collector) OnMessage(_ *gws.Conn, m *gws.Message) {
	c.msgs <- fmt.Sprintf("%d:%s", m.Opcode, m.Bytes())
	m.Close()
}

// An Outbox's messages reach a real client whole, in order, with their
// opcodes, across every length encoding and beside gws's own writes.
func TestOutboxSendsWholeMessagesInOneWrite(t *testing.T) {
	// Every length encoding: 7 bits, 16 bits, 64 bits, at their edges.
	type msg struct {
		op      gws.Opcode
		payload string
	}
	var msgs []msg
	for i, n := range []int{0, 1, 125, 126, 65535, 65536, 200_000} {
		op := gws.OpcodeText
		if i%2 == 1 {
			op = gws.OpcodeBinary
		}
		msgs = append(msgs, msg{op, strings.Repeat(string(rune('a'+i)), n)})
	}
	sent := make(chan bool, 1)
	sess := &quiet{}
	ups := NewUpgraders(Handler{}, DefaultWSOptions(), nil, func() gws.SessionStorage { return sess })
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := ups.Upgrade(w, r)
		if err != nil {
			return
		}
		sess.Start(ws, r.RemoteAddr, func() {}, DefaultWSOptions(), func() {})
		go ws.ReadLoop()
		var out Outbox
		for _, m := range msgs {
			out.Add(m.op, []byte(m.payload))
		}
		ok := sess.Send(&out)
		sess.Write(gws.OpcodeText, []byte("after")) // through gws
		out.Add(gws.OpcodeText, []byte("last"))
		ok = ok && sess.Send(&out) && sess.Send(&out) // an empty outbox sends nothing
		sess.Finish("shutdown", "bye", CloseGoingAway, 0, nil)
		out.Add(gws.OpcodeText, []byte("after close"))
		sent <- ok && !sess.Send(&out) // nothing follows the close frame
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	closed := make(chan error, 1)
	c := &collector{msgs: make(chan string, 16), closed: closed}
	conn, _, err := gws.NewClient(c, &gws.ClientOption{Addr: "ws://" + ln.Addr().String(), ReadMaxPayloadSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.NetConn().Close() })
	go conn.ReadLoop()
	// What the client should see: the outbox's messages, then the two
	// written after them (a new slice: the handler still reads msgs).
	want := append(msgs[:len(msgs):len(msgs)], msg{gws.OpcodeText, "after"}, msg{gws.OpcodeText, "last"})
	for i, m := range want {
		w := fmt.Sprintf("%d:%s", m.op, m.payload)
		select {
		case got := <-c.msgs:
			if got != w {
				t.Fatalf("message %d: %.40q (%d bytes), want %.40q (%d bytes)", i, got, len(got), w, len(w))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d never came", i)
		}
	}
	if !<-sent {
		t.Fatal("Send failed before the close, or wrote after it")
	}
	select {
	case got := <-c.msgs:
		t.Fatalf("after the close frame: %.40q", got)
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("no close")
	}
}
