package sse

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/memory"
)

const mib = 1 << 20

// send publishes data to topic through the hub's broker, as any broker
// client would: no HTTP publish, whose body would take from the budget
// too.
func (s *hubServer) send(t testing.TB, topic, data string) {
	t.Helper()
	if err := s.hub.broker.Publish(t.Context(), brokerMessage(topic, data)); err != nil {
		t.Fatal(err)
	}
}

// payload is a 1 MiB message that starts with i, for telling events apart.
func payload(i int, size int) string {
	p := strconv.Itoa(i) + ":"
	return p + strings.Repeat("x", size-len(p))
}

// stalledStream opens a stream and reads nothing of it until resume is
// called, which returns the stream to read. Its socket keeps its usual
// buffers (a few MiB on loopback): a receive buffer shrunk below a segment
// would be reopened only by the sender's backed-off window probes, seconds
// apart, once the client reads again.
func stalledStream(t *testing.T, base, path string) (resume func() *stream) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	return func() *stream {
		t.Helper()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stalled stream: %v %v", err, resp)
		}
		s := &stream{resp: resp, events: make(chan sseEvent, 4096), done: make(chan struct{}), cancel: func() { c.Close() }}
		go s.read()
		return s
	}
}

// all returns the events the stream gives until it ends.
func (s *stream) all(t *testing.T) []sseEvent {
	t.Helper()
	var got []sseEvent
	for {
		select {
		case ev := <-s.events:
			if !ev.comment && ev.retry == "" {
				got = append(got, ev)
			}
		case <-s.done:
			for len(s.events) > 0 {
				if ev := <-s.events; !ev.comment && ev.retry == "" {
					got = append(got, ev)
				}
			}
			return got
		case <-time.After(20 * time.Second):
			t.Fatalf("stream not ended within 20s, %d events", len(got))
		}
	}
}

// busyAnswer requests a stream and returns the reason of the busy stream
// that refuses it, failing the test if it is admitted.
func busyAnswer(t *testing.T, url string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body) // a busy stream ends at once
	lines := strings.Split(string(body), "\n")
	if resp.StatusCode != http.StatusOK || len(lines) < 3 || !strings.HasPrefix(lines[0], "retry: ") || lines[1] != "event: busy" {
		t.Fatalf("GET %s: %d %.300q, want a busy stream", url, resp.StatusCode, body)
	}
	var data struct{ Reason string }
	json.Unmarshal([]byte(strings.TrimPrefix(lines[2], "data: ")), &data)
	return data.Reason
}

// A stream that stops reading while 1 MiB events arrive is dropped once
// sse.client_queue_bytes wait for it, long before sse.client_queue_events
// (256 of them) would; all the while the hub holds no more than its ring
// and that queue, counted in the memory budget. The client gets the events
// written before, each whole and in order, then the end of the stream; the
// resume gets what it missed, or a reset when the ring no longer has it.
// Once the streams and the topic are gone the budget is back to zero.
func TestStreamBehindByBytesIsDropped(t *testing.T) {
	budget := memory.NewBudget(1 << 30)
	o := Options{Budget: budget, Linger: 50 * time.Millisecond}
	s := startHub(t, natsBroker(t), o)
	o = s.hub.o // with the defaults filled in
	topic := uniqueTopic(t)
	fast := openStream(t, s.url+"/sse/"+topic, nil)
	resume := stalledStream(t, s.url, "/sse/"+topic)
	s.waitStats(t, "both streams", func(st Stats) bool { return st.Clients == 2 })

	const most = 64 // 64 MiB; the kernel's socket buffers hold some 8 of them
	event := int64(mib + 256)
	sent := 0
	for ; sent < most && s.hub.Stats().SlowDropped == 0; sent++ {
		s.send(t, topic, payload(sent, mib))
		if e := fast.next(t); !strings.HasPrefix(e.data, strconv.Itoa(sent)+":") {
			t.Fatalf("the reading stream's event %d is %.10q", sent, e.data)
		}
		// The ring, the stalled stream's queue and the event its blocked
		// write holds; the reading stream's is in the ring.
		if u, bound := budget.Used(), o.ReplayBytes+o.ClientQueueBytes+2*event; u > bound {
			t.Fatalf("after %d events the hub holds %d bytes, more than its ring and one queue (%d)", sent+1, u, bound)
		}
	}
	if st := s.hub.Stats(); st.SlowDropped != 1 {
		t.Fatalf("the stalled stream not dropped after %d MiB sent (stats %+v)", sent, st)
	}
	t.Logf("dropped after %d MiB", sent)

	got := resume().all(t)
	if len(got) == 0 || len(got) >= sent {
		t.Fatalf("the dropped stream got %d events of %d", len(got), sent)
	}
	for i, e := range got {
		if len(e.data) != mib || !strings.HasPrefix(e.data, strconv.Itoa(i)+":") {
			t.Fatalf("the dropped stream's event %d: %d bytes %.10q", i, len(e.data), e.data)
		}
	}
	// It resumes with the events it missed when the ring still has them
	// all, else with a reset.
	again := openStream(t, s.url+"/sse/"+topic, http.Header{"Last-Event-ID": {got[len(got)-1].id}})
	if e := again.next(t); e.typ != "reset" && !strings.HasPrefix(e.data, strconv.Itoa(len(got))+":") {
		t.Fatalf("the resume %d events back: %s %.20q, want the next event or a reset", sent-len(got), e.typ, e.data)
	}
	again.close()
	fast.close()
	s.waitStats(t, "the topic gone", func(st Stats) bool { return st.Topics == 0 && st.Clients == 0 })
	waitUntil(t, func() bool { return budget.Used() == 0 })
}

