// Package sse serves broker topics as Server-Sent Events and takes HTTP
// publishes. A Hub keeps one upstream subscription per topic however many
// streams follow it, a bounded replay ring per topic for Last-Event-ID, and
// a bounded queue per client: a client that falls behind is dropped (it can
// resume), never allowed to slow the others. Rings and queues are bounded
// in events and in bytes, and the bytes of the events they hold count once
// in the process-wide memory budget.
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

	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/outcome"
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
	// ReplayBytes bounds the bytes a topic's ring keeps: the oldest events
	// go to stay within it, and an event larger than it is not kept.
	ReplayBytes int64
	// ClientQueue is how many events may wait for one client; a client
	// further behind is disconnected.
	ClientQueue int
	// ClientQueueBytes bounds the bytes of the events waiting for one
	// client, as ClientQueue bounds their number. One event larger than it
	// may wait alone.
	ClientQueueBytes int64
	// MaxLiveTopics bounds the topics with an upstream subscription and a
	// ring at once, so that clients choosing topic names cannot grow them
	// without bound: a new topic past it makes a lingering one (no stream
	// left) go, and with none lingering the stream is refused for load.
	MaxLiveTopics int
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
	// SubscribeWait bounds how long a new stream waits for its topics'
	// upstream subscriptions. A broker that is down, silent or refusing
	// the gateway's login can take the whole dial timeout, or longer, to
	// say so; the stream is answered by then with a 200 that tells
	// EventSource to come back (see refuseUnavailable), while the attempt
	// goes on for its return.
	SubscribeWait time.Duration
	// Backend names the backend in the log lines about its outages.
	Backend string
	// Budget, shared with every route, bounds publish bodies being read
	// and sent, and the events held in rings and queues, with everything
	// else held for clients; nil: none.
	Budget  *memory.Budget
	Origins *front.Origins
	Conns   *front.Conns
	Log     *slog.Logger
}

// DefaultOptions are used where a config is silent.
func DefaultOptions() Options {
	return Options{
		Heartbeat:   15 * time.Second,
		Retry:       2 * time.Second,
		Replay:      256,
		ReplayBytes: 4 << 20, // a few 1 MiB events, or 256 of up to 16 KiB
		ClientQueue: 256,
		// As a STOMP translate connection's queue: a few 1 MiB events
		// in flight, so a client that keeps up is not dropped for one
		// burst of them.
		ClientQueueBytes: 4 << 20,
		MaxLiveTopics:    10_000, // as limits.max_connections
		Linger:           5 * time.Second,
		WriteTimeout:     10 * time.Second,
		FlushInterval:    20 * time.Millisecond,
		MaxTopics:        16,
		MaxPublishBytes:  1 << 20, // a 1 MiB message, as on every other route
		PublishTimeout:   10 * time.Second,
		BodyTimeout:      15 * time.Second, // as websocket.message_timeout
		// Well within the 5 s an unreachable or refusing broker may take
		// to say so, and above what a live one takes to subscribe
		// (milliseconds; RabbitMQ under load, some hundreds).
		SubscribeWait: 2 * time.Second,
	}
}

// Stats are a hub's counters.
type Stats struct {
	Topics       int   // topics with an upstream subscription
	Clients      int64 // open streams
	SlowDropped  int64 // clients disconnected for falling behind
	Delivered    int64 // events queued to clients
	UpstreamSubs int64 // upstream subscriptions made so far
	ReplayBytes  int64 // bytes the topics' rings keep now
	// Unbudgeted counts events the memory budget could not cover: kept
	// for no replay, and sent only to the streams that were not behind.
	Unbudgeted int64
	// BudgetDropped counts streams ended because such an event found them
	// behind; BudgetRefused, new streams refused while the budget could not
	// cover the last such event.
	BudgetDropped, BudgetRefused int64
	// TopicsRefused counts streams refused because MaxLiveTopics topics
	// were live and none was lingering.
	TopicsRefused int64
	// BackendRefused counts streams told to come back because their
	// topic's subscription could not be made (see SubscribeWait).
	BackendRefused int64
}

