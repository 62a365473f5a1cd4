package bridge

import (
	"encoding/binary"
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
	"github.com/wsbridge/wsbridge/front"
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
	p.Start(ws, remote, release, DefaultWSOptions(), func() {}, nil)
}

type probe struct {
	gws.BuiltinEventHandler
	closed chan error
}

func (p *probe) OnClose(_ *gws.Conn, err error) { p.closed <- err }

// A panic in one session's handler closes that connection with 1011 and
// leaves the process serving; the panic and its stack go to the route's
// log (captured here, so that a passing run prints no stack).
func TestHandlerRecoversFromPanics(t *testing.T) {
	var logs strings.Builder // written before the close the test waits for
	sess := &panicky{closed: make(chan struct{})}
	sess.adm = &Admission{Route: "/boom", Log: slog.New(slog.NewTextHandler(&logs, nil))}
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
	got := logs.String()
	for _, want := range []string{"level=ERROR", "panic while handling a client message", "route=/boom", "panic=\"adapter bug\"",
		"stack=", "(*panicky).OnMessage"} {
		if !strings.Contains(got, want) {
			t.Errorf("the log lacks %q:\n%s", want, got)
		}
	}
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
	q.Start(ws, remote, release, DefaultWSOptions(), func() {}, nil)
}

// Admission refuses the connection over the limit with close 1013 and a
// reason, and a closed connection gives its slot back.
func TestAdmissionConnectionLimit(t *testing.T) {
	conns := front.NewConns(1, 0)
	origins, _ := front.NewOrigins(nil)
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
	second := &probe{closed: make(chan error, 1)}
	c2, _, err := gws.NewClient(second, &gws.ClientOption{Addr: url})
	if err != nil {
		t.Fatalf("second connection over a limit of 1 not upgraded to be closed: %v", err)
	}
	go c2.ReadLoop()
	checkBusyClose(t, <-second.closed, "limits.max_connections", 0)
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
		sess.Start(ws, r.RemoteAddr, func() {}, DefaultWSOptions(), func() {}, nil)
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

// greeter is an adapter session whose login is a message "login"; it
// answers "welcome" then, and "here" to "ping". Other messages are kept
// as a partial frame, as a protocol's partial login would be.
type greeter struct {
	Session
	ws WSOptions
}

func (g *greeter) GoAway(string) { g.Finish("shutdown", "", CloseGoingAway, 0, nil) }
func (g *greeter) OnMessage(b []byte) {
	switch string(b) {
	case "login":
		if _, err := g.Login("", ""); err == nil {
			g.Write(gws.OpcodeText, []byte("welcome"))
		}
	case "ping":
		g.Write(gws.OpcodeText, []byte("here"))
	default:
		g.Keep(b)
	}
}
func (g *greeter) OnClose(err error) {
	g.Ended(err, "client_closed")
	g.Release()
}
func (g *greeter) Begin(ws *gws.Conn, remote string, release func()) {
	g.Start(ws, remote, release, g.ws, func() {}, nil)
}

// A session that has not logged in within LoginTimeout is closed with 1008
// and a reason naming the limit, its slot freed; sending bytes that are
// not a login does not buy time, and a session that logged in stays.
func TestLoginDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ws := DefaultWSOptions()
	ws.LoginTimeout = timeout
	conns := front.NewConns(10, 0)
	origins, _ := front.NewOrigins(nil)
	a := &Admission{Protocol: "test", Route: "/", Origins: origins, Conns: conns, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Upgraders: NewUpgraders(Handler{}, ws, nil, func() gws.SessionStorage { return &greeter{ws: ws} })}
	srv := &http.Server{Handler: a}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	type client struct {
		conn   *gws.Conn
		c      *collector
		opened time.Time
	}
	dial := func(t *testing.T) *client {
		t.Helper()
		c := &collector{msgs: make(chan string, 16), closed: make(chan error, 1)}
		conn, _, err := gws.NewClient(c, &gws.ClientOption{Addr: "ws://" + ln.Addr().String()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.NetConn().Close() })
		go conn.ReadLoop()
		return &client{conn, c, time.Now()}
	}
	// Opened first, so its deadline has passed once the others' have.
	loggedIn := dial(t)
	loggedIn.conn.WriteString("login")
	if got := <-loggedIn.c.msgs; got != "1:welcome" {
		t.Fatalf("login answered %q", got)
	}

	const trickleFor = 5 * time.Second
	cases := []struct {
		name  string
		sends func(c *client, stop <-chan struct{})
	}{
		{"silent", func(*client, <-chan struct{}) {}},
		{"trickles bytes that are never a login", func(c *client, stop <-chan struct{}) {
			tick := time.NewTicker(20 * time.Millisecond) // pacing, not synchronisation
			defer tick.Stop()
			for end := time.After(trickleFor); ; {
				select {
				case <-tick.C:
					if c.conn.WriteString("l") != nil {
						return
					}
				case <-end:
					return
				case <-stop:
					return
				}
			}
		}},
	}
	t.Run("not logged in", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				c := dial(t)
				stop := make(chan struct{})
				defer close(stop)
				go tc.sends(c, stop)
				select {
				case err := <-c.c.closed:
					var ce *gws.CloseError
					if !errors.As(err, &ce) || ce.Code != ClosePolicy || !strings.Contains(string(ce.Reason), "limits.login_timeout") {
						t.Fatalf("closed with %v, want 1008 naming limits.login_timeout", err)
					}
				case <-time.After(trickleFor):
					t.Fatalf("still open after %s with a login deadline of %s", trickleFor, timeout)
				}
				if lived := time.Since(c.opened); lived < timeout-timeout/10 { // the client starts its clock after the gateway
					t.Fatalf("closed after %s, before the deadline", lived)
				}
			})
		}
	})
	// The parallel cases above have all ended: the deadline has passed.
	t.Run("logged in before the deadline", func(t *testing.T) {
		loggedIn.conn.WriteString("ping")
		select {
		case got := <-loggedIn.c.msgs:
			if got != "1:here" {
				t.Fatalf("got %q", got)
			}
		case err := <-loggedIn.c.closed:
			t.Fatalf("a logged-in session was closed: %v", err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for conns.Len() != 1 { // the server releases slots on its own goroutines
			if time.Now().After(deadline) {
				t.Fatalf("%d connections registered, want the logged-in one only", conns.Len())
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// Where the connection cannot write several buffers at once (TLS), an
// outbox holding referenced payloads joins them and still writes once,
// in order.
func TestOutboxJoinsWhereItCannotWritev(t *testing.T) {
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close(); server.Close() })
	var out Outbox
	big := strings.Repeat("b", outboxRefBytes)
	out.Add(gws.OpcodeText, []byte("one"))
	out.Add(gws.OpcodeBinary, []byte(big))
	out.Add(gws.OpcodeText, []byte("two"))
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(client); got <- b }()
	if err := out.writeTo(server); err != nil {
		t.Fatal(err)
	}
	server.Close()
	b := <-got
	frames := []struct {
		op byte
		p  string
	}{{0x81, "one"}, {0x82, big}, {0x81, "two"}}
	for _, f := range frames {
		if len(b) < 2 || b[0] != f.op {
			t.Fatalf("frame %q: header %x", f.p[:3], b[:min(len(b), 2)])
		}
		hl := 2
		switch b[1] {
		case 126:
			hl = 4
		case 127:
			hl = 10
		}
		if string(b[hl:hl+len(f.p)]) != f.p {
			t.Fatalf("frame %q: payload differs", f.p[:3])
		}
		b = b[hl+len(f.p):]
	}
	if len(b) != 0 {
		t.Fatalf("%d bytes left over", len(b))
	}
}

// BenchmarkOutboxLargeMessage sends one broker message of 64 B or 1 MiB
// through an Outbox to a loopback TCP connection (as a relay does after a
// read), against the copy-everything outbox it replaced, run alongside.
func BenchmarkOutboxLargeMessage(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
		}
	}()
	tc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer tc.Close()
	nc := &wsConn{Conn: tc}
	for _, size := range []int{64, 1 << 20} {
		payload := make([]byte, size)
		b.Run(fmt.Sprintf("%dB/outbox", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			var out Outbox
			for b.Loop() {
				out.Add(gws.OpcodeBinary, payload)
				if err := out.writeTo(nc); err != nil {
					b.Fatal(err)
				}
				out.n, out.size, out.mark, out.refs = 0, 0, 0, nil
				if cap(out.buf) > outboxKeepBytes {
					out.buf = nil
				} else {
					out.buf = out.buf[:0]
				}
			}
		})
		b.Run(fmt.Sprintf("%dB/copying", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			var buf []byte
			for b.Loop() {
				buf = append(buf, 0x82, 127)
				buf = binary.BigEndian.AppendUint64(buf, uint64(size))
				buf = append(buf, payload...)
				if _, err := nc.Write(buf); err != nil {
					b.Fatal(err)
				}
				if cap(buf) > outboxKeepBytes {
					buf = nil
				} else {
					buf = buf[:0]
				}
			}
		})
	}
}
