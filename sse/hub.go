// Package sse serves broker topics as Server-Sent Events and takes HTTP
// publishes. A Hub keeps one upstream subscription per topic however many
// streams follow it, a bounded replay ring per topic for Last-Event-ID, and
// a bounded queue per client: a client that falls behind is dropped (it can
// resume), never allowed to slow the others.
package sse

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
)

// Options configure a Hub and its HTTP handlers.
type Options struct {
	// Heartbeat is how often an idle stream gets a comment line, so proxies
	// keep it open.
	Heartbeat time.Duration
	// Retry is the reconnection delay suggested to EventSource.
	Retry time.Duration
	// Replay is how many events each topic keeps for Last-Event-ID resumes.
	Replay int
	// ClientQueue is how many events may wait for one client; a client
	// further behind is disconnected.
	ClientQueue int
	// Linger keeps a topic's upstream subscription after its last client
	// leaves, so quick reconnects resume without loss.
	Linger time.Duration
	// WriteTimeout bounds each write to a client. A stream re-arms it only
	// once less than half of it is left, so a blocked write fails after
	// between half and all of it.
	WriteTimeout time.Duration
	// FlushInterval is the least time between two flushes (write
	// syscalls) of one stream: events arriving sooner wait for the next
	// and share it, so a busy stream costs at most one write per interval
	// while a quiet one is flushed at once. 0 (NewHub's zero value too)
	// flushes every batch at once.
	FlushInterval time.Duration
	// MaxTopics bounds the topics one stream may follow.
	MaxTopics int
	// MaxPublishBytes bounds an HTTP publish body.
	MaxPublishBytes int
	// PublishTimeout bounds waiting for the broker to take a publish.
	PublishTimeout time.Duration
	// BodyTimeout bounds reading a publish body, so a client cannot hold a
	// request (and its socket) open by trickling it.
	BodyTimeout time.Duration
	// Budget, shared with every route, bounds publish bodies being read
	// and sent with everything else held for clients; nil: none.
	Budget  *bridge.Budget
	Origins *bridge.Origins
	Conns   *bridge.Conns
	Log     *slog.Logger
}

// DefaultOptions are used where a config is silent.
func DefaultOptions() Options {
	return Options{
		Heartbeat:       15 * time.Second,
		Retry:           2 * time.Second,
		Replay:          256,
		ClientQueue:     256,
		Linger:          5 * time.Second,
		WriteTimeout:    10 * time.Second,
		FlushInterval:   20 * time.Millisecond,
		MaxTopics:       16,
		MaxPublishBytes: 1 << 20, // a 1 MiB message, as on every other route
		PublishTimeout:  10 * time.Second,
		BodyTimeout:     15 * time.Second, // as websocket.message_timeout
	}
}

// Stats are a hub's counters.
type Stats struct {
	Topics       int   // topics with an upstream subscription
	Clients      int64 // open streams
	SlowDropped  int64 // clients disconnected for falling behind
	Delivered    int64 // events queued to clients
	UpstreamSubs int64 // upstream subscriptions made so far
}

// Hub fans broker topics out to SSE streams.
type Hub struct {
	broker bridge.Broker
	o      Options
	// epoch makes event ids from an earlier process unmistakable.
	epoch string
	seq   atomic.Uint64

	mu     sync.Mutex
	topics map[string]*topic
	closed bool

	clients      atomic.Int64
	slowDropped  atomic.Int64
	delivered    atomic.Int64
	upstreamSubs atomic.Int64
}

