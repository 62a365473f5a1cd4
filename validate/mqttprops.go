package validate

import (
	"bytes"
	"fmt"
	"unicode/utf8"
)

// Property encodings (MQTT 5 section 2.2.2.2).
const (
	propByte = iota + 1
	propUint16
	propUint32
	propVarInt
	propString
	propBinary
	propPair
)

// mqttWill is the property context of a CONNECT's will properties, which
// have a set of their own; packet type 0 is reserved, so its number is free.
const mqttWill byte = 0

// mqttProp says how property id is encoded and in which client packets it
// may appear, as bits 1<<packet type (1<<mqttWill: will properties): MQTT 5
// table 2-4, less what only a server sends. kind 0: no such property.
func mqttProp(id byte) (kind int, in uint16) {
	const (
		will        = 1 << mqttWill
		connect     = 1 << MQTTConnect
		publish     = 1 << MQTTPublish
		acks        = 1<<MQTTPuback | 1<<MQTTPubrec | 1<<MQTTPubrel | 1<<MQTTPubcomp
		subscribe   = 1 << MQTTSubscribe
		unsubscribe = 1 << MQTTUnsubscribe
		disconnect  = 1 << MQTTDisconnect
		auth        = 1 << MQTTAuth
	)
	switch id {
	case 0x01: // payload format indicator
		return propByte, publish | will
	case 0x02: // message expiry interval
		return propUint32, publish | will
	case 0x03, 0x08: // content type, response topic
		return propString, publish | will
	case 0x09: // correlation data
		return propBinary, publish | will
	case 0x0B: // subscription identifier: a client's PUBLISH has none (MQTT-3.3.4-6)
		return propVarInt, subscribe
	case 0x11: // session expiry interval
		return propUint32, connect | disconnect
	case 0x15: // authentication method
		return propString, connect | auth
	case 0x16: // authentication data
		return propBinary, connect | auth
	case 0x17, 0x19: // request problem information, request response information
		return propByte, connect
	case 0x18: // will delay interval
		return propUint32, will
	case 0x1C: // server reference
		return propString, disconnect
	case 0x1F: // reason string
		return propString, acks | disconnect | auth
	case 0x21, 0x22: // receive maximum, topic alias maximum
		return propUint16, connect
	case 0x23: // topic alias
		return propUint16, publish
	case 0x26: // user property
		return propPair, will | connect | publish | acks | subscribe | unsubscribe | disconnect | auth
	case 0x27: // maximum packet size
		return propUint32, connect
	case 0x12, 0x1A: // CONNACK's assigned client identifier, response information
		return propString, 0
	case 0x13: // CONNACK's server keep alive
		return propUint16, 0
	case 0x24, 0x25, 0x28, 0x29, 0x2A: // CONNACK's maximum QoS and what the server has available
		return propByte, 0
	}
	return 0, 0
}

// propRule names where the spec defines property id in packet ctx: the
// section, as MQTT 5 numbers no statement for most property rules.
func propRule(ctx, id byte) string {
	switch ctx {
	case MQTTConnect:
		switch id {
		case 0x11:
			return "3.1.2.11.2"
		case 0x21:
			return "3.1.2.11.3"
		case 0x27:
			return "3.1.2.11.4"
		case 0x22:
			return "3.1.2.11.5"
		case 0x19:
			return "3.1.2.11.6"
		case 0x17:
			return "3.1.2.11.7"
		case 0x15:
			return "3.1.2.11.9"
		case 0x16:
			return "3.1.2.11.10"
		}
	case mqttWill:
		switch id {
		case 0x18:
			return "3.1.3.2.2"
		case 0x01:
			return "3.1.3.2.3"
		case 0x02:
			return "3.1.3.2.4"
		case 0x03:
			return "3.1.3.2.5"
		case 0x08:
			return "3.1.3.2.6"
		case 0x09:
			return "3.1.3.2.7"
		}
	case MQTTPublish:
		switch id {
		case 0x01:
			return "3.3.2.3.2"
		case 0x02:
			return "3.3.2.3.3"
		case 0x23:
			return "3.3.2.3.4"
		case 0x08:
			return "3.3.2.3.5"
		case 0x09:
			return "3.3.2.3.6"
		case 0x0B:
			return "MQTT-3.3.4-6"
		case 0x03:
			return "3.3.2.3.9"
		}
	case MQTTSubscribe:
		if id == 0x0B {
			return "3.8.2.1.2"
		}
	case MQTTDisconnect:
		if id == 0x11 {
			return "3.14.2.2.2"
		}
	}
	return "2.2.2.2"
}

