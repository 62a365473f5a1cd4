package amqp

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/wsbridge/wsbridge/validate"
)

// Limits on what the ACL remembers for one connection.
const (
	// maxServerNamedQueues is how many of the connection's server-named
	// queues stay private by name; past it the oldest is forgotten, and its
	// name is then checked like any other queue's (stricter, never looser).
	maxServerNamedQueues = 256
	// maxDeclaresInFlight is how many queue.declare may await their reply
	// on one channel; a client that pipelines more is refused.
	maxDeclaresInFlight = 64
)

// serverNamed knows which queues the broker named for this connection.
// A queue named amq.gen-… is not private by its name alone: it may be
// another connection's, non-exclusive, with a name leaked through a
// reply-to. Only the names in the broker's queue.declare-ok answering this
// connection's own non-passive queue.declare with an empty name count. The
// client loop records what it sent; the broker loop reads the answers.
type serverNamed struct {
	mu       sync.Mutex
	names    map[string]struct{}
	order    []string // the names in the order given; once full, a ring whose oldest is at next
	next     int
	declares map[uint16]declares
	waiting  atomic.Int32 // entries in declares, so the broker loop looks only while some are due
}

// declares is one channel's queue.declare awaiting declare-ok, oldest in
// bit 0: set when the broker is to name the queue. The broker answers a
// channel's synchronous methods in order.
type declares struct {
	bits uint64
	n    uint8
}

// has reports whether name is one of this connection's server-named queues.
func (q *serverNamed) has(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	q.mu.Lock()
	_, ok := q.names[string(name)]
	q.mu.Unlock()
	return ok
}

// expect records a queue.declare (not no-wait) on its way to the broker;
// named says the broker is to name the queue. It reports false when the
// channel has maxDeclaresInFlight waiting already.
func (q *serverNamed) expect(ch uint16, named bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	d := q.declares[ch]
	if d.n >= maxDeclaresInFlight {
		return false
	}
	if named {
		d.bits |= 1 << d.n
	}
	d.n++
	if q.declares == nil {
		q.declares = map[uint16]declares{}
	}
	q.declares[ch] = d
	q.waiting.Add(1)
	return true
}

// reset forgets what a channel awaited: the client opens a channel number
// again only after its close completed, so no answer is still coming.
func (q *serverNamed) reset(ch uint16) {
	q.mu.Lock()
	if d, ok := q.declares[ch]; ok {
		q.waiting.Add(-int32(d.n))
		delete(q.declares, ch)
	}
	q.mu.Unlock()
}

// brokerFrame looks at one whole broker frame for queue.declare-ok.
func (q *serverNamed) brokerFrame(fr []byte) {
	if len(fr) < 12 || fr[0] != validate.AMQPFrameMethod || binary.BigEndian.Uint16(fr[7:]) != 50 || binary.BigEndian.Uint16(fr[9:]) != 11 {
		return
	}
	ch := binary.BigEndian.Uint16(fr[1:])
	payload := fr[7 : len(fr)-1]
	q.mu.Lock()
	defer q.mu.Unlock()
	d, ok := q.declares[ch]
	if !ok {
		return
	}
	named := d.bits&1 != 0
	d.bits >>= 1
	d.n--
	q.waiting.Add(-1)
	if d.n == 0 {
		delete(q.declares, ch)
	} else {
		q.declares[ch] = d
	}
	if !named || len(payload) < 5 || 5+int(payload[4]) > len(payload) {
		return
	}
	q.add(string(payload[5 : 5+int(payload[4])]))
}

func (q *serverNamed) add(name string) {
	if q.names == nil {
		q.names = map[string]struct{}{}
	}
	if len(q.order) < maxServerNamedQueues {
		q.order = append(q.order, name)
	} else {
		delete(q.names, q.order[q.next])
		q.order[q.next] = name
		q.next = (q.next + 1) % maxServerNamedQueues
	}
	q.names[name] = struct{}{}
}
