package validate

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"
)

// MQTT control packet types.
const (
	MQTTConnect     byte = 1
	MQTTConnack     byte = 2
	MQTTPublish     byte = 3
	MQTTPuback      byte = 4
	MQTTPubrec      byte = 5
	MQTTPubrel      byte = 6
	MQTTPubcomp     byte = 7
	MQTTSubscribe   byte = 8
	MQTTSuback      byte = 9
	MQTTUnsubscribe byte = 10
	MQTTUnsuback    byte = 11
	MQTTPingreq     byte = 12
	MQTTPingresp    byte = 13
	MQTTDisconnect  byte = 14
	MQTTAuth        byte = 15
)

// MQTT 5 reason codes the gateway answers with.
const (
	MQTTReasonMalformed         byte = 0x81
	MQTTReasonProtocolError     byte = 0x82
	MQTTReasonBadVersion        byte = 0x84
	MQTTReasonBadClientID       byte = 0x85
	MQTTReasonTopicFilterBad    byte = 0x8F
	MQTTReasonTopicNameBad      byte = 0x90
	MQTTReasonPacketTooLarge    byte = 0x95
	MQTTReasonPayloadFormat     byte = 0x99
	MQTTReturnBadVersionV311    byte = 0x01 // CONNACK return code in 3.1/3.1.1
	MQTTReturnBadClientIDV311   byte = 0x02 // CONNACK return code in 3.1/3.1.1
	mqttMaxRemainingLengthBytes      = 4
)

// MQTTError is a violation with the reason code an MQTT 5 peer is told.
type MQTTError struct {
	Reason byte
	// Rule names what was broken: normative statement ids ("MQTT-3.1.2-3",
	// most specific first, space-separated) or, where the spec numbers no
	// statement, the section ("3.1.2.11.2"); empty for older checks.
	Rule  string
	Msg   string
	class error
}

func (e *MQTTError) Error() string {
	if e.Rule == "" {
		return "mqtt: " + e.Msg + ": " + e.class.Error()
	}
	return "mqtt: " + e.Rule + ": " + e.Msg + ": " + e.class.Error()
}

func (e *MQTTError) Unwrap() error { return e.class }

func mqttErr(class error, reason byte, format string, args ...any) error {
	return &MQTTError{Reason: reason, Msg: fmt.Sprintf(format, args...), class: class}
}

func ruleErr(class error, reason byte, rule, format string, args ...any) error {
	return &MQTTError{Reason: reason, Rule: rule, Msg: fmt.Sprintf(format, args...), class: class}
}

// MQTTLimits bounds client packets.
type MQTTLimits struct {
	// MaxPacketBytes bounds a whole packet, fixed header included.
	MaxPacketBytes int
}

// DefaultMQTTLimits are used where a config is silent: a packet carries a
// 1 MiB payload with its topic and properties.
func DefaultMQTTLimits() MQTTLimits { return MQTTLimits{MaxPacketBytes: 1<<20 + 64<<10} }

// MQTTPacket is one framed packet; it aliases the scanned buffer.
type MQTTPacket struct {
	Type  byte
	Flags byte
	// Raw is the whole packet; Body is what follows the fixed header.
	Raw, Body []byte
	// For PUBLISH: the topic name (empty when only a topic alias names
	// it), the MQTT 5 topic alias (0 for none) and the packet identifier
	// (0 at QoS 0).
	Topic    []byte
	Alias    uint16
	PacketID uint16
	// ResponseTopic is a PUBLISH's MQTT 5 response topic (nil for none):
	// where a responder will publish on the client's behalf.
	ResponseTopic []byte
}

