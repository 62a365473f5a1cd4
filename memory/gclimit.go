package memory

import (
	"math"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// FollowLimit keeps Go's GC soft limit (debug.SetMemoryLimit) at the
// documented bound on the gateway's memory for the connections open now
// (conns counts them): what the runtime had mapped at the start, plus the
// budget, plus half of ConnectionBytes per connection (an idle session
// needs 10-22 KB; the other half is headroom for what the collector does
// not see: memory outside Go's heap and its fragmentation). The budget bounds live
// bytes, but the collector lets the heap grow to twice what is live
// before it runs (GOGC=100): 2,000 partial 1 MiB frames, 1 GiB of them
// live, took the RSS to 2.1 GiB, 1.8 times the bound. Near the limit the
// collector runs sooner instead. The limit is recomputed every interval
// (connections come and go by the thousand; a limit per change would cost
// more than it buys) until stop is called. A GOMEMLIMIT in the
// environment wins.
func FollowLimit(b *Budget, conns func() int, every time.Duration) (stop func()) {
	if b == nil || b.Limit() <= 0 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		return func() {}
	}
	sample := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
	metrics.Read(sample)
	base := int64(sample[0].Value.Uint64()) + b.Limit()
	set := func() { debug.SetMemoryLimit(base + int64(conns())*ConnectionBytes/2) }
	set()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				set()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			debug.SetMemoryLimit(math.MaxInt64)
		})
	}
}
