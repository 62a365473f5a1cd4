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
	MQTTReasonTopicFilterBad    byte = 0x8F
	MQTTReasonTopicNameBad      byte = 0x90
	MQTTReasonPacketTooLarge    byte = 0x95
	MQTTReturnBadVersionV311    byte = 0x01 // CONNACK return code in 3.1/3.1.1
	mqttMaxRemainingLengthBytes      = 4
)

// MQTTError is a violation with the reason code an MQTT 5 peer is told.
type MQTTError struct {
	Reason byte
	Msg    string
	class  error
}

func (e *MQTTError) Error() string { return "mqtt: " + e.Msg + ": " + e.class.Error() }
func (e *MQTTError) Unwrap() error { return e.class }

func mqttErr(class error, reason byte, format string, args ...any) error {
	return &MQTTError{Reason: reason, Msg: fmt.Sprintf(format, args...), class: class}
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
// 3.1, 3.1.1 and 5. PUBLISH and acknowledgements, the hot path, are checked
// without allocating; CONNECT, SUBSCRIBE, UNSUBSCRIBE and AUTH are decoded
// with mochi-mqtt's packets codec.
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

// Next examines buf, which starts at a packet boundary: it returns the
// packet's length and a view of it, 0 and nil when more bytes are needed,
// or an error (*MQTTError) after which the scanner must not be used.
func (s *MQTTScanner) Next(buf []byte) (int, *MQTTPacket, error) {
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
		return s.mochiDecode(p, (*packets.Packet).DisconnectDecode, nil)
	case MQTTSubscribe:
		return s.mochiDecode(p, (*packets.Packet).SubscribeDecode, checkFilters)
	case MQTTUnsubscribe:
		return s.mochiDecode(p, (*packets.Packet).UnsubscribeDecode, checkFilters)
	case MQTTAuth:
		return s.mochiDecode(p, (*packets.Packet).AuthDecode, nil)
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

func (s *MQTTScanner) checkConnect(p *MQTTPacket) error {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTConnect, Remaining: len(p.Body)}}
	if err := safeDecode((*packets.Packet).ConnectDecode, &pk, p.Body); err != nil {
		if pk.ProtocolVersion != 5 && pk.ProtocolVersion != 4 && pk.ProtocolVersion != 3 {
			return mqttErr(ErrPolicy, MQTTReasonBadVersion, "CONNECT: protocol level %d (this gateway speaks MQTT 3.1, 3.1.1 and 5)", pk.ProtocolVersion)
		}
		return mqttErr(ErrMalformed, reasonOf(err), "CONNECT: %v", err)
	}
	if code := pk.ConnectValidate(); code != packets.CodeSuccess {
		reason := code.Code
		if code == packets.ErrProtocolViolationProtocolVersion || code == packets.ErrProtocolViolationProtocolName {
			reason = MQTTReasonBadVersion
			return mqttErr(ErrPolicy, reason, "CONNECT: %s (this gateway speaks MQTT 3.1, 3.1.1 and 5)", code.Reason)
		}
		return mqttErr(ErrMalformed, reason, "CONNECT: %s", code.Reason)
	}
	if pk.Connect.WillFlag {
		if err := checkTopicName([]byte(pk.Connect.WillTopic)); err != nil {
			return err
		}
		if rt := pk.Connect.WillProperties.ResponseTopic; rt != "" {
			if err := checkResponseTopic([]byte(rt)); err != nil {
				return err
			}
		}
	}
	s.Version, s.connected, s.Connect = pk.ProtocolVersion, true, pk
	return nil
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
		var err error
		if off, err = checkProperties(b, off, p); err != nil {
			return err
		}
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
		if _, err := checkProperties(b, 3, p); err != nil {
			return err
		}
	}
	return nil
}

// Property identifiers a client may send, by packet type, and how each is
// encoded. User properties may repeat; no other property may.
const (
	propByte = iota + 1
	propUint16
	propUint32
	propVarInt
	propString
	propBinary
	propPair
)