// MQTTScanner frames and checks client packets incrementally: CONNECT
// first and once, packet types and flags, remaining-length encoding, size
// limit, and the contents of every packet type a client may send, for MQTT
// 3.1, 3.1.1 and 5. Every rule is checked here, on the client's bytes:
// PUBLISH and acknowledgements, the hot path, without allocating. Only what
// passed is then decoded with mochi-mqtt's packets codec (CONNECT,
// SUBSCRIBE, UNSUBSCRIBE, AUTH, MQTT 5 DISCONNECT), for callers that
// rewrite packets; its own leniency or strictness decides nothing.
type MQTTScanner struct {
	Limits MQTTLimits
	// Version is the protocol level from CONNECT: 3, 4 (3.1.1) or 5.
	Version byte
	// Connect is the decoded CONNECT, for the caller to rewrite.
	Connect packets.Packet
	// Decoded is the last SUBSCRIBE, UNSUBSCRIBE, AUTH or MQTT 5
	// DISCONNECT, as mochi-mqtt decoded it.
	Decoded   packets.Packet
	connected bool
	pk        MQTTPacket
	// The MQTT 5 CONNECT's Maximum Packet Size (0: none) and whether it
	// is known: a refused CONNECT may be too broken to tell.
	clientMaxPacket      uint32
	clientMaxPacketKnown bool
	sessionExpiryZero    bool // the MQTT 5 CONNECT's Session Expiry Interval was 0
	want                 int  // see PacketLen
}

// NewMQTTScanner returns a scanner; zero limits take the defaults.
func NewMQTTScanner(lim MQTTLimits) *MQTTScanner {
	if lim.MaxPacketBytes <= 0 {
		lim = DefaultMQTTLimits()
	}
	return &MQTTScanner{Limits: lim}
}

// Connected reports whether a CONNECT has been accepted.
func (s *MQTTScanner) Connected() bool { return s.connected }

// ClientMaxPacket is the Maximum Packet Size an MQTT 5 client's CONNECT
// asked for (0: none, so the protocol's limit), which no packet to it may
// exceed (MQTT-3.1.2-24): a reason string that would is left out
// (MQTT-3.2.2-19, MQTT-3.14.2-3). known is false when the CONNECT was too
// broken to tell, or has not come.
func (s *MQTTScanner) ClientMaxPacket() (size uint32, known bool) {
	return s.clientMaxPacket, s.clientMaxPacketKnown
}

// PacketLen is the whole length of the packet the last Next was waiting
// on, once its remaining length is in (and within the size limit); 0
// before then or when Next was not waiting. A caller gathering the
// packet's pieces can size its buffer for it once.
func (s *MQTTScanner) PacketLen() int { return s.want }

// Next examines buf, which starts at a packet boundary: it returns the
// packet's length and a view of it, 0 and nil when more bytes are needed,
// or an error (*MQTTError) after which the scanner must not be used.
func (s *MQTTScanner) Next(buf []byte) (int, *MQTTPacket, error) {
	s.want = 0
	if len(buf) == 0 {
		return 0, nil, nil
	}
	typ, flags := buf[0]>>4, buf[0]&0x0f
	if err := s.checkType(typ, flags); err != nil {
		return 0, nil, err
	}
	rl, mult, i := 0, 1, 1
	for {
		if i > mqttMaxRemainingLengthBytes {
			return 0, nil, mqttErr(ErrMalformed, MQTTReasonMalformed, "remaining length longer than 4 bytes")
		}
		if i >= len(buf) {
			return 0, nil, nil
		}
		b := buf[i]
		rl += int(b&0x7f) * mult
		mult <<= 7
		i++
		if b&0x80 == 0 {
			if b == 0 && i > 2 {
				return 0, nil, mqttErr(ErrMalformed, MQTTReasonMalformed, "remaining length not in its shortest form")
			}
			break
		}
	}
	total := i + rl
	if total > s.Limits.MaxPacketBytes {
		return 0, nil, mqttErr(ErrTooLarge, MQTTReasonPacketTooLarge, "packet of %d bytes exceeds the %d-byte limit", total, s.Limits.MaxPacketBytes)
	}
	if len(buf) < total {
		s.want = total
		return 0, nil, nil
	}
	s.pk = MQTTPacket{Type: typ, Flags: flags, Raw: buf[:total], Body: buf[i:total]}
	if err := s.checkBody(&s.pk); err != nil {
		return 0, nil, err
	}
	return total, &s.pk, nil
}

