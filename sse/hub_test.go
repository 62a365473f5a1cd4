package sse

import (
	"encoding/base64"
	"fmt"
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
	"github.com/wsbridge/wsbridge/broker/mqttbroker"
	"github.com/wsbridge/wsbridge/broker/natsbroker"
	"github.com/wsbridge/wsbridge/broker/stompbroker"
	"github.com/wsbridge/wsbridge/front"
)

func TestStreamDeliversPublishes(t *testing.T) {
	for name, newBroker := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := startHub(t, newBroker(t), Options{})
			topic := uniqueTopic(t)
			st := openStream(t, s.url+"/sse/"+topic, nil)
			h := st.resp.Header
			if h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-cache" || h.Get("X-Accel-Buffering") != "no" {
				t.Fatalf("headers: %v", h)
			}
			first := <-st.events // the retry hint comes first
			if first.retry != "2000" {
				t.Fatalf("first event %+v, want the retry hint", first)
			}
			s.publish(t, topic, `{"p":1.01}`)
			s.publish(t, topic, "line one\nline two\r\nline three")
			e1, e2 := st.next(t), st.next(t)
			if e1.data != `{"p":1.01}` || e1.typ != "" || e1.id == "" {
				t.Fatalf("event 1: %+v", e1)
			}
			if e2.data != "line one\nline two\nline three" {
				t.Fatalf("multi-line event: %q", e2.data)
			}
			if e1.id >= e2.id && len(e1.id) == len(e2.id) {
				t.Fatalf("ids not increasing: %q then %q", e1.id, e2.id)
			}
		})
	}
}

func TestMultiTopicStreamNamesTopics(t *testing.T) {
	s := startHub(t, natsBroker(t), Options{})
	a, b := uniqueTopic(t)+".a", uniqueTopic(t)+".b"
	st := openStream(t, s.url+"/sse?topic="+a+"&topic="+b, nil)
	s.publish(t, a, "to a")
	s.publish(t, b, "to b")
	if e := st.next(t); e.typ != a || e.data != "to a" {
		t.Fatalf("got %+v", e)
	}
	if e := st.next(t); e.typ != b || e.data != "to b" {
		t.Fatalf("got %+v", e)
	}
}

func TestBinaryPayloadIsBase64(t *testing.T) {
	s := startHub(t, natsBroker(t), Options{})
	topic := uniqueTopic(t)
	st := openStream(t, s.url+"/sse/"+topic, nil)
	raw := "\xff\x00\xfebinary\n"
	s.publish(t, topic, raw)
	e := st.next(t)
	got, err := base64.StdEncoding.DecodeString(e.data)
	if e.typ != "binary" || err != nil || string(got) != raw {
		t.Fatalf("got %+v (%v)", e, err)
	}
}

// Every one of many clients gets every event, in order, from one upstream
// subscription.
func TestManyClientsGetEverythingInOrder(t *testing.T) {
	for name, newBroker := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := startHub(t, newBroker(t), Options{ClientQueue: 1024})
			topic := uniqueTopic(t)
			const clients, events = 200, 100
			streams := make([]*stream, clients)
			for i := range streams {
				streams[i] = openStream(t, s.url+"/sse/"+topic, nil)
			}
			for i := range events {
				s.publish(t, topic, fmt.Sprint(i))
			}
			var wg sync.WaitGroup
			errs := make(chan string, clients)
			for i, st := range streams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for want := 0; want < events; {
						select {
						case ev := <-st.events:
							if ev.comment || ev.retry != "" {
								continue
							}
							if ev.data != fmt.Sprint(want) {
								errs <- fmt.Sprintf("client %d: event %d is %q", i, want, ev.data)
								return
							}
							want++
						case <-time.After(10 * time.Second):
							errs <- fmt.Sprintf("client %d: stuck at event %d", i, want)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Error(e)
			}
			if st := s.hub.Stats(); st.UpstreamSubs != 1 || st.Topics != 1 {
				t.Fatalf("%d upstream subscriptions for one topic (stats %+v)", st.UpstreamSubs, st)
			}
		})
	}
}

