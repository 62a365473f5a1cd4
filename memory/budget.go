// Package memory bounds what the gateway holds in memory: the
// process-wide Budget that messages being assembled and queued deliveries
// take from, the bytes each connection may hold of its own (OwnBytes,
// ConnectionBytes), Go's GC soft limit kept at that bound (FollowLimit),
// and the process's resident set size as the kernel reports it
// (ProcessRSS). WebSocket sessions (bridge) and SSE streams (sse) share
// one Budget; it imports nothing of ours.
package memory

import "sync/atomic"

// Budget is the process-wide bound on the bytes the gateway holds for its
// clients (messages being assembled, and whatever else takes from it):
// past it new work is refused rather than the process running out of
// memory. A nil Budget has no bound.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// DefaultBudgetBytes is the budget where the config is silent: room for
// a thousand 1 MiB messages in flight at once, far less than a machine
// running a gateway has, and far more than its well-behaved clients hold.
const DefaultBudgetBytes = 1 << 30

// OwnBytes is how much of a message being assembled, or of a protocol
// frame spread over messages, a connection holds as its own rather than
// from the budget: a message of at most this many bytes is never refused
// for the budget. Such a message straddles two reads for microseconds;
// refusing it would let clients that fill the budget (with messages that
// never complete, or publish bodies trickled a byte at a time) close
// every well-behaved connection whose small message happened to arrive
// in two reads. What it costs is bounded by the connection limit: at most
// max_connections times this, 160 MiB at the default 10,000.
const OwnBytes = 16 << 10

// OverBudgetReason is what a client refused because the budget cannot
// spare what it needs is told, whatever its protocol: the limit, its
// config key, and that it may come back.
const OverBudgetReason = "the gateway holds as much for its clients as it may (limits.memory_bytes); retry later"

// NewBudget makes a budget of limit bytes.
func NewBudget(limit int64) *Budget { return &Budget{limit: limit} }

// Take reserves n bytes, or reports that the budget cannot spare them.
func (b *Budget) Take(n int64) bool {
	if b == nil || n <= 0 {
		return true
	}
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return false
	}
	return true
}

// Give returns n bytes taken before.
func (b *Budget) Give(n int64) {
	if b != nil && n > 0 {
		b.used.Add(-n)
	}
}

// Used is how many bytes are taken now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Limit is the budget's size.
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// ConnectionBytes is what the process may hold per open connection beyond
// the budget: its goroutines, buffers and structures (an idle STOMP session
// measured 10-22 KB), a message and a partial protocol frame of up to
// OwnBytes each, which are its own, and for a client that stops reading
// the first OwnBytes of its delivery queue plus the message stuck in its
// write (twice: the write's framed copy). With limits.memory_bytes it
// makes the documented bound on the gateway's RSS: its RSS at rest, plus
// the budget, plus this per connection (TestHostile: 100 slow readers
// held 64 KiB each beyond the budget).
const ConnectionBytes = 128 << 10
