package bridge

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/outcome"
)

// WebSocket close codes the adapters send (RFC 6455 section 7.4.1).
const (
	CloseNormal        uint16 = 1000
	CloseGoingAway     uint16 = 1001
	CloseProtocolError uint16 = 1002
	// CloseUnsupportedData: a message of a type the endpoint cannot take,
	// such as a text message where only binary ones are defined.
	CloseUnsupportedData uint16 = 1003
	ClosePolicy          uint16 = 1008
	CloseTooLarge        uint16 = 1009
	CloseInternal        uint16 = 1011
	CloseTryAgainLater   uint16 = 1013
)

// WSOptions are the WebSocket settings every adapter shares.
type WSOptions struct {
	// MaxMessageBytes bounds one WebSocket message; a larger one is closed
	// with 1009 by the WebSocket layer before any protocol parsing.
	MaxMessageBytes int
	// ReadBufferBytes sizes each connection's socket read buffer. It is
	// held for the connection's life, so it is most of what an idle
	// connection costs beyond its goroutine; a message larger than it is
	// read straight into its own buffer, so it costs large messages
	// little (1 KiB and 4 KiB relayed STOMP and MQTT at the same rate).
	ReadBufferBytes int
	// SendBufferBytes caps each client socket's kernel send buffer
	// (SO_SNDBUF; Linux doubles it for its own bookkeeping); 0 leaves the
	// kernel's autotuning, which grows it to net.ipv4.tcp_wmem's maximum
	// (4 MiB here) for a client that stops reading, memory outside the
	// budget and the process, shared by every socket of the machine.
	SendBufferBytes int
	// PingInterval is how often an idle connection is pinged; a peer silent
	// for two intervals is closed.
	PingInterval time.Duration
	// WriteTimeout bounds each write to a client.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds the upgrade response write.
	HandshakeTimeout time.Duration
	// LoginTimeout bounds the time from the upgrade to the protocol's login
	// (STOMP CONNECT, MQTT CONNECT, AMQP connection.start-ok); a session
	// still unauthenticated then is ended. Until its login a connection
	// holds a slot of limits.max_connections while proving nothing, and
	// pings keep it alive, so without this bound idle sockets alone could
	// fill the gateway. Zero takes the default: there is no "off".
	LoginTimeout time.Duration
	// MessageTimeout bounds how long one message may take to arrive once
	// its first bytes have: a message being assembled holds memory, so a
	// client may not trickle it.
	MessageTimeout time.Duration
	// Budget, shared by every route, bounds the bytes held in messages
	// being assembled, with everything else held for clients; nil: none.
	Budget *memory.Budget
	// Intake, shared by every route, is the rate at which large messages
	// are taken in; nil: none.
	Intake *Intake
	// Linger, shared by every route, bounds the bytes a second drained
	// in lingering closes; nil: none.
	Linger *Linger
	// Compression offers permessage-deflate (no context takeover).
	Compression bool
	// Penalize, when set, is told the address of a client whose session
	// ended for a breach that cost the gateway dearly: a message too large
	// (read up to the limit first, when it came in fragments), one not
	// completed in time (memory held for message_timeout), or any end
	// while a message or frame beyond memory.OwnBytes was still incomplete
	// (memory held for nothing, however the session ended). The server's
	// front charges the address's handshake rate for it (front.Server.Penalize),
	// so that a client reconnecting to breach again and again costs a
	// handshake refused, not a session.
	Penalize func(client string)
}