// NewHub returns a hub over broker. Zero options take the defaults, but
// for FlushInterval, where zero means no coalescing.
func NewHub(broker bridge.Broker, o Options) *Hub {
	d := DefaultOptions()
	setDefault(&o.Heartbeat, d.Heartbeat)
	setDefault(&o.Retry, d.Retry)
	setDefault(&o.Replay, d.Replay)
	setDefault(&o.ClientQueue, d.ClientQueue)
	setDefault(&o.Linger, d.Linger)
	setDefault(&o.WriteTimeout, d.WriteTimeout)
	setDefault(&o.MaxTopics, d.MaxTopics)
	setDefault(&o.MaxPublishBytes, d.MaxPublishBytes)
	setDefault(&o.PublishTimeout, d.PublishTimeout)
	setDefault(&o.BodyTimeout, d.BodyTimeout)
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Conns == nil {
		o.Conns = bridge.NewConns(0, 0)
	}
	var b [4]byte
	rand.Read(b[:])
	return &Hub{broker: broker, o: o, epoch: hex.EncodeToString(b[:]), topics: map[string]*topic{}}
}

func setDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	n := len(h.topics)
	h.mu.Unlock()
	return Stats{Topics: n, Clients: h.clients.Load(), SlowDropped: h.slowDropped.Load(),
		Delivered: h.delivered.Load(), UpstreamSubs: h.upstreamSubs.Load()}
}

// Close ends every stream and upstream subscription.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	topics := make([]*topic, 0, len(h.topics))
	for _, t := range h.topics {
		topics = append(topics, t)
	}
	h.mu.Unlock()
	for _, t := range topics {
		t.end()
	}
}

var errHubClosed = errors.New("shutting down")

// topic is one upstream subscription and its subscribers.
type topic struct {
	name  string
	hub   *Hub
	ready chan struct{} // closed once subscribing succeeded or failed
	err   error         // set before ready closes
	sub   bridge.Subscription
	ended chan struct{} // closed when the topic is retired, for any reason; its clients are ended too
	once  sync.Once

	mu      sync.Mutex
	ring    []*event // oldest first once full; len <= Replay
	head    int      // index of the oldest event when the ring is full
	floor   uint64   // a resume from any id >= floor is gapless
	clients map[*client]struct{}
	linger  *time.Timer
	retired bool
}

// acquire returns the topic with c registered on it and the events c must
// be sent first (seq > lastSeq), or reset when lastSeq cannot be resumed
// without a gap. lastSeq 0 means a fresh stream.
func (h *Hub) acquire(ctx context.Context, name string, c *client, lastSeq uint64) (t *topic, replay []*event, reset bool, err error) {
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, nil, false, errHubClosed
		}
		t = h.topics[name]
		if t == nil {
			t = &topic{name: name, hub: h, ready: make(chan struct{}), ended: make(chan struct{}),
				clients: map[*client]struct{}{}}
			h.topics[name] = t
			h.mu.Unlock()
			t.subscribe()
		} else {
			h.mu.Unlock()
		}
		select {
		case <-t.ready:
		case <-ctx.Done():
			return nil, nil, false, ctx.Err()
		}
		if t.err != nil {
			return nil, nil, false, t.err
		}
		t.mu.Lock()
		if t.retired { // lost a race with its linger timer or a broker loss
			t.mu.Unlock()
			continue
		}
		if t.linger != nil {
			t.linger.Stop()
			t.linger = nil
		}
		t.clients[c] = struct{}{}
		if lastSeq > 0 {
			if lastSeq < t.floor || lastSeq > h.seq.Load() {
				reset = true
			} else {
				replay = t.since(lastSeq)
			}
		}
		t.mu.Unlock()
		return t, replay, reset, nil
	}
}

// subscribe makes the upstream subscription; a failure retires the topic
// so the next stream tries again.
func (t *topic) subscribe() {
	h := t.hub
	t.floor = h.seq.Load() // events from here on are captured
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, err := h.broker.Subscribe(ctx, t.name, t.deliver)
	if err != nil {
		t.err = err
		h.mu.Lock()
		if h.topics[t.name] == t {
			delete(h.topics, t.name)
		}
		h.mu.Unlock()
		close(t.ready)
		return
	}
	h.upstreamSubs.Add(1)
	t.sub = sub
	close(t.ready)
	go func() {
		select {
		case <-sub.Done():
			h.o.Log.Warn("sse upstream subscription lost; ending its streams so clients reconnect", "topic", t.name)
			t.end()
		case <-t.ended:
		}
	}()
}