// After a disconnect, Last-Event-ID (or lastEventId) gets exactly the
// missed events; an id the hub no longer covers gets a reset event.
func TestResumeWithLastEventID(t *testing.T) {
	for name, newBroker := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := startHub(t, newBroker(t), Options{Replay: 8, Linger: time.Minute})
			topic := uniqueTopic(t)
			st := openStream(t, s.url+"/sse/"+topic, nil)
			for i := 1; i <= 3; i++ {
				s.publish(t, topic, fmt.Sprint(i))
			}
			var last sseEvent
			for range 3 {
				last = st.next(t)
			}
			st.close()
			for i := 4; i <= 6; i++ {
				s.publish(t, topic, fmt.Sprint(i))
			}
			for _, how := range []string{"header", "query"} {
				url, hdr := s.url+"/sse/"+topic, http.Header{"Last-Event-ID": {last.id}}
				if how == "query" {
					url, hdr = url+"?lastEventId="+last.id, nil
				}
				again := openStream(t, url, hdr)
				var got []string
				for range 3 {
					got = append(got, again.next(t).data)
				}
				if strings.Join(got, ",") != "4,5,6" {
					t.Fatalf("%s resume got %v, want 4,5,6", how, got)
				}
				s.publish(t, topic, "live")
				if e := again.next(t); e.data != "live" {
					t.Fatalf("%s resume: after the replay got %q, want live (a duplicate or gap)", how, e.data)
				}
				again.close()
			}
			// 10 more events push event 3 out of the 8-event ring.
			for i := range 10 {
				s.publish(t, topic, fmt.Sprint(100+i))
			}
			old := openStream(t, s.url+"/sse/"+topic, http.Header{"Last-Event-ID": {last.id}})
			if e := old.next(t); e.typ != "reset" || !strings.Contains(e.data, last.id) {
				t.Fatalf("too-old id: got %+v, want a reset event", e)
			}
			foreign := openStream(t, s.url+"/sse/"+topic, http.Header{"Last-Event-ID": {"cafebabe-7"}})
			if e := foreign.next(t); e.typ != "reset" {
				t.Fatalf("id from another process: got %+v, want reset", e)
			}
		})
	}
}

// The upstream subscription outlives its last client by the linger time,
// then goes.
func TestUpstreamSubscriptionLingersThenGoes(t *testing.T) {
	s := startHub(t, natsBroker(t), Options{Linger: 100 * time.Millisecond})
	topic := uniqueTopic(t)
	a := openStream(t, s.url+"/sse/"+topic, nil)
	b := openStream(t, s.url+"/sse/"+topic, nil)
	s.publish(t, topic, "x")
	a.next(t)
	b.next(t)
	a.close()
	b.close()
	s.waitStats(t, "the topic unsubscribed after its linger", func(st Stats) bool { return st.Topics == 0 })
	c := openStream(t, s.url+"/sse/"+topic, nil)
	s.publish(t, topic, "y")
	if e := c.next(t); e.data != "y" {
		t.Fatalf("after resubscribing got %q", e.data)
	}
	if n := s.hub.Stats().UpstreamSubs; n != 2 {
		t.Fatalf("%d upstream subscriptions, want 2 (one per lifetime)", n)
	}
}