// A topic's ring keeps the latest events within sse.replay_bytes, and
// their bytes are what the hub holds for it in the budget: a resume from
// a kept event replays the rest, one from before them gets a reset, and
// an event larger than the ring is not kept at all.
func TestRingStaysWithinItsBytes(t *testing.T) {
	budget := memory.NewBudget(1 << 30)
	s := startHub(t, natsBroker(t), Options{Budget: budget, ReplayBytes: 3*mib + 4096, Linger: time.Minute})
	topic := uniqueTopic(t)
	st := openStream(t, s.url+"/sse/"+topic, nil)
	var ids []string
	for i := range 6 {
		s.send(t, topic, payload(i, mib))
		ids = append(ids, st.next(t).id)
		if rb := s.hub.Stats().ReplayBytes; rb > 3*mib+4096 {
			t.Fatalf("after %d events the ring holds %d bytes", i+1, rb)
		}
	}
	// The stream has written all it got: the ring is all the hub holds.
	waitUntil(t, func() bool { return budget.Used() == s.hub.Stats().ReplayBytes })
	if rb := s.hub.Stats().ReplayBytes; rb < 3*mib {
		t.Fatalf("the ring holds %d bytes, want the 3 latest 1 MiB events", rb)
	}

	kept := openStream(t, s.url+"/sse/"+topic, http.Header{"Last-Event-ID": {ids[2]}})
	for i := 3; i < 6; i++ {
		if e := kept.next(t); !strings.HasPrefix(e.data, strconv.Itoa(i)+":") {
			t.Fatalf("resume after event 2: got %.10q, want event %d", e.data, i)
		}
	}
	gone := openStream(t, s.url+"/sse/"+topic, http.Header{"Last-Event-ID": {ids[1]}})
	if e := gone.next(t); e.typ != "reset" {
		t.Fatalf("resume after event 1, no longer kept: %s %.20q, want a reset", e.typ, e.data)
	}

	t.Run("event larger than the ring", func(t *testing.T) {
		budget := memory.NewBudget(1 << 30)
		s := startHub(t, natsBroker(t), Options{Budget: budget, ReplayBytes: 512 << 10, Linger: time.Minute})
		topic := uniqueTopic(t)
		st := openStream(t, s.url+"/sse/"+topic, nil)
		s.send(t, topic, "small")
		small := st.next(t)
		s.send(t, topic, payload(1, mib))
		st.next(t)
		waitUntil(t, func() bool { return budget.Used() == 0 })
		if rb := s.hub.Stats().ReplayBytes; rb != 0 {
			t.Fatalf("the ring holds %d bytes", rb)
		}
		again := openStream(t, s.url+"/sse/"+topic, http.Header{"Last-Event-ID": {small.id}})
		if e := again.next(t); e.typ != "reset" {
			t.Fatalf("resume from before an event not kept: %s %.20q, want a reset", e.typ, e.data)
		}
	})
}

