package sse

// ring keeps a topic's latest events for Last-Event-ID resumes, oldest
// first, and the bytes they hold. Its slots grow with use up to the
// topic's event bound and are then reused, so keeping an event allocates
// nothing.
type ring struct {
	buf     []*event
	head, n int // the oldest event's slot, and how many are kept
	bytes   int64
}

// push keeps ev; the caller has made room within its bounds, limit
// events among them.
func (r *ring) push(ev *event, limit int) {
	if r.n == len(r.buf) {
		grown := make([]*event, min(limit, max(2*r.n, 8)))
		for i := range r.n {
			grown[i] = r.at(i)
		}
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = ev
	r.n++
	r.bytes += ev.size
}

// pop lets go of the oldest event and returns it.
func (r *ring) pop() *event {
	ev := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	r.bytes -= ev.size
	return ev
}

// at is the i-th oldest event kept.
func (r *ring) at(i int) *event { return r.buf[(r.head+i)%len(r.buf)] }