// A client that stops reading is dropped once its queue is full; the
// others keep receiving everything, and the hub holds no more than the
// queue for it.
func TestSlowClientIsDroppedOthersUnaffected(t *testing.T) {
	s := startHub(t, natsBroker(t), Options{ClientQueue: 4, WriteTimeout: 500 * time.Millisecond, MaxPublishBytes: 128 << 10})
	topic := uniqueTopic(t)
	fast := openStream(t, s.url+"/sse/"+topic, nil)
	// The slow client asks for the stream and never reads a byte.
	slow, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(slow, "GET /sse/%s HTTP/1.1\r\nHost: x\r\n\r\n", topic)
	s.waitStats(t, "both streams registered", func(st Stats) bool { return st.Clients == 2 })
	big := strings.Repeat("x", 100<<10)
	const n = 300 // 30 MB: more than loopback socket buffers hold
	// Publish at the fast client's pace (at most 2 events ahead of it, under
	// its queue of 4), so only the client that does not read falls behind.
	received := 0
	expect := func() {
		e := fast.next(t)
		if !strings.HasPrefix(e.data, fmt.Sprintf("%d:", received)) {
			t.Fatalf("fast client: event %d is %.10q", received, e.data)
		}
		received++
	}
	for i := range n {
		s.publish(t, topic, fmt.Sprintf("%d:%s", i, big))
		for received < i-1 {
			expect()
		}
	}
	for received < n {
		expect()
	}
	// The slow stream's handler ends once its blocked write times out.
	s.waitStats(t, "the slow client dropped and only the fast one left", func(st Stats) bool {
		return st.SlowDropped == 1 && st.Clients == 1
	})
}

func TestBadRequests(t *testing.T) {
	s := startHub(t, natsBroker(t), Options{MaxPublishBytes: 1024, MaxTopics: 2})
	tests := []struct {
		name, method, path, origin, body string
		status                           int
		mention                          string
	}{
		{"no topic", "GET", "/sse", "", "", 400, "name a topic"},
		{"wildcard", "GET", "/sse/prices.*", "", "", 400, "wildcard"},
		{"mqtt wildcard", "GET", "/sse?topic=a.%23", "", "", 400, "wildcard"},
		{"empty word", "GET", "/sse/a..b", "", "", 400, "empty word"},
		{"control character", "GET", "/sse?topic=a%0Ab", "", "", 400, "not allowed"},
		{"too long", "GET", "/sse/" + strings.Repeat("x", 300), "", "", 400, "longer than"},
		{"too many topics", "GET", "/sse?topic=a&topic=b&topic=c", "", "", 400, "at most 2"},
		{"foreign origin", "GET", "/sse/a", "http://evil.example", "", 403, "allowed_origins"},
		{"publish foreign origin", "POST", "/publish/a", "http://evil.example", "x", 403, "allowed_origins"},
		{"publish bad topic", "POST", "/publish/a/b", "", "x", 400, "not allowed"},
		{"publish too large", "POST", "/publish/a", "", strings.Repeat("x", 2000), 413, "1024-byte limit"},
		{"publish with GET", "GET", "/publish/a", "", "", 405, "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, s.url+tt.path, strings.NewReader(tt.body))
			if tt.origin != "" {
				req.Header.Set("Origin", tt.origin)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || !strings.Contains(string(b), tt.mention) {
				t.Fatalf("%d %q, want %d mentioning %q", resp.StatusCode, b, tt.status, tt.mention)
			}
		})
	}
	// A chunked body without Content-Length is cut at the limit too.
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte(strings.Repeat("y", 4096))); pw.Close() }()
	resp, err := http.Post(s.url+"/publish/a", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("chunked oversize publish: %d", resp.StatusCode)
	}
}