// propName names property id for messages.
func propName(id byte) string {
	switch id {
	case 0x01:
		return "Payload Format Indicator"
	case 0x02:
		return "Message Expiry Interval"
	case 0x03:
		return "Content Type"
	case 0x08:
		return "Response Topic"
	case 0x09:
		return "Correlation Data"
	case 0x0B:
		return "Subscription Identifier"
	case 0x11:
		return "Session Expiry Interval"
	case 0x15:
		return "Authentication Method"
	case 0x16:
		return "Authentication Data"
	case 0x17:
		return "Request Problem Information"
	case 0x18:
		return "Will Delay Interval"
	case 0x19:
		return "Request Response Information"
	case 0x1C:
		return "Server Reference"
	case 0x1F:
		return "Reason String"
	case 0x21:
		return "Receive Maximum"
	case 0x22:
		return "Topic Alias Maximum"
	case 0x23:
		return "Topic Alias"
	case 0x26:
		return "User Property"
	case 0x27:
		return "Maximum Packet Size"
	}
	return fmt.Sprintf("property %#x", id)
}

// packetName names a property context for messages.
func packetName(ctx byte) string {
	switch ctx {
	case mqttWill:
		return "will properties"
	case MQTTConnect:
		return "CONNECT"
	case MQTTPublish:
		return "PUBLISH"
	case MQTTPuback, MQTTPubrec, MQTTPubrel, MQTTPubcomp:
		return "acknowledgement"
	case MQTTSubscribe:
		return "SUBSCRIBE"
	case MQTTUnsubscribe:
		return "UNSUBSCRIBE"
	case MQTTDisconnect:
		return "DISCONNECT"
	}
	return "AUTH"
}

// mqttProps is what a property block held that checks after it need.
type mqttProps struct {
	seen          uint64 // bit 1<<id for each property but User Property
	alias         uint16 // topic alias
	responseTopic []byte
	maxPacket     uint32 // maximum packet size; 0: none
	sessionExpiry uint32
	utf8Payload   bool // payload format indicator 1
}

func (v *mqttProps) has(id byte) bool { return v.seen&(1<<id) != 0 }

// checkProps reads the MQTT 5 property block at b[off:] of a packet of
// type ctx (mqttWill: will properties) without allocating: each property
// allowed there (table 2-4), none but User Property twice, values in
// range, strings UTF-8 Encoded Strings (MQTT-1.5.4-1, -2, MQTT-1.5.7-1).
// It returns the offset after the block.
func checkProps(b []byte, off int, ctx byte, v *mqttProps) (int, error) {
	n, used, err := varInt(b[off:], "property length")
	if err != nil {
		return 0, err
	}
	if n > len(b)-off-used {
		return 0, ruleErr(ErrMalformed, MQTTReasonMalformed, "2.2.2.1", "%s: property length runs past the packet", packetName(ctx))
	}
	end := off + used + n
	for i := off + used; i < end; {
		id := b[i]
		i++
		kind, in := mqttProp(id)
		if kind == 0 {
			return 0, ruleErr(ErrMalformed, MQTTReasonMalformed, "2.2.2.2", "%s: no property has identifier %#x", packetName(ctx), id)
		}
		if in&(1<<ctx) == 0 {
			return 0, ruleErr(ErrMalformed, MQTTReasonProtocolError, propRule(ctx, id), "%s: %s is not allowed here", packetName(ctx), propName(id))
		}
		if id != 0x26 {
			if v.has(id) {
				return 0, ruleErr(ErrMalformed, MQTTReasonProtocolError, propRule(ctx, id), "%s: %s more than once", packetName(ctx), propName(id))
			}
			v.seen |= 1 << id
		}
		size := propSize(kind, b[i:end])
		if kind == propVarInt && size > 0 {
			sid, _, err := varInt(b[i:end], "subscription identifier")
			if err != nil {
				return 0, err
			}
			if sid == 0 {
				return 0, ruleErr(ErrMalformed, MQTTReasonProtocolError, propRule(ctx, id), "%s: Subscription Identifier 0", packetName(ctx))
			}
		}
		if size == 0 {
			return 0, ruleErr(ErrMalformed, MQTTReasonMalformed, "2.2.2.2", "%s: %s runs past the property block", packetName(ctx), propName(id))
		}
		if err := checkProp(ctx, id, kind, b[i:i+size], v); err != nil {
			return 0, err
		}
		i += size
	}
	return end, nil
}

