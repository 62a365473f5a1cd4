package front

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Closer is a live client connection that can be asked to go away.
type Closer interface {
	// GoAway starts a graceful close; the connection calls its release
	// function (from Conns.Add) once it has fully ended.
	GoAway(reason string)
}

// Conns is the registry of live client connections: it enforces the
// connection limits, overall and per client address, and lets shutdown
// close them all.
type Conns struct {
	max, maxPerIP int

	mu     sync.Mutex
	live   map[Closer]struct{}
	perIP  map[string]int
	closed bool
	wg     sync.WaitGroup

	refusing atomic.Int32 // refusals holding their socket (TakeRefusal)
}

// Why Conns refuses a connection.
var (
	ErrFull   = errors.New("the gateway is at its connection limit (limits.max_connections) or shutting down")
	ErrIPFull = errors.New("too many connections from this address (limits.max_connections_per_ip)")
)

// NewConns returns a registry admitting at most max connections, and at
// most maxPerIP from one client address (0: no limit).
func NewConns(max, maxPerIP int) *Conns {
	return &Conns{max: max, maxPerIP: maxPerIP, live: map[Closer]struct{}{}, perIP: map[string]int{}}
}

func (cs *Conns) refusal(ip string) error {
	switch {
	case cs.closed || (cs.max > 0 && len(cs.live) >= cs.max):
		return ErrFull
	case ip != "" && cs.maxPerIP > 0 && cs.perIP[ip] >= cs.maxPerIP:
		return ErrIPFull
	}
	return nil
}

// Add admits c from client address ip ("": count it against the
// gateway's limit only). It returns ErrFull or ErrIPFull
// when a limit is reached or shutdown has begun; otherwise the caller must
// call release exactly once when c has ended.
func (cs *Conns) Add(c Closer, ip string) (release func(), err error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if err := cs.refusal(ip); err != nil {
		return nil, err
	}
	cs.live[c] = struct{}{}
	if ip != "" {
		cs.perIP[ip]++
	}
	cs.wg.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			cs.mu.Lock()
			delete(cs.live, c)
			if ip != "" {
				if cs.perIP[ip]--; cs.perIP[ip] <= 0 {
					delete(cs.perIP, ip)
				}
			}
			cs.mu.Unlock()
			cs.wg.Done()
		})
	}, nil
}

// maxRefusing bounds the refusals holding their socket at once, process
// wide: WebSocket refusals lingering until the client answers their close
// frame. Each holds its request's goroutine and socket (some 20 KiB) until
// the client answers, one round trip, or the linger time passes. Past the
// bound a refusal closes its socket at once: a client reads the close
// frame before it sends anything (it came with the 101), so what
// lingering guards against, a client's first frame meeting a closed
// socket and the reset losing the close, is rare; and it takes hundreds
// of refusals at the same moment to get there.
const maxRefusing = 256

// TakeRefusal takes one of the maxRefusing places for a refusal that
// holds its socket while it closes, or reports that none is free. A
// caller that got one gives it back with GiveRefusal.
func (cs *Conns) TakeRefusal() bool {
	if cs.refusing.Add(1) > maxRefusing {
		cs.refusing.Add(-1)
		return false
	}
	return true
}

// GiveRefusal gives back a place TakeRefusal took.
func (cs *Conns) GiveRefusal() { cs.refusing.Add(-1) }

// Refusing is how many refusals hold their socket now.
func (cs *Conns) Refusing() int { return int(cs.refusing.Load()) }

// Check reports why Add would refuse a connection from ip now, or nil.
func (cs *Conns) Check(ip string) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.refusal(ip)
}

// Full reports whether the registry refuses every connection now.
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
