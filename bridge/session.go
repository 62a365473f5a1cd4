package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/outcome"
)

// Session is the protocol-neutral part of one client WebSocket session,
// embedded by each adapter's session: the connection, its keepalive, a
// close that happens once, and the outcome for the close log line.
//
// An adapter's session is also the gws SessionStorage of its connection
// (Session provides the no-op methods), so each gws event reaches the
// adapter's state with a type assertion instead of a locked map lookup.
type Session struct {
	WS     *gws.Conn
	Remote string
	KA     *Keepalive

	opened       time.Time
	release      func()
	writeTimeout time.Duration
	closing      atomic.Bool
	// sendMu orders Send against Finish: an outbox written after the close
	// frame would be data after close, which gws's own writes never send.
	sendMu sync.Mutex

	// Identity is who the client proved to be: set at the upgrade or at
	// the protocol's login; nil until then.
	Identity *auth.Identity
	adm      *Admission
	client   string // the client's address, as the server resolved it
	// brokerLogin is set at the protocol's login and read by the broker's
	// reader, which may already be running (AMQP dials first).
	brokerLogin atomic.Pointer[brokerLogin]

	mu         sync.Mutex
	outcome    outcome.Outcome
	reason     string
	expiry     *time.Timer
	loginTimer *time.Timer // the login deadline, armed by Start
	login      loginState

	// A partial client frame carried to the next message (read loop only),
	// what it holds of the budget, and its deadline.
	pending      []byte
	pendingHeld  int64
	pendingDue   *time.Timer
	pendingArmed bool // pendingDue is armed
	budget       *memory.Budget
	msgTimeout   time.Duration
	penalize     func(client string)
}

// SessionEvents is what Handler needs from an adapter's session.
type SessionEvents interface {
	Core() *Session
	// OnMessage gets the partial frame carried from earlier messages
	// followed by the new message; it hands its unconsumed tail to Keep.
	OnMessage(data []byte)
	OnClose(err error)
	// Begin starts the session once Admission has admitted it.
	Begin(ws *gws.Conn, remote string, release func())
	// Refuse ends the session over a message the WebSocket layer refused
	// (too large, too slow, over the memory budget): the protocol's own
	// error first where it has one. Session's own sends only the close.
	Refuse(r Refusal)
}

// Handler dispatches gws events to the connection's SessionEvents.
type Handler struct{}

func (Handler) OnOpen(*gws.Conn) {}

func (Handler) OnClose(c *gws.Conn, err error) {
	c.Session().(SessionEvents).OnClose(err)
	if wc, ok := c.NetConn().(*wsConn); ok {
		wc.readEnded()
	}
}

func (Handler) OnPing(c *gws.Conn, p []byte) {
	s := c.Session().(SessionEvents).Core()
	s.KA.Touch()
	c.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	_ = c.WritePong(p)
}

func (Handler) OnPong(c *gws.Conn, _ []byte) { c.Session().(SessionEvents).Core().KA.Touch() }

func (Handler) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	ev := c.Session().(SessionEvents)
	data, ok := ev.Core().input(m.Bytes())
	if !ok {
		return
	}
	// A bug while handling one client's bytes ends that session (1011),
	// not the gateway with every other session in it.
	defer func() {
		if r := recover(); r != nil {
			s := ev.Core()
			s.log().Error("panic while handling a client message; closing that connection",
				"remote", s.Remote, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			s.Finish(outcome.InternalError, fmt.Sprint("internal error: ", r), CloseInternal, gws.OpcodeText, nil)
		}
	}()
	ev.OnMessage(data)
}

// log is the route's logger, which the operator configured (level,
// format, destination); slog's default only for a session no Admission
// made.
func (s *Session) log() *slog.Logger {
	if s.adm != nil && s.adm.Log != nil {
		return s.adm.Log.With("route", s.adm.Route)
	}
	return slog.Default()
}

// Core returns s, for SessionEvents.
func (s *Session) Core() *Session { return s }