// propSize is the length of a property value of this kind at the start
// of b, 0 when it runs past b.
func propSize(kind int, b []byte) int {
	size := 0
	switch kind {
	case propByte:
		size = 1
	case propUint16:
		size = 2
	case propUint32:
		size = 4
	case propVarInt:
		_, size, _ = MQTTVarInt(b)
	case propString, propBinary:
		if len(b) >= 2 {
			size = 2 + (int(b[0])<<8 | int(b[1]))
		}
	case propPair:
		if len(b) < 2 {
			return 0
		}
		if size = 2 + (int(b[0])<<8 | int(b[1])); size > len(b)-2 {
			return 0 // no room for the value's length
		}
		size += 2 + (int(b[size])<<8 | int(b[size+1]))
	}
	if size > len(b) {
		return 0
	}
	return size
}

// checkProp checks one property's value, val, and notes what later checks
// need in v.
func checkProp(ctx, id byte, kind int, val []byte, v *mqttProps) error {
	switch kind {
	case propString:
		if f := stringFault(val[2:], true); f != "" {
			return ruleErr(ErrMalformed, MQTTReasonMalformed, f, "%s: %s is not a UTF-8 Encoded String", packetName(ctx), propName(id))
		}
	case propPair:
		k := val[2 : 2+(int(val[0])<<8|int(val[1]))]
		if f, g := stringFault(k, true), stringFault(val[len(k)+4:], true); f != "" || g != "" {
			return ruleErr(ErrMalformed, MQTTReasonMalformed, "MQTT-1.5.7-1 "+f+g, "%s: user property is not a pair of UTF-8 Encoded Strings", packetName(ctx))
		}
	}
	switch id {
	case 0x01, 0x17, 0x19: // payload format indicator, request problem/response information
		if val[0] > 1 {
			return ruleErr(ErrMalformed, MQTTReasonProtocolError, propRule(ctx, id), "%s: %s is %d, not 0 or 1", packetName(ctx), propName(id), val[0])
		}
		if id == 0x01 {
			v.utf8Payload = val[0] == 1
		}
	case 0x08:
		v.responseTopic = val[2:]
		return checkResponseTopic(v.responseTopic)
	case 0x11:
		v.sessionExpiry = uint32(val[0])<<24 | uint32(val[1])<<16 | uint32(val[2])<<8 | uint32(val[3])
	case 0x21:
		if val[0] == 0 && val[1] == 0 {
			return ruleErr(ErrMalformed, MQTTReasonProtocolError, propRule(ctx, id), "%s: Receive Maximum 0", packetName(ctx))
		}
	case 0x23:
		if v.alias = uint16(val[0])<<8 | uint16(val[1]); v.alias == 0 {
			return ruleErr(ErrMalformed, MQTTReasonProtocolError, propRule(ctx, id), "%s: Topic Alias 0", packetName(ctx))
		}
	case 0x27:
		if v.maxPacket = uint32(val[0])<<24 | uint32(val[1])<<16 | uint32(val[2])<<8 | uint32(val[3]); v.maxPacket == 0 {
			return ruleErr(ErrMalformed, MQTTReasonProtocolError, propRule(ctx, id), "%s: Maximum Packet Size 0", packetName(ctx))
		}
	}
	return nil
}

// varInt reads a Variable Byte Integer in its shortest form
// (MQTT-1.5.5-1).
func varInt(b []byte, what string) (value, used int, err error) {
	value, used, ok := MQTTVarInt(b)
	if !ok {
		return 0, 0, ruleErr(ErrMalformed, MQTTReasonMalformed, "1.5.5", "%s runs past the packet or is longer than 4 bytes", what)
	}
	if used > 1 && b[used-1] == 0 {
		return 0, 0, ruleErr(ErrMalformed, MQTTReasonMalformed, "MQTT-1.5.5-1", "%s not in its shortest form", what)
	}
	return value, used, nil
}

// stringFault says what keeps b from being a UTF-8 Encoded String: ""
// when nothing does, else the statement it breaks (MQTT 5 section 1.5.4,
// MQTT 3.1.1 section 1.5.3). Go's UTF-8 decoder refuses surrogates
// (U+D800..U+DFFF), overlong forms and code points past U+10FFFF.
func stringFault(b []byte, v5 bool) string {
	switch {
	case !utf8.Valid(b):
		return pick(v5, "MQTT-1.5.4-1", "MQTT-1.5.3-1")
	case bytes.IndexByte(b, 0) >= 0:
		return pick(v5, "MQTT-1.5.4-2", "MQTT-1.5.3-2")
	}
	return ""
}

// pick is the MQTT 5 statement when v5, else the MQTT 3.1.1 one (MQTT 3.1
// numbers none; its rules are 3.1.1's where this gateway enforces them).
func pick(v5 bool, v5rule, v311rule string) string {
	if v5 {
		return v5rule
	}
	return v311rule
}
