package sse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/front"
)

// subscribeTimeout bounds an attempt at an upstream subscription, which
// goes on after the streams that asked for it stopped waiting (at
// SubscribeWait): one that succeeds later serves their return.
const subscribeTimeout = 10 * time.Second

var (
	// errNoAnswer is a stream's wait for its topic's subscription ending
	// at SubscribeWait, the attempt still under way.
	errNoAnswer = errors.New("no answer from the broker in time")
	// errLost is a live upstream subscription ending by itself: the
	// broker connection was lost.
	errLost = fmt.Errorf("the broker connection was lost: %w", broker.ErrUnavailable)
)

// outage reports whether err says the backend cannot serve anyone now,
// rather than that it refused one request.
func outage(err error) bool {
	return errors.Is(err, broker.ErrUnavailable) || errors.Is(err, broker.ErrLoginRefused) ||
		errors.Is(err, context.DeadlineExceeded)
}

// cause names the class of an outage's error for the operator's log.
func cause(err error) string {
	switch {
	case errors.Is(err, broker.ErrLoginRefused):
		return "login refused"
	case errors.Is(err, broker.ErrUnreachable):
		return "unreachable"
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer"
	}
	return "connection lost"
}

// weak reports whether err is how an outage looks from an operation on a
// connection already made (its subscription ended, a publish in flight
// cut short): it can begin an outage, but says nothing of its cause,
// which the attempts to connect again find.
func weak(err error) bool { return cause(err) == "connection lost" }

// why is what a client is told when err kept its stream or publish from
// the broker: the class of the failure, never the broker's own words
// (which may name its user) nor its address.
func why(err error, wait time.Duration) string {
	switch {
	case errors.Is(err, errHubClosed):
		return "the gateway is shutting down"
	case errors.Is(err, broker.ErrLoginRefused):
		return "backend unavailable: the broker refused the gateway's login"
	case errors.Is(err, errNoAnswer):
		return fmt.Sprintf("backend unavailable: the broker did not answer within %s", wait)
	case errors.Is(err, context.DeadlineExceeded):
		return "backend unavailable: the broker did not answer"
	case errors.Is(err, broker.ErrUnreachable):
		return "backend unavailable: the broker cannot be reached"
	case errors.Is(err, errLost):
		return "backend unavailable: the connection to the broker was lost"
	case errors.Is(err, broker.ErrUnavailable):
		return "backend unavailable: the broker connection failed"
	}
	return "the broker refused the request"
}

// backendState follows whether the hub's broker takes subscriptions and
// publishes, as the hub's own attempts find it. An outage (the broker
// unreachable, silent, refusing the gateway's login, or its connection
// lost) is logged once as it begins, again only if its cause changes, and
// once as it ends, not once per refused client. While it lasts, one
// attempt at a time goes to the broker: clients that find one under way
// are answered at once with the outage's cause, so a crowd reconnecting
// during an outage neither waits nor piles dials up at the broker.
type backendState struct {
	name string
	log  *slog.Logger
	// down is set while an outage is on: read on every publish, so the
	// lock is taken only during one.
	down atomic.Bool
	// refused counts the clients told the backend is unavailable since
	// the last outage ended.
	refused atomic.Int64

	mu       sync.Mutex
	cause    error     // the outage's; nil: none
	since    time.Time // when it began
	inflight int       // attempts begun during the outage, under way
}

// begin asks whether an attempt at the broker may go ahead. During an
// outage it may if no other attempt begun during it is under way; if one
// is, cause is the outage's, for the client. A counted attempt must be
// ended with end(err, true).
func (b *backendState) begin() (counted bool, cause error) {
	if !b.down.Load() {
		return false, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.cause == nil: // it ended meanwhile
		return false, nil
	case b.inflight > 0:
		return false, b.cause
	}
	b.inflight++
	return true, nil
}

// current is the outage's cause, nil when none is on.
func (b *backendState) current() error {
	if !b.down.Load() {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cause
}

// end records an attempt's outcome: err nil or one that is no outage
// (the broker answered) ends an outage, an outage's error begins one or
// changes its cause.
func (b *backendState) end(err error, counted bool) {
	if outage(err) {
		b.mu.Lock()
		if counted {
			b.inflight--
		}
		first := b.cause == nil
		changed := !first && cause(b.cause) != cause(err) && !weak(err)
		if first {
			b.since = time.Now()
		}
		if first || !weak(err) {
			b.cause = err
		}
		b.down.Store(true)
		b.mu.Unlock()
		if first || changed {
			b.log.Warn("sse backend unavailable: streams are told to come back later (EventSource does by itself), publishes get 503",
				"backend", b.name, "cause", cause(err), "error", err.Error(), "retry", fmt.Sprintf("%s-%s", front.RetryMin, front.RetryMin+front.RetrySpread))
		}
		return
	}
	if !counted && !b.down.Load() {
		return
	}
	b.mu.Lock()
	if counted {
		b.inflight--
	}
	was, since := b.cause, b.since
	b.cause = nil
	b.down.Store(false)
	b.mu.Unlock()
	if was != nil {
		b.log.Info("sse backend available again", "backend", b.name, "cause", cause(was),
			"down_for", time.Since(since).Round(time.Millisecond), "clients_refused", b.refused.Swap(0))
	}
}
