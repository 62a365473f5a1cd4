package bridge

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/internal/authtest"
)

// serveAdmission serves an Admission of quiet sessions at /ws on a Server
// with o, with the subprotocols given; it returns the server and its
// address.
func serveAdmission(t *testing.T, o front.ServerOptions, p *auth.Policy, subprotocols []string) (*front.Server, string) {
	t.Helper()
	s := front.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), o)
	origins, _ := front.NewOrigins(nil)
	s.Handle("/ws", &Admission{Protocol: "test", Route: "/ws", Origins: origins, Conns: s.Conns, Auth: p,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Upgraders: NewUpgraders(Handler{}, DefaultWSOptions(), subprotocols, func() gws.SessionStorage { return &quiet{} })})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return s, ln.Addr().String()
}

var retryIn = regexp.MustCompile(`; retry in ([0-9.]+s)$`)

// checkBusyClose checks that err is close 1013 whose reason names limit
// and ends with a retry hint from front.RetryHint of a wait of at most least.
func checkBusyClose(t *testing.T, err error, limit string, least time.Duration) {
	t.Helper()
	var ce *gws.CloseError
	if !errors.As(err, &ce) || ce.Code != CloseTryAgainLater {
		t.Fatalf("closed with %v, want 1013", err)
	}
	reason := string(ce.Reason)
	m := retryIn.FindStringSubmatch(reason)
	if m == nil || !strings.Contains(reason, limit) {
		t.Fatalf("close reason %q: want %s and a retry hint", reason, limit)
	}
	hi := max(least, front.RetryMin) + front.RetrySpread
	if d, _ := time.ParseDuration(m[1]); d < front.RetryMin || d > hi {
		t.Fatalf("retry hint %s outside [%s, %s]", d, front.RetryMin, hi)
	}
}

// A WebSocket client refused for load is upgraded (with the subprotocol
// it offered, which browsers insist on) and closed with 1013 and a hint,
// which a browser's WebSocket API shows the page; an HTTP status it would
// show as 1006. Past the bound on refusals lingering at once, the close
// still goes, without the lingering. A client this route would not take
// anyway gets HTTP.
func TestWebSocketRefusedForLoad(t *testing.T) {
	cases := []struct {
		name      string
		opts      front.ServerOptions
		limit     string        // named in the reason
		least     time.Duration // the limit's own wait, at most
		noLinger  bool          // no place left for a lingering refusal
		protocols string        // offered by the refused client
		wantHTTP  int
	}{
		{name: "handshake rate", opts: front.ServerOptions{HandshakeRate: 0.2, HandshakeBurst: 1}, limit: "limits.handshakes_per_second", least: 5 * time.Second, protocols: "v11.stomp"},
		{name: "gateway full", opts: front.ServerOptions{MaxConns: 1}, limit: "limits.max_connections"},
		{name: "address full", opts: front.ServerOptions{MaxConnsPerIP: 1}, limit: "limits.max_connections_per_ip", protocols: "v10.stomp, v12.stomp"},
		{name: "past the bound on lingering refusals", opts: front.ServerOptions{MaxConns: 1}, limit: "limits.max_connections", noLinger: true},
		{name: "offering only other subprotocols", opts: front.ServerOptions{MaxConns: 1}, protocols: "mqtt", wantHTTP: http.StatusServiceUnavailable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, addr := serveAdmission(t, c.opts, nil, []string{"v12.stomp", "v11.stomp", "v10.stomp"})
			if c.noLinger { // every place taken
				for s.Conns.TakeRefusal() {
					t.Cleanup(s.Conns.GiveRefusal)
				}
			}
			first := &probe{closed: make(chan error, 1)}
			c1, _, err := gws.NewClient(first, &gws.ClientOption{Addr: "ws://" + addr + "/ws"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c1.NetConn().Close() })
			go c1.ReadLoop()
			// The 101 reaches the client before the server registers it.
			for deadline := time.Now().Add(5 * time.Second); s.Conns.Len() != 1; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("first connection not registered")
				}
			}

			opt := &gws.ClientOption{Addr: "ws://" + addr + "/ws"}
			if c.protocols != "" {
				opt.RequestHeader = http.Header{"Sec-Websocket-Protocol": {c.protocols}}
			}
			second := &probe{closed: make(chan error, 1)}
			c2, resp, err := gws.NewClient(second, opt)
			if c.wantHTTP != 0 {
				if err == nil || resp == nil || resp.StatusCode != c.wantHTTP || resp.Header.Get("Retry-After") == "" {
					t.Fatalf("got %v %v, want HTTP %d with Retry-After", err, resp, c.wantHTTP)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused connection not upgraded: %v", err)
			}
			go c2.ReadLoop()
			select {
			case err := <-second.closed:
				checkBusyClose(t, err, c.limit, c.least)
			case <-time.After(5 * time.Second):
				t.Fatal("refused connection not closed")
			}
		})
	}
}

