package front

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestClientIPBehindTrustedProxies(t *testing.T) {
	proxies, err := ParseProxies([]string{"10.0.0.0/8", "192.168.1.5", "fd00::/8"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, remote string
		header       http.Header
		want         string
	}{
		{"direct client", "203.0.113.7:5000", http.Header{"X-Forwarded-For": {"1.2.3.4"}}, "203.0.113.7"}, // not a proxy: its header is a lie
		{"through a proxy", "10.1.2.3:5000", http.Header{"X-Forwarded-For": {"198.51.100.9"}}, "198.51.100.9"},
		{"spoofed left-most entry", "10.1.2.3:5000", http.Header{"X-Forwarded-For": {"6.6.6.6, 198.51.100.9"}}, "198.51.100.9"},
		{"two trusted hops", "10.1.2.3:5000", http.Header{"X-Forwarded-For": {"198.51.100.9, 192.168.1.5"}}, "198.51.100.9"},
		{"several header lines", "10.1.2.3:5000", http.Header{"X-Forwarded-For": {"6.6.6.6", "198.51.100.9"}}, "198.51.100.9"},
		{"Forwarded wins", "10.1.2.3:5000", http.Header{"Forwarded": {`for="[2001:db8::1]:443";proto=https`}, "X-Forwarded-For": {"6.6.6.6"}}, "2001:db8::1"},
		{"Forwarded with port", "10.1.2.3:5000", http.Header{"Forwarded": {"for=198.51.100.9:1234, for=10.0.0.2"}}, "198.51.100.9"},
		{"garbage is not believed", "10.1.2.3:5000", http.Header{"X-Forwarded-For": {"not-an-ip"}}, "10.1.2.3"},
		{"proxy without a header", "10.1.2.3:5000", nil, "10.1.2.3"},
		{"IPv6 proxy", "[fd00::1]:5000", http.Header{"X-Forwarded-For": {"198.51.100.9"}}, "198.51.100.9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr, r.Header = c.remote, c.header
			if r.Header == nil {
				r.Header = http.Header{}
			}
			a, ok := proxies.resolve(r)
			if !ok || a.String() != c.want {
				t.Fatalf("got %v, want %s", a, c.want)
			}
		})
	}
}

func serveWith(t *testing.T, o ServerOptions) (*Server, string) {
	t.Helper()
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), o)
	s.Handle("/x", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, ClientIP(r)) }))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.http.Close() })
	return s, ln.Addr().String()
}

// Beyond the burst, a client address gets 429 with Retry-After; health
// checks and publishes are not limited, and a trusted proxy's clients are
// counted each on its own address.
func TestHandshakeRateLimit(t *testing.T) {
	_, addr := serveWith(t, ServerOptions{HandshakeRate: 0.5, HandshakeBurst: 2, TrustedProxies: Proxies{mustPrefix(t, "127.0.0.1/32")}})
	get := func(path, xff string) *http.Response {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for i := range 2 {
		if r := get("/x", "198.51.100.1"); r.StatusCode != 200 {
			t.Fatalf("request %d within the burst: %d", i, r.StatusCode)
		}
	}
	r := get("/x", "198.51.100.1")
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("over the burst: %d, Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if r := get("/x", "198.51.100.2"); r.StatusCode != 200 {
		t.Fatalf("another client behind the same proxy: %d", r.StatusCode)
	}
	if r := get("/healthz", "198.51.100.1"); r.StatusCode != 200 {
		t.Fatalf("healthz was limited: %d", r.StatusCode)
	}
	req, _ := http.NewRequest("POST", "http://"+addr+"/x", nil)
	req.Header.Set("X-Forwarded-For", "198.51.100.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests {
		t.Fatal("a publish (POST) was held to the handshake rate")
	}
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	ps, err := ParseProxies([]string{s})
	if err != nil {
		t.Fatal(err)
	}
	return ps[0]
}

// A client that opens a connection and dribbles its request headers is cut
// off after the handshake timeout (slowloris).
func TestHandshakeTimeout(t *testing.T) {
	_, addr := serveWith(t, ServerOptions{HandshakeTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: x\r\n") // and never the blank line
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		resp.Body.Close() // net/http may answer 408 before closing
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("got %d for an unfinished request", resp.StatusCode)
		}
	} else if !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("connection not closed by the server: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed after %s", d)
	}
}

// Breaches charged to an address put it in debt, but never more than a
// burst: it is refused until it has refilled, for a bounded time however
// many breaches came at once.
func TestBreachDebtIsBounded(t *testing.T) {
	l := newRateLimiter(100, 1000)
	for range 50 {
		l.charge("192.0.2.1", BreachCost)
	}
	if ok, wait := l.allow("192.0.2.1"); ok || wait > 11*time.Second || wait < 9*time.Second {
		t.Fatalf("after 50 breaches: allowed %v, wait %s; want refused for about 10 s (a burst at 100/s)", ok, wait)
	}
	if ok, _ := l.allow("192.0.2.2"); !ok {
		t.Fatal("another address refused")
	}
}