var mqttProps = map[byte]int{
	0x01: propByte, 0x02: propUint32, 0x03: propString, 0x08: propString, 0x09: propBinary,
	0x0B: propVarInt, 0x11: propUint32, 0x15: propString, 0x16: propBinary, 0x17: propByte,
	0x18: propUint32, 0x19: propByte, 0x1C: propString, 0x1F: propString, 0x21: propUint16,
	0x22: propUint16, 0x23: propUint16, 0x26: propPair, 0x27: propUint32,
}

// checkProperties reads p's property block at b[off:], returning the
// offset after it; a PUBLISH's topic alias and response topic go into p.
// Only PUBLISH and the acknowledgements come here.
func checkProperties(b []byte, off int, p *MQTTPacket) (int, error) {
	typ := p.Type
	n, used, ok := MQTTVarInt(b[off:])
	if !ok || off+used+n > len(b) {
		return 0, mqttErr(ErrMalformed, MQTTReasonMalformed, "property length runs past the packet")
	}
	end := off + used + n
	var seen [64]bool
	for i := off + used; i < end; {
		id := b[i]
		i++
		kind, known := mqttProps[id]
		allowed := known && (typ != MQTTPublish && (id == 0x1F || id == 0x26) ||
			typ == MQTTPublish && (id == 0x01 || id == 0x02 || id == 0x03 || id == 0x08 || id == 0x09 || id == 0x23 || id == 0x26))
		if !allowed {
			return 0, mqttErr(ErrMalformed, MQTTReasonProtocolError, "property %#x not allowed in packet type %d", id, typ)
		}
		if id != 0x26 {
			if seen[id] {
				return 0, mqttErr(ErrMalformed, MQTTReasonProtocolError, "property %#x repeated", id)
			}
			seen[id] = true
		}
		var size int
		switch kind {
		case propByte:
			size = 1
			if i < end && id == 0x01 && b[i] > 1 {
				return 0, mqttErr(ErrMalformed, MQTTReasonProtocolError, "payload format indicator %d", b[i])
			}
		case propUint16:
			size = 2
			if id == 0x23 {
				if i+1 < end {
					if p.Alias = uint16(b[i])<<8 | uint16(b[i+1]); p.Alias == 0 {
						return 0, mqttErr(ErrMalformed, MQTTReasonProtocolError, "topic alias 0")
					}
				}
			}
		case propUint32:
			size = 4
		case propString, propBinary:
			if i+2 > end {
				return 0, mqttErr(ErrMalformed, MQTTReasonMalformed, "property %#x runs past the block", id)
			}
			size = 2 + (int(b[i])<<8 | int(b[i+1]))
			if kind == propString && i+size <= end {
				if s := b[i+2 : i+size]; !utf8.Valid(s) || bytes.IndexByte(s, 0) >= 0 {
					return 0, mqttErr(ErrMalformed, MQTTReasonMalformed, "property %#x is not valid UTF-8", id)
				}
			}
			if id == 0x08 && i+size <= end {
				p.ResponseTopic = b[i+2 : i+size]
				if err := checkResponseTopic(p.ResponseTopic); err != nil {
					return 0, err
				}
			}
		case propPair:
			for range 2 {
				if i+2 > end {
					return 0, mqttErr(ErrMalformed, MQTTReasonMalformed, "user property runs past the block")
				}
				l := int(b[i])<<8 | int(b[i+1])
				if i+2+l > end || !utf8.Valid(b[i+2:i+2+l]) || bytes.IndexByte(b[i+2:i+2+l], 0) >= 0 {
					return 0, mqttErr(ErrMalformed, MQTTReasonMalformed, "user property is not a valid UTF-8 pair")
				}
				i += 2 + l
			}
			continue
		}
		if i+size > end {
			return 0, mqttErr(ErrMalformed, MQTTReasonMalformed, "property %#x runs past the block", id)
		}
		i += size
	}
	return end, nil
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
