package stomp

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/wsbridge/wsbridge/outcome"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/validate"
)

// session is one client connection. The fields under "read loop" belong to
// the gws read goroutine, those under "upstream" to readUpstream; the rest
// are shared and synchronised as marked.
type session struct {
	bridge.Session
	relay *Relay

	// read loop
	in       *validate.STOMPScanner
	up       *bridge.Upstream
	framesIn int

	tr *translator // translation mode only

	cred *keyring.Credential // the broker credential for this identity
	acl  *acl                // nil when the identity may touch every destination

	framesOut atomic.Int64
	done      chan struct{} // closed when the session has ended

	disconnecting atomic.Bool   // the client sent DISCONNECT
	version       atomic.Uint32 // negotiated STOMP version, for ERROR escaping
}

// Begin implements bridge.SessionEvents.
func (s *session) Begin(ws *gws.Conn, remote string, release func()) {
	o := &s.relay.opts
	s.Start(ws, remote, release, o.WS, func() {
		s.finish(outcome.KeepaliveTimeout, "", "no traffic from the client for two ping intervals", bridge.CloseGoingAway)
	}, func(reason string) {
		s.finish(outcome.LoginTimeout, reason, reason+"; send CONNECT as soon as the WebSocket opens", bridge.ClosePolicy)
	})
	s.in = validate.NewSTOMPScanner(o.Limits, false)
	s.done = make(chan struct{})
	if o.Broker != nil {
		s.tr = newTranslator(s, o.Broker.(*broker.Shared))
	}
	o.Log.Info("stomp connection opened", "route", o.Route, "remote", remote, "subprotocol", ws.SubProtocol(), "backend", o.Backend)
}

// GoAway implements front.Closer.
func (s *session) GoAway(reason string) {
	s.finish(outcome.Shutdown, reason, reason, bridge.CloseGoingAway)
}

// Refuse implements bridge.SessionEvents: an ERROR naming the limit,
// then the close.
func (s *session) Refuse(r bridge.Refusal) { s.finish(r.Outcome, r.Reason, r.Reason, r.Code) }

// OnMessage handles one client WebSocket message.
func (s *session) OnMessage(data []byte) {
	// Escaping follows the version the broker chose, which may be lower
	// than the highest the client offered.
	if v := validate.STOMPVersion(s.version.Load()); v != 0 && v < s.in.Version {
		s.in.Version = v
	}
	start, off := 0, 0
	for off < len(data) {
		n, f, err := s.in.Next(data[off:])
		if err != nil {
			// Frames before the bad one were valid: they go, it does not.
			if s.up != nil && off > start && !s.forward(data[start:off]) {
				return
			}
			why := outcome.Rejected
			if errors.Is(err, validate.ErrTooLarge) { // as when the WebSocket layer refuses a message's size
				why = outcome.TooLarge
			}
			s.finish(why, clientMessage(err), err.Error(), closeCode(err))
			return
		}
		if n == 0 {
			break
		}
		if f != nil {
			s.framesIn++
			switch f.Command {
			case validate.CmdConnect, validate.CmdStomp:
				if !s.login(f) {
					return
				}
			case validate.CmdSend, validate.CmdSubscribe, validate.CmdUnsubscribe:
				if s.acl == nil {
					break
				}
				rewritten, err := s.acl.authorize(f, s.in.Version)
				if err != nil {
					// Frames before the refused one were allowed: they go first.
					if s.up == nil || off == start || s.forward(data[start:off]) {
						s.refuse(f, err)
					}
					return
				}
				if rewritten != nil && s.up != nil {
					if off > start && !s.forward(data[start:off]) || !s.forward(rewritten) {
						return
					}
					start = off + n
				}
			}
		}
		if f != nil && s.tr != nil {
			if !s.tr.frame(f) {
				return
			}
		} else if f != nil {
			switch f.Command {
			case validate.CmdConnect, validate.CmdStomp:
				if !s.connect(f) {
					return
				}
				start = off + n
			case validate.CmdDisconnect:
				s.disconnecting.Store(true)
			}
		}
		off += n
	}
	if s.up == nil {
		start = off // translation mode, or heart-beat EOLs before CONNECT: nothing to forward
	}
	if off > start && !s.forward(data[start:off]) {
		return
	}
	s.KeepFor(data[off:], s.in.FrameLen())
}