// Hub fans broker topics out to SSE streams.
type Hub struct {
	broker broker.Broker
	o      Options
	// ctx ends with Close, and with it the subscription attempts, which
	// attempts waits for.
	ctx      context.Context
	cancel   context.CancelFunc
	attempts sync.WaitGroup
	backend  backendState
	// epoch makes event ids from an earlier process unmistakable.
	epoch string
	seq   atomic.Uint64

	mu     sync.Mutex
	topics map[string]*topic
	closed bool

	clients       atomic.Int64
	slowDropped   atomic.Int64
	delivered     atomic.Int64
	upstreamSubs  atomic.Int64
	unbudgeted    atomic.Int64
	budgetDropped atomic.Int64
	budgetRefused atomic.Int64
	topicsRefused atomic.Int64
	// backendRefused: see Stats.BackendRefused.
	backendRefused atomic.Int64

	// short is the size of the last event the memory budget could not
	// cover, 0 once one was covered again: while it is set the hub is
	// short of budget, a state logged once as it begins and once as it
	// ends rather than once per event.
	short atomic.Int64
	// topicsFull is set while streams are refused for MaxLiveTopics, so
	// that is logged once per episode too.
	topicsFull atomic.Bool
}

// NewHub returns a hub over broker. Zero options take the defaults, but
// for FlushInterval, where zero means no coalescing.
func NewHub(broker broker.Broker, o Options) *Hub {
	d := DefaultOptions()
	setDefault(&o.Heartbeat, d.Heartbeat)
	setDefault(&o.Retry, d.Retry)
	setDefault(&o.Replay, d.Replay)
	setDefault(&o.ReplayBytes, d.ReplayBytes)
	setDefault(&o.ClientQueue, d.ClientQueue)
	setDefault(&o.ClientQueueBytes, d.ClientQueueBytes)
	setDefault(&o.MaxLiveTopics, d.MaxLiveTopics)
	setDefault(&o.Linger, d.Linger)
	setDefault(&o.WriteTimeout, d.WriteTimeout)
	setDefault(&o.MaxTopics, d.MaxTopics)
	setDefault(&o.MaxPublishBytes, d.MaxPublishBytes)
	setDefault(&o.PublishTimeout, d.PublishTimeout)
	setDefault(&o.BodyTimeout, d.BodyTimeout)
	setDefault(&o.SubscribeWait, d.SubscribeWait)
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Conns == nil {
		o.Conns = front.NewConns(0, 0)
	}
	var b [4]byte
	rand.Read(b[:])
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{broker: broker, o: o, ctx: ctx, cancel: cancel, backend: backendState{name: o.Backend, log: o.Log},
		epoch: hex.EncodeToString(b[:]), topics: map[string]*topic{}}
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
	var ring int64
	for _, t := range h.topics {
		t.mu.Lock()
		ring += t.ring.bytes
		t.mu.Unlock()
	}
	h.mu.Unlock()
	return Stats{Topics: n, Clients: h.clients.Load(), SlowDropped: h.slowDropped.Load(),
		Delivered: h.delivered.Load(), UpstreamSubs: h.upstreamSubs.Load(), ReplayBytes: ring,
		Unbudgeted: h.unbudgeted.Load(), BudgetDropped: h.budgetDropped.Load(),
		BudgetRefused: h.budgetRefused.Load(), TopicsRefused: h.topicsRefused.Load(), BackendRefused: h.backendRefused.Load()}
}

// Close ends every stream and upstream subscription, and waits for the
// attempts at subscriptions under way.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	topics := make([]*topic, 0, len(h.topics))
	for _, t := range h.topics {
		topics = append(topics, t)
	}
	h.mu.Unlock()
	h.cancel()
	for _, t := range topics {
		t.end(endShutdown)
	}
	h.attempts.Wait()
}

var (
	errHubClosed     = errors.New("shutting down")
	errTooManyTopics = errors.New("the gateway follows as many topics as it may (sse.max_live_topics); retry later")
)

// shortOfBudget reports whether a new stream is to be refused for the
// memory budget: it could not cover the last event it was offered, and
// still could not.
func (h *Hub) shortOfBudget() bool {
	s := h.short.Load()
	return s > 0 && h.o.Budget.Used()+s > h.o.Budget.Limit()
}

