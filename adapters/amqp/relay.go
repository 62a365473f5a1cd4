// Package amqp serves AMQP 0-9-1 over WebSocket (binary frames, as
// @cloudamqp/amqp-client's AMQPWebSocketClient sends them) and relays to
// RabbitMQ over TCP. Every client frame is checked by validate; the SASL
// response in connection.start-ok is replaced by the route's keyring
// credential, frame-max in connection.tune-ok is capped to the gateway's
// limit, and the virtual host in connection.open must be one the route
// allows.
package amqp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/outcome"
	"github.com/wsbridge/wsbridge/validate"
)

// Subprotocols: clients may offer "amqp"; those that offer none (as
// AMQPWebSocketClient) are accepted too.
var Subprotocols = []string{"amqp"}

// Options configure one AMQP relay route. RabbitMQ refuses a connection
// without credentials, so AMQP routes normally name one.
type Options struct {
	bridge.RouteOptions
	// TopicExchange is the exchange whose routing keys the ACL treats as
	// topics (default amq.topic).
	TopicExchange string
	// VHosts are the virtual hosts clients may open; empty allows "/" only.
	VHosts []string
	// Limits bound client frames; MaxFrameBytes bounds broker frames too.
	Limits validate.AMQPLimits
}

// Relay is the http.Handler for an AMQP relay route.
type Relay struct {
	opts   Options
	engine bridge.Engine[*session, *validate.AMQPFrame]
}

// NewRelay makes a relay handler.
func NewRelay(o Options) *Relay {
	if o.TopicExchange == "" {
		o.TopicExchange = "amq.topic"
	}
	if len(o.VHosts) == 0 {
		o.VHosts = []string{"/"}
	}
	r := &Relay{opts: o}
	r.engine = bridge.Engine[*session, *validate.AMQPFrame]{
		Protocol: "amqp", Units: "frames", Route: &r.opts.RouteOptions,
		MaxBrokerBytes: validate.NewAMQPScanner(o.Limits).Limits.MaxFrameBytes, // the client's limit, defaulted
		Open:           (*session).open, Hold: (*session).hold, Scan: (*session).scan, Partial: (*session).partial,
		Unit: (*session).unit, Reject: (*session).reject, Broker: (*session).fromBroker, End: (*session).end,
		Goodbye: outcome.ClientClosed, GoodbyeReason: "connection.close completed",
	}
	r.engine.Init(Subprotocols, o.VHosts[0], func() (*session, *bridge.RelaySession[*session, *validate.AMQPFrame]) {
		s := &session{relay: r}
		return s, &s.RelaySession
	})
	return r
}

// ServeHTTP admits a WebSocket client to the route (origin, login,
// connection limits) and starts its session.
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.engine.ServeHTTP(w, req) }

// A relay route answers a client refused for load in WebSocket terms.
var _ front.BusyRefuser = (*Relay)(nil)

// RefuseBusy implements front.BusyRefuser: a WebSocket client refused for
// load is upgraded and closed with 1013 and a retry hint (see
// bridge.Admission.RefuseBusy).
func (r *Relay) RefuseBusy(w http.ResponseWriter, req *http.Request, b front.Busy) {
	r.engine.RefuseBusy(w, req, b)
}

// Ready reports whether the broker accepts the route's credential
// (broker.LoginCheck: a real login at most every 30 s, a dial every time).
func (r *Relay) Ready(ctx context.Context) error { return r.engine.Ready(ctx) }

type session struct {
	bridge.RelaySession[*session, *validate.AMQPFrame]
	relay *Relay

	// read loop
	in *validate.AMQPScanner

	cred *keyring.Credential // the broker credential for this identity
	acl  acl

	opened bool // upstream: the broker sent connection.open-ok, so the gateway's login is through

	closeOnce   sync.Once
	awaitingOk  atomic.Bool   // we sent connection.close
	closeOk     chan struct{} // closed when the client answers it
	closeOkOnce sync.Once
}

// closeOkFrame is connection.close-ok on channel 0.
var closeOkFrame = validate.AppendAMQPConnectionCloseOK(nil)

// closeWaitTime bounds how long a client may take to answer our
// connection.close with close-ok before the socket goes anyway.
const closeWaitTime = time.Second

