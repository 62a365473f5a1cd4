package validate

import (
	"bytes"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"
)

// mqttReader reads a packet's fields in order.
type mqttReader struct {
	b   []byte
	off int
}

func (r *mqttReader) byte1() (byte, bool) {
	if r.off >= len(r.b) {
		return 0, false
	}
	r.off++
	return r.b[r.off-1], true
}

func (r *mqttReader) uint16() (uint16, bool) {
	if len(r.b)-r.off < 2 {
		return 0, false
	}
	r.off += 2
	return uint16(r.b[r.off-2])<<8 | uint16(r.b[r.off-1]), true
}

// field reads a two-byte length and that many bytes: a UTF-8 Encoded
// String or Binary Data.
func (r *mqttReader) field() ([]byte, bool) {
	n, ok := r.uint16()
	if !ok || len(r.b)-r.off < int(n) {
		return nil, false
	}
	r.off += int(n)
	return r.b[r.off-int(n) : r.off], true
}

// checkConnect checks a CONNECT field by field against section 3.1 of
// MQTT 3.1.1 and MQTT 5 (MQTT 3.1 is held to 3.1.1's rules, with its own
// client identifier rule); only a CONNECT that passed is decoded by the
// codec, for the caller to rewrite.
func (s *MQTTScanner) checkConnect(p *MQTTPacket) error {
	if err := s.readConnect(p.Body); err != nil {
		if !s.clientMaxPacketKnown {
			s.clientMaxPacket, s.clientMaxPacketKnown = connectMaxPacket(p.Body)
		}
		return err
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTConnect, Remaining: len(p.Body)}}
	if err := safeDecode((*packets.Packet).ConnectDecode, &pk, p.Body); err != nil {
		// The codec reads nothing readConnect refuses to; this is a bug.
		return ruleErr(ErrMalformed, MQTTReasonMalformed, "MQTT-3.1.4-1", "CONNECT passed every check but the codec cannot decode it: %v", err)
	}
	s.Version, s.connected, s.Connect = pk.ProtocolVersion, true, pk
	return nil
}