// topic is one upstream subscription and its subscribers.
type topic struct {
	name  string
	hub   *Hub
	ready chan struct{} // closed once subscribing succeeded or failed
	err   error         // set before ready closes
	// counted: its attempt was begun during an outage (backendState.begin).
	counted bool
	ended   chan struct{} // closed when the topic is retired, for any reason; its clients are ended too
	once    sync.Once

	names *names

	mu      sync.Mutex
	sub     broker.Subscription // nil until subscribed
	ring    ring
	floor   uint64 // a resume from any id >= floor is gapless
	clients map[*client]struct{}
	linger  *time.Timer
	retired bool
}

// acquire returns the topic with c registered on it and the events c must
// be sent first (seq > lastSeq), or reset when lastSeq cannot be resumed
// without a gap. lastSeq 0 means a fresh stream. A topic not subscribed
// yet is waited for until *deadline, which the first such wait of a
// stream sets SubscribeWait ahead; then, and at once when the backend is
// known to be down and being tried, err says why (see why).
func (h *Hub) acquire(ctx context.Context, name string, c *client, lastSeq uint64, deadline *time.Time) (t *topic, replay []*event, reset bool, err error) {
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, nil, false, errHubClosed
		}
		t = h.topics[name]
		if t == nil && len(h.topics) >= h.o.MaxLiveTopics {
			idle := h.lingering()
			h.mu.Unlock()
			if idle == nil {
				return nil, nil, false, errTooManyTopics
			}
			idle.end(endUpstream) // it has no stream: only a quick resume loses out
			continue
		}
		if t == nil {
			counted, down := h.backend.begin()
			if down != nil {
				h.mu.Unlock()
				return nil, nil, false, down
			}
			// An id issued before this subscription (to an earlier one of
			// the topic, now gone) may have missed what the broker sent
			// in between: the floor takes a seq of its own, so such an id
			// is below it and its resume starts with a reset.
			t = &topic{name: name, hub: h, ready: make(chan struct{}), ended: make(chan struct{}),
				clients: map[*client]struct{}{}, names: newNames(name), counted: counted, floor: h.seq.Add(1)}
			h.topics[name] = t
			h.attempts.Add(1)
			h.mu.Unlock()
			go t.subscribe()
		} else {
			h.mu.Unlock()
		}
		select {
		case <-t.ready:
		default:
			if deadline.IsZero() {
				*deadline = time.Now().Add(h.o.SubscribeWait)
			}
			tm := time.NewTimer(time.Until(*deadline))
			select {
			case <-t.ready:
				tm.Stop()
			case <-ctx.Done():
				tm.Stop()
				return nil, nil, false, ctx.Err()
			case <-tm.C:
				return nil, nil, false, errNoAnswer
			}
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

// lingering returns a topic no stream follows, or nil. Call with h.mu
// held; it is called only when MaxLiveTopics are live, so a walk over them
// costs nothing the rest of the time.
func (h *Hub) lingering() *topic {
	for _, t := range h.topics {
		t.mu.Lock()
		idle := t.linger != nil && !t.retired
		t.mu.Unlock()
		if idle {
			return t
		}
	}
	return nil
}

// subscribe makes the upstream subscription, on a goroutine of its own
// (the hub's attempts) that outlives the streams' wait for it: one that
// succeeds after they gave up lingers for their return. A failure retires
// the topic so the next stream tries again. A subscription that ends by
// itself (the broker connection lost) ends the topic and its streams,
// which tell their clients to come back.
func (t *topic) subscribe() {
	h := t.hub
	defer h.attempts.Done()
	ctx, cancel := context.WithTimeout(h.ctx, subscribeTimeout)
	start := time.Now()
	sub, err := h.broker.Subscribe(ctx, t.name, t.deliver)
	cancel()
	if took := time.Since(start); took > h.o.SubscribeWait && err == nil {
		h.o.Log.Info("sse upstream subscription took longer than streams wait for it; those that waited were told to come back",
			"backend", h.o.Backend, "topic", t.name, "took", took.Round(time.Millisecond), "wait", h.o.SubscribeWait)
	}
	if !errors.Is(err, context.Canceled) {
		h.backend.end(err, t.counted)
	}
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
	t.mu.Lock()
	if t.retired { // the hub closed meanwhile
		t.mu.Unlock()
		close(t.ready)
		sub.Unsubscribe()
		return
	}
	t.sub = sub
	// No stream follows it yet: those waiting register once ready
	// closes, the first stopping this; if all of them gave up, it goes
	// as any topic nobody follows does.
	t.linger = time.AfterFunc(h.o.Linger, t.expire)
	t.mu.Unlock()
	close(t.ready)
	go func() {
		select {
		case <-sub.Done():
			// Logged once for the outage, as all its topics end.
			h.o.Log.Debug("sse upstream subscription lost; ending its streams so clients reconnect", "topic", t.name)
			h.backend.end(errLost, false)
			t.end(endUpstream)
		case <-t.ended:
		}
	}()
}

// deliver runs on the broker client's goroutine for each message, in
// order: encode once, take its bytes from the budget once, keep it for
// replay, offer it to every client.
//
// A broker message cannot be refused, so an event the budget cannot cover
// (after the topic's own ring has made room) is held as little as can be:
// kept for no replay (resumes from before it reset), sent to the streams
// that have nothing waiting, which write it at once, and never queued
// behind others: a stream that is behind is ended instead, which frees
// what it held. New streams are refused meanwhile (see shortOfBudget).
func (t *topic) deliver(m broker.Message) {
	h := t.hub
	budget := h.o.Budget
	ev := newEvent(h.epoch, h.seq.Add(1), t.names, m.Data)
	t.mu.Lock()
	if t.retired { // its streams are ending; its ring is gone
		t.mu.Unlock()
		return
	}
	covered := budget.Take(ev.size)
	if !covered && t.ring.n > 0 {
		t.forget(0) // the ring is a cache: it yields to live events
		covered = budget.Take(ev.size)
	}
	// The references the ring and the queues may take, and one for this
	// call, are held at once and what was not used given back at the end:
	// two atomic operations per event, not two per stream.
	refs := int32(len(t.clients)) + 2
	ev.hold(refs)
	if covered {
		ev.cost = ev.size
		t.keep(ev)
		refs--
	} else {
		t.forget(ev.seq)
	}
	var queued int64
	for c := range t.clients {
		switch {
		case !covered && len(c.q) > 0:
			if c.end(endOverBudget) {
				h.budgetDropped.Add(1)
			}
			c.drain(budget)
		case c.offer(ev, h.o.ClientQueueBytes):
			queued++
		case c.end(endSlow):
			h.slowDropped.Add(1)
			c.drain(budget)
		}
	}
	t.mu.Unlock()
	ev.drop(refs-int32(queued), budget)
	h.delivered.Add(queued)
	if !covered {
		h.unbudgeted.Add(1)
		if h.short.Swap(ev.size) == 0 {
			h.o.Log.Warn("sse events exceed the memory budget (limits.memory_bytes): they are kept for no replay, streams that are behind are dropped and new streams refused until it can hold them",
				"topic", t.name, "event_bytes", ev.size, "budget_used", budget.Used(), "budget", budget.Limit())
		}
	} else if h.short.Load() != 0 && h.short.Swap(0) != 0 {
		h.o.Log.Info("sse events fit the memory budget again", "topic", t.name,
			"unbudgeted_events", h.unbudgeted.Load(), "streams_dropped", h.budgetDropped.Load(), "streams_refused", h.budgetRefused.Load())
	}
}

// keep puts ev, whose reference the caller holds for it, in the ring; the
// oldest events go to stay within Replay events and ReplayBytes. An event
// larger than ReplayBytes is not kept. Call with t.mu held.
func (t *topic) keep(ev *event) {
	o, budget := &t.hub.o, t.hub.o.Budget
	if ev.size > o.ReplayBytes {
		t.forget(ev.seq)
		ev.release(budget)
		return
	}
	for t.ring.n > 0 && (t.ring.n >= o.Replay || t.ring.bytes+ev.size > o.ReplayBytes) {
		old := t.ring.pop()
		t.floor = old.seq
		old.release(budget)
	}
	t.ring.push(ev, o.Replay)
}

// forget empties the ring. A resume is then gapless only from an id at or
// past seq (the event not kept), or past the events let go. Call with
// t.mu held.
func (t *topic) forget(seq uint64) {
	for t.ring.n > 0 {
		old := t.ring.pop()
		t.floor = old.seq
		old.release(t.hub.o.Budget)
	}
	t.floor = max(t.floor, seq)
}

// since returns the kept events with seq > after, oldest first, each with
// a reference held for the caller. Call with t.mu held.
func (t *topic) since(after uint64) []*event {
	var out []*event
	for i := range t.ring.n {
		if ev := t.ring.at(i); ev.seq > after {
			ev.hold(1)
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
		t.end(endUpstream)
	}
}

// end retires the topic once: no new clients, streams told to finish for
// why, the upstream subscription dropped.
func (t *topic) end(why outcome.Outcome) {
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
			c.end(why)
		}
		t.forget(0)
		sub := t.sub
		t.mu.Unlock()
		close(t.ended)
		if sub != nil {
			if err := sub.Unsubscribe(); err != nil {
				h.o.Log.Debug("sse unsubscribe", "topic", t.name, "error", err.Error())
			}
		}
	})
}