// A Basic-auth upgrade refused unchecked because its address has its
// share of password checks in progress gets 1013 too, not 429.
func TestWebSocketPasswordChecksBusy(t *testing.T) {
	p := authtest.UsersPolicy(t, map[string][2]string{"will": {"pw-of-will", "writer"}})
	_, addr := serveAdmission(t, front.ServerOptions{}, p, nil)
	// Beyond the address's share (2) of checks at once, some of these are
	// refused unchecked; the rest fail their check. A bcrypt check takes
	// tens of milliseconds, so requests sent together overlap.
	const n = 6
	closes := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr := &probe{closed: make(chan error, 1)}
			req, _ := http.NewRequest("GET", "http://x", nil)
			req.SetBasicAuth("will", "wrong")
			// Checks queue for one hash slot: under the race detector the
			// last may take seconds to be answered.
			c, resp, err := gws.NewClient(pr, &gws.ClientOption{Addr: "ws://" + addr + "/ws", HandshakeTimeout: time.Minute,
				RequestHeader: http.Header{"Authorization": req.Header.Values("Authorization")}})
			if err != nil {
				if resp == nil || resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("got %v %v, want 401 or an upgrade closed with 1013", err, resp)
				}
				return
			}
			go c.ReadLoop()
			closes <- <-pr.closed
		}()
	}
	wg.Wait()
	close(closes)
	busy := 0
	for err := range closes {
		checkBusyClose(t, err, "too many logins", time.Second)
		busy++
	}
	if busy == 0 {
		t.Fatalf("none of %d concurrent logins from one address was refused unchecked", n)
	}
}

// A refused client's socket is closed once it answers the close frame;
// one that never answers holds its place among the lingering refusals for
// the linger time, no longer.
func TestWebSocketRefusalLingersBounded(t *testing.T) {
	cases := []struct {
		name        string
		answer      bool
		least, most time.Duration
	}{
		{"answers the close", true, 0, lingerTime / 2},
		{"never answers", false, lingerTime / 2, 3 * lingerTime},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, addr := serveAdmission(t, front.ServerOptions{}, nil, nil)
			s.Conns.CloseAll(context.Background()) // as in a shutdown: every connection is refused
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			io.WriteString(nc, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
			br := bufio.NewReader(nc)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols ||
				resp.Header.Get("Sec-Websocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
				t.Fatalf("got %v %v, want 101 with the RFC 6455 example's accept key", resp, err)
			}
			hdr := make([]byte, 4)
			if _, err := io.ReadFull(br, hdr); err != nil || hdr[0] != 0x88 || binary.BigEndian.Uint16(hdr[2:]) != CloseTryAgainLater {
				t.Fatalf("frame header % x (%v), want a close with 1013", hdr, err)
			}
			start := time.Now()
			if s.Conns.Refusing() != 1 {
				t.Fatalf("%d refusals lingering, want 1", s.Conns.Refusing())
			}
			if c.answer {
				nc.Write([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xf5}) // 1013, masked with a zero key
			}
			// The place is given back on the server's goroutine, with no
			// event a client can see (it read EOF at the close frame).
			for s.Conns.Refusing() != 0 {
				if time.Since(start) > c.most {
					t.Fatalf("refusal still lingering after %s", time.Since(start))
				}
				time.Sleep(5 * time.Millisecond)
			}
			if d := time.Since(start); d < c.least {
				t.Fatalf("refusal ended after %s, before the client could answer (%s)", d, c.least)
			}
		})
	}
}

// BenchmarkWebSocketRefusal is what refusing a WebSocket for load costs,
// client and server together on loopback: the request, the 101 and close
// in one write, the client's close answered and the lingering close.
func BenchmarkWebSocketRefusal(b *testing.B) {
	s := front.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), front.ServerOptions{})
	origins, _ := front.NewOrigins(nil)
	s.Handle("/ws", &Admission{Protocol: "test", Route: "/ws", Origins: origins, Conns: s.Conns,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Upgraders: NewUpgraders(Handler{}, DefaultWSOptions(), nil, func() gws.SessionStorage { return &quiet{} })})
	s.Conns.CloseAll(context.Background()) // every connection refused
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve(ln)
	b.Cleanup(func() { s.Close() })
	req := []byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		nc.Write(req)
		br := bufio.NewReader(nc)
		if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			b.Fatalf("%v %v", resp, err)
		}
		hdr := make([]byte, 2)
		io.ReadFull(br, hdr)
		io.CopyN(io.Discard, br, int64(hdr[1]))
		nc.Write([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xf5})
		io.Copy(io.Discard, br) // until the server closes
		nc.Close()
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "refusals/s")
}

// breacher is a counter session that takes its options, Penalize among
// them, from the route.
type breacher struct {
	counter
	o WSOptions
}