// The gws SessionStorage methods, unused: state lives in the adapter's
// session itself.
func (*Session) Len() int                           { return 0 }
func (*Session) Load(string) (any, bool)            { return nil, false }
func (*Session) Delete(string)                      {}
func (*Session) Store(string, any)                  {}
func (*Session) Range(func(key string, v any) bool) {}

// Start fills in the connection, arms the keepalive and the login
// deadline. dead runs when the peer has gone silent. loginExpired runs
// when the protocol's login (Login) has not begun within o.LoginTimeout:
// it gets the reason, which names the limit, and must end the session
// with the protocol's own error and ClosePolicy; nil just closes. The
// session's outcome is then login_timeout whatever ends it.
func (s *Session) Start(ws *gws.Conn, remote string, release func(), o WSOptions, dead func(), loginExpired func(reason string)) {
	s.WS, s.Remote, s.release, s.opened, s.writeTimeout = ws, remote, release, time.Now(), o.WriteTimeout
	s.budget, s.msgTimeout, s.penalize = o.Budget, o.MessageTimeout, o.Penalize
	s.KA = StartKeepalive(o.PingInterval, func() error {
		ws.SetWriteDeadline(time.Now().Add(o.WriteTimeout))
		return ws.WritePing(nil)
	}, dead)
	d := o.LoginTimeout
	if d <= 0 {
		d = DefaultWSOptions().LoginTimeout
	}
	if loginExpired == nil {
		loginExpired = func(reason string) { s.Finish(outcome.LoginTimeout, reason, ClosePolicy, 0, nil) }
	}
	// Only Login stops the timer: traffic does not, so a client trickling a
	// login a byte at a time gets no more time than a silent one.
	s.loginTimer = time.AfterFunc(d, func() {
		reason := loginTimeoutReason(d)
		s.mu.Lock()
		expired := s.login == loginAwaited && !s.closing.Load() // ending anyway: let that reason stand
		if expired {
			s.login = loginMissed
			// Recorded before the answer, so that a login racing the timer,
			// refused below, leaves this outcome in the close log line.
			if s.outcome == "" {
				s.outcome, s.reason = outcome.LoginTimeout, reason
			}
		}
		s.mu.Unlock()
		if expired {
			loginExpired(reason)
		}
	})
}

// loginTimeoutReason is what a client whose login did not come within d
// is told: the limit and the config key that sets it.
func loginTimeoutReason(d time.Duration) string {
	return fmt.Sprintf("login not completed within %s (limits.login_timeout)", d)
}

// errLoginTimeout is Login's answer once the login deadline has passed.
var errLoginTimeout = errors.New("the login deadline (limits.login_timeout) has passed")

// loginState is where a session is with its login deadline.
type loginState uint8

const (
	loginAwaited loginState = iota
	loginReached
	loginMissed
)

// loginBegun stops the login deadline; false when it had already passed
// and the session is ending.
func (s *Session) loginBegun() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.login == loginAwaited {
		s.login = loginReached
		s.loginTimer.Stop()
	}
	return s.login == loginReached
}

// writeOutcome names a failed write to the client: write_timeout when the
// client stopped reading for longer than the write timeout (a slow
// consumer, dropped so it holds nothing more), client_write_failed when
// its connection broke.
func writeOutcome(err error) outcome.Outcome {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return outcome.WriteTimeout
	}
	return outcome.ClientWriteFailed
}

// Refuse implements SessionEvents for a protocol with no error of its own
// to send: the close alone carries the reason.
func (s *Session) Refuse(r Refusal) { s.Finish(r.Outcome, r.Reason, r.Code, 0, nil) }

// Closing reports whether the session has begun to end.
func (s *Session) Closing() bool { return s.closing.Load() }

// Write sends one message with the write timeout; a failure is recorded as
// the outcome (gws closes the connection itself). Its deadline is set
// under sendMu, so that it cannot replace the one Drop sets after it.
func (s *Session) Write(op gws.Opcode, b []byte) bool {
	s.sendMu.Lock()
	if s.Closing() {
		s.sendMu.Unlock()
		return false
	}
	s.WS.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	s.sendMu.Unlock()
	if err := s.WS.WriteMessage(op, b); err != nil {
		s.SetOutcome(writeOutcome(err), err.Error())
		return false
	}
	return true
}