// Why a stream ends, besides its client leaving (the outcomes logged).
const (
	endClientGone   = outcome.ClientClosed
	endSlow         = outcome.SlowConsumer
	endShutdown     = outcome.Shutdown
	endUpstream     = outcome.BrokerLost
	endTokenExpired = outcome.TokenExpired
	endOverBudget   = outcome.OverBudget
)

// client is one stream's queue. Several topics may feed it.
type client struct {
	q chan *event
	// queued is the bytes of the events in q: added by the topics that
	// offer them, taken off by whoever receives them from q.
	queued atomic.Int64
	// pressure wakes a stream that waits for its next flush (and so does
	// not read q) once q is half full, so that a fast stream drains it
	// before it overflows.
	pressure chan struct{}
	// stop is closed once the stream must end, for the reason in why:
	// one channel for every reason keeps the stream's select small.
	stop   chan struct{}
	why    outcome.Outcome // set before stop closes
	stopOn sync.Once
}

func newClient(queue int) *client {
	return &client{q: make(chan *event, queue), pressure: make(chan struct{}, 1), stop: make(chan struct{})}
}

// end tells the stream to finish; it reports whether this call did, the
// first reason being the one that counts.
func (c *client) end(why outcome.Outcome) (first bool) {
	c.stopOn.Do(func() {
		c.why, first = why, true
		close(c.stop)
	})
	return first
}