// connect dials the broker and sends the client's CONNECT with the route's
// identity in place of the client's login, passcode and host.
func (s *session) connect(f *validate.STOMPFrame) bool {
	o := &s.relay.opts
	b := make([]byte, 0, len(f.Raw)+128)
	b = append(b, f.Command.String()...)
	b = append(b, '\n')
	for i := range f.NumHeaders() {
		name, val := f.HeaderAt(i)
		switch string(name) {
		case "login", "passcode", "host":
			continue
		}
		b = append(b, name...)
		b = append(b, ':')
		// Client ids are the identity's own, as in MQTT (RabbitMQ names
		// durable subscriptions after the id header instead: see acl.go).
		if id := s.Identity; string(name) == "client-id" && id != nil && id.Subject != "" {
			b = append(b, bridge.ClientIDPrefix(id.Subject)...)
		}
		b = append(b, val...)
		b = append(b, '\n')
	}
	b = append(b, "host:"...)
	b = append(b, o.VHost...)
	b = append(b, '\n')
	if c := s.cred; c != nil {
		b = append(b, "login:"...)
		b = append(b, c.Username...)
		b = append(b, "\npasscode:"...)
		b = append(b, c.Password.Reveal()...)
		b = append(b, '\n')
	}
	b = append(b, '\n', 0)

	up, err := o.Dial(&s.relay.dialer)
	if err != nil {
		o.Log.Warn("stomp broker unreachable", "route", o.Route, "backend", o.Backend, "address", o.Address, "error", err.Error())
		s.finish(outcome.BrokerUnavailable, "broker unavailable", "the gateway could not reach backend "+o.Backend, bridge.CloseInternal)
		return false
	}
	s.up = up
	go s.readUpstream()
	return s.forward(b)
}

// forward writes checked client bytes to the broker.
func (s *session) forward(b []byte) bool {
	if err := s.up.Write(b); err != nil {
		s.finish(outcome.BrokerLost, "broker connection lost", "writing to the broker failed", bridge.CloseInternal)
		return false
	}
	return true
}

// readUpstream relays broker frames to the client, one per WebSocket
// message, until the broker or the client goes away. The frames of one
// read go out with one write.
func (s *session) readUpstream() {
	o := &s.relay.opts
	max := o.MaxBrokerFrameBytes
	sc := validate.NewSTOMPScanner(validate.STOMPLimits{MaxFrameBytes: max, MaxHeaders: 4096, MaxHeaderLineBytes: max}, true)
	brokerError, connected := false, false
	var out bridge.Outbox
	invalid := func(err error) (int, bool) {
		s.Send(&out) // the valid frames before it
		s.brokerInvalid(err)
		return 0, false
	}
	err := s.up.ReadLoop(max, func(b []byte) (int, bool) {
		off := 0
		for off < len(b) {
			k, f, err := sc.Next(b[off:])
			if err != nil {
				return invalid(err)
			}
			if k == 0 {
				break
			}
			if f != nil {
				s.framesOut.Add(1)
				switch f.Command {
				case validate.CmdConnected:
					connected = true
					v := validate.STOMP10
					if h, ok := f.Header("version"); ok {
						v = validate.ParseSTOMPVersion(h)
					}
					s.version.Store(uint32(v))
				case validate.CmdError:
					brokerError = true
					if !connected {
						s.Send(&out)
						s.brokerRefused(f)
						return 0, false
					}
				case validate.CmdMessage:
					if s.acl != nil {
						s.acl.given.noteReplyTo(f, validate.STOMPVersion(s.version.Load()))
					}
				}
			}
			end := off + k
			// RabbitMQ follows each frame with an EOL; sending it in the
			// frame's own message saves a message per frame.
			if f != nil && end < len(b) && (b[end] == '\n' || b[end] == '\r') {
				e, _, err := sc.Next(b[end:])
				if err != nil {
					return invalid(err)
				}
				end += e
			}
			frame := b[off:end]
			if f != nil && f.Command == validate.CmdError {
				frame = s.redactError(f, frame)
			}
			out.Add(textOrBinary(frame), frame)
			if out.Full() && !s.Send(&out) {
				return 0, false
			}
			off = end
		}
		return off, s.Send(&out)
	})
	switch {
	case err == nil, s.Closing():
	case s.disconnecting.Load():
		s.finish(outcome.Disconnected, "", "", bridge.CloseNormal)
	case errors.Is(err, bridge.ErrOverBudget):
		s.Refuse(bridge.OverBudget())
	case brokerError:
		s.finish(outcome.BrokerError, "", "broker ended the session with ERROR", bridge.CloseInternal)
	default:
		s.finish(outcome.BrokerLost, "broker connection lost", "the broker closed the connection", bridge.CloseInternal)
	}
}

