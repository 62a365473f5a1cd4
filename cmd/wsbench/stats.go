package main

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// tally counts deliveries per published message, so that lost and
// duplicated messages are exact, and keeps every latency for exact
// percentiles. Each publisher's messages are numbered from 0.
type tally struct {
	expect int // deliveries each message should get (subscribers on a topic, 1 on a queue)
	// warm is how many messages of each publisher, from seq 0, are counted
	// but not timed: the warm-up, while connections and buffers settle.
	warm int

	mu        sync.Mutex
	counts    [][]uint16 // [publisher][seq] deliveries
	sent      []int      // per publisher
	latencies []time.Duration
	delivered int
	foreign   int // deliveries not from this run
}

func newTally(publishers, expect, capacity int) *tally {
	return &tally{expect: expect, counts: make([][]uint16, publishers), sent: make([]int, publishers),
		latencies: make([]time.Duration, 0, capacity)}
}

// published records that publisher p sent message seq.
func (t *tally) published(p, seq int) {
	t.mu.Lock()
	if seq >= len(t.counts[p]) {
		grown := make([]uint16, max(seq+1, 2*len(t.counts[p]), 1024))
		copy(grown, t.counts[p])
		t.counts[p] = grown
	}
	t.sent[p] = max(t.sent[p], seq+1)
	t.mu.Unlock()
}

// deliver records one delivery and reports whether it was the message's
// first (which frees a publisher's window slot).
func (t *tally) deliver(p, seq int, latency time.Duration) (first bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p < 0 || p >= len(t.counts) || seq < 0 || seq >= t.sent[p] {
		t.foreign++
		return false
	}
	t.counts[p][seq]++
	t.delivered++
	if seq >= t.warm {
		t.latencies = append(t.latencies, latency)
	}
	return t.counts[p][seq] == 1
}

// shard is one reader's own count of deliveries from publisher 0, kept
// without a lock and merged into the tally at the end: a thousand readers
// on one lock would measure the lock.
type shard struct {
	warm      int // as the tally's
	counts    []uint16
	latencies []time.Duration
	foreign   int
	n         atomic.Int64 // deliveries so far, read by the drain
}

func (s *shard) deliver(seq int, latency time.Duration) {
	if seq < 0 || seq > 1<<26 {
		s.foreign++
		return
	}
	if seq >= len(s.counts) {
		grown := make([]uint16, max(seq+1, 2*len(s.counts), 1024))
		copy(grown, s.counts)
		s.counts = grown
	}
	s.counts[seq]++
	if seq >= s.warm {
		s.latencies = append(s.latencies, latency)
	}
	s.n.Add(1)
}

// merge adds a finished shard's deliveries to the tally.
func (t *tally) merge(s *shard) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for seq, c := range s.counts {
		if c == 0 {
			continue
		}
		if seq >= t.sent[0] {
			t.foreign += int(c)
			continue
		}
		t.counts[0][seq] += c
		t.delivered += int(c)
	}
	t.latencies = append(t.latencies, s.latencies...)
	t.foreign += s.foreign
}

// sentTotal is how many messages publisher 0 has sent.
func (t *tally) sentTotal() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sent[0]
}

// complete reports whether every message sent has all its deliveries.
func (t *tally) complete() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	want := 0
	for _, n := range t.sent {
		want += n * t.expect
	}
	return t.delivered >= want
}

// result is what a run measured.
type result struct {
	Label       string  `json:"label,omitempty"` // the system measured, for reports: direct, wsbridge, ...
	Rate        float64 `json:"rate"`            // the fixed rate asked for; 0 = as fast as possible
	Scenario    string  `json:"scenario"`
	Target      string  `json:"target"`
	Publishers  int     `json:"publishers"`
	Subscribers int     `json:"subscribers"`
	Copies      int     `json:"copies"` // deliveries each message should get
	QoS         int     `json:"qos,omitempty"`
	BodyBytes   int     `json:"body_bytes"`
	Seconds     float64 `json:"seconds"`
	Sent        int     `json:"sent"`
	Delivered   int     `json:"delivered"`
	Lost        int     `json:"lost"`
	Duplicated  int     `json:"duplicated"`
	MsgsPerSec  float64 `json:"msgs_per_s"`
	P50us       float64 `json:"p50_us"`
	P90us       float64 `json:"p90_us"`
	P99us       float64 `json:"p99_us"`
	MaxUs       float64 `json:"max_us"`
	// WarmupS is the start of the run whose messages are not timed.
	WarmupS float64 `json:"warmup_s,omitempty"`
}

// finish computes the result over elapsed (the publishing time).
func (t *tally) finish(r *result, elapsed time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for p, counts := range t.counts {
		for seq := 0; seq < t.sent[p]; seq++ {
			c := int(counts[seq])
			switch {
			case c < t.expect:
				r.Lost += t.expect - c
			case c > t.expect:
				r.Duplicated += c - t.expect
			}
		}
		r.Sent += t.sent[p]
	}
	r.Delivered, r.Copies = t.delivered, t.expect
	r.Seconds = elapsed.Seconds()
	if elapsed > 0 {
		r.MsgsPerSec = float64(t.delivered) / elapsed.Seconds()
	}
	if len(t.latencies) > 0 {
		slices.Sort(t.latencies)
		at := func(q float64) float64 {
			return float64(t.latencies[int(q*float64(len(t.latencies)-1))]) / 1e3
		}
		r.P50us, r.P90us, r.P99us, r.MaxUs = at(0.50), at(0.90), at(0.99), at(1)
	}
}

func (r *result) summary() string {
	return fmt.Sprintf("%s -> %s: %d pub / %d sub, %d-byte bodies, %.1fs\n"+
		"  delivered %d of %d sent (x%d expected): %.0f msgs/s; lost %d, duplicated %d\n"+
		"  latency p50 %.0fus p90 %.0fus p99 %.0fus max %.0fus%s",
		r.Scenario, r.Target, r.Publishers, r.Subscribers, r.BodyBytes, r.Seconds,
		r.Delivered, r.Sent, r.Copies, r.MsgsPerSec, r.Lost, r.Duplicated,
		r.P50us, r.P90us, r.P99us, r.MaxUs, r.warmupNote())
}

func (r *result) warmupNote() string {
	if r.WarmupS == 0 {
		return ""
	}
	return fmt.Sprintf(" (messages due in the first %.1fs not timed)", r.WarmupS)
}
