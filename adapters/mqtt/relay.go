// Package mqtt serves MQTT 3.1, 3.1.1 and 5 over WebSocket and relays to
// an MQTT broker over TCP. Every client packet is checked by validate; the
// CONNECT's username and password are replaced by the route's keyring
// credential (or removed when the route has none), so a browser never
// chooses the broker identity.
package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/lxzan/gws"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/outcome"
	"github.com/wsbridge/wsbridge/validate"
)

// Subprotocols are the MQTT WebSocket subprotocols: "mqtt" (3.1.1 and 5)
// and "mqttv3.1".
var Subprotocols = []string{"mqtt", "mqttv3.1"}

// Options configure one MQTT relay route.
type Options struct {
	bridge.RouteOptions
	// Limits bound client packets.
	Limits validate.MQTTLimits
	// MaxBrokerPacketBytes bounds a packet from the broker (default
	// bridge.DefaultMaxBrokerBytes).
	MaxBrokerPacketBytes int
}

// Relay is the http.Handler for an MQTT relay route.
type Relay struct {
	opts   Options
	engine bridge.Engine[*session, *validate.MQTTPacket]
}

// NewRelay makes a relay handler.
func NewRelay(o Options) *Relay {
	r := &Relay{opts: o}
	r.engine = bridge.Engine[*session, *validate.MQTTPacket]{
		Protocol: "mqtt", Units: "packets", Route: &r.opts.RouteOptions, MaxBrokerBytes: o.MaxBrokerPacketBytes,
		Open: (*session).open, Scan: (*session).scan, Partial: (*session).partial,
		Unit: (*session).unit, Reject: (*session).reject, Broker: (*session).fromBroker, End: (*session).end,
		Goodbye: outcome.Disconnected,
	}
	r.engine.Init(Subprotocols, "", func() (*session, *bridge.RelaySession[*session, *validate.MQTTPacket]) {
		s := &session{relay: r}
		return s, &s.RelaySession
	})
	// MQTT-6.0.0-1: MQTT travels in binary messages only; a text message
	// ends the connection before any of it is read as MQTT.
	r.engine.Upgraders.BinaryOnly = true
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

// session is one client connection; fields under "read loop" belong to the
// gws read goroutine.
type session struct {
	bridge.RelaySession[*session, *validate.MQTTPacket]
	relay *Relay

	// read loop
	in *validate.MQTTScanner

	cred *keyring.Credential // the broker credential for this identity
	acl  acl

	connacked bool // upstream: the broker's CONNACK has been seen

	version atomic.Uint32 // protocol level once CONNECT is seen
	// connackSent: the broker's accepting CONNACK has gone to the client,
	// so an MQTT 5 DISCONNECT may follow (MQTT-3.14.0-1). connackMu is held
	// across that CONNACK's write and the flag's setting: a client that
	// answers the CONNACK at once must find the flag set.
	connackMu   sync.Mutex
	connackSent bool
	// clientMax is the MQTT 5 client's Maximum Packet Size (0: none),
	// which a reason string must not make a packet exceed.
	clientMax atomic.Uint32
}

// disconnectAllowed reports whether the client may be sent an MQTT 5
// DISCONNECT: only after an accepting CONNACK (MQTT-3.14.0-1); before
// that, and in MQTT 3.1.1, the WebSocket close alone says why.
func (s *session) disconnectAllowed() bool {
	s.connackMu.Lock()
	defer s.connackMu.Unlock()
	return s.version.Load() == 5 && s.connackSent
}

// disconnect is an MQTT 5 DISCONNECT with reason and, where it keeps the
// packet within the client's Maximum Packet Size (MQTT-3.14.2-3), text as
// its reason string.
func (s *session) disconnect(reason byte, text string) []byte {
	b := validate.AppendMQTTDisconnect(nil, reason, reasonString(text))
	if max := s.clientMax.Load(); max != 0 && uint32(len(b)) > max {
		return validate.AppendMQTTDisconnect(b[:0], reason, "")
	}
	return b
}

// reasonString bounds text for a reason string: short, and cut at a
// character boundary so it stays a UTF-8 string.
func reasonString(text string) string {
	const max = 120
	if len(text) <= max {
		return text
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut]
}

// open implements bridge.Engine.Open.
func (s *session) open() { s.in = validate.NewMQTTScanner(s.relay.opts.Limits) }

// end implements bridge.Engine.End. Before CONNACK MQTT has no packet for
// most ends (a CONNACK answers a CONNECT, and MQTT 5 allows a server
// DISCONNECT only after CONNACK): the WebSocket close carries the reason.
func (s *session) end(why outcome.Outcome, reason string, code uint16) {
	var answer []byte
	switch why {
	case outcome.Shutdown:
		if s.disconnectAllowed() {
			answer = validate.AppendMQTTDisconnect(nil, 0x8B, "") // server shutting down
		}
	case outcome.BrokerUnavailable:
		answer = connackFor(byte(s.version.Load()), 0x88)
	}
	s.finish(why, answer, reason, code)
}

// Refuse implements bridge.SessionEvents: MQTT 5 clients past CONNACK get
// DISCONNECT 0x95 (packet too large), 0x97 (quota exceeded: the memory
// budget) or 0x81 (malformed: a packet that did not arrive in time, or
// came in a text message); MQTT 3.1.1 has no such packet, and the close
// carries the reason. It may run on a timer's goroutine: it reads no
// read-loop state.
func (s *session) Refuse(r bridge.Refusal) {
	if r.Outcome == outcome.TextMessage {
		r.Reason = "MQTT-6.0.0-1: MQTT packets come in binary WebSocket messages, not text"
	}
	var answer []byte
	if s.disconnectAllowed() {
		reason := byte(0x81)
		switch r.Outcome {
		case outcome.TooLarge:
			reason = 0x95
		case outcome.OverBudget:
			reason = 0x97
		}
		answer = s.disconnect(reason, r.Reason)
	}
	s.finish(r.Outcome, answer, r.Reason, r.Code)
}

func (s *session) scan(b []byte) (int, *validate.MQTTPacket, error) { return s.in.Next(b) }

func (s *session) partial() int { return s.in.PacketLen() }

// unit implements bridge.Engine.Unit for one client packet.
func (s *session) unit(p *validate.MQTTPacket) bool {
	if p.Type == validate.MQTTDisconnect {
		s.SaidGoodbye()
	}
	switch {
	case p.Type == validate.MQTTConnect:
		return s.login() && s.connect()
	case s.acl.open:
	case p.Type == validate.MQTTPublish:
		if err := s.acl.publish(p); err != nil {
			// Packets before the refused one were allowed: they go.
			if !s.Flush() || !s.refusePublish(p, err) {
				return false
			}
			s.Skip()
		}
	case p.Type == validate.MQTTSubscribe:
		rewritten, answer, err := s.subscribeFiltered()
		if err != nil {
			s.finish(outcome.Rejected, nil, "re-encoding SUBSCRIBE: "+err.Error(), bridge.CloseProtocolError)
			return false
		}
		if !s.Flush() || rewritten != nil && !s.Forward(rewritten) || answer != nil && !s.Write(gws.OpcodeBinary, answer) {
			return false
		}
		s.Skip()
	case p.Type == validate.MQTTAuth:
		// Re-authentication could change the broker identity the
		// gateway chose (see acl.connect).
		if s.Flush() {
			s.finish(outcome.Forbidden, validate.AppendMQTTDisconnect(nil, reasonNotAuthorized, "re-authentication not allowed"), errAuthMethod.Error(), bridge.ClosePolicy)
		}
		return false
	}
	return true
}

// reject answers a violation the MQTT way, then closes. MQTT 5: a refused
// CONNECT gets CONNACK with the reason code, a later packet DISCONNECT,
// both with the rule broken as reason string where the error names one and
// the client's Maximum Packet Size allows. MQTT 3.1.1 refuses a malformed CONNECT without
// CONNACK (MQTT-3.1.4-1), answering only an unsupported level (0x01,
// MQTT-3.1.2-2) and a refused client identifier (0x02, MQTT-3.1.3-8); after
// CONNECT it has no way to say why. The log and the close frame name the
// rule.
func (s *session) reject(err error, bad []byte) {
	var me *validate.MQTTError
	reason, text := validate.MQTTReasonMalformed, ""
	if errors.As(err, &me) {
		reason = me.Reason
		if me.Rule != "" {
			text = me.Rule + ": " + me.Msg
		}
	}
	var answer []byte
	switch {
	case !s.in.Connected():
		switch v := connectVersion(bad); {
		case v == 5:
			answer = s.connackRefusal(reason, text)
		case reason == validate.MQTTReasonBadVersion:
			answer = validate.AppendMQTTConnack(nil, 4, validate.MQTTReturnBadVersionV311, "")
		case reason == validate.MQTTReasonBadClientID:
			answer = validate.AppendMQTTConnack(nil, 4, validate.MQTTReturnBadClientIDV311, "")
		}
	case s.disconnectAllowed():
		if reason == validate.MQTTReasonPacketTooLarge && me != nil {
			// Named like the WebSocket layer's refusal, so that the client
			// learns which setting it ran into.
			text = me.Msg + " (limits.mqtt.max_packet_bytes)"
		}
		answer = s.disconnect(reason, text)
	}
	// mqtt.js writes a PUBLISH's fixed header as a WebSocket message of
	// its own, so its size is refused here rather than by the WebSocket
	// layer: the same outcome either way.
	why, code := bridge.Rejection(err)
	s.finish(why, answer, err.Error(), code)
}

// connackRefusal is the MQTT 5 CONNACK refusing a CONNECT with reason and,
// where the client's Maximum Packet Size allows (MQTT-3.2.2-19, as far as
// the refused CONNECT tells it), text as reason string.
func (s *session) connackRefusal(reason byte, text string) []byte {
	bare := validate.AppendMQTTConnack(nil, 5, reason, "")
	max, known := s.in.ClientMaxPacket()
	if !known || text == "" {
		return bare
	}
	b := validate.AppendMQTTConnack(nil, 5, reason, reasonString(text))
	if max != 0 && uint32(len(b)) > max {
		return bare
	}
	return b
}

// connectVersion peeks at a CONNECT's protocol level, 0 when unreadable.
func connectVersion(b []byte) byte {
	if len(b) < 2 || b[0]>>4 != validate.MQTTConnect {
		return 0
	}
	i := 1
	for i < len(b) && i < 5 && b[i]&0x80 != 0 {
		i++
	}
	i++
	if i+2 > len(b) {
		return 0
	}
	n := int(b[i])<<8 | int(b[i+1])
	if i+2+n >= len(b) {
		return 0
	}
	return b[i+2+n]
}

// connect rewrites the CONNECT with the route's identity, dials the broker
// and sends it.
func (s *session) connect() bool {
	pk := s.in.Connect
	s.version.Store(uint32(pk.ProtocolVersion))
	max, _ := s.in.ClientMaxPacket()
	s.clientMax.Store(max)
	pk.Connect.UsernameFlag, pk.Connect.Username = false, nil
	pk.Connect.PasswordFlag, pk.Connect.Password = false, nil
	if c := s.cred; c != nil {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(c.Username)
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(c.Password.Reveal())
	}
	// Client identifiers are the identity's own: alice's "app" is not
	// bob's "app", so one identity cannot take over another's session.
	if id := s.Identity; id != nil && id.Subject != "" && pk.Connect.ClientIdentifier != "" {
		pk.Connect.ClientIdentifier = bridge.ClientIDPrefix(id.Subject) + pk.Connect.ClientIdentifier
	}
	pk.Mods.AllowResponseInfo = true // or mochi drops will properties when encoding v5
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		s.finish(outcome.Rejected, connackFor(pk.ProtocolVersion, validate.MQTTReasonMalformed), "re-encoding CONNECT: "+err.Error(), bridge.CloseProtocolError)
		return false
	}
	return s.Dial(buf.Bytes())
}

