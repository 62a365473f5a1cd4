package bridge

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/outcome"
	"github.com/wsbridge/wsbridge/validate"
)

// DefaultMaxBrokerBytes bounds one unit from a relay's broker when the
// route sets no bound.
const DefaultMaxBrokerBytes = 16 << 20

// Engine relays one route's sessions between client WebSocket messages
// and a broker's TCP stream. It owns what every relay does alike: the
// scan loop over client bytes and the partial unit carried between
// messages, forwarding checked bytes upstream in as few writes as
// possible, the dial, the upstream read loop, the one write path to the
// client (an Outbox per read), close codes from error classes and the
// end-of-session log line. A protocol supplies a scanner and the hooks
// below, small named functions in the manner of httputil.ReverseProxy;
// S is the protocol's session, U its scanned unit (frame, packet).
//
// A relay protocol is an adapter package with:
//   - a session type whose pointer is S: a struct embedding
//     RelaySession[S, U], which with the Session in it provides what
//     Admission needs of a session (SessionEvents, front.Closer). It may
//     override Refuse to answer the WebSocket layer's refusals in its
//     protocol.
//   - a Relay that keeps its Engine in an unexported field, so that the
//     hooks stay the engine's business, and serves through it: ServeHTTP
//     and RefuseBusy (from the embedded Admission) and Ready.
//   - a NewRelay that sets Protocol, Units, Route and the hooks, then calls
//     Init with a function making a session and its RelaySession.
//
// A session has no broker until a Unit hook calls Dial, normally on the
// protocol's login unit after Session.Login (which settles the identity
// and stops the login deadline) and Session.BrokerCredential, with the
// unit rewritten to carry the gateway's credential. Whatever goes on
// before then goes nowhere.
//
// Hooks run on the client's read goroutine, except Broker, which runs on
// the upstream reader's, and End, which runs on whichever ends the
// session. Unit and Reject use the session's Flush, Forward, Skip and
// Dial to place their bytes in the stream. Open, Scan, Partial, Unit,
// Reject, Broker and End must be set; Hold, Counts and Closed may be nil.
type Engine[S any, U any] struct {
	Admission // serves HTTP: admits clients and starts their sessions

	// Protocol names the relay in log lines ("stomp").
	Protocol string
	// Units names what its counters count in the close log line
	// ("frames": frames_in, frames_out).
	Units string
	// Route is the route's options, which the hooks read too (the relay's
	// own Options embed them); Init fills in the defaults.
	Route *RouteOptions
	// MaxBrokerBytes bounds one unit from the broker (default
	// DefaultMaxBrokerBytes).
	MaxBrokerBytes int

	// Open sets up a new session's protocol state (its scanner).
	Open func(s S)
	// Hold, when set, may take a whole client message instead of the
	// scanner (AMQP awaiting close-ok); true when it did. A partial unit
	// carried from earlier messages is then dropped.
	Hold func(s S, data []byte) bool
	// Scan scans one client unit at the start of b: its length (0 when
	// incomplete), the unit, or the error that refuses it. The scanner
	// bounds the unit (validate's limits), since the engine carries an
	// incomplete one to the next message.
	Scan func(s S, b []byte) (n int, u U, err error)
	// Partial is the declared length of the incomplete unit the scanner
	// stopped at (0: unknown), for Session.KeepFor.
	Partial func(s S) int
	// Counts, when set, says whether a scanned unit counts in the close
	// log line (a STOMP heart-beat EOL does not); nil counts every unit.
	Counts func(u U) bool
	// Unit inspects, authorizes or rewrites one scanned unit: it goes on
	// as it is unless the hook Skips it. It returns false once it has
	// ended the session or a write to the broker failed (which ends it):
	// the engine then stops scanning the message.
	Unit func(s S, u U) bool
	// Reject ends the session over a unit the scanner refused, with the
	// protocol's own error (Rejection gives the outcome and close code);
	// rest is the client's bytes from that unit on. What came before it
	// has been forwarded.
	Reject func(s S, err error, rest []byte)
	// Broker splits broker bytes into units and adds what the client is to
	// get of them to out, which goes in one write after it returns (or
	// sooner, where the hook calls Session.Send itself, as when
	// out.Full()). It counts the units with Sent and returns how many
	// bytes it used, or false once it has ended the session. It must end
	// the session over a unit longer than MaxBrokerBytes: the read buffer
	// grows no further, and the reader would spin on a unit it cannot
	// complete. BrokerEnds names the outcome should the broker close next.
	Broker func(s S, b []byte, out *Outbox) (used int, ok bool)
	// End ends the session with why, answering the client in its
	// protocol where it has an answer for why (a STOMP ERROR, an MQTT
	// CONNACK, an AMQP connection.close), then the close with code, through
	// Session.Finish, which acts once: the keepalive, the login deadline,
	// the broker's loss and shutdown may each call End, on their own
	// goroutines, so it reads only state safe to share.
	End func(s S, why outcome.Outcome, reason string, code uint16)
	// Closed releases the protocol's own state once the session is over
	// (on the read goroutine, before the broker connection is closed).
	Closed func(s S)
	// Goodbye is the outcome, and GoodbyeReason its reason, of a session
	// whose client said its protocol's goodbye (Session.SaidGoodbye)
	// before the connection closed; a protocol that calls SaidGoodbye
	// sets Goodbye.
	Goodbye       outcome.Outcome
	GoodbyeReason string

	login                       *broker.LoginCheck // readiness: the broker accepts the route's credential
	dialer                      net.Dialer
	opened, closed, unreachable string
	unitsIn, unitsOut           string
}