// closeConnection ends the session the AMQP way: connection.close with
// the reply code, then (after the client's close-ok, or closeWaitTime)
// the WebSocket close. Clients report the server's reason only when they
// can answer it; dropping the socket at once turns it into a write error.
func (s *session) closeConnection(why outcome.Outcome, reason string, code uint16, reply int, text string) {
	s.closeOnce.Do(func() {
		s.awaitingOk.Store(true)
		if !s.Write(gws.OpcodeBinary, validate.AppendAMQPConnectionClose(nil, reply, text, 0, 0)) {
			s.Finish(why, reason, code, 0, nil)
			return
		}
		go func() {
			select {
			case <-s.closeOk:
			case <-time.After(closeWaitTime):
			}
			s.Finish(why, reason, code, 0, nil)
		}()
	})
}

// Refuse implements bridge.SessionEvents: connection.close (501
// frame-error for a message too large or too slow, 506 resource-error
// when the gateway's memory budget is spent), then the WebSocket close
// at once. The client's close-ok would come behind the rest of the refused
// message, which is no longer read.
func (s *session) Refuse(r bridge.Refusal) {
	reply, text := 501, "FRAME_ERROR - "
	if r.Outcome == outcome.OverBudget {
		reply, text = 506, "RESOURCE_ERROR - "
	}
	s.closeOnce.Do(func() {
		s.awaitingOk.Store(true)
		s.Write(gws.OpcodeBinary, validate.AppendAMQPConnectionClose(nil, reply, text+r.Reason, 0, 0))
		s.Finish(r.Outcome, r.Reason, r.Code, 0, nil)
	})
}

// open implements bridge.Engine.Open.
func (s *session) open() {
	s.in = validate.NewAMQPScanner(s.relay.opts.Limits)
	s.closeOk = make(chan struct{})
}

// end implements bridge.Engine.End: connection.close where AMQP has a
// reply code for why (403 for a missed login, 320 connection-forced for a
// shutdown or an unreachable broker), then the WebSocket close.
func (s *session) end(why outcome.Outcome, reason string, code uint16) {
	switch why {
	case outcome.LoginTimeout:
		s.closeConnection(why, reason, code, replyAccessRefused, "ACCESS_REFUSED - "+reason)
	case outcome.Shutdown:
		s.closeConnection(why, reason, code, 320, "CONNECTION_FORCED - "+reason)
	case outcome.BrokerUnavailable:
		s.closeConnection(why, reason, code, 320, "CONNECTION_FORCED - broker unavailable")
	default:
		s.Finish(why, reason, code, 0, nil)
	}
}

// hold implements bridge.Engine.Hold: once the gateway has sent
// connection.close, only the client's close-ok matters.
func (s *session) hold(data []byte) bool {
	if !s.awaitingOk.Load() {
		return false
	}
	if bytes.Contains(data, closeOkFrame) {
		s.closeOkOnce.Do(func() { close(s.closeOk) })
	}
	return true
}

func (s *session) scan(b []byte) (int, *validate.AMQPFrame, error) { return s.in.Next(b) }

func (s *session) partial() int { return s.in.FrameLen() }