func (s *MQTTScanner) checkType(typ, flags byte) error {
	switch typ {
	case MQTTConnect, MQTTPuback, MQTTPubrec, MQTTPubcomp, MQTTPingreq, MQTTDisconnect, MQTTAuth:
		if flags != 0 {
			return mqttErr(ErrMalformed, MQTTReasonMalformed, "packet type %d with reserved flags %#x", typ, flags)
		}
	case MQTTPubrel, MQTTSubscribe, MQTTUnsubscribe:
		if flags != 0x2 {
			return mqttErr(ErrMalformed, MQTTReasonMalformed, "packet type %d must have flags 0x2, not %#x", typ, flags)
		}
	case MQTTPublish:
		if flags>>1&3 == 3 {
			return mqttErr(ErrMalformed, MQTTReasonMalformed, "PUBLISH with QoS 3")
		}
		if flags&0x8 != 0 && flags>>1&3 == 0 {
			return mqttErr(ErrMalformed, MQTTReasonMalformed, "PUBLISH with DUP set at QoS 0")
		}
	default:
		return mqttErr(ErrMalformed, MQTTReasonProtocolError, "packet type %d is not sent by clients", typ)
	}
	if !s.connected && typ != MQTTConnect {
		return mqttErr(ErrPolicy, MQTTReasonProtocolError, "first packet must be CONNECT, not type %d", typ)
	}
	if s.connected && typ == MQTTConnect {
		return mqttErr(ErrPolicy, MQTTReasonProtocolError, "CONNECT sent twice")
	}
	if typ == MQTTAuth && s.connected && s.Version != 5 {
		return mqttErr(ErrMalformed, MQTTReasonProtocolError, "AUTH exists in MQTT 5 only")
	}
	return nil
}

func (s *MQTTScanner) checkBody(p *MQTTPacket) error {
	switch p.Type {
	case MQTTConnect:
		return s.checkConnect(p)
	case MQTTPublish:
		return s.checkPublish(p)
	case MQTTPuback, MQTTPubrec, MQTTPubrel, MQTTPubcomp:
		return s.checkAck(p)
	case MQTTPingreq:
		if len(p.Body) != 0 {
			return mqttErr(ErrMalformed, MQTTReasonMalformed, "PINGREQ with a body")
		}
	case MQTTDisconnect:
		if s.Version != 5 {
			if len(p.Body) != 0 {
				return mqttErr(ErrMalformed, MQTTReasonMalformed, "DISCONNECT with a body before MQTT 5")
			}
			return nil
		}
		if err := s.checkDisconnect(p); err != nil {
			return err
		}
		return s.mochiDecode(p, (*packets.Packet).DisconnectDecode, nil)
	case MQTTSubscribe:
		if err := s.propsAt(p, 2); err != nil {
			return err
		}
		return s.mochiDecode(p, (*packets.Packet).SubscribeDecode, checkFilters)
	case MQTTUnsubscribe:
		if err := s.propsAt(p, 2); err != nil {
			return err
		}
		return s.mochiDecode(p, (*packets.Packet).UnsubscribeDecode, checkFilters)
	case MQTTAuth:
		// A Remaining Length under 2 means no property length (3.15.2.2.1).
		if len(p.Body) >= 2 {
			if err := s.propsAt(p, 1); err != nil {
				return err
			}
		}
		return s.mochiDecode(p, (*packets.Packet).AuthDecode, nil)
	}
	return nil
}

// propsAt checks the MQTT 5 property block at p.Body[off:] of a SUBSCRIBE,
// UNSUBSCRIBE or AUTH, before the codec decodes it (the codec takes a
// repeated property or one out of range without a word).
func (s *MQTTScanner) propsAt(p *MQTTPacket, off int) error {
	if s.Version != 5 {
		return nil
	}
	if len(p.Body) < off {
		return mqttErr(ErrMalformed, MQTTReasonMalformed, "%s ends before its properties", packetName(p.Type))
	}
	var v mqttProps
	_, err := checkProps(p.Body, off, p.Type, &v)
	return err
}

