package broker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Shared is a Broker that keeps one upstream subscription per topic
// however many subscribers in the process follow it, and hands each
// message to every one of them. Broker clients cannot be trusted with
// several subscriptions to one topic: paho keeps one callback per filter,
// so a second Subscribe replaces the first and the first Unsubscribe ends
// both. Every terminating route of a backend (SSE, STOMP translate) goes
// through one Shared.
type Shared struct {
	Broker

	mu     sync.Mutex
	topics map[string]*sharedTopic
}

// NewShared wraps b.
func NewShared(b Broker) *Shared { return &Shared{Broker: b, topics: map[string]*sharedTopic{}} }

type sharedTopic struct {
	name  string
	ready chan struct{} // closed once the upstream subscription is made or failed
	err   error         // set before ready closes
	up    Subscription
	gone  chan struct{} // closed (by end) once the upstream subscription has ended
	once  sync.Once

	subs    atomic.Pointer[[]*sharedSub] // copied on change, read on every message
	retired bool                         // guarded by Shared.mu
}

type sharedSub struct {
	s    *Shared
	t    *sharedTopic
	fn   func(Message)
	done chan struct{}
	once sync.Once
}

func (u *sharedSub) Done() <-chan struct{} { return u.done }

// Unsubscribe removes this subscriber; the last one ends the upstream
// subscription.
func (u *sharedSub) Unsubscribe() error { return u.s.leave(u) }

// Subscribe adds fn to the topic's subscribers, making the upstream
// subscription when it is the first. fn runs on the broker client's
// goroutine, after the other subscribers' and before the next message: it
// must not block.
func (s *Shared) Subscribe(ctx context.Context, topic string, fn func(Message)) (Subscription, error) {
	for {
		s.mu.Lock()
		t := s.topics[topic]
		if t == nil {
			t = &sharedTopic{name: topic, ready: make(chan struct{}), gone: make(chan struct{})}
			t.subs.Store(&[]*sharedSub{})
			s.topics[topic] = t
			s.mu.Unlock()
			s.subscribe(ctx, t)
			s.mu.Lock()
		}
		retired := t.retired
		s.mu.Unlock()
		if retired { // its upstream is ending: wait, then make a new one
			select {
			case <-t.gone:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			// A failed attempt is retired too: its error is this
			// subscriber's, at once. Trying again here would dial the
			// broker in a loop until ctx ends, and report only that.
			if t.err != nil {
				return nil, t.err
			}
			continue
		}
		select {
		case <-t.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if t.err != nil {
			return nil, t.err
		}
		u := &sharedSub{s: s, t: t, fn: fn, done: make(chan struct{})}
		s.mu.Lock()
		if t.retired {
			s.mu.Unlock()
			continue
		}
		subs := append(append([]*sharedSub(nil), *t.subs.Load()...), u)
		t.subs.Store(&subs)
		s.mu.Unlock()
		return u, nil
	}
}

// subscribe makes t's upstream subscription and watches it end. The
// attempt is bounded by ctx's deadline but not ended by its cancellation:
// ctx is the first subscriber's, and others may be waiting on the attempt.
func (s *Shared) subscribe(ctx context.Context, t *sharedTopic) {
	uctx := context.WithoutCancel(ctx)
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		uctx, cancel = context.WithDeadline(uctx, dl)
		defer cancel()
	}
	up, err := s.Broker.Subscribe(uctx, t.name, func(m Message) {
		for _, u := range *t.subs.Load() {
			u.fn(m)
		}
	})
	if err != nil {
		t.err = err
		s.retire(t)
		t.end()
		close(t.ready)
		return
	}
	t.up = up
	close(t.ready)
	go func() {
		select {
		case <-up.Done(): // the broker connection was lost: every subscriber's ends
			s.retire(t)
			s.mu.Lock()
			subs := *t.subs.Load()
			s.mu.Unlock()
			for _, u := range subs {
				u.once.Do(func() { close(u.done) })
			}
			t.end()
			// Nothing is left to unsubscribe at the broker, but the
			// client may still hold the subscription (MQTT's table of
			// filters): let it go, or every topic ever lost stays there.
			up.Unsubscribe()
		case <-t.gone:
		}
	}()
}

// retire takes t out of use: new subscribers to its topic make a new one
// once t has ended.
func (s *Shared) retire(t *sharedTopic) {
	s.mu.Lock()
	t.retired = true
	if s.topics[t.name] == t {
		delete(s.topics, t.name)
	}
	s.mu.Unlock()
}

func (t *sharedTopic) end() { t.once.Do(func() { close(t.gone) }) }

var errNotSubscribed = errors.New("not subscribed")

// leave removes u; the last subscriber ends the upstream subscription, and
// a new subscriber to the topic waits until that has happened.
func (s *Shared) leave(u *sharedSub) error {
	t := u.t
	s.mu.Lock()
	old := *t.subs.Load()
	subs := make([]*sharedSub, 0, len(old))
	for _, o := range old {
		if o != u {
			subs = append(subs, o)
		}
	}
	if len(subs) == len(old) {
		s.mu.Unlock()
		return errNotSubscribed
	}
	t.subs.Store(&subs)
	last := len(subs) == 0 && !t.retired
	if last {
		t.retired = true // stays in topics until its upstream has ended
	}
	s.mu.Unlock()
	if !last {
		return nil
	}
	err := t.up.Unsubscribe()
	s.retire(t)
	t.end()
	return err
}

// ErrNoQueueGroups is QueueSubscribe's answer for a broker without queue
// groups (only NATS has them).
var ErrNoQueueGroups = errors.New("queue groups need a NATS backend")

// QueueSubscribe passes a queue-group subscription through: each member
// is a subscriber of its own at the broker, and each message goes to one.
func (s *Shared) QueueSubscribe(ctx context.Context, topic, group string, fn func(Message)) (Subscription, error) {
	qs, ok := s.Broker.(QueueSubscriber)
	if !ok {
		return nil, ErrNoQueueGroups
	}
	return qs.QueueSubscribe(ctx, topic, group, fn)
}

// Topics is how many upstream subscriptions are live.
func (s *Shared) Topics() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.topics)
}