// When the memory budget cannot cover a broker message (here: the test
// holds all of it, as other routes might), the hub holds the event as
// little as it can: it keeps it for no replay, writes it to the streams
// that are not behind, ends those that are (freeing what they held), and
// answers new streams with a busy stream EventSource follows; it logs the
// episode once as it begins and once as it ends. Once the budget covers
// events again, streams are admitted again.
func TestEventsOverBudget(t *testing.T) {
	budget := memory.NewBudget(64 * mib)
	logs := &brokertest.Logs{}
	// Events are never kept (larger than the ring): what the budget holds is
	// the queues alone.
	s := startHubWith(t, natsBroker(t), Options{Budget: budget, ReplayBytes: 64 << 10, ClientQueueBytes: 32 * mib,
		Linger: 50 * time.Millisecond}, nil, logs)
	topic := uniqueTopic(t)
	url := s.url + "/sse/" + topic
	fast := openStream(t, url, nil)
	resume := stalledStream(t, s.url, "/sse/"+topic)
	s.waitStats(t, "both streams", func(st Stats) bool { return st.Clients == 2 })

	// The stalled stream falls behind once the socket buffers are full.
	const size = 256 << 10
	n := 0
	for ; n < 200 && s.queueLen(topic) == 0; n++ {
		s.send(t, topic, payload(n, size))
		fast.next(t)
	}
	if s.queueLen(topic) == 0 {
		t.Fatalf("no stream behind after %d events", n)
	}
	held := budget.Used()
	fill := budget.Limit() - held
	if !budget.Take(fill) {
		t.Fatal("the budget changed while the stalled stream was blocked")
	}

	for i := range 3 {
		s.send(t, topic, payload(n, size))
		if e := fast.next(t); !strings.HasPrefix(e.data, strconv.Itoa(n)+":") {
			t.Fatalf("the stream that keeps up got %.10q, want event %d", e.data, n)
		}
		n++
		if i == 0 {
			// The stream behind, ended, lets go of its queue at once, and of
			// the event its blocked write holds once that write is done:
			// once its client reads, it gets what was written and the end.
			s.waitStats(t, "the stream behind dropped", func(st Stats) bool { return st.BudgetDropped == 1 })
			if got := resume().all(t); len(got) >= n-1 {
				t.Fatalf("the stream behind got %d events of the %d before the budget ran out", len(got), n-1)
			}
			waitUntil(t, func() bool { return budget.Used() == fill })
			// What it held is free now and would cover the event: other
			// routes take it.
			more := budget.Limit() - fill
			if !budget.Take(more) {
				t.Fatal("the budget changed with no stream behind")
			}
			fill += more
			if reason := busyAnswer(t, url); !strings.Contains(reason, "limits.memory_bytes") {
				t.Fatalf("busy reason %q, want it naming limits.memory_bytes", reason)
			}
		}
	}
	if st := s.hub.Stats(); st.Unbudgeted != 3 || st.BudgetRefused != 1 || st.ReplayBytes != 0 || st.SlowDropped != 0 || st.Clients != 1 {
		t.Fatalf("stats %+v: want 3 events not covered, 1 stream refused, none kept, none dropped as slow, 1 left", st)
	}

	budget.Give(fill)
	s.send(t, topic, "covered")
	if e := fast.next(t); e.data != "covered" {
		t.Fatalf("got %.10q, want covered", e.data)
	}
	late := openStream(t, url, nil)
	s.send(t, topic, "admitted")
	if e := late.next(t); e.data != "admitted" {
		t.Fatalf("the stream admitted again got %.10q", e.data)
	}
	logs.WaitFor(t, "sse events fit the memory budget again")
	if n := strings.Count(logs.String(), "sse events exceed the memory budget"); n != 1 {
		t.Fatalf("%d log lines for the episode's start, want 1:\n%s", n, logs)
	}
	late.close()
	fast.close()
	s.waitStats(t, "the topic gone", func(st Stats) bool { return st.Topics == 0 && st.Clients == 0 })
	waitUntil(t, func() bool { return budget.Used() == 0 })
}

// queueLen is the longest queue among topic's streams.
func (s *hubServer) queueLen(topic string) int {
	s.hub.mu.Lock()
	t := s.hub.topics[topic]
	s.hub.mu.Unlock()
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for c := range t.clients {
		n = max(n, len(c.q))
	}
	return n
}

// lingers reports whether topic has no stream and waits out its linger.
func (s *hubServer) lingers(topic string) bool {
	s.hub.mu.Lock()
	t := s.hub.topics[topic]
	s.hub.mu.Unlock()
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.linger != nil
}