// checkDisconnect checks an MQTT 5 DISCONNECT's properties: a session that
// began with Session Expiry Interval 0 cannot be given one at its end
// (MQTT-3.14.2-2).
func (s *MQTTScanner) checkDisconnect(p *MQTTPacket) error {
	if len(p.Body) < 2 { // a reason code alone, or nothing (3.14.2.2.1)
		return nil
	}
	var v mqttProps
	if _, err := checkProps(p.Body, 1, MQTTDisconnect, &v); err != nil {
		return err
	}
	if s.sessionExpiryZero && v.has(0x11) && v.sessionExpiry != 0 {
		return ruleErr(ErrMalformed, MQTTReasonProtocolError, "MQTT-3.14.2-2", "DISCONNECT sets a session expiry interval for a session begun with 0")
	}
	return nil
}

// mochiDecode decodes a rare packet with mochi-mqtt and applies check.
func (s *MQTTScanner) mochiDecode(p *MQTTPacket, decode func(*packets.Packet, []byte) error, check func(*packets.Packet) error) error {
	pk := packets.Packet{ProtocolVersion: s.Version, FixedHeader: packets.FixedHeader{Type: p.Type, Qos: p.Flags >> 1 & 3, Remaining: len(p.Body)}}
	if err := safeDecode(decode, &pk, p.Body); err != nil {
		return mqttErr(ErrMalformed, reasonOf(err), "packet type %d: %v", p.Type, err)
	}
	if check != nil {
		if err := check(&pk); err != nil {
			return err
		}
	}
	s.Decoded = pk
	return nil
}

// safeDecode runs a mochi-mqtt decoder on client bytes. Fuzzing found
// inputs that make SubscribeDecode index past its buffer (mochi-mqtt
// v2.7.9); a decoder panic is a malformed packet, never a crash.
func safeDecode(decode func(*packets.Packet, []byte) error, pk *packets.Packet, b []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("undecodable (%v)", r)
		}
	}()
	return decode(pk, b)
}

func reasonOf(err error) byte {
	var c packets.Code
	if errors.As(err, &c) && c.Code >= 0x80 {
		return c.Code
	}
	return MQTTReasonMalformed
}

// checkPublish reads a PUBLISH without allocating: topic name, packet id
// for QoS > 0, and in MQTT 5 the property block.
func (s *MQTTScanner) checkPublish(p *MQTTPacket) error {
	b := p.Body
	if len(b) < 2 {
		return mqttErr(ErrMalformed, MQTTReasonMalformed, "PUBLISH without a topic name")
	}
	n := int(b[0])<<8 | int(b[1])
	if len(b) < 2+n {
		return mqttErr(ErrMalformed, MQTTReasonMalformed, "PUBLISH topic name runs past the packet")
	}
	topic := b[2 : 2+n]
	p.Topic = topic
	off := 2 + n
	if p.Flags>>1&3 > 0 {
		if len(b) < off+2 {
			return mqttErr(ErrMalformed, MQTTReasonMalformed, "PUBLISH at QoS %d without a packet identifier", p.Flags>>1&3)
		}
		p.PacketID = uint16(b[off])<<8 | uint16(b[off+1])
		if p.PacketID == 0 {
			return mqttErr(ErrMalformed, MQTTReasonProtocolError, "PUBLISH with packet identifier 0")
		}
		off += 2
	}
	if s.Version == 5 {
		var v mqttProps
		var err error
		if off, err = checkProps(b, off, MQTTPublish, &v); err != nil {
			return err
		}
		p.Alias, p.ResponseTopic = v.alias, v.responseTopic
	}
	if len(topic) == 0 && p.Alias == 0 {
		return mqttErr(ErrMalformed, MQTTReasonTopicNameBad, "PUBLISH with an empty topic name and no topic alias")
	}
	if len(topic) > 0 {
		return checkTopicName(topic)
	}
	return nil
}

func checkTopicName(t []byte) error {
	if !utf8.Valid(t) || bytes.IndexByte(t, 0) >= 0 {
		return mqttErr(ErrMalformed, MQTTReasonTopicNameBad, "topic name is not valid UTF-8 or holds U+0000")
	}
	if bytes.ContainsAny(t, "+#") {
		return mqttErr(ErrMalformed, MQTTReasonTopicNameBad, "topic name %q holds a wildcard", clip(t))
	}
	return nil
}

