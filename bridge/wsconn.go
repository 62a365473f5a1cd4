package bridge

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/outcome"
)

// Refusal is why the gateway refuses a client's WebSocket message before
// the protocol sees it. The adapter answers with its protocol's own error
// carrying Reason, then closes with Code.
type Refusal struct {
	Outcome outcome.Outcome // for the close log line
	Reason  string          // for the client: names the limit and its config key
	Code    uint16
}

// Lingering close: after the gateway's close frame, what the client still
// sends is read and dropped for up to lingerTime or lingerBytes, so that
// its stack reads the close frame instead of a reset (which is what
// closing a socket with unread data sends), while the process-wide
// Linger budget lasts.
const (
	lingerTime  = time.Second
	lingerBytes = 4 << 20
)

// frameCursor follows WebSocket frame boundaries in a byte stream, reading
// only headers: payloads are skipped whole.
type frameCursor struct {
	hdr      [14]byte
	hn, need int    // header bytes held, and needed once known
	left     uint64 // payload bytes of the current frame still to come
	op       byte   // the current frame's opcode
	fin      bool
}

// What frameCursor.step reached.
const (
	stepMore    = iota // b is used up within a header or payload
	stepHeader         // a header is complete: op, fin and left describe the frame
	stepPayload        // the current frame's payload has ended
)

// step consumes b up to the next header's end or the current payload's
// end, whichever comes first, and says which it reached.
func (f *frameCursor) step(b []byte) (int, int) {
	if f.left > 0 {
		k := min(uint64(len(b)), f.left)
		f.left -= k
		if f.left == 0 {
			return int(k), stepPayload
		}
		return int(k), stepMore
	}
	for i, c := range b {
		f.hdr[f.hn] = c
		f.hn++
		if f.hn == 2 {
			f.need = 2
			switch f.hdr[1] & 0x7f {
			case 126:
				f.need += 2
			case 127:
				f.need += 8
			}
			if f.hdr[1]&0x80 != 0 {
				f.need += 4
			}
		}
		if f.hn < 2 || f.hn < f.need {
			continue
		}
		switch l := f.hdr[1] & 0x7f; l {
		case 126:
			f.left = uint64(binary.BigEndian.Uint16(f.hdr[2:]))
		case 127:
			f.left = binary.BigEndian.Uint64(f.hdr[2:])
		default:
			f.left = uint64(l)
		}
		f.hn, f.op, f.fin = 0, f.hdr[0]&0x0f, f.hdr[0]&0x80 != 0
		return i + 1, stepHeader
	}
	return len(b), stepMore
}

// wsConn is a client's connection as gws reads and writes it. It follows
// the WebSocket frame headers in the bytes passing through, so that a
// message over the size limit, one that does not complete in time, or one
// the memory budget cannot hold is refused at its header, before gws
// allocates it (gws allocates a frame's declared length up front). Its
// Close is a lingering close.
type wsConn struct {
	net.Conn
	maxMessage int64
	timeout    time.Duration
	budget     *memory.Budget
	intake     *Intake
	// done is closed when the gateway closes the connection, to end a
	// wait for the intake.
	done       chan struct{}
	stopped    bool // done is closed; under mu
	linger     *Linger
	client     string // the client's address, for Linger
	binaryOnly bool   // a text message is refused (Upgraders.BinaryOnly)
	// refuse answers a refusal the protocol's way and finishes the
	// session; set before the read loop starts.
	refuse func(Refusal)

	// The read loop's.
	early      []byte // bytes the client sent before the upgrade's answer
	cur        frameCursor
	inMsg      bool  // a data message has begun and not ended
	msgBytes   int64 // its declared length so far
	fragmented bool  // it came in more than one frame
	held       int64 // what it holds of the budget
	lane       bool  // it is taken in on an intake lane
	turned     bool  // it has had its intake turn
	// carry is what a read held back from gws after whole messages, the
	// start of a large message whose intake turn (turn bytes) is still to
	// come, so that the messages before it do not wait with it.
	carry      []byte
	turn       int64
	timed      bool // its timer is armed
	pending    *Refusal
	draining   bool
	peerClosed bool // the client's close frame has been seen

	// timer is the message timeout, made on first use; atomic because
	// timedOut, on the timer's goroutine, re-arms it.
	timer atomic.Pointer[time.Timer]
	// rest is what the message being assembled still needs, for the
	// timer's goroutine: 0 when none is, -1 when that is not known yet
	// (within a header, or more fragments to come), else the bytes left
	// of its final frame.
	rest    atomic.Int64
	refused atomic.Bool
	state   atomic.Uint32 // a connState; changed under mu
	mu      sync.Mutex
}

type connState = uint32

const (
	connOpen    connState = iota
	connClosing           // Close was called: the read loop drains, then closes
	connReadEnd           // the read loop has ended: Close closes at once
	connClosed
)

func newWSConn(c net.Conn, o WSOptions) *wsConn {
	return &wsConn{Conn: c, maxMessage: int64(o.MaxMessageBytes), timeout: o.MessageTimeout, budget: o.Budget, intake: o.Intake, linger: o.Linger,
		done: make(chan struct{})}
}