// connackFor is a refusing CONNACK: MQTT 5 reason codes, or the 3.1.1
// "server unavailable" return code.
func connackFor(v, reason byte) []byte {
	if v == 5 {
		return validate.AppendMQTTConnack(nil, 5, reason, "")
	}
	return validate.AppendMQTTConnack(nil, v, returnUnavailableV311, "")
}

// fromBroker implements bridge.Engine.Broker: all complete packets read
// at once go out as one WebSocket message, which MQTT over WebSocket
// allows and which saves a write per packet under load.
func (s *session) fromBroker(b []byte, out *bridge.Outbox) (int, bool) {
	o := &s.relay.opts
	end, count, err := completePackets(b, s.relay.engine.MaxBrokerBytes)
	if err != nil {
		o.Log.Warn("mqtt broker sent an invalid packet", "route", o.Route, "backend", o.Backend, "error", err.Error())
		s.finish(outcome.BrokerProtocolError, nil, "broker sent an invalid packet", bridge.CloseInternal)
		return 0, false
	}
	if end == 0 {
		return 0, true
	}
	msg, accepted := b[:end], false
	if !s.connacked {
		s.connacked = true
		msg, accepted = s.connack(msg)
	}
	out.Add(gws.OpcodeBinary, s.mergeSubacks(msg))
	if !s.send(out, accepted) {
		return 0, false
	}
	s.Sent(count)
	return end, true
}

