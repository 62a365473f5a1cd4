package validate

import "encoding/binary"

// mqttReasonStringProp is the MQTT 5 Reason String property's identifier.
const mqttReasonStringProp = 0x1F

// AppendMQTTFixedHeader appends a fixed header: first (the packet type
// in the high nibble, its flags in the low one) and remaining, the
// length of what follows, as a variable byte integer (at most four bytes:
// remaining below 268,435,456).
func AppendMQTTFixedHeader(b []byte, first byte, remaining int) []byte {
	b = append(b, first)
	for {
		c := byte(remaining & 0x7f)
		remaining >>= 7
		if remaining > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if remaining == 0 {
			return b
		}
	}
}

// appendMQTTReasonProps appends an MQTT 5 property list holding reason
// as its Reason String, or an empty one when reason is "".
func appendMQTTReasonProps(b []byte, reason string) []byte {
	if reason == "" {
		return append(b, 0)
	}
	b = append(b, byte(3+len(reason)), mqttReasonStringProp)
	b = binary.BigEndian.AppendUint16(b, uint16(len(reason)))
	return append(b, reason...)
}

// mqttReasonPropsLen is the length appendMQTTReasonProps appends. A
// reason is short (the gateway's own words, under 125 bytes), so that
// the property length fits one byte.
func mqttReasonPropsLen(reason string) int {
	if reason == "" {
		return 1
	}
	return 1 + 3 + len(reason)
}

// AppendMQTTConnack appends a CONNACK with no session present for
// protocol level version (3 and 4: 3.1 and 3.1.1; 5): code is the 3.1.1
// return code or the MQTT 5 reason code. reason, MQTT 5 only and at most
// 120 bytes, goes in a Reason String property when it is not "".
func AppendMQTTConnack(b []byte, version, code byte, reason string) []byte {
	if version != 5 {
		return append(b, MQTTConnack<<4, 2, 0, code)
	}
	b = AppendMQTTFixedHeader(b, MQTTConnack<<4, 2+mqttReasonPropsLen(reason))
	return appendMQTTReasonProps(append(b, 0, code), reason)
}

// AppendMQTTDisconnect appends an MQTT 5 DISCONNECT from the server
// with reason code code and, when reason (at most 120 bytes) is not "",
// a Reason String. 3.1.1 servers send no DISCONNECT.
func AppendMQTTDisconnect(b []byte, code byte, reason string) []byte {
	b = AppendMQTTFixedHeader(b, MQTTDisconnect<<4, 1+mqttReasonPropsLen(reason))
	return appendMQTTReasonProps(append(b, code), reason)
}

// AppendMQTTSuback appends a SUBACK for packet id with one return or
// reason code per filter (codes), for protocol level version; an MQTT 5
// one carries no properties.
func AppendMQTTSuback(b []byte, version byte, id uint16, codes []byte) []byte {
	n := 2 + len(codes)
	if version == 5 {
		n++
	}
	b = binary.BigEndian.AppendUint16(AppendMQTTFixedHeader(b, MQTTSuback<<4, n), id)
	if version == 5 {
		b = append(b, 0) // no properties
	}
	return append(b, codes...)
}

// AppendMQTTAck appends a PUBACK, PUBREC, PUBREL or PUBCOMP (typ) for
// packet id. A code of 0 (success, and all 3.1.1 knows) is left out, as
// MQTT 5 allows; any other is an MQTT 5 reason code, sent with no
// properties.
func AppendMQTTAck(b []byte, typ byte, id uint16, code byte) []byte {
	first := typ << 4
	if typ == MQTTPubrel {
		first |= 0x02 // MQTT-3.6.1-1
	}
	if code == 0 {
		return binary.BigEndian.AppendUint16(append(b, first, 2), id)
	}
	return append(binary.BigEndian.AppendUint16(append(b, first, 3), id), code)
}
