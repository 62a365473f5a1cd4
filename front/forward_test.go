package front_test

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/front"
)

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
			proxies, err := front.ParseProxies(c.proxies)
			if err != nil {
				t.Fatal(err)
			}
			var logs brokertest.Logs
			s := front.NewServer(slog.New(slog.NewTextHandler(&logs, nil)), front.ServerOptions{TrustedProxies: proxies})
			s.Handle("/x", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			addr := brokertest.Serve(t, s)
			for range 3 {
				req, _ := http.NewRequest("GET", "http://"+addr+"/x", nil)
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