// deliver runs on the broker client's goroutine for each message, in
// order: encode once, keep it for replay, offer it to every client.
func (t *topic) deliver(m bridge.Message) {
	h := t.hub
	ev := newEvent(h.epoch, h.seq.Add(1), t.name, m.Data)
	t.mu.Lock()
	if max := h.o.Replay; len(t.ring) < max {
		t.ring = append(t.ring, ev)
	} else {
		t.floor = t.ring[t.head].seq
		t.ring[t.head] = ev
		t.head = (t.head + 1) % max
	}
	for c := range t.clients {
		if c.offer(ev) {
			h.slowDropped.Add(1)
		}
	}
	n := len(t.clients)
	t.mu.Unlock()
	h.delivered.Add(int64(n))
}

// since returns the kept events with seq > after, oldest first. Call with
// t.mu held.
func (t *topic) since(after uint64) []*event {
	var out []*event
	for i := range t.ring {
		ev := t.ring[(t.head+i)%len(t.ring)]
		if ev.seq > after {
			out = append(out, ev)
		}
	}
	return out
}

// release unregisters c; the last client leaving starts the linger timer.
func (t *topic) release(c *client) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.clients, c)
	if len(t.clients) == 0 && !t.retired && t.linger == nil {
		t.linger = time.AfterFunc(t.hub.o.Linger, t.expire)
	}
}

func (t *topic) expire() {
	t.mu.Lock()
	idle := len(t.clients) == 0 && t.linger != nil
	t.mu.Unlock()
	if idle {
		t.end()
	}
}

// end retires the topic once: no new clients, streams told to finish, the
// upstream subscription dropped.
func (t *topic) end() {
	t.once.Do(func() {
		h := t.hub
		h.mu.Lock()
		if h.topics[t.name] == t {
			delete(h.topics, t.name)
		}
		h.mu.Unlock()
		t.mu.Lock()
		t.retired = true
		if t.linger != nil {
			t.linger.Stop()
		}
		for c := range t.clients {
			c.end(endUpstream)
		}
		t.mu.Unlock()
		close(t.ended)
		if t.sub != nil {
			if err := t.sub.Unsubscribe(); err != nil {
				h.o.Log.Debug("sse unsubscribe", "topic", t.name, "error", err.Error())
			}
		}
	})
}

// Why a stream ends, besides its client leaving (the outcomes logged).
const (
	endClientGone   = "client_closed"
	endSlow         = "slow_client"
	endShutdown     = "shutdown"
	endUpstream     = "upstream_ended"
	endTokenExpired = "token_expired"
)

// client is one stream's queue. Several topics may feed it.
type client struct {
	q chan *event
	// pressure wakes a stream that waits for its next flush (and so does
	// not read q) once q is half full, so that a fast stream drains it
	// before it overflows.
	pressure chan struct{}
	// stop is closed once the stream must end, for the reason in why:
	// one channel for every reason keeps the stream's select small.
	stop   chan struct{}
	why    string // set before stop closes
	stopOn sync.Once
}

func newClient(queue int) *client {
	return &client{q: make(chan *event, queue), pressure: make(chan struct{}, 1), stop: make(chan struct{})}
}

// end tells the stream to finish; it reports whether this call did, the
// first reason being the one that counts.
func (c *client) end(why string) (first bool) {
	c.stopOn.Do(func() {
		c.why, first = why, true
		close(c.stop)
	})
	return first
}

// offer queues ev without ever blocking the broker's goroutine. It
// reports whether the client just fell behind.
func (c *client) offer(ev *event) (fellBehind bool) {
	select {
	case c.q <- ev:
		if len(c.q) >= cap(c.q)/2 {
			select {
			case c.pressure <- struct{}{}:
			default:
			}
		}
		return false
	default:
		return c.end(endSlow)
	}
}

// GoAway implements bridge.Closer.
func (c *client) GoAway(string) { c.end(endShutdown) }