// brokerRefused answers a broker ERROR before CONNECTED: the broker
// refusing the gateway's login, in words that name the gateway's broker
// user ("Access refused for user 'gw'"). The client gets a generic ERROR
// and the operator's log the broker's words, and the session ends at once
// (RabbitMQ closes only 10 s after its ERROR).
func (s *session) brokerRefused(f *validate.STOMPFrame) {
	m, _ := f.Header("message")
	s.BrokerRefused(strings.TrimSpace(unescape(m, validate.STOMPVersion(s.version.Load())) + ": " + string(f.Body())))
	s.finish(outcome.BrokerRefused, bridge.BrokerRefusedCredential, "the gateway's log has the broker's reason", bridge.CloseInternal)
}

// redactError is what the client gets of a broker ERROR frame after
// CONNECTED (raw, with its EOLs): as it is, unless it names the gateway's
// broker user (a permission that user lacks); then rebuilt with the user
// redacted, and logged for the operator as the broker wrote it.
func (s *session) redactError(f *validate.STOMPFrame, raw []byte) []byte {
	v := validate.STOMPVersion(s.version.Load())
	m, _ := f.Header("message")
	said, body := unescape(m, v), string(f.Body())
	msg, inMsg := s.Redact(said)
	body, inBody := s.Redact(body)
	if !inMsg && !inBody {
		return raw
	}
	s.BrokerWarn("stomp broker error names the gateway's broker user; the client gets it redacted",
		strings.TrimSpace(said+": "+string(f.Body())))
	receipt, _ := f.Header("receipt-id")
	return validate.AppendSTOMPError(nil, v, msg, body, receipt)
}

func (s *session) brokerInvalid(err error) {
	o := &s.relay.opts
	o.Log.Warn("stomp broker sent an invalid frame", "route", o.Route, "backend", o.Backend, "error", err.Error())
	s.finish(outcome.BrokerProtocolError, "broker sent an invalid frame", "", bridge.CloseInternal)
}

// writeText writes a frame the gateway made itself.
func (s *session) writeText(b []byte) bool { return s.Write(gws.OpcodeText, b) }

// toClient writes one frame (or heart-beat) as one WebSocket message.
func (s *session) toClient(frame []byte) bool { return s.Write(textOrBinary(frame), frame) }

// textOrBinary is the opcode of a frame's message: text when it is valid
// UTF-8, binary otherwise, so that binary bodies survive browsers' text
// decoding.
func textOrBinary(frame []byte) gws.Opcode {
	if utf8.Valid(frame) {
		return gws.OpcodeText
	}
	return gws.OpcodeBinary
}

// finish ends the session once. When errMsg is set the client first gets a
// STOMP ERROR frame with it as the message header and detail as the body;
// then the WebSocket close with code.
func (s *session) finish(why outcome.Outcome, errMsg, detail string, code uint16) {
	reason := detail
	if reason == "" {
		reason = errMsg
	}
	var answer []byte
	if errMsg != "" && !s.Closing() {
		answer = validate.AppendSTOMPError(nil, validate.STOMPVersion(s.version.Load()), errMsg, detail, nil)
	}
	s.Finish(why, reason, code, gws.OpcodeText, answer)
}

// dropSlow ends the session of a client that does not read what it is
// sent (bridge.Session.Drop): its ERROR and close 1008 go only where its
// socket has room.
func (s *session) dropSlow(detail string) {
	s.Drop(outcome.SlowConsumer, detail, bridge.ClosePolicy, gws.OpcodeText,
		validate.AppendSTOMPError(nil, validate.STOMPVersion(s.version.Load()), "slow consumer", detail, nil))
}

// OnClose runs on the read goroutine once the WebSocket has closed, however
// that came about, and releases everything the session holds.
func (s *session) OnClose(err error) {
	clientOutcome := outcome.ClientClosed
	if s.disconnecting.Load() {
		clientOutcome = outcome.Disconnected
	}
	why, reason, lasted := s.Ended(err, clientOutcome)
	close(s.done)
	if s.up != nil {
		s.up.Close()
	}
	if s.tr != nil {
		s.tr.close()
	}
	o := &s.relay.opts
	o.Log.Log(context.Background(), why.Level(), "stomp connection closed", "route", o.Route, "remote", s.Remote, s.LogIdentity(), "outcome", why,
		"reason", reason, "duration", lasted.String(), "frames_in", s.framesIn, "frames_out", s.framesOut.Load())
	s.Release() // last: shutdown waits for it, and so sees the line logged
}