// DefaultWSOptions are used where the config is silent.
func DefaultWSOptions() WSOptions {
	return WSOptions{
		// A 1 MiB application message with its protocol's framing and
		// headers: what browsers' clients send without a second thought.
		MaxMessageBytes: 1<<20 + 64<<10,
		ReadBufferBytes: 1 << 10,
		// The kernel's autotuning. A 256 KiB cap was backed out when
		// TestTranslateSlowClientIsDroppedAlone failed with it under the
		// race detector; it fails as often without it (d83e56d, run with
		// the other TestTranslate tests under -race: 2 of 2), on the
		// publisher's side: the go-stomp publisher's Send times out (its
		// 10 s msgSendTimeout) ~800-990 of 1,000 64 KiB frames in. The
		// cap is the operator's choice until it is measured as a
		// default; without it 2,000 clients that read nothing took
		// ~210 MiB of kernel TCP memory in 20 s at 4 KiB/s each
		// (docs/benchmarks.md, Hostile clients).
		SendBufferBytes:  0,
		PingInterval:     30 * time.Second,
		WriteTimeout:     10 * time.Second,
		HandshakeTimeout: 5 * time.Second,
		// Every client library we know sends its login as soon as the
		// socket opens, so a real client needs one round trip (for AMQP
		// two, and the gateway's dial to the broker): well under a second
		// even on a poor mobile link. 5 s leaves room for retransmits and a
		// slow proxy, and, with handshake_timeout, bounds what a client
		// that never logs in holds a slot for to ~10 s.
		LoginTimeout: 5 * time.Second,
		// A 1 MiB message needs 0.6 Mbit/s to arrive in time: a poor
		// mobile link, not a trickle.
		MessageTimeout: 15 * time.Second,
	}
}

// Upgraders holds a gws Upgrader for clients that offer one of the
// adapter's subprotocols and one for clients that offer none (a gws
// Upgrader with SubProtocols set rejects those).
type Upgraders struct {
	opts         WSOptions
	subprotocols []string
	with         *gws.Upgrader
	without      *gws.Upgrader
	// BinaryOnly refuses a text message at its first frame's header, with
	// outcome.TextMessage and close 1003, for a protocol whose spec sends
	// binary messages only (MQTT-6.0.0-1). Set it before serving.
	BinaryOnly bool
}

// NewUpgraders builds the upgraders for one route. newSession returns the
// adapter's per-connection state, reachable later through Conn.Session.
func NewUpgraders(h gws.Event, o WSOptions, subprotocols []string, newSession func() gws.SessionStorage) *Upgraders {
	opt := func(sp []string) *gws.ServerOption {
		return &gws.ServerOption{
			ReadMaxPayloadSize:  o.MaxMessageBytes,
			WriteMaxPayloadSize: 64 << 20,
			ReadBufferSize:      o.ReadBufferBytes,
			HandshakeTimeout:    o.HandshakeTimeout,
			CheckUtf8Enabled:    true,
			SubProtocols:        sp,
			NewSession:          newSession,
			PermessageDeflate: gws.PermessageDeflate{
				Enabled:               o.Compression,
				ServerContextTakeover: false,
				ClientContextTakeover: false,
			},
		}
	}
	u := &Upgraders{opts: o, subprotocols: subprotocols, without: gws.NewUpgrader(h, opt(nil))}
	if len(subprotocols) > 0 {
		u.with = gws.NewUpgrader(h, opt(subprotocols))
	}
	return u
}

// Upgrade completes the handshake, or answers 400 with the subprotocols we
// speak when the client offered only others. On error the response has been
// written.
func (u *Upgraders) Upgrade(w http.ResponseWriter, r *http.Request) (*gws.Conn, error) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Upgrade", "websocket")
		front.Error(w, http.StatusUpgradeRequired, "this endpoint speaks WebSocket; connect with a WebSocket client")
		return nil, errors.New("not a WebSocket upgrade request")
	}
	up := u.pick(r.Header.Values("Sec-Websocket-Protocol"))
	if up == nil {
		msg := fmt.Sprintf("no supported subprotocol offered; this endpoint speaks %s", strings.Join(u.subprotocols, ", "))
		front.Error(w, http.StatusBadRequest, msg)
		return nil, fmt.Errorf("%s", msg)
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		front.Error(w, http.StatusInternalServerError, "this connection cannot be upgraded")
		return nil, errors.New("the response writer cannot hijack")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, err
	}
	if u.opts.SendBufferBytes > 0 {
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetWriteBuffer(u.opts.SendBufferBytes)
		} else if tc, ok := nc.(interface{ NetConn() net.Conn }); ok { // TLS
			if tc, ok := tc.NetConn().(*net.TCPConn); ok {
				tc.SetWriteBuffer(u.opts.SendBufferBytes)
			}
		}
	}
	wc := newWSConn(nc, u.opts)
	wc.binaryOnly, wc.client = u.BinaryOnly, front.ClientIP(r)
	if n := brw.Reader.Buffered(); n > 0 { // frames sent before the 101
		wc.early, _ = brw.Reader.Peek(n)
		wc.early = bytes.Clone(wc.early)
	}
	ws, err := up.UpgradeFromConn(wc, bufio.NewReaderSize(wc, u.opts.ReadBufferBytes), r)
	if err != nil {
		wc.closeSocket()
	}
	return ws, err
}