// unit implements bridge.Engine.Unit for one client frame (nil: the
// protocol header).
func (s *session) unit(f *validate.AMQPFrame) bool {
	switch {
	case f == nil: // the protocol header: time to reach the broker
		return s.Dial([]byte(validate.AMQPProtocolHeader))
	case f.Channel != 0 && s.acl.clientClosing != nil && s.dropClient(f):
		if !s.Flush() {
			return false
		}
		s.Skip()
	case f.Channel != 0 && f.Type == validate.AMQPFrameMethod && !s.acl.open:
		held, err := s.acl.method(f, s.Rest())
		if err != nil || held {
			if !s.Flush() || err != nil && !s.refuse(f.Channel, f.Class, f.Method, err) {
				return false
			}
			s.Skip()
		}
	case f.Channel != 0 && f.Type == validate.AMQPFrameHeader && !s.acl.open:
		// A held basic.publish goes on just before its header, or
		// both are refused together.
		pub, err := s.acl.content(f)
		if pub == nil && err == nil {
			break
		}
		if !s.Flush() || err == nil && !s.Forward(pub) {
			return false
		}
		s.acl.release(f.Channel)
		if err != nil {
			if !s.refuse(f.Channel, 60, 40, err) {
				return false
			}
			s.Skip()
		}
	case f.Type == validate.AMQPFrameMethod && f.Class == 10 && f.Method == 11:
		replace := s.startOk(f)
		return replace != nil && s.replace(replace)
	case f.Type == validate.AMQPFrameMethod && f.Class == 10 && f.Method == 31:
		return s.replace(s.tuneOk(f))
	case f.Type == validate.AMQPFrameMethod && f.Class == 10 && f.Method == 40:
		return s.vhostAllowed(f)
	case f.Type == validate.AMQPFrameMethod && f.Class == 10 && f.Method == 70:
		// connection.update-secret would hand the broker a secret for
		// the gateway's login: the credential is the gateway's alone.
		if s.Flush() {
			s.closeConnection(outcome.Forbidden, "connection.update-secret from a client", bridge.ClosePolicy, replyNotAllowed,
				"NOT_ALLOWED - connection.update-secret: the broker credential belongs to the gateway; reconnect with a fresh token")
		}
		return false
	case f.Type == validate.AMQPFrameMethod && f.Class == 10 && (f.Method == 50 || f.Method == 51):
		s.SaidGoodbye()
	}
	return true
}

// replace forwards b in place of the current frame.
func (s *session) replace(b []byte) bool {
	if !s.Forward(b) {
		return false
	}
	s.Skip()
	return true
}

// reject answers a violation: a bad protocol header gets the right one
// back, as a broker does; anything else gets connection.close with the
// reply code, then the WebSocket close.
func (s *session) reject(err error, _ []byte) {
	why, code := bridge.Rejection(err)
	if err == validate.ErrAMQPHeader {
		s.Finish(why, err.Error(), code, gws.OpcodeBinary, []byte(validate.AMQPProtocolHeader))
		return
	}
	reply := validate.AMQPSyntaxError
	var ae *validate.AMQPError
	if errors.As(err, &ae) {
		reply = ae.Code
	}
	s.closeConnection(why, err.Error(), code, reply, err.Error())
}

// startOk authenticates the client from connection.start-ok and rebuilds
// it with the identity's broker credential: client properties and locale
// are kept, the mechanism becomes PLAIN and the response carries the
// keyring credential. It returns nil when the client was refused.
func (s *session) startOk(f *validate.AMQPFrame) []byte {
	p := f.Payload
	props := 4 + 4 + int(binary.BigEndian.Uint32(p[4:]))
	mech := props + 1 + int(p[props])
	resp := mech + 4 + int(binary.BigEndian.Uint32(p[mech:]))
	locale := p[resp:]
	if !s.login(p[props+1:mech], p[mech+4:resp]) {
		return nil
	}
	var response []byte
	if c := s.cred; c != nil {
		response = append(append(append([]byte{0}, c.Username...), 0), c.Password.Reveal()...)
	}
	out := append([]byte(nil), p[:props]...)
	out = append(out, 5, 'P', 'L', 'A', 'I', 'N')
	out = binary.BigEndian.AppendUint32(out, uint32(len(response)))
	out = append(out, response...)
	out = append(out, locale...)
	return validate.AppendAMQPFrame(nil, validate.AMQPFrameMethod, 0, out)
}

// tuneOk forwards connection.tune-ok with channel-max and frame-max as the
// validator now enforces them, so the broker is held to the same limits.
func (s *session) tuneOk(f *validate.AMQPFrame) []byte {
	p := append([]byte(nil), f.Payload...)
	binary.BigEndian.PutUint16(p[4:], uint16(s.in.ChannelMax))
	binary.BigEndian.PutUint32(p[6:], uint32(s.in.FrameMax))
	return validate.AppendAMQPFrame(nil, validate.AMQPFrameMethod, 0, p)
}

