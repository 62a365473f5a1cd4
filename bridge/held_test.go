package bridge

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/memory"
)

// serveGreeters serves greeter sessions (which keep every message they do
// not know as a partial frame) with o.
func serveGreeters(t *testing.T, o WSOptions) string {
	t.Helper()
	origins, _ := front.NewOrigins(nil)
	a := &Admission{Protocol: "test", Route: "/", Origins: origins, Conns: front.NewConns(10, 0), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Upgraders: NewUpgraders(Handler{}, o, nil, func() gws.SessionStorage { return &greeter{ws: o} })}
	srv := &http.Server{Handler: a}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "ws://" + ln.Addr().String()
}

// A partial protocol frame carried across WebSocket messages is held like
// a message being assembled: it takes from the memory budget (1013 past
// it) and must complete within the message timeout (1008), each reason
// naming its config key; what it held is given back.
func TestPartialFramesAreHeldLikeMessages(t *testing.T) {
	cases := []struct {
		name    string
		budget  int64
		timeout time.Duration
		send    []string
		code    uint16
		key     string
	}{
		{"never completed", 1 << 20, 300 * time.Millisecond, []string{"half a frame"}, ClosePolicy, "websocket.message_timeout"},
		{"spread over many messages past the budget", 64 << 10, time.Minute, []string{strings.Repeat("x", 40<<10), strings.Repeat("y", 40<<10)}, CloseTryAgainLater, "limits.memory_bytes"},
		// A small partial frame is the connection's own: a budget spent by
		// others does not end it, its deadline still does.
		{"small, with the budget spent", 0, 300 * time.Millisecond, []string{"half a frame"}, ClosePolicy, "websocket.message_timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := DefaultWSOptions()
			o.LoginTimeout = time.Minute
			o.MessageTimeout, o.Budget = c.timeout, memory.NewBudget(c.budget)
			url := serveGreeters(t, o)
			col := &collector{msgs: make(chan string, 16), closed: make(chan error, 1)}
			conn, _, err := gws.NewClient(col, &gws.ClientOption{Addr: url})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.NetConn().Close() })
			go conn.ReadLoop()
			for _, m := range c.send {
				conn.WriteString(m)
			}
			select {
			case err := <-col.closed:
				var ce *gws.CloseError
				if !errors.As(err, &ce) || ce.Code != c.code || !strings.Contains(string(ce.Reason), c.key) {
					t.Fatalf("closed with %v, want %d naming %s", err, c.code, c.key)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("not closed")
			}
			waitFor(t, func() bool { return o.Budget.Used() == 0 })
		})
	}
}

// A broker frame the budget cannot hold ends the read loop with
// ErrOverBudget, and what the loop held is given back.
func TestUpstreamGrowthTakesFromTheBudget(t *testing.T) {
	addr, accepted := listenPeer(t)
	u, peer := dialPeer(t, addr, accepted)
	defer u.Close()
	u.Budget = memory.NewBudget(6 * upstreamReadBytes)
	done := make(chan error, 1)
	go func() {
		done <- u.ReadLoop(64*upstreamReadBytes, func(b []byte) (int, bool) {
			if i := bytes.IndexByte(b, 0); i >= 0 {
				return i + 1, true
			}
			return 0, true
		})
	}()
	// One unit fits once grown (8 KiB), the next needs 16 KiB more than
	// that, past the budget.
	peer.Write(append(bytes.Repeat([]byte("a"), 2*upstreamReadBytes-1), 0))
	peer.Write(bytes.Repeat([]byte("b"), 16*upstreamReadBytes))
	select {
	case err := <-done:
		if !errors.Is(err, ErrOverBudget) {
			t.Fatalf("ReadLoop ended with %v, want ErrOverBudget", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadLoop went on past the budget")
	}
	if n := u.Budget.Used(); n != 0 {
		t.Fatalf("%d bytes still taken from the budget", n)
	}
}