// pick is the upgrader for a client offering these subprotocols, nil when
// it offers only others.
func (u *Upgraders) pick(offered []string) *gws.Upgrader {
	switch p, ok := u.subprotocol(offered); {
	case !ok:
		return nil
	case p == "":
		return u.without
	}
	return u.with
}

// subprotocol is the one gws chooses for a client offering these: the
// first of ours that it offers; "" when it offers none or the route has
// none. ok is false when it offers only others.
func (u *Upgraders) subprotocol(offered []string) (string, bool) {
	if len(offered) == 0 || u.with == nil {
		return "", true
	}
	for _, ours := range u.subprotocols {
		for _, line := range offered {
			for _, p := range strings.Split(line, ",") {
				if strings.TrimSpace(p) == ours {
					return ours, true
				}
			}
		}
	}
	return "", false
}

// Keepalive pings a WebSocket connection that has been quiet for an
// interval and reports it dead when a further interval passes without
// anything from the peer. It runs on a timer, not a goroutine of its own,
// so an idle connection costs no stack for it.
type Keepalive struct {
	interval time.Duration
	activity atomic.Uint32
	ping     func() error
	dead     func()

	mu      sync.Mutex
	timer   *time.Timer
	seen    uint32
	pinged  bool
	stopped bool
}

// StartKeepalive arms the timer. ping sends a ping; dead is called once when
// the peer has gone silent.
func StartKeepalive(interval time.Duration, ping func() error, dead func()) *Keepalive {
	k := &Keepalive{interval: interval, ping: ping, dead: dead}
	if interval > 0 {
		k.mu.Lock() // the timer may fire before the assignment is visible
		k.timer = time.AfterFunc(interval, k.tick)
		k.mu.Unlock()
	}
	return k
}

// Touch records that the peer sent something. It is cheap enough for
// every message.
func (k *Keepalive) Touch() { k.activity.Add(1) }

// Activity is a counter that changes whenever the peer sends something.
func (k *Keepalive) Activity() uint32 { return k.activity.Load() }

// Stop disarms the timer.
func (k *Keepalive) Stop() {
	k.mu.Lock()
	k.stopped = true
	if k.timer != nil {
		k.timer.Stop()
	}
	k.mu.Unlock()
}

func (k *Keepalive) tick() {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	now := k.activity.Load()
	active := now != k.seen
	k.seen = now
	if !active && k.pinged {
		k.stopped = true
		k.mu.Unlock()
		k.dead()
		return
	}
	k.pinged = !active
	k.timer.Reset(k.interval)
	k.mu.Unlock()
	if !active {
		if err := k.ping(); err != nil {
			k.Stop()
			k.dead()
		}
	}
}

// Admission is what every WebSocket route does before its protocol starts:
// the Origin check (403), authentication of a token the request carries
// (401), the connection limits and the per-address password checks
// (close 1013 with a retry hint, see RefuseBusy), the upgrade and the
// registration for shutdown.
type Admission struct {
	Protocol, Route string // for logs
	Backend         string // for logs
	// CredentialName is the route's keyring entry, for logs.
	CredentialName string
	// CredentialHolder, when set, holds the route's credential in place
	// of the one the adapter passes to BrokerCredential (a keyring reload
	// reaches the next session).
	CredentialHolder *broker.CredentialHolder
	Origins          *front.Origins
	Conns            *front.Conns
	Log              *slog.Logger
	Upgraders        *Upgraders
	// Auth is the route's policy; nil admits everyone anonymously.
	Auth *auth.Policy
}

