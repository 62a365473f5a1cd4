package validate

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Builders for packets as clients may really send them, without an
// encoder's opinions.

// mstr is a length-prefixed field: a UTF-8 Encoded String or Binary Data.
func mstr(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

// mvarint is a Variable Byte Integer.
func mvarint(n int) []byte {
	var b []byte
	for {
		c := byte(n & 0x7f)
		if n >>= 7; n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

// mprops is a property block: its length, then the properties.
func mprops(ps ...[]byte) []byte {
	body := bytes.Join(ps, nil)
	return append(mvarint(len(body)), body...)
}

func p8(id, v byte) []byte         { return []byte{id, v} }
func p16(id byte, v uint16) []byte { return []byte{id, byte(v >> 8), byte(v)} }
func p32(id byte, v uint32) []byte {
	return []byte{id, byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}
func pstr(id byte, s string) []byte { return append([]byte{id}, mstr(s)...) }
func ppair(k, v string) []byte      { return append(pstr(0x26, k), mstr(v)...) }

// mpacket is a packet of type typ with flags and body.
func mpacket(typ, flags byte, body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	return append(append([]byte{typ<<4 | flags}, mvarint(len(b))...), b...)
}

// mconnect is a CONNECT at level with connect flags; props is its property
// block (MQTT 5 only: nil means an empty one); payload follows as is.
func mconnect(level, flags byte, props []byte, payload ...[]byte) []byte {
	name := "MQTT"
	if level == 3 {
		name = "MQIsdp"
	}
	return mconnectNamed(name, level, flags, props, payload...)
}

func mconnectNamed(name string, level, flags byte, props []byte, payload ...[]byte) []byte {
	vh := append(mstr(name), level, flags, 0, 60)
	if level == 5 {
		if props == nil {
			props = mprops()
		}
		vh = append(vh, props...)
	}
	return mpacket(MQTTConnect, 0, vh, bytes.Join(payload, nil))
}

// Connect flags.
const (
	fClean  = 0x02
	fWill   = 0x04
	fWillQ1 = 0x08
	fWillQ3 = 0x18
	fRetain = 0x20
	fPass   = 0x40
	fUser   = 0x80
)

// CONNECTs that obey every rule: each must pass, and what the codec
// decodes of it must re-encode to a CONNECT that passes too.
func TestMQTTConnectAccepts(t *testing.T) {
	willProps := mprops(p32(0x18, 5), p8(0x01, 1), p32(0x02, 60), pstr(0x03, "text/plain"), pstr(0x08, "r/1"), pstr(0x09, "c"), ppair("k", "v"))
	tests := []struct {
		name string
		in   []byte
	}{
		{"3.1.1 user name and empty password", mconnect(4, fClean|fUser|fPass, nil, mstr("c"), mstr("u"), mstr(""))},
		{"3.1.1 will with empty payload", mconnect(4, fClean|fWill|fWillQ1|fRetain, nil, mstr("c"), mstr("w/t"), mstr(""))},
		{"3.1.1 empty client id, clean session", mconnect(4, fClean, nil, mstr(""))},
		{"3.1 MQIsdp", mconnect(3, fClean|fUser|fPass, nil, mstr("c"), mstr("u"), mstr("p"))},
		{"3.1.1 BOM kept in user name (MQTT-1.5.3-3)", mconnect(4, fClean|fUser, nil, mstr("c"), mstr("\uFEFFu"))},
		{"5 password without user name", mconnect(5, fClean|fPass, nil, mstr("c"), mstr("p"))},
		{"5 empty client id, no clean start", mconnect(5, 0, nil, mstr(""))},
		{"5 every CONNECT property", mconnect(5, fClean|fUser, mprops(p32(0x11, 0), p16(0x21, 1), p32(0x27, 1), p16(0x22, 0),
			p8(0x19, 1), p8(0x17, 0), ppair("a", "b"), ppair("a", "c"), pstr(0x15, "SCRAM"), pstr(0x16, "\x00\xff")), mstr("c"), mstr("u"))},
		{"5 every will property", mconnect(5, fClean|fWill, nil, mstr("c"), willProps, mstr("w/t"), mstr("héllo"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewMQTTScanner(MQTTLimits{})
			n, _, err := s.Next(tt.in)
			if err != nil || n != len(tt.in) {
				t.Fatalf("n=%d err=%v", n, err)
			}
			mochiRoundTrip(t, s.Connect)
		})
	}
}

// ruleCase is a packet sequence one rule refuses: the statement id (or
// section) leads its name and must be in the error's Rule.
type ruleCase struct {
	name   string
	in     []byte
	class  error
	reason byte
	rule   string
}

func checkRuleCases(t *testing.T, tests []ruleCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, step := range []int{0, 1} {
				_, err := scanMQTT(t, MQTTLimits{}, tt.in, step)
				var me *MQTTError
				if !errors.As(err, &me) || !errors.Is(err, tt.class) {
					t.Fatalf("step %d: got %v, want %v", step, err, tt.class)
				}
				if me.Reason != tt.reason {
					t.Fatalf("step %d: reason %#x, want %#x (%v)", step, me.Reason, tt.reason, err)
				}
				if !strings.Contains(" "+me.Rule+" ", " "+tt.rule+" ") {
					t.Fatalf("step %d: rule %q, want %q (%v)", step, me.Rule, tt.rule, err)
				}
			}
		})
	}
}

// One case per rule of section 3.1 of MQTT 3.1.1 and 5 (and 1.5.3/1.5.4 as
// CONNECT uses them). Where MQTT 5 numbers no statement, the section.
func TestMQTTConnectRules(t *testing.T) {
	const (
		mal = MQTTReasonMalformed
		pe  = MQTTReasonProtocolError
	)
	c := mstr("c")
	v5 := func(props ...[]byte) []byte { return mconnect(5, fClean, mprops(props...), c) }
	will5 := func(props ...[]byte) []byte {
		return mconnect(5, fClean|fWill, nil, c, mprops(props...), mstr("w/t"), mstr("bye"))
	}
	tests := []ruleCase{
		{"MQTT-3.1.2-1 protocol name", mconnectNamed("MQTX", 4, fClean, nil, c), ErrPolicy, MQTTReasonBadVersion, "MQTT-3.1.2-1"},
		{"MQTT-3.1.2-2 level 4 named MQIsdp", mconnectNamed("MQIsdp", 4, fClean, nil, c), ErrPolicy, MQTTReasonBadVersion, "MQTT-3.1.2-2"},
		{"MQTT-3.1.2-2 level 3 named MQTT", mconnectNamed("MQTT", 3, fClean, nil, c), ErrPolicy, MQTTReasonBadVersion, "MQTT-3.1.2-2"},
		{"MQTT-3.1.2-2 level 6", mconnectNamed("MQTT", 6, fClean, nil, c), ErrPolicy, MQTTReasonBadVersion, "MQTT-3.1.2-2"},
		{"MQTT-3.1.2-3 reserved flag (3.1.1)", mconnect(4, fClean|1, nil, c), ErrMalformed, mal, "MQTT-3.1.2-3"},
		{"MQTT-3.1.2-3 reserved flag (5)", mconnect(5, fClean|1, nil, c), ErrMalformed, mal, "MQTT-3.1.2-3"},
		{"MQTT-3.1.2-9 will flag without will payload", mconnect(4, fClean|fWill, nil, c, mstr("w/t")), ErrMalformed, mal, "MQTT-3.1.2-9"},
		{"MQTT-3.1.2-11 will QoS without will flag (5)", mconnect(5, fClean|fWillQ1, nil, c), ErrMalformed, mal, "MQTT-3.1.2-11"},
		{"MQTT-3.1.2-12 will QoS 3 (5)", mconnect(5, fClean|fWill|fWillQ3, nil, c, mprops(), mstr("w"), mstr("x")), ErrMalformed, mal, "MQTT-3.1.2-12"},
		{"MQTT-3.1.2-13 will retain without will flag (5)", mconnect(5, fClean|fRetain, nil, c), ErrMalformed, mal, "MQTT-3.1.2-13"},
		{"MQTT-3.1.2-13 will QoS without will flag (3.1.1)", mconnect(4, fClean|fWillQ1, nil, c), ErrMalformed, mal, "MQTT-3.1.2-13"},
		{"MQTT-3.1.2-14 will QoS 3 (3.1.1)", mconnect(4, fClean|fWill|fWillQ3, nil, c, mstr("w"), mstr("x")), ErrMalformed, mal, "MQTT-3.1.2-14"},
		{"MQTT-3.1.2-15 will retain without will flag (3.1.1)", mconnect(4, fClean|fRetain, nil, c), ErrMalformed, mal, "MQTT-3.1.2-15"},
		{"MQTT-3.1.2-16 user name without its flag (5)", mconnect(5, fClean, nil, c, mstr("u")), ErrMalformed, mal, "MQTT-3.1.2-16"},
		{"MQTT-3.1.2-17 user name flag without user name (5)", mconnect(5, fClean|fUser, nil, c), ErrMalformed, mal, "MQTT-3.1.2-17"},
		{"MQTT-3.1.2-18 user name without its flag (3.1.1)", mconnect(4, fClean, nil, c, mstr("u")), ErrMalformed, mal, "MQTT-3.1.2-18"},
		{"MQTT-3.1.2-19 user name flag without user name (3.1.1)", mconnect(4, fClean|fUser, nil, c), ErrMalformed, mal, "MQTT-3.1.2-19"},
		{"MQTT-3.1.2-20 password without its flag (3.1.1)", mconnect(4, fClean|fUser, nil, c, mstr("u"), mstr("p")), ErrMalformed, mal, "MQTT-3.1.2-20"},
		{"MQTT-3.1.2-21 password flag without password (3.1.1)", mconnect(4, fClean|fUser|fPass, nil, c, mstr("u")), ErrMalformed, mal, "MQTT-3.1.2-21"},
		{"MQTT-3.1.2-22 password without user name (3.1.1)", mconnect(4, fClean|fPass, nil, c, mstr("p")), ErrMalformed, mal, "MQTT-3.1.2-22"},
		{"MQTT-3.1.2-22 password without user name (3.1)", mconnect(3, fClean|fPass, nil, c, mstr("p")), ErrMalformed, mal, "MQTT-3.1.2-22"},
		{"MQTT-3.1.3-3 no client identifier", mconnect(4, fClean, nil), ErrMalformed, mal, "MQTT-3.1.3-3"},
		{"MQTT-3.1.3-4 client identifier not UTF-8", mconnect(4, fClean, nil, mstr("c\xff")), ErrMalformed, mal, "MQTT-3.1.3-4"},
		{"MQTT-3.1.3-8 empty client id without clean session (3.1.1)", mconnect(4, 0, nil, mstr("")), ErrMalformed, MQTTReasonBadClientID, "MQTT-3.1.3-8"},
		{"MQIsdp 3.1 empty client id (3.1)", mconnect(3, fClean, nil, mstr("")), ErrMalformed, MQTTReasonBadClientID, "MQIsdp"},
		{"MQTT-3.1.3-10 will topic not UTF-8 (3.1.1)", mconnect(4, fClean|fWill, nil, c, mstr("w\xc0\xaf"), mstr("x")), ErrMalformed, mal, "MQTT-3.1.3-10"},
		{"MQTT-3.1.3-11 will topic not UTF-8 (5)", mconnect(5, fClean|fWill, nil, c, mprops(), mstr("w\xc0\xaf"), mstr("x")), ErrMalformed, mal, "MQTT-3.1.3-11"},
		{"MQTT-3.1.3-11 NUL in user name (3.1.1)", mconnect(4, fClean|fUser, nil, c, mstr("u\x00")), ErrMalformed, mal, "MQTT-3.1.3-11"},
		{"MQTT-3.1.3-12 user name not UTF-8 (5)", mconnect(5, fClean|fUser, nil, c, mstr("\xffu")), ErrMalformed, mal, "MQTT-3.1.3-12"},
		{"MQTT-1.5.3-1 surrogate in user name (3.1.1)", mconnect(4, fClean|fUser, nil, c, mstr("u\xed\xa0\x80")), ErrMalformed, mal, "MQTT-1.5.3-1"},
		{"MQTT-1.5.3-2 NUL in user name (3.1.1)", mconnect(4, fClean|fUser, nil, c, mstr("u\x00")), ErrMalformed, mal, "MQTT-1.5.3-2"},
		{"MQTT-1.5.4-1 surrogate in user name (5)", mconnect(5, fClean|fUser, nil, c, mstr("\xed\xbf\xbf")), ErrMalformed, mal, "MQTT-1.5.4-1"},
		{"MQTT-1.5.4-2 NUL in client identifier (5)", mconnect(5, fClean, nil, mstr("c\x00")), ErrMalformed, mal, "MQTT-1.5.4-2"},
		{"MQTT-4.7.3-1 empty will topic", mconnect(4, fClean|fWill, nil, c, mstr(""), mstr("x")), ErrMalformed, MQTTReasonTopicNameBad, "MQTT-4.7.3-1"},
		{"MQTT-3.3.2-2 wildcard in will topic", mconnect(4, fClean|fWill, nil, c, mstr("w/#"), mstr("x")), ErrMalformed, MQTTReasonTopicNameBad, "MQTT-3.3.2-2"},
		{"MQTT-3.1.4-1 bytes after the password", mconnect(4, fClean|fUser|fPass, nil, c, mstr("u"), mstr("p"), []byte{0}), ErrMalformed, mal, "MQTT-3.1.4-1"},
		{"MQTT-3.1.4-1 CONNECT cut in its variable header", mpacket(MQTTConnect, 0, mstr("MQTT"), []byte{4, fClean}), ErrMalformed, mal, "MQTT-3.1.4-1"},

		{"3.1.2.11.2 Session Expiry Interval twice", v5(p32(0x11, 10), p32(0x11, 20)), ErrMalformed, pe, "3.1.2.11.2"},
		{"3.1.2.11.3 Receive Maximum 0", v5(p16(0x21, 0)), ErrMalformed, pe, "3.1.2.11.3"},
		{"3.1.2.11.3 Receive Maximum twice", v5(p16(0x21, 5), p16(0x21, 5)), ErrMalformed, pe, "3.1.2.11.3"},
		{"3.1.2.11.4 Maximum Packet Size 0", v5(p32(0x27, 0)), ErrMalformed, pe, "3.1.2.11.4"},
		{"3.1.2.11.4 Maximum Packet Size twice", v5(p32(0x27, 100), p32(0x27, 200)), ErrMalformed, pe, "3.1.2.11.4"},
		{"3.1.2.11.5 Topic Alias Maximum twice", v5(p16(0x22, 1), p16(0x22, 1)), ErrMalformed, pe, "3.1.2.11.5"},
		{"3.1.2.11.6 Request Response Information 2", v5(p8(0x19, 2)), ErrMalformed, pe, "3.1.2.11.6"},
		{"3.1.2.11.7 Request Problem Information 2", v5(p8(0x17, 2)), ErrMalformed, pe, "3.1.2.11.7"},
		{"3.1.2.11.7 Request Problem Information twice", v5(p8(0x17, 1), p8(0x17, 1)), ErrMalformed, pe, "3.1.2.11.7"},
		{"3.1.2.11.9 Authentication Method twice", v5(pstr(0x15, "a"), pstr(0x15, "a")), ErrMalformed, pe, "3.1.2.11.9"},
		{"3.1.2.11.10 Authentication Data without Authentication Method", v5(pstr(0x16, "d")), ErrMalformed, pe, "3.1.2.11.10"},
		{"3.1.2.11.10 Authentication Data twice", v5(pstr(0x15, "a"), pstr(0x16, "d"), pstr(0x16, "d")), ErrMalformed, pe, "3.1.2.11.10"},
		{"2.2.2.2 Topic Alias is no CONNECT property", v5(p16(0x23, 1)), ErrMalformed, pe, "2.2.2.2"},
		{"2.2.2.2 Will Delay Interval is no CONNECT property", v5(p32(0x18, 1)), ErrMalformed, pe, "2.2.2.2"},
		{"2.2.2.2 no property 0x7f", v5([]byte{0x7f, 0}), ErrMalformed, mal, "2.2.2.2"},
		{"2.2.2.2 property past its block", mconnect(5, fClean, []byte{2, 0x11, 0}, c), ErrMalformed, mal, "2.2.2.2"},
		{"2.2.2.2 user property without its value", v5([]byte{0x26, 0, 1, 'k'}), ErrMalformed, mal, "2.2.2.2"},
		{"2.2.2.1 property length past the packet", mconnect(5, fClean, []byte{9, 0x11}), ErrMalformed, mal, "2.2.2.1"},
		{"MQTT-1.5.5-1 property length not in its shortest form", mconnect(5, fClean, []byte{0x80, 0x00}, c), ErrMalformed, mal, "MQTT-1.5.5-1"},
		{"MQTT-1.5.7-1 user property not UTF-8", v5(ppair("k", "v\xff")), ErrMalformed, mal, "MQTT-1.5.7-1"},
		{"MQTT-1.5.4-2 NUL in authentication method", v5(pstr(0x15, "a\x00")), ErrMalformed, mal, "MQTT-1.5.4-2"},

		{"3.1.3.2.2 Will Delay Interval twice", will5(p32(0x18, 1), p32(0x18, 1)), ErrMalformed, pe, "3.1.3.2.2"},
		{"3.1.3.2.3 will Payload Format Indicator 2", will5(p8(0x01, 2)), ErrMalformed, pe, "3.1.3.2.3"},
		{"3.1.3.2.3 will payload not UTF-8 under indicator 1", mconnect(5, fClean|fWill, nil, c, mprops(p8(0x01, 1)), mstr("w"), mstr("\xff")),
			ErrMalformed, MQTTReasonPayloadFormat, "3.1.3.2.3"},
		{"3.1.3.2.4 will Message Expiry Interval twice", will5(p32(0x02, 1), p32(0x02, 1)), ErrMalformed, pe, "3.1.3.2.4"},
		{"3.1.3.2.5 will Content Type twice", will5(pstr(0x03, "a"), pstr(0x03, "a")), ErrMalformed, pe, "3.1.3.2.5"},
		{"3.1.3.2.6 will Response Topic twice", will5(pstr(0x08, "r"), pstr(0x08, "r")), ErrMalformed, pe, "3.1.3.2.6"},
		{"3.1.3.2.7 will Correlation Data twice", will5(pstr(0x09, "r"), pstr(0x09, "r")), ErrMalformed, pe, "3.1.3.2.7"},
		{"2.2.2.2 Session Expiry Interval is no will property", will5(p32(0x11, 1)), ErrMalformed, pe, "2.2.2.2"},
	}
	checkRuleCases(t, tests)
}

// The MQTT 5 property rules of the packets after CONNECT.
func TestMQTTPropertyRules(t *testing.T) {
	c5 := mconnect(5, fClean, mprops(p32(0x11, 0)), mstr("c"))
	after := func(b ...[]byte) []byte { return bytes.Join(append([][]byte{c5}, b...), nil) }
	sub := func(props []byte) []byte {
		return mpacket(MQTTSubscribe, 2, []byte{0, 1}, props, mstr("a/b"), []byte{1})
	}
	pub := func(props ...[]byte) []byte { return mpacket(MQTTPublish, 0, mstr("a"), mprops(props...)) }
	tests := []ruleCase{
		{"3.8.2.1.2 SUBSCRIBE Subscription Identifier twice", after(sub(mprops([]byte{0x0B, 1}, []byte{0x0B, 2}))), ErrMalformed, MQTTReasonProtocolError, "3.8.2.1.2"},
		{"3.8.2.1.2 SUBSCRIBE Subscription Identifier 0", after(sub(mprops([]byte{0x0B, 0}))), ErrMalformed, MQTTReasonProtocolError, "3.8.2.1.2"},
		{"MQTT-1.5.5-1 SUBSCRIBE Subscription Identifier not in its shortest form", after(sub(mprops([]byte{0x0B, 0x81, 0x00}))), ErrMalformed, MQTTReasonMalformed, "MQTT-1.5.5-1"},
		{"2.2.2.2 SUBSCRIBE with a Topic Alias", after(sub(mprops(p16(0x23, 1)))), ErrMalformed, MQTTReasonProtocolError, "2.2.2.2"},
		{"2.2.2.2 UNSUBSCRIBE with a Reason String", after(mpacket(MQTTUnsubscribe, 2, []byte{0, 1}, mprops(pstr(0x1F, "x")), mstr("a"))), ErrMalformed, MQTTReasonProtocolError, "2.2.2.2"},
		{"MQTT-3.14.2-2 DISCONNECT Session Expiry Interval after 0", after(mpacket(MQTTDisconnect, 0, []byte{0}, mprops(p32(0x11, 60)))), ErrMalformed, MQTTReasonProtocolError, "MQTT-3.14.2-2"},
		{"3.14.2.2.2 DISCONNECT Session Expiry Interval twice", after(mpacket(MQTTDisconnect, 0, []byte{0}, mprops(p32(0x11, 0), p32(0x11, 0)))), ErrMalformed, MQTTReasonProtocolError, "3.14.2.2.2"},
		{"2.2.2.2 AUTH with a Topic Alias", after(mpacket(MQTTAuth, 0, []byte{0x18}, mprops(p16(0x23, 1)))), ErrMalformed, MQTTReasonProtocolError, "2.2.2.2"},
		{"MQTT-3.3.4-6 PUBLISH with a Subscription Identifier", after(pub([]byte{0x0B, 1})), ErrMalformed, MQTTReasonProtocolError, "MQTT-3.3.4-6"},
		{"3.3.2.3.2 PUBLISH Payload Format Indicator 2", after(pub(p8(0x01, 2))), ErrMalformed, MQTTReasonProtocolError, "3.3.2.3.2"},
		{"3.3.2.3.9 PUBLISH Content Type twice", after(pub(pstr(0x03, "a"), pstr(0x03, "a"))), ErrMalformed, MQTTReasonProtocolError, "3.3.2.3.9"},
		{"2.2.2.2 PUBLISH user property without its value", after(pub([]byte{0x26, 0, 1, 'k'})), ErrMalformed, MQTTReasonMalformed, "2.2.2.2"},
		{"MQTT-1.5.4-2 NUL in a PUBLISH Content Type", after(pub(pstr(0x03, "a\x00"))), ErrMalformed, MQTTReasonMalformed, "MQTT-1.5.4-2"},
		{"2.2.2.2 PUBACK with a Content Type", after(mpacket(MQTTPuback, 0, []byte{0, 1, 0}, mprops(pstr(0x03, "a")))), ErrMalformed, MQTTReasonProtocolError, "2.2.2.2"},
	}
	checkRuleCases(t, tests)
}

// A refused MQTT 5 CONNECT still tells the Maximum Packet Size its client
// wants, which a CONNACK's reason string must respect, when its property
// block can be framed.
func TestMQTTConnectMaxPacket(t *testing.T) {
	tests := []struct {
		name  string
		in    []byte
		size  uint32
		known bool
	}{
		{"accepted", mconnect(5, fClean, mprops(p32(0x27, 300)), mstr("c")), 300, true},
		{"none given", mconnect(5, fClean, nil, mstr("c")), 0, true},
		{"refused after the block", mconnect(5, fClean, mprops(p32(0x27, 300)), mstr("c\x00")), 300, true},
		{"refused before the block", mconnect(5, fClean|1, mprops(p32(0x27, 300)), mstr("c")), 300, true},
		{"refused within the block, the size after", mconnect(5, fClean, mprops(p32(0x11, 1), p32(0x11, 1), p32(0x27, 300)), mstr("c")), 300, true},
		{"given twice: the smaller", mconnect(5, fClean, mprops(p32(0x27, 300), p32(0x27, 200)), mstr("c")), 200, true},
		{"block cannot be framed", mconnect(5, fClean, mprops([]byte{0x7f, 1, 2}, p32(0x27, 300)), mstr("c")), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewMQTTScanner(MQTTLimits{})
			s.Next(tt.in)
			if size, known := s.ClientMaxPacket(); size != tt.size || known != tt.known {
				t.Fatalf("got %d %v, want %d %v", size, known, tt.size, tt.known)
			}
		})
	}
}

// mochiRoundTrip: what the codec decoded of an accepted CONNECT re-encodes
// to a CONNECT this scanner accepts.
func mochiRoundTrip(t *testing.T, pk packets.Packet) {
	t.Helper()
	pk.Mods.AllowResponseInfo = true
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatalf("re-encoding an accepted CONNECT: %v", err)
	}
	if _, _, err := NewMQTTScanner(MQTTLimits{}).Next(buf.Bytes()); err != nil {
		t.Fatalf("the codec's re-encoding %x of an accepted CONNECT is refused: %v", buf.Bytes(), err)
	}
}