// send writes out; when it holds the broker's accepting CONNACK,
// connackSent is set in the same hold of connackMu as the write.
func (s *session) send(out *bridge.Outbox, acceptingConnack bool) bool {
	if !acceptingConnack {
		return s.Send(out)
	}
	s.connackMu.Lock()
	defer s.connackMu.Unlock()
	s.connackSent = s.Send(out)
	return s.connackSent
}

// Broker CONNACK codes that refuse the gateway's credential: MQTT 3.1.1
// return codes and MQTT 5 reason codes.
var credentialRefusals = map[byte]string{
	0x04: "bad user name or password", 0x05: "not authorized",
	0x86: "bad user name or password", 0x87: "not authorized", 0x8C: "bad authentication method",
}

// connack looks at the broker's first packets, b (whole ones), which begin
// with its CONNACK, and reports whether it accepted. A refusal is logged at
// WARN with the backend and the keyring entry.
func (s *session) connack(b []byte) ([]byte, bool) {
	out, code, reason := clientConnack(b, s.version.Load() == 5)
	if code == 0 {
		return out, b[0] == validate.MQTTConnack<<4
	}
	said := fmt.Sprintf("CONNACK 0x%02x", code)
	if reason != "" {
		said += " " + reason
	}
	if what, ok := credentialRefusals[code]; ok {
		s.BrokerRefused(said+" ("+what+")", "connack_code", code)
		// The broker's close that follows ends the session, but its
		// refusal of the gateway is why.
		s.SetOutcome(outcome.BrokerRefused, "the gateway's log has the broker's reason")
	} else {
		s.BrokerWarn("mqtt broker refused the gateway's connection", said, "connack_code", code)
	}
	return out, false
}

