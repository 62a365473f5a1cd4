package sse

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/front"
)

// A stream refused for load, by the handshake rate or a connection limit,
// is a 200 text/event-stream (with the CORS headers a cross-origin
// EventSource needs) that sets the retry to a jittered hint, says busy,
// and ends: EventSource gives up for good on a 429 or 503, but follows
// this by itself (see the e2e test with the npm eventsource).
func TestStreamRefusedForLoad(t *testing.T) {
	cases := []struct {
		name  string
		opts  front.ServerOptions
		limit string        // named in the reason
		least time.Duration // the limit's own wait, at most
	}{
		{"handshake rate", front.ServerOptions{HandshakeRate: 0.2, HandshakeBurst: 1}, "limits.handshakes_per_second", 5 * time.Second},
		{"gateway full", front.ServerOptions{MaxConns: 1}, "limits.max_connections", 0},
		{"address full", front.ServerOptions{MaxConnsPerIP: 1}, "limits.max_connections_per_ip", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := startHubOn(t, natsBroker(t), Options{}, nil, io.Discard, c.opts, nil)
			topic := uniqueTopic(t)
			openStream(t, s.url+"/sse/"+topic, nil) // holds the one place
			s.waitStats(t, "one stream", func(st Stats) bool { return st.Clients == 1 })

			req, _ := http.NewRequest("GET", s.url+"/sse/"+topic, nil)
			req.Header.Set("Origin", "http://app.example")
			req.Header.Set("Accept", "text/event-stream")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body) // ends: the stream is over
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
				resp.Header.Get("Access-Control-Allow-Origin") != "http://app.example" {
				t.Fatalf("got %d %v, want 200 text/event-stream with CORS headers", resp.StatusCode, resp.Header)
			}
			lines := strings.Split(strings.TrimSuffix(string(body), "\n\n"), "\n")
			if len(lines) != 3 || !strings.HasPrefix(lines[0], "retry: ") || lines[1] != "event: busy" || !strings.HasPrefix(lines[2], "data: ") {
				t.Fatalf("body %q: want retry, event busy, data", body)
			}
			ms, _ := strconv.Atoi(strings.TrimPrefix(lines[0], "retry: "))
			retry := time.Duration(ms) * time.Millisecond
			if hi := max(c.least, front.RetryMin) + front.RetrySpread; retry < front.RetryMin || retry > hi {
				t.Fatalf("retry %s outside [%s, %s]", retry, front.RetryMin, hi)
			}
			var data struct {
				Reason  string `json:"reason"`
				RetryMS int    `json:"retry_ms"`
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[2], "data: ")), &data); err != nil ||
				!strings.Contains(data.Reason, c.limit) || data.RetryMS != ms {
				t.Fatalf("busy data %q (%v): want the reason naming %s and retry_ms %d", lines[2], err, c.limit, ms)
			}
		})
	}
}