func (b *breacher) Begin(ws *gws.Conn, remote string, release func()) {
	b.Start(ws, remote, release, b.o, func() {}, nil)
}

// A client whose session ends for a costly breach (a message too large, one
// not completed in time, or leaving while a message larger than the
// connection's own allowance is incomplete) costs its address
// front.BreachCost of its handshake rate on top of the handshake: reconnecting to breach again soon finds
// the address refused before the upgrade, with 1013 and a retry hint.
// Clients that end cleanly cost one handshake each, and other addresses
// are not touched.
func TestBreachesSpendTheAddressHandshakeRate(t *testing.T) {
	// One handshake a second, four at once: a breach costs two (the
	// handshake and front.BreachCost's one token), a clean session one.
	s := front.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), front.ServerOptions{HandshakeRate: 1, HandshakeBurst: 4})
	penalized := make(chan string, 16)
	o := DefaultWSOptions()
	o.MaxMessageBytes = 64 << 10 // room for a message beyond memory.OwnBytes
	o.MessageTimeout = 100 * time.Millisecond
	o.Penalize = func(client string) {
		s.Penalize(client)
		penalized <- client
	}
	origins, _ := front.NewOrigins(nil)
	s.Handle("/", &Admission{Protocol: "test", Route: "/", Origins: origins, Conns: s.Conns,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Upgraders: NewUpgraders(Handler{}, o, nil, func() gws.SessionStorage { return &breacher{o: o} })})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	addr := ln.Addr().String()

	cases := []struct {
		name, from string
		session    func(t *testing.T, r *rawWS) // ends the session its way
		breach     bool
	}{
		{"too large", "127.0.0.10", func(t *testing.T, r *rawWS) {
			r.conn.Write(header(true, 2, 1<<20))
			if _, code, _ := r.untilClose(t); code != CloseTooLarge {
				t.Fatalf("closed with %d, want 1009", code)
			}
		}, true},
		{"message timeout", "127.0.0.11", func(t *testing.T, r *rawWS) {
			r.conn.Write(header(true, 2, 100))
			if _, code, _ := r.untilClose(t); code != ClosePolicy {
				t.Fatalf("closed with %d, want 1008", code)
			}
		}, true},
		// Gone before the timeout, so that the session ends as
		// client_closed: the memory was held all the same.
		{"left mid-message", "127.0.0.13", func(t *testing.T, r *rawWS) {
			r.conn.Write(append(header(true, 2, 32<<10), make([]byte, 1<<10)...))
			r.conn.Close()
		}, true},
		{"clean close", "127.0.0.12", func(t *testing.T, r *rawWS) {
			r.conn.Write(frame(true, 2, []byte("hello")))
			r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if op, p, err := r.next(); err != nil || op != 1 || string(p) != "got 5" {
				t.Fatalf("answer %d %q %v", op, p, err)
			}
			r.conn.Write(frame(true, 8, binary.BigEndian.AppendUint16(nil, CloseNormal)))
			r.untilClose(t)
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for range 2 {
				r := dialRawWSFrom(t, addr, c.from)
				c.session(t, r)
				r.conn.Close()
				if c.breach {
					select {
					case got := <-penalized:
						if got != c.from {
							t.Fatalf("penalized %s, want %s", got, c.from)
						}
					case <-time.After(10 * time.Second):
						t.Fatal("the session ended without charging its address")
					}
				}
			}
			// Two breaches spent the burst of four; two clean sessions half.
			_, code, reason := dialRawWSFrom(t, addr, c.from).untilCloseOrNone(t)
			switch {
			case c.breach && (code != CloseTryAgainLater || !strings.Contains(reason, "limits.handshakes_per_second")):
				t.Fatalf("after two breaches: closed with %d %q, want 1013 naming limits.handshakes_per_second", code, reason)
			case !c.breach && code != 0:
				t.Fatalf("after two clean sessions: closed with %d %q, want a session", code, reason)
			}
		})
	}
	if _, code, reason := dialRawWSFrom(t, addr, "127.0.0.20").untilCloseOrNone(t); code != 0 {
		t.Fatalf("another address: closed with %d %q, want a session", code, reason)
	}
}

// untilCloseOrNone is untilClose for a session that may be open: code 0
// when the server has said nothing after a ping's answer.
func (r *rawWS) untilCloseOrNone(t *testing.T) (texts []string, code uint16, reason string) {
	t.Helper()
	r.conn.Write(frame(true, 9, []byte("are you there")))
	r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		op, p, err := r.next()
		switch {
		case err != nil:
			t.Fatalf("connection ended without a close frame (a client sees 1006): %v", err)
		case op == 10:
			return texts, 0, ""
		case op == 1:
			texts = append(texts, string(p))
		case op == 8:
			return texts, binary.BigEndian.Uint16(p), string(p[2:])
		}
	}
}
