package sse

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/amqpbroker"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/keyring"
)

// refusal is a stream answered with one event and ended at once.
type refusal struct {
	event, reason string
	retry         time.Duration
	took          time.Duration // from the request to the end of the answer
}

// getRefusal opens url as a cross-origin EventSource would and expects a
// refusal it follows by itself: 200 text/event-stream with the CORS
// headers, a retry within front.RetryHint's range, one event whose data
// says why with the same retry, and the end.
func getRefusal(t *testing.T, url string) refusal {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Origin", "http://app.example")
	req.Header.Set("Accept", "text/event-stream")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body) // ends: the stream is over
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
		resp.Header.Get("Access-Control-Allow-Origin") != "http://app.example" {
		t.Fatalf("GET %s: %d %v %q, want 200 text/event-stream with CORS headers", url, resp.StatusCode, resp.Header, body)
	}
	lines := strings.Split(strings.TrimSuffix(string(body), "\n\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "retry: ") || !strings.HasPrefix(lines[1], "event: ") || !strings.HasPrefix(lines[2], "data: ") {
		t.Fatalf("body %q: want retry, event, data", body)
	}
	ms, _ := strconv.Atoi(strings.TrimPrefix(lines[0], "retry: "))
	r := refusal{event: strings.TrimPrefix(lines[1], "event: "), retry: time.Duration(ms) * time.Millisecond, took: took}
	if r.retry < front.RetryMin || r.retry > front.RetryMin+front.RetrySpread {
		t.Fatalf("retry %s outside [%s, %s]", r.retry, front.RetryMin, front.RetryMin+front.RetrySpread)
	}
	var data struct {
		Reason  string `json:"reason"`
		RetryMS int    `json:"retry_ms"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[2], "data: ")), &data); err != nil || data.RetryMS != ms || data.Reason == "" {
		t.Fatalf("data %q (%v): want a reason and retry_ms %d", lines[2], err, ms)
	}
	r.reason = data.Reason
	return r
}

// publishRefused posts to url and expects 503 with a Retry-After.
func publishRefused(t *testing.T, url string) (body string, took time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := http.Post(url, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("publish: %d %v %q, want 503 with Retry-After", resp.StatusCode, resp.Header, b)
	}
	return string(b), time.Since(start)
}

// silentBroker is a loopback address that takes connections and never
// answers, as a broker hung or behind a dropped route does.
func silentBroker(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// warnings counts the log lines that say the backend is unavailable.
func warnings(logs *brokertest.Logs) int {
	return strings.Count(logs.String(), `level=WARN msg="sse backend unavailable`)
}

// A stream whose backend cannot serve it is not a 503, on which
// EventSource gives up for good (it never came back once the broker did),
// but a 200 that tells it to come back after a jittered few seconds, with
// an event saying why, and ends; it comes promptly: at once when the
// broker says no, after SubscribeWait when it says nothing, never after
// the broker client's own timeouts. The operator's log names the backend
// and the cause once for the outage, however many clients it refuses;
// publishes keep their 503 with Retry-After, saying why too.
func TestStreamsDuringAnOutageAreToldToComeBack(t *testing.T) {
	const wait = 400 * time.Millisecond
	quiet := slog.New(slog.DiscardHandler)

	t.Run("unreachable", func(t *testing.T) {
		logs := &brokertest.Logs{}
		b := broker.NewShared(amqpbroker.New(amqpbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.DeadAddr(t), Log: quiet}}))
		t.Cleanup(func() { b.Close() })
		s := startHubWith(t, b, Options{SubscribeWait: wait, Backend: "rabbit"}, nil, logs)
		const n = 5
		for i := range n {
			r := getRefusal(t, s.url+"/sse/"+uniqueTopic(t)+strconv.Itoa(i))
			if r.event != "unavailable" || r.reason != "backend unavailable: the broker cannot be reached" || r.took >= wait {
				t.Fatalf("stream %d: %+v, want unavailable, the broker cannot be reached, sooner than %s", i, r, wait)
			}
		}
		if body, took := publishRefused(t, s.url+"/publish/"+uniqueTopic(t)); !strings.Contains(body, "the broker cannot be reached; the message was not published") || took >= wait {
			t.Fatalf("publish: %q after %s", body, took)
		}
		if st := s.hub.Stats(); st.BackendRefused != n || st.Topics != 0 {
			t.Fatalf("stats %+v: want %d streams refused, no topic left", st, n)
		}
		if got := warnings(logs); got != 1 || !strings.Contains(logs.String(), "backend=rabbit cause=unreachable") ||
			!strings.Contains(logs.String(), "connection refused") {
			t.Fatalf("%d outage warnings, want 1 naming the backend, the cause and the dial error:\n%s", got, logs)
		}
	})

	t.Run("silent", func(t *testing.T) {
		const dial = 3 * time.Second // the client's own bound, which the stream must not wait out
		b := broker.NewShared(amqpbroker.New(amqpbroker.Options{Endpoint: broker.Endpoint{Address: silentBroker(t), DialTimeout: dial, Log: quiet}}))
		t.Cleanup(func() { b.Close() })
		s := startHubWith(t, b, Options{SubscribeWait: wait, Backend: "rabbit"}, nil, io.Discard)
		r := getRefusal(t, s.url+"/sse/"+uniqueTopic(t))
		if r.event != "unavailable" || r.reason != "backend unavailable: the broker did not answer within 400ms" || r.took < wait || r.took > dial/2 {
			t.Fatalf("%+v: want unavailable, no answer, after %s and well within %s", r, wait, dial)
		}
	})

	t.Run("login refused", func(t *testing.T) {
		var k [8]byte
		rand.Read(k[:])
		password := hex.EncodeToString(k[4:])
		// RabbitMQ has no such user: it refuses as it does a wrong
		// password, some seconds after the attempt.
		cred := &keyring.Credential{Username: "wsbridge-test-" + hex.EncodeToString(k[:4]), Password: keyring.NewSecret(password)}
		logs := &brokertest.Logs{}
		b := broker.NewShared(amqpbroker.New(amqpbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.RabbitAMQP(t), Credential: cred, Log: quiet}}))
		t.Cleanup(func() { b.Close() })
		s := startHubWith(t, b, Options{SubscribeWait: wait, Backend: "rabbit"}, nil, logs)
		if r := getRefusal(t, s.url+"/sse/"+uniqueTopic(t)); r.event != "unavailable" || r.took > 2*wait {
			t.Fatalf("first stream: %+v, want unavailable within %s", r, wait)
		}
		logs.WaitFor(t, "backend=rabbit cause=\"login refused\"")
		// Known now: the stream that starts the next attempt says so
		// after its wait, and those that find it under way, at once.
		if r := getRefusal(t, s.url+"/sse/"+uniqueTopic(t)+".a"); r.reason != "backend unavailable: the broker refused the gateway's login" || r.took > 2*wait {
			t.Fatalf("next stream: %+v", r)
		}
		for i := range 3 {
			if r := getRefusal(t, s.url+"/sse/"+uniqueTopic(t)+".b"+strconv.Itoa(i)); r.reason != "backend unavailable: the broker refused the gateway's login" || r.took >= wait {
				t.Fatalf("stream during the attempt: %+v, want the login refused, sooner than %s", r, wait)
			}
		}
		if body, took := publishRefused(t, s.url+"/publish/"+uniqueTopic(t)); !strings.Contains(body, "the broker refused the gateway's login") || took >= wait {
			t.Fatalf("publish: %q after %s", body, took)
		}
		if got := warnings(logs); got != 1 {
			t.Fatalf("%d outage warnings, want 1:\n%s", got, logs)
		}
		if strings.Contains(logs.String(), password) {
			t.Fatal("the password reached the logs")
		}
	})
}