// Init fills in the route's defaults, the Admission of clients offering
// subprotocols, whose sessions newSession makes (the protocol's session
// and the RelaySession it embeds; the engine fills that in), and the
// readiness check, which logs in on vhost where the protocol has one.
// Call it once the fields are set, before the Engine serves; the Engine
// must not move afterwards (sessions point to it).
func (e *Engine[S, U]) Init(subprotocols []string, vhost string, newSession func() (S, *RelaySession[S, U])) {
	o := e.Route
	if o.DialTimeout <= 0 {
		o.DialTimeout = broker.DefaultDialTimeout
	}
	if e.MaxBrokerBytes <= 0 {
		e.MaxBrokerBytes = DefaultMaxBrokerBytes
	}
	e.dialer = net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}
	e.opened, e.closed, e.unreachable = e.Protocol+" connection opened", e.Protocol+" connection closed", e.Protocol+" broker unreachable"
	e.unitsIn, e.unitsOut = e.Units+"_in", e.Units+"_out"
	e.Admission = o.Admission(e.Protocol, subprotocols, func() gws.SessionStorage {
		s, r := newSession()
		r.engine, r.self = e, s
		return any(s).(gws.SessionStorage)
	})
	e.login = o.LoginCheck(e.Protocol, vhost)
}

// Ready reports whether the broker accepts the route's credential
// (broker.LoginCheck: a real login at most every 30 s, a dial every time).
func (e *Engine[S, U]) Ready(ctx context.Context) error { return e.login.Ready(ctx) }

// RelaySession is one session of an Engine, embedded by the protocol's
// session. With the Session in it, it is what Admission needs of a
// session (SessionEvents, front.Closer). The Unit and Reject hooks place
// bytes in the stream to the broker with Flush, Forward, Skip, Rest and
// Dial, which belong to the client's read goroutine; the Broker hook
// reports with Sent and BrokerEnds.
type RelaySession[S any, U any] struct {
	Session
	engine *Engine[S, U]
	self   S

	// Fields below belong to the client's read goroutine unless marked.

	up *Upstream
	// The message being scanned: bytes from start up to off are checked
	// and not yet forwarded; n is the length of the unit at off.
	data          []byte
	start, off, n int
	in            int

	out     atomic.Int64
	goodbye atomic.Bool
	// What ends the session when the broker closes (upstream reader's).
	lost       outcome.Outcome
	lostReason string
}

// Connected reports whether the session has dialled its broker.
func (r *RelaySession[S, U]) Connected() bool { return r.up != nil }

// SaidGoodbye records that the client sent its protocol's goodbye, so
// the broker closing next is the end it asked for.
func (r *RelaySession[S, U]) SaidGoodbye() { r.goodbye.Store(true) }

// Sent counts n units relayed to the client (the Broker hook calls it).
func (r *RelaySession[S, U]) Sent(n int) { r.out.Add(int64(n)) }

// BrokerEnds names the outcome should the broker close the connection
// next (a STOMP ERROR is followed by the close); upstream reader only.
func (r *RelaySession[S, U]) BrokerEnds(why outcome.Outcome, reason string) {
	r.lost, r.lostReason = why, reason
}

// Begin implements SessionEvents.
func (r *RelaySession[S, U]) Begin(ws *gws.Conn, remote string, release func()) {
	e := r.engine
	o := e.Route
	r.Start(ws, remote, release, o.WS, func() {
		e.End(r.self, outcome.KeepaliveTimeout, "no traffic from the client for two ping intervals", CloseGoingAway)
	}, func(reason string) {
		e.End(r.self, outcome.LoginTimeout, reason, ClosePolicy)
	})
	e.Open(r.self)
	o.Log.Info(e.opened, "route", o.Route, "remote", remote, "subprotocol", ws.SubProtocol(), "backend", o.Backend)
}

// GoAway implements front.Closer.
func (r *RelaySession[S, U]) GoAway(reason string) {
	r.engine.End(r.self, outcome.Shutdown, reason, CloseGoingAway)
}

// OnMessage implements SessionEvents: it scans the message unit by unit,
// lets the protocol's Unit hook see each, and forwards the checked bytes
// in runs, one write per run.
func (r *RelaySession[S, U]) OnMessage(data []byte) {
	e := r.engine
	if e.Hold != nil && e.Hold(r.self, data) {
		r.Keep(nil)
		return
	}
	r.data, r.start, r.off, r.n = data, 0, 0, 0
	defer func() { r.data = nil }() // pooled by gws: never kept past the message
	for r.off < len(data) {
		n, u, err := e.Scan(r.self, data[r.off:])
		if err != nil {
			// Units before the bad one were valid: they go, it does not.
			if r.Flush() {
				e.Reject(r.self, err, data[r.off:])
			}
			return
		}
		if n == 0 {
			break
		}
		r.n = n
		if e.Counts == nil || e.Counts(u) {
			r.in++
		}
		if !e.Unit(r.self, u) {
			return
		}
		r.off += n
	}
	if !r.Flush() {
		return
	}
	r.KeepFor(data[r.off:], e.Partial(r.self))
}