// Topics with an upstream subscription and a ring are bounded by
// sse.max_live_topics: past it a lingering topic makes room, and with none
// lingering a stream that needs a new topic gets a busy stream.
func TestLiveTopicsAreBounded(t *testing.T) {
	logs := &brokertest.Logs{}
	s := startHubWith(t, natsBroker(t), Options{MaxLiveTopics: 2, Linger: time.Minute}, nil, logs)
	base := uniqueTopic(t)
	a := openStream(t, s.url+"/sse/"+base+".a", nil)
	openStream(t, s.url+"/sse/"+base+".b", nil)
	for range 2 {
		if reason := busyAnswer(t, s.url+"/sse/"+base+".c"); !strings.Contains(reason, "sse.max_live_topics") {
			t.Fatalf("busy reason %q, want it naming sse.max_live_topics", reason)
		}
	}
	if n := strings.Count(logs.String(), "sse.max_live_topics allows"); n != 1 {
		t.Fatalf("%d log lines for the refusals, want 1:\n%s", n, logs)
	}
	a.close()
	waitUntil(t, func() bool { return s.lingers(base + ".a") })
	c := openStream(t, s.url+"/sse/"+base+".c", nil)
	s.send(t, base+".c", "in")
	if e := c.next(t); e.data != "in" {
		t.Fatalf("got %q", e.data)
	}
	if st := s.hub.Stats(); st.Topics != 2 || st.TopicsRefused != 2 {
		t.Fatalf("stats %+v: want 2 topics live, 2 streams refused", st)
	}
}

// Whatever streams do (one topic or several, resumed from the ring or not,
// ending by themselves or by shutdown), each event's bytes are taken from
// the budget once and all of them given back once nothing holds them.
func TestBudgetReturnsToZero(t *testing.T) {
	budget := memory.NewBudget(1 << 30)
	s := startHub(t, natsBroker(t), Options{Budget: budget, Linger: 50 * time.Millisecond, ClientQueue: 1024,
		ClientQueueBytes: 64 * mib,     // the stalled stream is never dropped as slow
		WriteTimeout:     time.Second}) // its blocked write ends soon after shutdown
	a, b := uniqueTopic(t)+".a", uniqueTopic(t)+".b"
	one := openStream(t, s.url+"/sse/"+a, nil)
	both := openStream(t, s.url+"/sse?topic="+a+"&topic="+b, nil)
	var first sseEvent
	for i := range 50 {
		s.send(t, a, payload(i, 4096))
		s.send(t, b, "\xff binary "+strconv.Itoa(i))
		if i == 0 {
			first = one.next(t)
		}
	}
	// A multi-topic stream resumed from the ring, and one that never
	// reads: it holds the events it was sent, in its queue once the
	// socket buffers are full, until shutdown ends it.
	again := openStream(t, s.url+"/sse?topic="+a+"&topic="+b, http.Header{"Last-Event-ID": {first.id}})
	if e := again.next(t); e.typ != "binary:"+b {
		t.Fatalf("replayed first %+v, want b's first event, sent after a's", e)
	}
	stalledStream(t, s.url, "/sse?topic="+a+"&topic="+b)
	s.waitStats(t, "four streams", func(st Stats) bool { return st.Clients == 4 })
	for i := range 20 {
		s.send(t, b, payload(i, 512<<10))
	}
	waitUntil(t, func() bool { return s.queueLen(b) > 0 })
	one.close()
	both.close()
	again.close()
	s.hub.Close() // ends the stalled stream too
	s.waitStats(t, "every stream and topic gone", func(st Stats) bool { return st.Topics == 0 && st.Clients == 0 })
	waitUntil(t, func() bool { return budget.Used() == 0 })
}

// A multi-topic stream gets a binary event as "binary:<topic>" from the
// same encoding single-topic streams get as "binary".
func TestMultiTopicBinaryEvent(t *testing.T) {
	s := startHub(t, natsBroker(t), Options{})
	a, b := uniqueTopic(t)+".a", uniqueTopic(t)+".b"
	single := openStream(t, s.url+"/sse/"+a, nil)
	multi := openStream(t, s.url+"/sse?topic="+a+"&topic="+b, nil)
	s.send(t, a, "\xff\x00bin")
	e1, e2 := single.next(t), multi.next(t)
	if e1.typ != "binary" || e2.typ != "binary:"+a || e1.data != "/wBiaW4=" || e2.data != e1.data || e1.id != e2.id {
		t.Fatalf("single %+v, multi %+v", e1, e2)
	}
}