// offer queues ev, whose reference the caller holds for it, without ever
// blocking the broker's goroutine. It reports whether ev was queued: not
// when the client has been told to end, nor when its queue is full in
// events or past maxBytes with ev.
func (c *client) offer(ev *event, maxBytes int64) bool {
	select {
	case <-c.stop: // it holds nothing more, since it will write nothing more
		return false
	default:
	}
	q := c.queued.Add(ev.size)
	if q > maxBytes && q > ev.size {
		c.queued.Add(-ev.size)
		return false
	}
	select {
	case c.q <- ev:
		if len(c.q) >= cap(c.q)/2 || q >= maxBytes/2 {
			select {
			case c.pressure <- struct{}{}:
			default:
			}
		}
		return true
	default:
		c.queued.Add(-ev.size)
		return false
	}
}

// sent lets go of ev, received from q and written (or not, the stream
// ending).
func (c *client) sent(ev *event, b *memory.Budget) {
	c.queued.Add(-ev.size)
	ev.release(b)
}

// drain lets go of whatever waits in q. A stream ended for falling behind
// may sit in a blocked write for up to the write timeout: its queue is
// emptied for it at once, by the topic that ends it, so what it held is
// free when the budget needs it. Every receiver from q takes an event only
// when one is there, so the stream does not wait on what drain took.
func (c *client) drain(b *memory.Budget) {
	for {
		select {
		case ev := <-c.q:
			c.sent(ev, b)
		default:
			return
		}
	}
}

// GoAway implements front.Closer.
func (c *client) GoAway(string) { c.end(endShutdown) }