// Finish ends the session once: answer (the protocol's own error, if any)
// goes out as one message with opcode op, then the WebSocket close with
// code and reason. Later calls do nothing.
func (s *Session) Finish(why outcome.Outcome, reason string, code uint16, op gws.Opcode, answer []byte) {
	s.finish(s.writeTimeout, why, reason, code, op, answer)
}

// dropWait is how long Drop's goodbye may wait for room in the client's
// socket: ~0, since a client being dropped for not reading will not make
// room, but long enough that a write which fits is made.
const dropWait = time.Millisecond

// Drop is Finish for a client dropped for not reading (a slow consumer):
// the goodbye is written only as far as the socket has room for it at
// once, and a write to the client blocked on its socket fails at once, so
// the session ends now, not a write timeout later, and what it held is
// freed with it.
func (s *Session) Drop(why outcome.Outcome, reason string, code uint16, op gws.Opcode, answer []byte) {
	s.finish(dropWait, why, reason, code, op, answer)
}

func (s *Session) finish(wait time.Duration, why outcome.Outcome, reason string, code uint16, op gws.Opcode, answer []byte) {
	s.sendMu.Lock()
	first := s.closing.CompareAndSwap(false, true)
	s.sendMu.Unlock()
	if !first {
		return
	}
	s.SetOutcome(why, reason)
	s.WS.SetWriteDeadline(time.Now().Add(wait))
	if answer != nil {
		_ = s.WS.WriteMessage(op, answer)
	}
	if len(reason) > 123 { // a close frame's reason must fit in 123 bytes
		reason = reason[:123]
	}
	_ = s.WS.WriteClose(code, []byte(reason))
}

// SetOutcome records why the session ended; the first call wins.
func (s *Session) SetOutcome(why outcome.Outcome, reason string) {
	s.mu.Lock()
	if s.outcome == "" {
		s.outcome, s.reason = why, reason
	}
	s.mu.Unlock()
}

// Ended is called from OnClose: when nothing else ended the session, the
// client did (outcome clientOutcome, reason err). It stops the keepalive
// and returns what the close log line reports.
func (s *Session) Ended(err error, clientOutcome outcome.Outcome) (why outcome.Outcome, reason string, lasted time.Duration) {
	if s.closing.CompareAndSwap(false, true) {
		r := ""
		if err != nil {
			r = err.Error()
		}
		s.SetOutcome(clientOutcome, r)
	}
	s.KA.Stop()
	s.stopTimers()
	held := s.holdsPartial()
	s.releasePending()
	s.mu.Lock()
	why, reason = s.outcome, s.reason
	s.mu.Unlock()
	if s.penalize != nil && (why.Breach() || held) {
		s.penalize(s.client)
	}
	return why, reason, time.Since(s.opened).Round(time.Millisecond)
}

// holdsPartial reports whether the session ends holding budget for a
// message or frame that never completed (beyond the connection's own
// memory.OwnBytes): whatever ended it, that memory was held for nothing,
// and a client that leaves just before websocket.message_timeout would
// otherwise hold it again and again at the price of one handshake. Read
// loop only (Ended runs there).
func (s *Session) holdsPartial() bool {
	if s.pendingHeld > 0 {
		return true
	}
	wc, ok := s.WS.NetConn().(*wsConn)
	return ok && wc.held > 0
}

// Release gives the connection's slot back to the registry; call it last.
func (s *Session) Release() { s.release() }

// keepPendingCap: a carried-over partial frame buffer larger than this is
// dropped once empty, so an idle connection does not keep the memory of
// its largest frame.
const keepPendingCap = 16 << 10

// input records that the client is alive and joins data to the carried
// partial frame. It returns false once the session is closing: gws may
// still hand over bytes it had buffered.
func (s *Session) input(data []byte) ([]byte, bool) {
	if s.Closing() {
		return nil, false
	}
	s.KA.Touch()
	if len(s.pending) == 0 {
		return data, true
	}
	s.pending = append(s.pending, data...)
	return s.pending, true
}