func TestCORS(t *testing.T) {
	s := startHub(t, natsBroker(t), Options{})
	req, _ := http.NewRequest("OPTIONS", s.url+"/publish/a", nil)
	req.Header.Set("Origin", "http://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "http://app.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	st := openStream(t, s.url+"/sse/"+uniqueTopic(t), http.Header{"Origin": {"http://app.example"}})
	if st.resp.Header.Get("Access-Control-Allow-Origin") != "http://app.example" {
		t.Fatalf("stream CORS headers: %v", st.resp.Header)
	}
}

// When the broker connection drops, open streams end so EventSource
// reconnects: the last event sets a jittered retry (the crowd that lost
// the broker together does not come back together) and says why. The
// reconnect resubscribes, and resumes with a reset, since what the broker
// sent between the loss and the new subscription is gone. The outage is
// logged once, and its end. NATS streams stay open instead: its client
// reconnects by itself, and its subscriptions survive.
func TestStreamsEndWhenBrokerDrops(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	brokers := map[string]struct {
		addr func(testing.TB) string
		make func(addr string) broker.Broker
	}{
		"amqp": {brokertest.RabbitAMQP, func(a string) broker.Broker {
			return amqpbroker.New(amqpbroker.Options{Endpoint: broker.Endpoint{Address: a, Credential: &cred}})
		}},
		"mqtt": {brokertest.Mosquitto, func(a string) broker.Broker {
			return mqttbroker.New(mqttbroker.Options{Endpoint: broker.Endpoint{Address: a}})
		}},
		"stomp": {brokertest.RabbitSTOMP, func(a string) broker.Broker {
			return stompbroker.New(stompbroker.Options{Endpoint: broker.Endpoint{Address: a, Credential: &cred}})
		}},
		"nats": {brokertest.NATS, func(a string) broker.Broker {
			b, err := natsbroker.New(natsbroker.Options{Endpoint: broker.Endpoint{Address: "nats://" + a,
				Log: slog.New(slog.DiscardHandler)}})
			if err != nil {
				panic(err)
			}
			return b
		}},
	}
	for name, b := range brokers {
		t.Run(name, func(t *testing.T) {
			tap := brokertest.NewTapProxy(t, b.addr(t))
			broker := broker.NewShared(b.make(tap.Addr()))
			t.Cleanup(func() { broker.Close() })
			logs := &brokertest.Logs{}
			s := startHubWith(t, broker, Options{Backend: name}, nil, logs)
			topic := uniqueTopic(t)
			st := openStream(t, s.url+"/sse/"+topic, nil)
			s.publish(t, topic, "before")
			before := st.next(t)
			if before.data != "before" {
				t.Fatalf("got %q", before.data)
			}
			tap.Cut()
			if name == "nats" {
				// Published once nats.go is back (503 until then): the
				// open stream gets it.
				for !s.tryPublish(t, topic, "after") {
					time.Sleep(20 * time.Millisecond) // pacing the attempts, not synchronisation
				}
				if e := st.next(t); e.data != "after" {
					t.Fatalf("after the reconnect got %q", e.data)
				}
				return
			}
			last := st.last(t)
			ms, _ := strconv.Atoi(last.retry)
			if retry := time.Duration(ms) * time.Millisecond; last.typ != "unavailable" || !strings.Contains(last.data, "connection to the broker was lost") ||
				retry < front.RetryMin || retry > front.RetryMin+front.RetrySpread {
				t.Fatalf("last event %+v: want unavailable with a retry of 1-5 s", last)
			}
			again := openStream(t, s.url+"/sse/"+topic, http.Header{"Last-Event-ID": {before.id}})
			if e := again.next(t); e.typ != "reset" {
				t.Fatalf("resume after the loss: %+v, want reset", e)
			}
			s.publish(t, topic, "after")
			if e := again.next(t); e.data != "after" {
				t.Fatalf("after reconnect got %q", e.data)
			}
			if got := warnings(logs); got != 1 || !strings.Contains(logs.String(), "backend="+name+` cause="connection lost"`) {
				t.Fatalf("%d outage warnings, want 1 naming the backend and the cause:\n%s", got, logs)
			}
			logs.WaitFor(t, `msg="sse backend available again" backend=`+name)
		})
	}
}

func TestHeartbeatComments(t *testing.T) {
	s := startHub(t, natsBroker(t), Options{Heartbeat: 50 * time.Millisecond})
	st := openStream(t, s.url+"/sse/"+uniqueTopic(t), nil)
	st.heartbeats(t, 2)
}

var _ broker.Broker = (*natsbroker.Broker)(nil)

// A stream that was busy and went quiet gets heartbeats again: the timer
// that ended its last flush interval goes back to timing the heartbeat.
func TestHeartbeatsResumeAfterAFlushInterval(t *testing.T) {
	s := startHub(t, natsBroker(t), Options{Heartbeat: 100 * time.Millisecond, FlushInterval: 20 * time.Millisecond})
	topic := uniqueTopic(t)
	st := openStream(t, s.url+"/sse/"+topic, nil)
	s.publish(t, topic, "busy")
	if e := st.next(t); e.data != "busy" {
		t.Fatalf("event %q", e.data)
	}
	st.heartbeats(t, 2) // after the event, once the stream is quiet
}

// With a flush interval, a quiet stream's event is written at once, and
// events that follow within the interval share the next write: the client
// sees them in one chunk, not one chunk each.
func TestFlushIntervalCoalescesBusyStreams(t *testing.T) {
	const interval = 400 * time.Millisecond
	s := startHub(t, natsBroker(t), Options{FlushInterval: interval})
	topic := uniqueTopic(t)
	conn, r := rawStream(t, s.url, "/sse/"+topic)
	t.Cleanup(func() { conn.Close() })
	type chunk struct {
		at   time.Time
		data string
	}
	chunks := make(chan chunk, 16)
	go func() {
		defer close(chunks)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			n, err := strconv.ParseInt(strings.TrimSpace(line), 16, 32)
			if err != nil || n == 0 {
				return
			}
			data := make([]byte, n+2) // the chunk and its CRLF
			if _, err := io.ReadFull(r, data); err != nil {
				return
			}
			chunks <- chunk{time.Now(), string(data[:n])}
		}
	}()
	next := func() chunk {
		t.Helper()
		select {
		case c, ok := <-chunks:
			if !ok {
				t.Fatal("stream ended")
			}
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("nothing written")
		}
		return chunk{}
	}
	if c := next(); !strings.HasPrefix(c.data, "retry:") {
		t.Fatalf("first chunk %q", c.data)
	}
	// The stream has been quiet for longer than the interval: no wait.
	time.Sleep(interval) // quiet time is the condition under test, not a synchronisation
	sent := time.Now()
	s.publish(t, topic, "first")
	first := next()
	if !strings.Contains(first.data, "data: first\n") || first.at.Sub(sent) > interval/2 {
		t.Fatalf("quiet stream: %q after %s", first.data, first.at.Sub(sent))
	}
	for _, m := range []string{"a", "b", "c"} {
		s.publish(t, topic, m)
	}
	burst := next()
	if strings.Count(burst.data, "data: ") != 3 || burst.at.Sub(first.at) < interval*9/10 {
		t.Fatalf("burst: %q, %s after the first event", burst.data, burst.at.Sub(first.at))
	}
}

// A stream waiting for its next flush does not read its queue, but a
// queue filling up wakes it: a client that keeps up is never dropped for
// a long flush interval, however many events arrive within it.
func TestBusyStreamDrainsBeforeItsQueueOverflows(t *testing.T) {
	const queue, n = 8, 40
	s := startHub(t, natsBroker(t), Options{FlushInterval: time.Second, ClientQueue: queue})
	topic := uniqueTopic(t)
	st := openStream(t, s.url+"/sse/"+topic, nil)
	s.publish(t, topic, "quiet") // flushed at once, and starts the interval
	if e := st.next(t); e.data != "quiet" {
		t.Fatalf("first event %q", e.data)
	}
	for i := range n { // n > queue within one interval
		s.publish(t, topic, strconv.Itoa(i))
	}
	s.waitStats(t, "every event queued", func(st Stats) bool { return st.Delivered == n+1 })
	if got := s.hub.Stats().SlowDropped; got != 0 {
		t.Fatalf("%d clients dropped for falling behind", got)
	}
	for i := range n { // written by the next flush at the latest

		if e := st.next(t); e.data != strconv.Itoa(i) {
			t.Fatalf("event %d is %q", i, e.data)
		}
	}
}
