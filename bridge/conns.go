package bridge

import (
	"context"
	"sync"
)

// Closer is a live client connection that can be asked to go away.
type Closer interface {
	// GoAway starts a graceful close; the connection calls its release
	// function (from Conns.Add) once it has fully ended.
	GoAway(reason string)
}

// Conns is the registry of live client connections: it enforces the
// connection limit and lets shutdown close them all.
type Conns struct {
	max int

	mu     sync.Mutex
	live   map[Closer]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewConns returns a registry admitting at most max connections (0: no limit).
func NewConns(max int) *Conns {
	return &Conns{max: max, live: map[Closer]struct{}{}}
}

// Add admits c. It returns false when the gateway is full or shutting down;
// otherwise the caller must call release exactly once when c has ended.
func (cs *Conns) Add(c Closer) (release func(), ok bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed || (cs.max > 0 && len(cs.live) >= cs.max) {
		return nil, false
	}
	cs.live[c] = struct{}{}
	cs.wg.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			cs.mu.Lock()
			delete(cs.live, c)
			cs.mu.Unlock()
			cs.wg.Done()
		})
	}, true
}

// Full reports whether Add would refuse a connection now.
func (cs *Conns) Full() bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.closed || (cs.max > 0 && len(cs.live) >= cs.max)
}

// Len is the number of live connections.
func (cs *Conns) Len() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.live)
}

// CloseAll refuses new connections, asks every live one to go away and
// waits until they have ended or ctx is done.
func (cs *Conns) CloseAll(ctx context.Context) {
	cs.mu.Lock()
	cs.closed = true
	live := make([]Closer, 0, len(cs.live))
	for c := range cs.live {
		live = append(live, c)
	}
	cs.mu.Unlock()
	for _, c := range live {
		c.GoAway("server shutting down")
	}
	done := make(chan struct{})
	go func() {
		cs.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