// Keep carries rest, the unconsumed tail of what OnMessage got (a partial
// frame, already bounded by the adapter's validator), to the next message.
// A partial frame takes its size from the memory budget and must complete
// within the message timeout, as a WebSocket message being assembled must:
// a frame spread over many messages is no way around either.
func (s *Session) Keep(rest []byte) { s.KeepFor(rest, 0) }

// KeepFor is Keep for a partial frame whose whole length, want, the
// protocol has declared (a STOMP content-length; 0: unknown). Its buffer
// is then made that size once, taken from the budget before it is
// allocated, instead of growing as the pieces arrive: each growth leaves
// the old buffer to the collector, and 2,000 partial 1 MiB frames took
// the gateway to 1.5 times its documented RSS bound that way.
func (s *Session) KeepFor(rest []byte, want int) {
	switch {
	case len(rest) == 0:
		if cap(s.pending) > keepPendingCap {
			s.pending = nil
		} else {
			s.pending = s.pending[:0]
		}
	case want > cap(s.pending) && want > len(rest):
		if !s.reserve(want) {
			return
		}
		buf := make([]byte, len(rest), want)
		copy(buf, rest)
		s.pending = buf
	case len(s.pending) > 0: // rest is the tail of s.pending itself
		s.pending = s.pending[:copy(s.pending, rest)]
	default:
		s.pending = append(s.pending[:0], rest...)
	}
	if len(s.pending) == 0 && !s.pendingArmed {
		return // the common case: whole frames in whole messages
	}
	s.holdPending()
}

// reserve takes a partial frame buffer of n bytes from the budget before
// it is made; false when the budget cannot spare it (the session is then
// refused).
func (s *Session) reserve(n int) bool {
	held := int64(n)
	if held <= memory.OwnBytes {
		held = 0
	}
	if more := held - s.pendingHeld; more > 0 {
		if !s.budget.Take(more) {
			s.refuse(OverBudget())
			return false
		}
		s.pendingHeld = held
	}
	return true
}

// holdPending settles what the partial frame holds of the budget, and
// its deadline.
func (s *Session) holdPending() {
	held := int64(cap(s.pending))
	if len(s.pending) == 0 || held <= memory.OwnBytes {
		held = 0
	}
	was := s.pendingHeld
	switch {
	case held > was:
		if !s.budget.Take(held - was) {
			s.refuse(OverBudget())
			return
		}
	case held < was:
		s.budget.Give(was - held)
	}
	s.pendingHeld = held
	// The deadline runs from the frame's first bytes, not its latest,
	// whether or not the frame is small enough to be the connection's own.
	switch pending := len(s.pending) > 0; {
	case !pending && s.pendingArmed:
		s.pendingArmed = false
		s.pendingDue.Stop()
	case pending && !s.pendingArmed && s.msgTimeout > 0:
		s.pendingArmed = true
		if s.pendingDue == nil {
			s.pendingDue = time.AfterFunc(s.msgTimeout, s.pendingTimedOut)
		} else {
			s.pendingDue.Reset(s.msgTimeout)
		}
	}
}

func (s *Session) pendingTimedOut() {
	s.refuse(Refusal{Outcome: outcome.MessageTimeout, Code: ClosePolicy,
		Reason: fmt.Sprintf("frame not completed within %s (websocket.message_timeout)", s.msgTimeout)})
}

// releasePending gives back what a partial frame held; the session has
// ended.
func (s *Session) releasePending() {
	if s.pendingDue != nil {
		s.pendingDue.Stop()
	}
	s.budget.Give(s.pendingHeld)
	s.pendingHeld = 0
	s.pending = nil
}

// refuse ends the session over r through the adapter's Refuse (the
// WebSocket layer knows it), once.
func (s *Session) refuse(r Refusal) {
	if wc, ok := s.WS.NetConn().(*wsConn); ok {
		wc.fire(r)
		return
	}
	s.Refuse(r)
}

// OverBudget is the refusal of work the memory budget cannot hold.
func OverBudget() Refusal {
	return Refusal{Outcome: outcome.OverBudget, Code: CloseTryAgainLater,
		Reason: memory.OverBudgetReason}
}

