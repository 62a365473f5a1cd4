package brokertest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/front"
)

// Serve runs srv on a loopback port until the test ends, then shuts it
// down (sessions first) and waits. It returns host:port.
func Serve(t testing.TB, srv *front.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

// RouteEnv is what a WebSocket route under test is wired with.
type RouteEnv struct {
	Log     *slog.Logger
	Origins *front.Origins // allows http://allowed.example
	Conns   *front.Conns
	WS      bridge.WSOptions // the defaults
}

// ServeRoute serves the handler mk builds at path on a gateway that logs to
// log (nil: nowhere) and returns its ws:// URL.
func ServeRoute(t testing.TB, path string, log *slog.Logger, mk func(RouteEnv) http.Handler) string {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv := front.NewServer(log, front.ServerOptions{MaxConns: 100})
	origins, _ := front.NewOrigins([]string{"http://allowed.example"})
	srv.Handle(path, mk(RouteEnv{Log: log, Origins: origins, Conns: srv.Conns, WS: bridge.DefaultWSOptions()}))
	return "ws://" + Serve(t, srv) + path
}

// Logs collects a gateway's log output for a test to search.
type Logs struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything logged so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// WaitFor waits until the logs hold want: a line logged on another
// goroutine has no event to wait on, so it polls, for up to 10 s.
func (l *Logs) WaitFor(t testing.TB, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(l.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("logs lack %q within 10s:\n%s", want, l)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