// checkResponseTopic: a response topic is a topic name, so not empty and
// without wildcards (MQTT-3.3.2-14, MQTT-4.7.3-1).
func checkResponseTopic(t []byte) error {
	if len(t) == 0 {
		return mqttErr(ErrMalformed, MQTTReasonProtocolError, "empty response topic")
	}
	if !utf8.Valid(t) || bytes.IndexByte(t, 0) >= 0 || bytes.ContainsAny(t, "+#") {
		return mqttErr(ErrMalformed, MQTTReasonProtocolError, "response topic %q is not a valid topic name", clip(t))
	}
	return nil
}

// checkFilters applies the topic filter rules mochi's decoder leaves out.
func checkFilters(pk *packets.Packet) error {
	if pk.PacketID == 0 {
		return mqttErr(ErrMalformed, MQTTReasonProtocolError, "SUBSCRIBE or UNSUBSCRIBE with packet identifier 0")
	}
	if len(pk.Filters) == 0 {
		return mqttErr(ErrMalformed, MQTTReasonProtocolError, "SUBSCRIBE or UNSUBSCRIBE without a topic filter")
	}
	for _, f := range pk.Filters {
		if err := checkFilter(f.Filter); err != nil {
			return err
		}
		if f.Qos > 2 || f.RetainHandling > 2 {
			return mqttErr(ErrMalformed, MQTTReasonMalformed, "subscription options out of range for %q", clip([]byte(f.Filter)))
		}
	}
	return nil
}

// checkFilter: non-empty UTF-8 without U+0000; '#' only as the whole last
// level; '+' only as a whole level.
func checkFilter(f string) error {
	if f == "" || !utf8.ValidString(f) || bytes.IndexByte([]byte(f), 0) >= 0 {
		return mqttErr(ErrMalformed, MQTTReasonTopicFilterBad, "topic filter %q is empty, not UTF-8 or holds U+0000", clip([]byte(f)))
	}
	level := 0
	for i := 0; i < len(f); i++ {
		switch f[i] {
		case '/':
			level = 0
			continue
		case '#':
			if level != 0 || i != len(f)-1 {
				return mqttErr(ErrMalformed, MQTTReasonTopicFilterBad, "topic filter %q: '#' must be the whole last level", clip([]byte(f)))
			}
		case '+':
			if level != 0 || (i+1 < len(f) && f[i+1] != '/') {
				return mqttErr(ErrMalformed, MQTTReasonTopicFilterBad, "topic filter %q: '+' must be a whole level", clip([]byte(f)))
			}
		}
		level++
	}
	return nil
}

// checkAck reads PUBACK, PUBREC, PUBREL and PUBCOMP: a non-zero packet id,
// and in MQTT 5 an optional reason code and properties.
func (s *MQTTScanner) checkAck(p *MQTTPacket) error {
	b := p.Body
	if len(b) < 2 {
		return mqttErr(ErrMalformed, MQTTReasonMalformed, "acknowledgement without a packet identifier")
	}
	if b[0] == 0 && b[1] == 0 {
		return mqttErr(ErrMalformed, MQTTReasonProtocolError, "acknowledgement with packet identifier 0")
	}
	if s.Version != 5 {
		if len(b) != 2 {
			return mqttErr(ErrMalformed, MQTTReasonMalformed, "acknowledgement with %d bytes, want 2", len(b))
		}
		return nil
	}
	if len(b) > 3 {
		var v mqttProps
		if _, err := checkProps(b, 3, p.Type, &v); err != nil {
			return err
		}
	}
	return nil
}

// MQTTVarInt decodes an MQTT variable byte integer at the start of b: its
// value and length, or ok=false when b ends first or it runs past 4 bytes.
func MQTTVarInt(b []byte) (value, used int, ok bool) {
	mult := 1
	for i := 0; i < len(b) && i < 4; i++ {
		value += int(b[i]&0x7f) * mult
		mult <<= 7
		if b[i]&0x80 == 0 {
			return value, i + 1, true
		}
	}
	return 0, 0, false
}