// Read passes the client's bytes to gws, following frame headers. A
// refused message is not passed on: gws gets the messages before it, then
// the session is refused, and from then on Read drains and ends with EOF.
func (c *wsConn) Read(p []byte) (int, error) {
	if c.pending != nil {
		c.fire(*c.pending)
		c.pending = nil
	}
	if c.draining || c.refused.Load() || c.state.Load() != connOpen {
		return 0, c.drain()
	}
	if c.carry != nil {
		return c.readCarry(p)
	}
	var n int
	var err error
	if len(c.early) > 0 {
		n = copy(p, c.early)
		c.early = c.early[n:]
	} else {
		n, err = c.Conn.Read(p)
	}
	if n == 0 {
		return n, err
	}
	keep, r := c.scan(p[:n])
	if r != nil {
		if keep == 0 {
			c.fire(*r)
			return 0, c.drain()
		}
		c.pending = r // gws handles the messages before it first
		return keep, nil
	}
	return keep, err // keep < n: the rest is carried (readCarry)
}

// fire refuses the session once.
func (c *wsConn) fire(r Refusal) {
	if c.refused.CompareAndSwap(false, true) && c.refuse != nil {
		c.refuse(r)
	}
}

// scan follows the frames in b. It returns how many bytes of b gws may
// have, and a refusal when a message breaks a limit: then gws gets only the
// bytes up to the end of the last whole message.
func (c *wsConn) scan(b []byte) (int, *Refusal) {
	whole := 0 // b[:whole] ends at a message boundary
	for i := 0; i < len(b); {
		k, at := c.cur.step(b[i:])
		i += k
		switch at {
		case stepHeader:
			if c.cur.op < 8 { // a data frame
				if c.cur.op != 0 { // a new message (gws refuses one inside another)
					if c.held > 0 || c.timed || c.lane { // the one before ended in this read
						c.release()
					}
					c.inMsg, c.msgBytes, c.fragmented = true, 0, !c.cur.fin
				}
				if c.cur.op == 1 && c.binaryOnly {
					c.peerClosed = c.sawClose(b[i:])
					return whole, &Refusal{Outcome: outcome.TextMessage, Code: CloseUnsupportedData,
						Reason: "text message on a route that takes binary messages only"}
				}
				if c.cur.left > uint64(c.maxMessage-c.msgBytes) {
					c.peerClosed = c.sawClose(b[i:]) // keep following the frames, to drain
					return whole, &Refusal{Outcome: outcome.TooLarge, Code: CloseTooLarge,
						Reason: fmt.Sprintf("message larger than %d bytes (websocket.max_message_bytes)", c.maxMessage)}
				}
				c.msgBytes += int64(c.cur.left)
			}
			if c.cur.left == 0 && c.frameDone() {
				whole = i
			}
		case stepPayload:
			if c.frameDone() {
				whole = i
			}
		}
	}
	if r := c.hold(whole > 0); r != nil {
		return whole, r
	}
	if c.turn > 0 {
		c.carry = append(make([]byte, 0, len(b)-whole), b[whole:]...)
		return whole, nil
	}
	return len(b), nil
}

// readCarry waits for the intake turn of the large message whose start a
// read held back, then passes its bytes on.
func (c *wsConn) readCarry(p []byte) (int, error) {
	if more := c.turn; more > 0 {
		c.turn = 0
		if !c.intake.take(c.client, more, c.done) {
			c.carry = nil
			if c.state.Load() == connOpen {
				c.fire(intakeRefusal())
			}
			return 0, c.drain()
		}
		c.turned = true
		if !c.budget.Take(more) {
			c.carry = nil
			c.fire(OverBudget())
			return 0, c.drain()
		}
		c.held += more
		c.hold(false) // its timer
	}
	n := copy(p, c.carry)
	if c.carry = c.carry[n:]; len(c.carry) == 0 {
		c.carry = nil
	}
	return n, nil
}

// frameDone ends the current frame; it reports whether that leaves no
// message open.
func (c *wsConn) frameDone() bool {
	if c.cur.op < 8 && c.cur.fin {
		c.inMsg = false
	}
	return !c.inMsg
}

// hold settles what an incomplete message holds once a read has been
// scanned: its intake turn, its declared length against the budget, and
// the time it has to complete. A whole message holds nothing here: gws
// hands it over at once. When its turn must be waited for and defer is
// set (whole messages came before it in the read), the wait is left to
// the next read (turn).
func (c *wsConn) hold(deferTurn bool) *Refusal {
	if !c.inMsg {
		if c.held > 0 || c.timed {
			c.release()
		}
		return nil
	}
	if more := c.charge() - c.held; more > 0 {
		// The bytes stay in the kernel, and the client's sending waits on
		// TCP, until its turn. Only its first booking waits.
		if !c.turned {
			switch {
			case c.intake.lane(c.client):
				c.lane = true
			case c.intake.now(more):
			case deferTurn:
				c.turn = more
				return nil
			case !c.intake.take(c.client, more, c.done):
				r := intakeRefusal()
				return &r
			}
			c.turned = true
		} else if !c.lane {
			c.intake.owe(more)
		}
		if !c.budget.Take(more) {
			r := OverBudget()
			return &r
		}
		c.held += more
	}
	if c.cur.hn == 0 && c.cur.fin && c.cur.op < 8 && c.cur.left > 0 {
		c.rest.Store(int64(c.cur.left))
	} else {
		c.rest.Store(-1)
	}
	if !c.timed && c.timeout > 0 {
		c.timed = true
		if t := c.timer.Load(); t != nil {
			t.Reset(c.timeout)
		} else {
			c.timer.Store(time.AfterFunc(c.timeout, c.timedOut))
		}
	}
	return nil
}