func (s *session) vhostAllowed(f *validate.AMQPFrame) bool {
	p := f.Payload
	vhost := string(p[5 : 5+int(p[4])])
	if slices.Contains(s.relay.opts.VHosts, vhost) {
		return true
	}
	s.closeConnection(outcome.Rejected, fmt.Sprintf("virtual host %q not allowed", vhost), bridge.ClosePolicy,
		530, fmt.Sprintf("NOT_ALLOWED - virtual host %q is not open to this route", vhost))
	return false
}

// fromBroker implements bridge.Engine.Broker: frames read together go
// out as one binary WebSocket message.
func (s *session) fromBroker(b []byte, out *bridge.Outbox) (int, bool) {
	max := s.relay.engine.MaxBrokerBytes
	end, count := 0, 0
	// The broker's first bytes may be a protocol header of its own
	// (refusing ours); pass them through whole.
	if len(b) >= 8 && string(b[:4]) == "AMQP" {
		end = 8
	}
	var rebuilt []byte // b[:kept] with the broker's close texts replaced; nil while none was
	kept := 0
	declaring := s.acl.queues.waiting.Load() > 0
	for end+7 <= len(b) {
		size := int(binary.BigEndian.Uint32(b[end+3:]))
		if size+8 > max {
			s.Finish(outcome.BrokerProtocolError, "broker frame over the gateway's frame-max", bridge.CloseInternal, 0, nil)
			return 0, false
		}
		next := end + size + 8
		if next > len(b) {
			break
		}
		if b[end] == validate.AMQPFrameMethod && size >= 4 {
			switch binary.BigEndian.Uint32(b[end+7:]) {
			case 10<<16 | 41: // connection.open-ok
				s.opened = true
			case 10<<16 | 50, 20<<16 | 40: // connection.close, channel.close
				if repl := s.closeForClient(b[end:next], s.opened); repl != nil {
					rebuilt = append(append(rebuilt, b[kept:end]...), repl...)
					kept = next
				}
			}
		}
		if declaring { // learn the names of our server-named queues before the client does
			s.acl.queues.brokerFrame(b[end:next])
		}
		end = next
		count++
	}
	if end > 0 {
		msg := b[:end]
		if rebuilt != nil {
			msg = append(rebuilt, b[kept:end]...)
		}
		out.Add(gws.OpcodeBinary, s.dropBroker(msg))
		if !s.Send(out) {
			return 0, false
		}
		s.Sent(count)
	}
	return end, true
}

// closeForClient is what the client gets of the broker's connection.close
// or channel.close (fr, one whole frame), or nil for fr as it is. Before
// connection.open-ok a close is the broker refusing the gateway's login,
// whose words may name the gateway's broker user ("NOT_ALLOWED - access
// to vhost '/' refused for user 'gw'"): the client gets the reply code
// and its name with a generic text, the operator's log the broker's words.
// A later one that names the broker user (a permission it lacks) goes on
// with the user redacted.
func (s *session) closeForClient(fr []byte, opened bool) []byte {
	p := fr[7 : len(fr)-1]
	if len(p) < 7 || len(p) < 7+int(p[6]) {
		return nil // not a close the client's library could read either
	}
	code, text := binary.BigEndian.Uint16(p[4:]), string(p[7:7+int(p[6])])
	var repl string
	if !opened {
		s.BrokerRefused(text, "reply_code", code)
		// The client's close-ok, and the close that follows, end the
		// session, but the broker refusing the gateway is why: a WARN.
		s.SetOutcome(outcome.BrokerRefused, "the gateway's log has the broker's reason")
		name, _, _ := strings.Cut(text, " - ")
		if name == "" || strings.Trim(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") != "" {
			name = "ACCESS_REFUSED"
		}
		repl = name + " - " + bridge.BrokerRefusedCredential
	} else {
		var named bool
		if repl, named = s.Redact(text); !named {
			return nil
		}
		s.BrokerWarn("amqp broker close names the gateway's broker user; the client gets it redacted", text, "reply_code", code)
	}
	if len(repl) > 255 { // a short string; the redaction may have lengthened it
		repl = repl[:255]
	}
	np := append(append(append([]byte(nil), p[:6]...), byte(len(repl))), repl...)
	np = append(np, p[7+int(p[6]):]...) // the failing method's class and method ids
	return validate.AppendAMQPFrame(nil, fr[0], binary.BigEndian.Uint16(fr[1:]), np)
}