// Flush forwards the checked bytes before the current unit; with no
// broker yet they go nowhere. False when the broker write failed and the
// session is ending.
func (r *RelaySession[S, U]) Flush() bool {
	if r.up == nil || r.off == r.start {
		r.start = r.off
		return true
	}
	b := r.data[r.start:r.off]
	r.start = r.off
	return r.write(b)
}

// Forward flushes, then sends b (a rewritten unit, or one the gateway
// makes) to the broker; with no broker yet b goes nowhere. False when
// the broker write failed and the session is ending.
func (r *RelaySession[S, U]) Forward(b []byte) bool {
	if !r.Flush() {
		return false
	}
	if r.up == nil {
		return true
	}
	return r.write(b)
}

// Rest is the message's bytes after the current unit (a unit may look
// ahead, as AMQP's guard does for a publish's content header).
func (r *RelaySession[S, U]) Rest() []byte { return r.data[r.off+r.n:] }

// Skip leaves the current unit out of what is forwarded (the hook has
// forwarded something in its place, or nothing).
func (r *RelaySession[S, U]) Skip() { r.start = r.off + r.n }

// Dial connects the session to its broker (whatever came before the
// current unit is dropped: there was no broker to take it), starts the
// upstream reader and sends first in place of the current unit. False
// when the broker is unreachable or the write failed: the session is
// then ending (End with outcome.BrokerUnavailable or BrokerLost).
func (r *RelaySession[S, U]) Dial(first []byte) bool {
	e := r.engine
	o := e.Route
	r.start = r.off
	up, err := o.Dial(&e.dialer)
	if err != nil {
		o.Log.Warn(e.unreachable, "route", o.Route, "backend", o.Backend, "address", o.Address, "error", err.Error())
		e.End(r.self, outcome.BrokerUnavailable, "the gateway could not reach backend "+o.Backend, CloseInternal)
		return false
	}
	r.up = up
	go r.readUpstream()
	r.Skip()
	return r.write(first)
}

func (r *RelaySession[S, U]) write(b []byte) bool {
	if err := r.up.Write(b); err != nil {
		r.engine.End(r.self, outcome.BrokerLost, "writing to the broker failed", CloseInternal)
		return false
	}
	return true
}

// readUpstream relays the broker's stream to the client until either goes
// away: what one read brings goes out with one write.
func (r *RelaySession[S, U]) readUpstream() {
	e := r.engine
	var out Outbox
	err := r.up.ReadLoop(e.MaxBrokerBytes, func(b []byte) (int, bool) {
		used, ok := e.Broker(r.self, b, &out)
		if !ok {
			return 0, false
		}
		return used, r.Send(&out)
	})
	switch {
	case err == nil, r.Closing():
	case r.goodbye.Load():
		e.End(r.self, e.Goodbye, e.GoodbyeReason, CloseNormal)
	case errors.Is(err, ErrOverBudget):
		any(r.self).(SessionEvents).Refuse(OverBudget())
	case r.lost != "":
		e.End(r.self, r.lost, r.lostReason, CloseInternal)
	default:
		e.End(r.self, outcome.BrokerLost, "the broker closed the connection", CloseInternal)
	}
}

// OnClose implements SessionEvents: it runs on the read goroutine once the
// WebSocket has closed, however that came about, releases everything the
// session holds and logs its end.
func (r *RelaySession[S, U]) OnClose(err error) {
	e := r.engine
	client := outcome.ClientClosed
	if r.goodbye.Load() {
		client = e.Goodbye
	}
	why, reason, lasted := r.Ended(err, client)
	if e.Closed != nil {
		e.Closed(r.self)
	}
	if r.up != nil {
		r.up.Close()
	}
	o := e.Route
	o.Log.Log(context.Background(), why.Level(), e.closed, "route", o.Route, "remote", r.Remote, r.LogIdentity(), "outcome", why,
		"reason", reason, "duration", lasted.String(), e.unitsIn, r.in, e.unitsOut, r.out.Load())
	r.Release() // last: shutdown waits for it, and so sees the line logged
}

// Rejection is the outcome and close code of a unit the scanner refused:
// too_large (1009) for a size limit, as when the WebSocket layer refuses
// a message's size; otherwise rejected, 1008 for a policy and 1002 for a
// protocol error.
func Rejection(err error) (outcome.Outcome, uint16) {
	switch {
	case errors.Is(err, validate.ErrTooLarge):
		return outcome.TooLarge, CloseTooLarge
	case errors.Is(err, validate.ErrPolicy):
		return outcome.Rejected, ClosePolicy
	}
	return outcome.Rejected, CloseProtocolError
}