// admit does what comes before a session: the Origin check (403), the
// connection limits (1013), a token the request carries (401; 1013 when
// its password check was refused unchecked) and the upgrade. It returns
// the connection and the identity the request proved (nil when the
// protocol's login is to prove it), or false when the request was refused
// and answered.
func (a *Admission) admit(w http.ResponseWriter, r *http.Request) (*gws.Conn, *auth.Identity, bool) {
	refused := func(level slog.Level, why outcome.Outcome, args ...any) {
		a.Log.Log(r.Context(), level, a.Protocol+" connection refused",
			append([]any{"route", a.Route, "remote", r.RemoteAddr, "outcome", why}, args...)...)
	}
	if !a.Origins.Check(w, r) {
		refused(slog.LevelInfo, outcome.OriginDenied, "origin", r.Header.Get("Origin"))
		return nil, nil, false
	}
	if err := a.Conns.Check(front.ClientIP(r)); err != nil {
		b, _ := front.BusyFor(err)
		a.Upgraders.refuse(w, r, b, a.Conns)
		refused(slog.LevelWarn, b.Outcome, "reason", b.Reason, "retry", b.Retry)
		return nil, nil, false
	}
	id, err := front.Authenticate(r, a.Auth, true)
	if b, busy := front.BusyFor(err); busy {
		a.Upgraders.refuse(w, r, b, a.Conns)
		refused(slog.LevelInfo, b.Outcome, "reason", b.Reason, "retry", b.Retry)
		return nil, nil, false
	}
	if err != nil {
		front.RefuseLogin(w, a.Auth, err)
		refused(slog.LevelInfo, front.LoginOutcome(err), "reason", err.Error())
		return nil, nil, false
	}
	ws, err := a.Upgraders.Upgrade(w, r)
	if err != nil {
		refused(slog.LevelInfo, outcome.HandshakeFailed, "reason", err.Error())
		return nil, nil, false
	}
	return ws, id, true
}

// RefuseBusy implements front.BusyRefuser: a WebSocket client from an allowed
// origin is upgraded and closed with 1013 and b's hint (see
// Upgraders.refuse); anything else gets HTTP 429 or 503.
func (a *Admission) RefuseBusy(w http.ResponseWriter, r *http.Request, b front.Busy) {
	if a.Origins.Check(w, r) {
		a.Upgraders.refuse(w, r, b, a.Conns)
	}
}

// ServeHTTP admits a WebSocket client and starts its session. The
// connection's gws session must implement SessionEvents and Closer.
func (a *Admission) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, id, ok := a.admit(w, r)
	if !ok {
		return
	}
	ev := ws.Session().(SessionEvents)
	core := ev.Core()
	core.adm, core.Identity, core.client = a, id, front.ClientIP(r)
	if wc, ok := ws.NetConn().(*wsConn); ok {
		wc.refuse = ev.Refuse
	}
	// The session starts before it is registered: shutdown must never ask
	// a half-made session to go away. Its slot is released from OnClose,
	// on the read loop started below, so after the assignment.
	var release func()
	ev.Begin(ws, r.RemoteAddr, func() {
		if release != nil {
			release()
		}
	})
	var err error
	if release, err = a.Conns.Add(ws.Session().(front.Closer), front.ClientIP(r)); err != nil {
		// Lost a race for the last slot, or shutdown began: the session
		// ends the usual way, so its socket and timers are released too.
		b, _ := front.BusyFor(err)
		core.Finish(b.Outcome, b.CloseReason(), CloseTryAgainLater, 0, nil)
	}
	go ws.ReadLoop()
}
