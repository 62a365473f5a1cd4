package bridge

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/wsbridge/wsbridge/memory"
)

// upstreamReadBytes is an upstream's read buffer; it grows for a large
// frame up to the caller's limit and shrinks back once drained.
const upstreamReadBytes = 4 << 10

// readBufs holds the read buffers of upstreams that are waiting for their
// broker with nothing pending: most relayed connections are idle, and
// 4 KiB each would be a fifth of what one costs.
var readBufs = sync.Pool{New: func() any { return new([upstreamReadBytes]byte) }}

// Upstream is a relay session's TCP connection to its broker.
type Upstream struct {
	conn         net.Conn
	raw          *rawReader // nil over TLS: the buffer is held while waiting
	writeTimeout time.Duration
	done         chan struct{}
	// Budget bounds, with everything else held for clients, a read buffer
	// grown for a large broker frame; set before ReadLoop.
	Budget *memory.Budget
}

// ErrOverBudget is ReadLoop's error when a broker frame needs more memory
// than the budget can spare: the session is refused as over budget.
var ErrOverBudget = errors.New("the memory budget (limits.memory_bytes) cannot hold the broker's frame")

// DialUpstream connects to a broker, over TLS when tlsConf is set (the
// handshake is bounded by the dialer's timeout too).
func DialUpstream(d *net.Dialer, addr string, tlsConf *tls.Config, writeTimeout time.Duration) (*Upstream, error) {
	var c net.Conn
	var err error
	if tlsConf != nil {
		c, err = (&tls.Dialer{NetDialer: d, Config: tlsConf}).Dial("tcp", addr)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	u := &Upstream{conn: c, writeTimeout: writeTimeout, done: make(chan struct{})}
	if tc, ok := c.(*net.TCPConn); ok && rawReads {
		if rc, err := tc.SyscallConn(); err == nil {
			u.raw = &rawReader{conn: rc}
			u.raw.try = u.raw.attempt
		}
	}
	return u, nil
}

// Write sends checked client bytes, bounded by the write timeout.
func (u *Upstream) Write(b []byte) error {
	u.conn.SetWriteDeadline(time.Now().Add(u.writeTimeout))
	_, err := u.conn.Write(b)
	return err
}

// LocalPort is the connection's local port, as the broker sees it.
func (u *Upstream) LocalPort() int { return u.conn.LocalAddr().(*net.TCPAddr).Port }

// ReadLoop reads broker bytes until the connection fails and hands them
// to consume, which sends the complete units it finds and returns how many
// bytes it used, or false to stop. Unused bytes stay for the next read; the
// buffer grows to max plus one read when a unit needs it. While nothing is
// pending, ReadLoop waits holding no buffer. It returns the read error (nil
// when consume stopped it); Close waits for it.
func (u *Upstream) ReadLoop(max int, consume func(b []byte) (used int, ok bool)) error {
	defer close(u.done)
	var (
		buf    []byte // nil between reads while nothing is pending
		pooled *[upstreamReadBytes]byte
		filled int
		held   int64 // what a grown buf holds of the budget
	)
	release := func() {
		if pooled != nil {
			readBufs.Put(pooled)
		}
		u.Budget.Give(held)
		buf, pooled, held = nil, nil, 0
	}
	defer release()
	for {
		var n int
		var rerr error
		if filled == 0 {
			if pooled, n, rerr = u.readPooled(); pooled != nil {
				buf = pooled[:]
			}
		} else {
			if filled == len(buf) {
				size := min(2*len(buf), max+upstreamReadBytes)
				if !u.Budget.Take(int64(size)) {
					return ErrOverBudget
				}
				nb := make([]byte, size)
				copy(nb, buf[:filled])
				release()
				buf, held = nb, int64(size)
			}
			n, rerr = u.conn.Read(buf[filled:])
		}
		filled += n
		used, ok := consume(buf[:filled])
		if !ok {
			return nil
		}
		filled = copy(buf, buf[used:filled])
		if filled == 0 {
			release()
		}
		if rerr != nil {
			return rerr
		}
	}
}

// readPooled waits until the broker has sent something and reads it into
// a pooled buffer, taken only once there is something to read (b is nil
// when the wait failed).
func (u *Upstream) readPooled() (b *[upstreamReadBytes]byte, n int, err error) {
	if u.raw == nil {
		b = readBufs.Get().(*[upstreamReadBytes]byte)
		n, err = u.conn.Read(b[:])
		return b, n, err
	}
	r := u.raw
	werr := r.conn.Read(r.try)
	b, n, err = r.b, r.n, r.err
	r.b = nil
	switch {
	case werr != nil:
		return b, 0, werr
	case err != nil:
		return b, 0, &net.OpError{Op: "read", Net: "tcp", Source: u.conn.LocalAddr(), Addr: u.conn.RemoteAddr(), Err: os.NewSyscallError("read", err)}
	case n == 0:
		return b, 0, io.EOF
	}
	return b, n, nil
}

// rawReader reads a socket by its descriptor once it is readable. Its
// state lives here and its callback is bound once, so that a read
// allocates nothing.
type rawReader struct {
	conn syscall.RawConn
	try  func(fd uintptr) bool // attempt, bound
	b    *[upstreamReadBytes]byte
	n    int
	err  error
}

// attempt reads what is there into a pooled buffer; with nothing there it
// gives the buffer back and returns false, and the runtime's poller waits
// for the socket.
func (r *rawReader) attempt(fd uintptr) bool {
	r.b = readBufs.Get().(*[upstreamReadBytes]byte)
	r.n, r.err = rawRead(fd, r.b[:])
	if r.err == syscall.EAGAIN {
		readBufs.Put(r.b)
		r.b = nil // nor may the wait keep it alive
		return false
	}
	return true
}

// Close closes the connection and waits for ReadLoop to return.
func (u *Upstream) Close() {
	u.conn.Close()
	<-u.done
}
