package front

import (
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRetryHint(t *testing.T) {
	for _, least := range []time.Duration{0, 10 * time.Millisecond, 3 * time.Second} {
		t.Run(least.String(), func(t *testing.T) {
			lo := max(least, RetryMin)
			hi := lo + RetrySpread
			seenLow, seenHigh := false, false
			for range 1000 {
				d := RetryHint(least)
				if d < lo || d > hi {
					t.Fatalf("hint %s outside [%s, %s]", d, lo, hi)
				}
				seenLow = seenLow || d < lo+RetrySpread/4
				seenHigh = seenHigh || d > hi-RetrySpread/4
			}
			if !seenLow || !seenHigh {
				t.Fatal("hints not spread over the range")
			}
		})
	}
}

// syncBuffer collects log output written from the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Forwarding headers from a peer that is not a trusted proxy are logged
// once, naming the peer and trusted_proxies; a trusted proxy's, and
// requests without them, are not.
func TestUntrustedForwardedLoggedOnce(t *testing.T) {
	cases := []struct {
		name    string
		proxies []string
		header  http.Header
		want    int
	}{
		{"X-Forwarded-For from an untrusted peer", nil, http.Header{"X-Forwarded-For": {"198.51.100.9"}}, 1},
		{"Forwarded from an untrusted peer", []string{"10.0.0.0/8"}, http.Header{"Forwarded": {"for=198.51.100.9"}}, 1},
		{"from a trusted proxy", []string{"127.0.0.1"}, http.Header{"X-Forwarded-For": {"198.51.100.9"}}, 0},
		{"no forwarding headers", nil, nil, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			proxies, err := ParseProxies(c.proxies)
			if err != nil {
				t.Fatal(err)
			}
			var logs syncBuffer
			s := NewServer(slog.New(slog.NewTextHandler(&logs, nil)), ServerOptions{TrustedProxies: proxies})
			s.Handle("/x", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go s.Serve(ln)
			t.Cleanup(func() { s.http.Close() })
			for range 3 {
				req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/x", nil)
				for k, v := range c.header {
					req.Header[k] = v
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close() // answered after front ran: the line, if any, is written
			}
			got := strings.Count(logs.String(), "not in trusted_proxies")
			if got != c.want {
				t.Fatalf("%d log lines naming trusted_proxies, want %d:\n%s", got, c.want, logs.String())
			}
			if c.want > 0 && !strings.Contains(logs.String(), "peer=127.0.0.1") {
				t.Fatalf("the line does not name the peer:\n%s", logs.String())
			}
		})
	}
}