// charge is what the incomplete message should hold of the budget: what
// gws allocates for it. That is its declared length for one frame; a
// fragmented message is gathered in a bytes.Buffer sized for its first
// fragment and grown by doubling, which holds up to twice the bytes
// declared (2,000 messages of 512 KiB in 8 fragments took 1.25 GiB of RSS
// for 1,000 MiB charged).
func (c *wsConn) charge() int64 {
	switch {
	case c.msgBytes <= memory.OwnBytes:
		return 0
	case c.fragmented:
		return 2 * c.msgBytes
	}
	return c.msgBytes
}

// release gives back what an incomplete message held.
func (c *wsConn) release() {
	if c.lane {
		c.intake.freeLane(c.client)
		c.lane = false
	}
	c.turned = false
	c.rest.Store(0)
	if c.timed {
		c.timer.Load().Stop()
		c.timed = false
	}
	c.budget.Give(c.held)
	c.held = 0
}

// timedOut refuses a message that did not complete in time, unless the
// client has sent all of it and the gateway has not read it yet: a read
// loop held up by a busy gateway (a slow handler, a starved core) is not
// the client's trickle, so the message gets another quarter of the
// timeout, and is refused then if its bytes are still missing.
func (c *wsConn) timedOut() {
	switch rest := c.rest.Load(); {
	case rest == 0: // completed as the timer fired
		return
	case rest > 0 && int64(unreadBytes(c.Conn)) >= rest:
		if t := c.timer.Load(); t != nil {
			t.Reset(c.timeout / 4)
			return
		}
	}
	c.fire(Refusal{Outcome: outcome.MessageTimeout, Code: ClosePolicy,
		Reason: fmt.Sprintf("message not completed within %s (websocket.message_timeout)", c.timeout)})
	// The read loop may be waiting for the rest of that message: wake it.
	c.Conn.SetReadDeadline(time.Now())
}

// drain reads and drops what the client still sends, until its close
// frame, EOF, or the linger bounds; then closes the socket. It returns
// the error gws ends its read loop with.
func (c *wsConn) drain() error {
	if !c.draining {
		c.draining = true
		c.release()
		if c.refused.Load() && !c.linger.refusal(c.client) {
			c.closeSocket() // a repeat offender: no lingering
			return io.EOF
		}
		c.Conn.SetReadDeadline(time.Now().Add(lingerTime))
	}
	var small [4096]byte
	buf := small[:]
	if big := lingerBuf(); big != nil {
		defer putLingerBuf(big)
		buf = big[:]
	}
	for drained := 0; !c.peerClosed && drained < lingerBytes; {
		n, err := c.Conn.Read(buf)
		drained += n
		c.peerClosed = c.sawClose(buf[:n])
		if err != nil || !c.linger.take(n) {
			break
		}
	}
	c.closeSocket()
	return io.EOF
}

// sawClose follows drained bytes and reports the client's close frame.
func (c *wsConn) sawClose(b []byte) bool {
	for i := 0; i < len(b); {
		k, at := c.cur.step(b[i:])
		i += k
		if (at == stepHeader && c.cur.left == 0 || at == stepPayload) && c.cur.op == 8 {
			return true
		}
	}
	return false
}

// Close begins a lingering close: the write side ends at once (the close
// frame written before it reaches the client, then EOF), the socket itself
// once the read loop has drained what the client still sends.
func (c *wsConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state.Load() {
	case connOpen:
		c.state.Store(connClosing)
		c.stop()
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		// Wake a read loop waiting on a silent client.
		c.Conn.SetReadDeadline(time.Now().Add(lingerTime))
	case connReadEnd:
		c.state.Store(connClosed)
		return c.Conn.Close()
	}
	return nil
}

// readEnded is called once gws's read loop has ended. A session that has
// closed gets its socket drained (bounded) and closed; one still writing
// closes it with its own Close.
func (c *wsConn) readEnded() {
	c.mu.Lock()
	st := c.state.Load()
	if st == connOpen {
		c.state.Store(connReadEnd)
	}
	c.mu.Unlock()
	if st == connClosing {
		c.drain()
	}
	c.release()
}

func (c *wsConn) closeSocket() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Load() != connClosed {
		c.stop()
		c.state.Store(connClosed)
		c.Conn.Close()
	}
}

// stop closes done once; c.mu is held.
func (c *wsConn) stop() {
	if !c.stopped && c.done != nil {
		c.stopped = true
		close(c.done)
	}
}
