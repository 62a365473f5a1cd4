package stomp

import (
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/outcome"
	"github.com/wsbridge/wsbridge/validate"
)

// session is one client connection. The fields under "read loop" belong to
// the gws read goroutine, those under "upstream" to the broker's reader;
// the rest are shared and synchronised as marked.
type session struct {
	bridge.RelaySession[*session, *validate.STOMPFrame]
	relay *Relay

	// read loop
	in *validate.STOMPScanner

	tr *translator // translation mode only

	cred *keyring.Credential // the broker credential for this identity
	acl  *acl                // nil when the identity may touch every destination

	// upstream
	brokerIn  *validate.STOMPScanner
	connected bool // the broker sent CONNECTED

	done chan struct{} // closed when the session has ended

	version atomic.Uint32 // negotiated STOMP version, for ERROR escaping
}

// open implements bridge.Engine.Open.
func (s *session) open() {
	o := &s.relay.opts
	s.in = validate.NewSTOMPScanner(o.Limits, false)
	s.done = make(chan struct{})
	if o.Broker != nil {
		s.tr = newTranslator(s, o.Broker.(*broker.Shared))
	}
}

// end implements bridge.Engine.End: an ERROR where STOMP has words for
// why, then the close.
func (s *session) end(why outcome.Outcome, reason string, code uint16) {
	switch why {
	case outcome.LoginTimeout:
		s.finish(why, reason, reason+"; send CONNECT as soon as the WebSocket opens", code)
	case outcome.Shutdown:
		s.finish(why, reason, reason, code)
	case outcome.BrokerUnavailable:
		s.finish(why, "broker unavailable", reason, code)
	case outcome.BrokerLost:
		s.finish(why, "broker connection lost", reason, code)
	default:
		s.finish(why, "", reason, code)
	}
}

// Refuse implements bridge.SessionEvents: an ERROR naming the limit,
// then the close.
func (s *session) Refuse(r bridge.Refusal) { s.finish(r.Outcome, r.Reason, r.Reason, r.Code) }

// scan implements bridge.Engine.Scan. Escaping follows the version the
// broker chose, which may be lower than the highest the client offered.
func (s *session) scan(b []byte) (int, *validate.STOMPFrame, error) {
	if v := validate.STOMPVersion(s.version.Load()); v != 0 && v < s.in.Version {
		s.in.Version = v
	}
	return s.in.Next(b)
}

func (s *session) partial() int { return s.in.FrameLen() }

// isFrame: heart-beat EOLs scan as no frame, and count as none.
func isFrame(f *validate.STOMPFrame) bool { return f != nil }

// reject implements bridge.Engine.Reject.
func (s *session) reject(err error, _ []byte) {
	why, code := bridge.Rejection(err)
	s.finish(why, clientMessage(err), err.Error(), code)
}

// unit implements bridge.Engine.Unit for one client frame.
func (s *session) unit(f *validate.STOMPFrame) bool {
	if f == nil {
		return true
	}
	switch f.Command {
	case validate.CmdConnect, validate.CmdStomp:
		if !s.login(f) {
			return false
		}
	case validate.CmdSend, validate.CmdSubscribe, validate.CmdUnsubscribe:
		if s.acl == nil {
			break
		}
		rewritten, err := s.acl.authorize(f, s.in.Version)
		if err != nil {
			// Frames before the refused one were allowed: they go first.
			if s.Flush() {
				s.refuse(f, err)
			}
			return false
		}
		if rewritten != nil && s.Connected() {
			if !s.Forward(rewritten) {
				return false
			}
			s.Skip()
		}
	}
	if s.tr != nil {
		return s.tr.frame(f)
	}
	switch f.Command {
	case validate.CmdConnect, validate.CmdStomp:
		return s.connect(f)
	case validate.CmdDisconnect:
		s.SaidGoodbye()
	}
	return true
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

	return s.Dial(b)
}

// fromBroker implements bridge.Engine.Broker: broker frames go to the
// client one per WebSocket message, all those of one read in one write.
func (s *session) fromBroker(b []byte, out *bridge.Outbox) (int, bool) {
	if s.brokerIn == nil {
		max := s.relay.engine.MaxBrokerBytes
		s.brokerIn = validate.NewSTOMPScanner(validate.STOMPLimits{MaxFrameBytes: max, MaxHeaders: 4096, MaxHeaderLineBytes: max}, true)
	}
	sc := s.brokerIn
	off := 0
	for off < len(b) {
		k, f, err := sc.Next(b[off:])
		if err != nil {
			return s.brokerInvalid(out, err)
		}
		if k == 0 {
			break
		}
		if f != nil {
			s.Sent(1)
			switch f.Command {
			case validate.CmdConnected:
				s.connected = true
				v := validate.STOMP10
				if h, ok := f.Header("version"); ok {
					v = validate.ParseSTOMPVersion(h)
				}
				s.version.Store(uint32(v))
			case validate.CmdError:
				s.BrokerEnds(outcome.BrokerError, "broker ended the session with ERROR")
				if !s.connected {
					s.Send(out)
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
				return s.brokerInvalid(out, err)
			}
			end += e
		}
		frame := b[off:end]
		if f != nil && f.Command == validate.CmdError {
			frame = s.redactError(f, frame)
		}
		out.Add(textOrBinary(frame), frame)
		if out.Full() && !s.Send(out) {
			return 0, false
		}
		off = end
	}
	return off, true
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

// brokerInvalid ends the session over an invalid broker frame, once the
// valid frames before it have gone to the client.
func (s *session) brokerInvalid(out *bridge.Outbox, err error) (int, bool) {
	s.Send(out)
	o := &s.relay.opts
	o.Log.Warn("stomp broker sent an invalid frame", "route", o.Route, "backend", o.Backend, "error", err.Error())
	s.finish(outcome.BrokerProtocolError, "broker sent an invalid frame", "", bridge.CloseInternal)
	return 0, false
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

// closed implements bridge.Engine.Closed.
func (s *session) closed() {
	close(s.done)
	if s.tr != nil {
		s.tr.close()
	}
}