// clientConnack is what the client gets of the broker's first packets, b,
// which begin with its CONNACK: as they are, unless the CONNACK refuses;
// then the client gets its code, which names no one, but none of an MQTT 5
// CONNACK's properties, whose reason string or user properties may name
// the gateway's broker user. code is the refusal's (0: none), reason the
// broker's reason string, for the operator.
func clientConnack(b []byte, v5 bool) (out []byte, code byte, reason string) {
	if b[0] != validate.MQTTConnack<<4 {
		return b, 0, "" // not a CONNACK: the client's library will say so
	}
	rl, used, _ := validate.MQTTVarInt(b[1:]) // whole, as completePackets checked
	hl := 1 + used                            // the fixed header's length
	size := hl + rl
	if rl < 2 {
		return b, 0, ""
	}
	code = b[hl+1]
	if code == 0 || (!v5 && code > 5) || (v5 && code < 0x80) {
		return b, 0, ""
	}
	if !v5 {
		return b, code, ""
	}
	pk := packets.Packet{ProtocolVersion: 5, FixedHeader: packets.FixedHeader{Type: packets.Connack, Remaining: rl}}
	if pk.ConnackDecode(b[hl:size]) == nil {
		reason = pk.Properties.ReasonString
	}
	return append(validate.AppendMQTTConnack(nil, 5, code, ""), b[size:]...), code, reason
}

// completePackets returns how many leading bytes of b are whole packets.
func completePackets(b []byte, max int) (end, count int, err error) {
	for end < len(b) {
		rl, mult, i := 0, 1, end+1
		for ; ; i++ {
			if i-end > 4 {
				return 0, 0, fmt.Errorf("remaining length longer than 4 bytes")
			}
			if i >= len(b) {
				return end, count, nil
			}
			rl += int(b[i]&0x7f) * mult
			mult <<= 7
			if b[i]&0x80 == 0 {
				break
			}
		}
		total := i + 1 - end + rl
		if total > max {
			return 0, 0, fmt.Errorf("packet of %d bytes over the %d-byte limit", total, max)
		}
		if end+total > len(b) {
			return end, count, nil
		}
		end += total
		count++
	}
	return end, count, nil
}

// finish ends the session once: answer (an MQTT packet) first if any, then
// the WebSocket close.
func (s *session) finish(why outcome.Outcome, answer []byte, reason string, code uint16) {
	s.Finish(why, reason, code, gws.OpcodeBinary, answer)
}