// Outbox collects whole server WebSocket messages so that several go out
// with one write: gws makes a syscall per message, and a syscall costs
// more than everything else the relay does with a message. It belongs to
// the goroutine that fills it.
type Outbox struct {
	buf []byte
	n   int // messages held
	// A payload of outboxRefBytes or more is referenced, not copied into
	// buf, where the connection can write several buffers in one go
	// (writev): refs then holds buf's pieces and those payloads in order,
	// and buf[:mark] is already in it. size counts every byte held.
	refs net.Buffers
	mark int
	size int
}

// outboxFlushBytes is the size at which an Outbox should be sent before
// more is added; outboxKeepBytes the capacity kept between sends.
const (
	outboxFlushBytes = 64 << 10
	outboxKeepBytes  = 16 << 10
)

// outboxRefBytes is the payload size from which Add references a payload
// instead of copying it: a 1 MiB broker message then goes out from the
// broker read buffer it arrived in, where copying it into a buffer grown
// by doubling cost some 3 MiB of allocation per message.
const outboxRefBytes = 64 << 10

// Add appends one unmasked, uncompressed message (RFC 6455 section 5.2;
// under permessage-deflate RSV1 clear means not compressed). A payload of
// outboxRefBytes or more may be referenced rather than copied: it must
// stay unchanged until the outbox is sent.
func (o *Outbox) Add(op gws.Opcode, payload []byte) {
	start := len(o.buf)
	o.buf = append(o.buf, 0x80|byte(op))
	switch n := len(payload); {
	case n < 126:
		o.buf = append(o.buf, byte(n))
	case n < 1<<16:
		o.buf = append(o.buf, 126, byte(n>>8), byte(n))
	default:
		o.buf = append(o.buf, 127)
		o.buf = binary.BigEndian.AppendUint64(o.buf, uint64(n))
	}
	o.size += len(o.buf) - start + len(payload)
	o.n++
	if len(payload) < outboxRefBytes {
		o.buf = append(o.buf, payload...)
		return
	}
	o.refs = append(o.refs, o.buf[o.mark:], payload)
	o.mark = len(o.buf)
}

// Full reports whether the outbox should be sent before more is added.
func (o *Outbox) Full() bool { return o.size >= outboxFlushBytes }

// writeTo writes what o holds to nc in one write: a single Write, or,
// where payloads are referenced, one writev on the TCP connection under
// the client's WebSocket (net.Buffers takes the connection's write lock
// once, so gws's own writes cannot come between the pieces). Where there
// is no such connection (TLS) the pieces are joined first.
func (o *Outbox) writeTo(nc net.Conn) error {
	if o.refs == nil {
		_, err := nc.Write(o.buf)
		return err
	}
	o.refs = append(o.refs, o.buf[o.mark:])
	if wc, ok := nc.(*wsConn); ok {
		if tc, ok := wc.Conn.(*net.TCPConn); ok {
			_, err := o.refs.WriteTo(tc)
			return err
		}
	}
	joined := make([]byte, 0, o.size)
	for _, b := range o.refs {
		joined = append(joined, b...)
	}
	_, err := nc.Write(joined)
	return err
}

// Send writes what the outbox holds in one write with the write timeout
// and empties it. A net.Conn write is never interleaved with another, so
// gws's own writes (pings, pongs, close frames) stay whole. On failure the
// outcome is recorded and the connection closed, which ends its read loop.
func (s *Session) Send(o *Outbox) bool {
	if o.n == 0 {
		return true
	}
	defer func() {
		o.n, o.size, o.mark, o.refs = 0, 0, 0, nil
		if cap(o.buf) > outboxKeepBytes {
			o.buf = nil
		} else {
			o.buf = o.buf[:0]
		}
	}()
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.Closing() {
		return false
	}
	nc := s.WS.NetConn()
	nc.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	if err := o.writeTo(nc); err != nil {
		s.SetOutcome(writeOutcome(err), err.Error())
		nc.Close()
		return false
	}
	return true
}