// readConnect checks every rule of a CONNECT's body, b.
func (s *MQTTScanner) readConnect(b []byte) error {
	malformed := func(rule, msg string) error { return ruleErr(ErrMalformed, MQTTReasonMalformed, rule, "%s", msg) }
	r := mqttReader{b: b}
	name, ok := r.field()
	level, ok2 := r.byte1()
	if !ok || !ok2 {
		return malformed("MQTT-3.1.4-1", "CONNECT ends before its protocol name and level")
	}
	mqtt, mqisdp := string(name) == "MQTT", string(name) == "MQIsdp"
	switch {
	case !mqtt && !mqisdp:
		return ruleErr(ErrPolicy, MQTTReasonBadVersion, "MQTT-3.1.2-1", "CONNECT protocol name %q is neither MQTT nor MQIsdp (MQTT 3.1)", clip(name))
	case mqtt && level != 4 && level != 5, mqisdp && level != 3:
		return ruleErr(ErrPolicy, MQTTReasonBadVersion, "MQTT-3.1.2-2",
			"CONNECT protocol level %d named %s (this gateway speaks MQTT 3.1 as MQIsdp 3, 3.1.1 and 5 as MQTT 4 and 5)", level, name)
	}
	v5 := level == 5
	flags, ok := r.byte1()
	_, ok2 = r.uint16() // keep alive: every value has a meaning
	if !ok || !ok2 {
		return malformed("MQTT-3.1.4-1", "CONNECT ends in its variable header")
	}
	will, willQoS, willRetain := flags&0x04 != 0, flags>>3&3, flags&0x20 != 0
	user, pass, clean := flags&0x80 != 0, flags&0x40 != 0, flags&0x02 != 0
	switch {
	case flags&0x01 != 0:
		return malformed("MQTT-3.1.2-3", "CONNECT reserved flag is 1")
	case !will && willQoS != 0:
		return malformed(pick(v5, "MQTT-3.1.2-11", "MQTT-3.1.2-13 MQTT-3.1.2-11"), "CONNECT has a will QoS but no will flag")
	case will && willQoS == 3:
		return malformed(pick(v5, "MQTT-3.1.2-12", "MQTT-3.1.2-14"), "CONNECT will QoS 3")
	case !will && willRetain:
		return malformed(pick(v5, "MQTT-3.1.2-13", "MQTT-3.1.2-15 MQTT-3.1.2-11"), "CONNECT has will retain but no will flag")
	case !v5 && pass && !user:
		return malformed("MQTT-3.1.2-22", "CONNECT has the password flag without the user name flag (MQTT 5 allows it, 3.1.1 does not)")
	}
	if v5 {
		var props mqttProps
		off, err := checkProps(b, r.off, MQTTConnect, &props)
		if err != nil {
			return err
		}
		r.off = off
		s.clientMaxPacket, s.clientMaxPacketKnown = props.maxPacket, true
		s.sessionExpiryZero = props.sessionExpiry == 0
		if props.has(0x16) && !props.has(0x15) {
			return ruleErr(ErrMalformed, MQTTReasonProtocolError, "3.1.2.11.10", "CONNECT has authentication data but no authentication method")
		}
	}
	id, ok := r.field()
	if !ok {
		return malformed("MQTT-3.1.3-3", "CONNECT ends before its client identifier")
	}
	if f := stringFault(id, v5); f != "" {
		return malformed("MQTT-3.1.3-4 "+f, "CONNECT client identifier is not a UTF-8 Encoded String")
	}
	switch {
	case len(id) > 0:
	case level == 3: // MQTT 3.1 numbers no statements
		return ruleErr(ErrMalformed, MQTTReasonBadClientID, "MQIsdp 3.1", "MQTT 3.1 CONNECT with an empty client identifier (3.1 wants 1 to 23 characters)")
	case level == 4 && !clean:
		return ruleErr(ErrMalformed, MQTTReasonBadClientID, "MQTT-3.1.3-8 MQTT-3.1.3-7", "CONNECT with an empty client identifier must start a clean session")
	}
	if will {
		var props mqttProps
		if v5 {
			off, err := checkProps(b, r.off, mqttWill, &props)
			if err != nil {
				return err
			}
			r.off = off
		}
		topic, ok := r.field()
		payload, ok2 := r.field()
		if !ok || !ok2 {
			return malformed("MQTT-3.1.2-9", "CONNECT has the will flag but ends before its will topic and payload")
		}
		if f := stringFault(topic, v5); f != "" {
			return malformed(pick(v5, "MQTT-3.1.3-11 ", "MQTT-3.1.3-10 ")+f, "CONNECT will topic is not a UTF-8 Encoded String")
		}
		if len(topic) == 0 {
			return ruleErr(ErrMalformed, MQTTReasonTopicNameBad, "MQTT-4.7.3-1", "CONNECT will topic is empty")
		}
		if bytes.ContainsAny(topic, "+#") {
			return ruleErr(ErrMalformed, MQTTReasonTopicNameBad, "MQTT-3.3.2-2", "CONNECT will topic %q holds a wildcard", clip(topic))
		}
		if props.utf8Payload && !utf8.Valid(payload) {
			return ruleErr(ErrMalformed, MQTTReasonPayloadFormat, "3.1.3.2.3", "CONNECT will payload is not UTF-8, as its payload format indicator says it is")
		}
	}
	if user {
		u, ok := r.field()
		if !ok {
			return malformed(pick(v5, "MQTT-3.1.2-17", "MQTT-3.1.2-19"), "CONNECT has the user name flag but ends before a user name")
		}
		if f := stringFault(u, v5); f != "" {
			return malformed(pick(v5, "MQTT-3.1.3-12 ", "MQTT-3.1.3-11 ")+f, "CONNECT user name is not a UTF-8 Encoded String")
		}
	}
	if pass {
		if _, ok := r.field(); !ok {
			return malformed(pick(v5, "MQTT-3.1.2-19", "MQTT-3.1.2-21"), "CONNECT has the password flag but ends before a password")
		}
	}
	if r.off != len(b) {
		rule := "MQTT-3.1.4-1"
		switch {
		case !user:
			rule = pick(v5, "MQTT-3.1.2-16 ", "MQTT-3.1.2-18 ") + rule
		case !pass:
			rule = pick(v5, "MQTT-3.1.2-18 ", "MQTT-3.1.2-20 ") + rule
		}
		return malformed(rule, "CONNECT has bytes after its last field")
	}
	return nil
}

// connectMaxPacket finds the Maximum Packet Size in a refused MQTT 5
// CONNECT, b, whatever else is wrong with it: the smallest non-zero one
// given. known is false when the property block cannot be framed.
func connectMaxPacket(b []byte) (size uint32, known bool) {
	r := mqttReader{b: b}
	_, ok := r.field()
	level, _ := r.byte1()
	_, _ = r.byte1()
	_, ok2 := r.uint16()
	if !ok || !ok2 || level != 5 {
		return 0, false
	}
	n, used, ok := MQTTVarInt(b[r.off:])
	if !ok || n > len(b)-r.off-used {
		return 0, false
	}
	for i, end := r.off+used, r.off+used+n; i < end; {
		id := b[i]
		i++
		kind, _ := mqttProp(id)
		k := propSize(kind, b[i:end])
		if k == 0 {
			return 0, false
		}
		if id == 0x27 {
			if m := uint32(b[i])<<24 | uint32(b[i+1])<<16 | uint32(b[i+2])<<8 | uint32(b[i+3]); m != 0 && (size == 0 || m < size) {
				size = m
			}
		}
		i += k
	}
	return size, true
}
