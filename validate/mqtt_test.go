package validate

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// encode builds a packet with mochi-mqtt's encoder.
func encode(t testing.TB, pk packets.Packet) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case MQTTConnect:
		err = pk.ConnectEncode(&buf)
	case MQTTPublish:
		err = pk.PublishEncode(&buf)
	case MQTTSubscribe:
		err = pk.SubscribeEncode(&buf)
	case MQTTUnsubscribe:
		err = pk.UnsubscribeEncode(&buf)
	case MQTTPuback:
		err = pk.PubackEncode(&buf)
	case MQTTPubrel:
		err = pk.PubrelEncode(&buf)
	case MQTTDisconnect:
		err = pk.DisconnectEncode(&buf)
	case MQTTPingreq:
		err = pk.PingreqEncode(&buf)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func connectPacket(t testing.TB, version byte) []byte {
	name := []byte("MQTT")
	if version == 3 {
		name = []byte("MQIsdp")
	}
	return encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTConnect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: name, Clean: true, Keepalive: 30, ClientIdentifier: "c1",
			UsernameFlag: true, Username: []byte("u"), PasswordFlag: true, Password: []byte("p")}})
}

func publishPacket(t testing.TB, version byte, topic string, qos byte, props packets.Properties) []byte {
	return encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTPublish, Qos: qos}, ProtocolVersion: version,
		TopicName: topic, PacketID: 7, Payload: []byte("hello"), Properties: props})
}

// scanMQTT feeds in to a fresh scanner in pieces of step bytes.
func scanMQTT(t testing.TB, lim MQTTLimits, in []byte, step int) ([]byte, error) {
	t.Helper()
	s := NewMQTTScanner(lim)
	var types, pending []byte
	if step <= 0 {
		step = len(in)
	}
	for off := 0; off < len(in); off += step {
		pending = append(pending, in[off:min(off+step, len(in))]...)
		for {
			n, p, err := s.Next(pending)
			if err != nil {
				return types, err
			}
			if n == 0 {
				break
			}
			types = append(types, p.Type)
			pending = pending[n:]
		}
	}
	return types, nil
}

func TestMQTTScannerAccepts(t *testing.T) {
	for _, v := range []byte{3, 4, 5} {
		var props packets.Properties
		if v == 5 {
			props = packets.Properties{ContentType: "text/plain", User: []packets.UserProperty{{Key: "a", Val: "b"}, {Key: "a", Val: "c"}}, MessageExpiryInterval: 60}
		}
		in := connectPacket(t, v)
		in = append(in, publishPacket(t, v, "a/b", 0, props)...)
		in = append(in, publishPacket(t, v, "a/b", 1, props)...)
		in = append(in, encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTPuback}, ProtocolVersion: v, PacketID: 3})...)
		in = append(in, encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTPubrel, Qos: 1}, ProtocolVersion: v, PacketID: 3})...)
		in = append(in, encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTSubscribe, Qos: 1}, ProtocolVersion: v, PacketID: 9,
			Filters: packets.Subscriptions{{Filter: "a/+/c", Qos: 1}, {Filter: "#", Qos: 2}, {Filter: "x/#"}}})...)
		in = append(in, encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTUnsubscribe, Qos: 1}, ProtocolVersion: v, PacketID: 10,
			Filters: packets.Subscriptions{{Filter: "a/+/c"}}})...)
		in = append(in, encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTPingreq}})...)
		in = append(in, encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTDisconnect}, ProtocolVersion: v})...)
		for _, step := range []int{0, 1, 3} {
			types, err := scanMQTT(t, MQTTLimits{}, in, step)
			if err != nil {
				t.Fatalf("v%d step %d: %v", v, step, err)
			}
			if want := []byte{1, 3, 3, 4, 6, 8, 10, 12, 14}; !bytes.Equal(types, want) {
				t.Fatalf("v%d step %d: types %v, want %v", v, step, types, want)
			}
		}
	}
}

func TestMQTTScannerRejects(t *testing.T) {
	c4, c5 := connectPacket(t, 4), connectPacket(t, 5)
	pub := func(v byte, topic string) []byte { return publishPacket(t, v, topic, 1, packets.Properties{}) }
	badVersion := append([]byte(nil), c4...)
	badVersion[8] = 6 // protocol level byte
	tests := []struct {
		name   string
		in     []byte
		class  error
		reason byte
	}{
		{"publish before connect", pub(4, "a"), ErrPolicy, MQTTReasonProtocolError},
		{"connect twice", append(append([]byte(nil), c4...), c4...), ErrPolicy, MQTTReasonProtocolError},
		{"protocol level 6", badVersion, ErrPolicy, MQTTReasonBadVersion},
		{"server packet type", append(append([]byte(nil), c4...), 0x20, 0x02, 0, 0), ErrMalformed, MQTTReasonProtocolError},
		{"reserved type 0", append(append([]byte(nil), c4...), 0x00, 0x00), ErrMalformed, MQTTReasonProtocolError},
		{"reserved flags on pingreq", append(append([]byte(nil), c4...), 0xC1, 0x00), ErrMalformed, MQTTReasonMalformed},
		{"subscribe without 0x2 flags", append(append([]byte(nil), c4...), 0x80, 0x05, 0, 1, 0, 1, 'a'), ErrMalformed, MQTTReasonMalformed},
		{"publish qos 3", append(append([]byte(nil), c4...), 0x36, 0x03, 0, 1, 'a'), ErrMalformed, MQTTReasonMalformed},
		{"dup at qos 0", append(append([]byte(nil), c4...), 0x38, 0x03, 0, 1, 'a'), ErrMalformed, MQTTReasonMalformed},
		{"overlong remaining length", append(append([]byte(nil), c4...), 0xC0, 0x80, 0x00), ErrMalformed, MQTTReasonMalformed},
		{"five-byte remaining length", append(append([]byte(nil), c4...), 0x30, 0xff, 0xff, 0xff, 0xff, 0x01), ErrMalformed, MQTTReasonMalformed},
		{"wildcard in topic name", append(append([]byte(nil), c4...), pub(4, "a/+")...), ErrMalformed, MQTTReasonTopicNameBad},
		{"NUL in topic name", append(append([]byte(nil), c4...), pub(4, "a\x00b")...), ErrMalformed, MQTTReasonTopicNameBad},
		{"invalid utf-8 topic", append(append([]byte(nil), c4...), pub(4, "a\xffb")...), ErrMalformed, MQTTReasonTopicNameBad},
		{"empty topic without alias", append(append([]byte(nil), c5...), pub(5, "")...), ErrMalformed, MQTTReasonTopicNameBad},
		{"packet id 0 at qos 1", append(append([]byte(nil), c4...), 0x32, 0x05, 0, 1, 'a', 0, 0), ErrMalformed, MQTTReasonProtocolError},
		{"topic runs past packet", append(append([]byte(nil), c4...), 0x30, 0x03, 0, 9, 'a'), ErrMalformed, MQTTReasonMalformed},
		{"bad filter '#' not last", append(append([]byte(nil), c4...), encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTSubscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1, Filters: packets.Subscriptions{{Filter: "a/#/b"}}})...), ErrMalformed, MQTTReasonTopicFilterBad},
		{"bad filter 'a+'", append(append([]byte(nil), c4...), encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTSubscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1, Filters: packets.Subscriptions{{Filter: "a+/b"}}})...), ErrMalformed, MQTTReasonTopicFilterBad},
		{"subscribe packet id 0", append(append([]byte(nil), c4...), 0x82, 0x06, 0, 0, 0, 1, 'a', 0), ErrMalformed, MQTTReasonProtocolError},
		{"v5 repeated property", append(append([]byte(nil), c5...), 0x30, 14, 0, 1, 'a', 10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1), ErrMalformed, MQTTReasonProtocolError},
		{"v5 property block past packet", append(append([]byte(nil), c5...), 0x30, 0x05, 0, 1, 'a', 9, 0x02), ErrMalformed, MQTTReasonMalformed},
		{"v5 topic alias 0", append(append([]byte(nil), c5...), 0x30, 0x07, 0, 1, 'a', 3, 0x23, 0, 0), ErrMalformed, MQTTReasonProtocolError},
		{"v5 subscription identifier from client", append(append([]byte(nil), c5...), 0x30, 0x06, 0, 1, 'a', 2, 0x0B, 1), ErrMalformed, MQTTReasonProtocolError},
		{"v3 ack with extra bytes", append(append([]byte(nil), c4...), 0x40, 0x03, 0, 1, 0), ErrMalformed, MQTTReasonMalformed},
		{"auth before v5", append(append([]byte(nil), c4...), 0xF0, 0x00), ErrMalformed, MQTTReasonProtocolError},
		{"v5 wildcard in response topic", append(append([]byte(nil), c5...), 0x30, 10, 0, 1, 'a', 6, 0x08, 0, 3, 'r', '/', '#'), ErrMalformed, MQTTReasonProtocolError},
		{"v5 empty response topic", append(append([]byte(nil), c5...), 0x30, 7, 0, 1, 'a', 3, 0x08, 0, 0), ErrMalformed, MQTTReasonProtocolError},
		{"v5 repeated response topic", append(append([]byte(nil), c5...), 0x30, 13, 0, 1, 'a', 9, 0x08, 0, 1, 'r', 0x08, 0, 1, 's', 0), ErrMalformed, MQTTReasonProtocolError},
		{"v5 wildcard in the will's response topic", []byte{0x10, 27, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x06, 0, 60, 0, 0, 1, 'c',
			6, 0x08, 0, 3, 'r', '/', '+', 0, 1, 'w', 0, 1, 'p'}, ErrMalformed, MQTTReasonProtocolError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, step := range []int{0, 1} {
				_, err := scanMQTT(t, MQTTLimits{}, tt.in, step)
				var me *MQTTError
				if !errors.As(err, &me) || !errors.Is(err, tt.class) {
					t.Fatalf("step %d: got %v, want %v", step, err, tt.class)
				}
				if tt.reason != 0 && me.Reason != tt.reason {
					t.Fatalf("step %d: reason %#x, want %#x (%v)", step, me.Reason, tt.reason, err)
				}
			}
		})
	}
	big := append(append([]byte(nil), c4...), publishPacket(t, 4, "a", 0, packets.Properties{})...)
	if _, err := scanMQTT(t, MQTTLimits{MaxPacketBytes: 10}, big, 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("size limit: %v", err)
	}
}

// The ACL needs a PUBLISH's response topic: the scanner shows it, without
// allocating, and only where the packet has one.
func TestMQTTScannerResponseTopic(t *testing.T) {
	for _, c := range []struct {
		name  string
		props packets.Properties
		qos   byte
		want  string
	}{
		{"none", packets.Properties{ContentType: "x"}, 1, ""},
		{"qos 0", packets.Properties{ResponseTopic: "r/1"}, 0, "r/1"},
		{"among others", packets.Properties{ContentType: "x", ResponseTopic: "demo/reply", CorrelationData: []byte("c"), TopicAlias: 2, TopicAliasFlag: true}, 1, "demo/reply"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewMQTTScanner(MQTTLimits{})
			if _, _, err := s.Next(connectPacket(t, 5)); err != nil {
				t.Fatal(err)
			}
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTPublish, Qos: c.qos}, ProtocolVersion: 5,
				TopicName: "a/b", PacketID: 7, Payload: []byte("hello"), Properties: c.props}
			pk.Mods.AllowResponseInfo = true // or mochi leaves the response topic out
			_, p, err := s.Next(encode(t, pk))
			if err != nil {
				t.Fatal(err)
			}
			if string(p.ResponseTopic) != c.want || (c.want == "") != (p.ResponseTopic == nil) {
				t.Fatalf("response topic %q, want %q", p.ResponseTopic, c.want)
			}
			if string(p.Topic) != "a/b" || p.Alias != c.props.TopicAlias {
				t.Fatalf("topic %q alias %d", p.Topic, p.Alias)
			}
		})
	}
}

func TestMQTTScannerKeepsConnect(t *testing.T) {
	s := NewMQTTScanner(MQTTLimits{})
	if _, _, err := s.Next(connectPacket(t, 5)); err != nil {
		t.Fatal(err)
	}
	if s.Version != 5 || s.Connect.Connect.ClientIdentifier != "c1" || string(s.Connect.Connect.Username) != "u" {
		t.Fatalf("version %d connect %+v", s.Version, s.Connect.Connect)
	}
}

func FuzzMQTTScanner(f *testing.F) {
	f.Add(append(connectPacket(f, 4), publishPacket(f, 4, "a/b", 1, packets.Properties{})...), uint8(2))
	f.Add(append(connectPacket(f, 5), publishPacket(f, 5, "a/b", 1, packets.Properties{ContentType: "x"})...), uint8(0))
	lim := MQTTLimits{MaxPacketBytes: 4096}
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		// The codec only ever sees a CONNECT this scanner accepted, and
		// what it makes of one must be accepted again.
		s := NewMQTTScanner(lim)
		if _, p, err := s.Next(in); err == nil && p != nil && p.Type == MQTTConnect {
			mochiRoundTrip(t, s.Connect)
		}
		whole, errWhole := scanMQTT(t, lim, in, 0)
		split, errSplit := scanMQTT(t, lim, in, int(step)+1)
		if !bytes.Equal(whole, split) || classOf(errWhole) != classOf(errSplit) {
			t.Fatalf("whole: %v %v; in pieces of %d: %v %v", whole, errWhole, int(step)+1, split, errSplit)
		}
	})
}

func BenchmarkMQTTPublish(b *testing.B) {
	for _, size := range []int{128, 4096} {
		for _, v := range []byte{4, 5} {
			b.Run(fmt.Sprintf("%dB/v%d", size, v), func(b *testing.B) {
				s := NewMQTTScanner(MQTTLimits{})
				if _, _, err := s.Next(connectPacket(b, v)); err != nil {
					b.Fatal(err)
				}
				var props packets.Properties
				if v == 5 {
					props.ContentType = "application/json"
				}
				pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: MQTTPublish, Qos: 1}, ProtocolVersion: v,
					TopicName: "sensors/room1/temperature", PacketID: 7, Properties: props}
				pk.Payload = make([]byte, size-len(encode(b, pk)))
				frame := encode(b, pk)
				b.ReportAllocs()
				b.SetBytes(int64(len(frame)))
				for b.Loop() {
					if n, _, err := s.Next(frame); err != nil || n != len(frame) {
						b.Fatalf("n=%d err=%v", n, err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
			})
		}
	}
}

// PacketLen names a partial packet's whole length as soon as its
// remaining length is in, so that its pieces are gathered in one buffer
// of that size; nothing before then, and nothing once it is complete.
func TestMQTTScannerPacketLen(t *testing.T) {
	s := NewMQTTScanner(MQTTLimits{})
	conn := connectPacket(t, 4)
	if n, _, err := s.Next(conn); err != nil || n != len(conn) {
		t.Fatalf("CONNECT: %d, %v", n, err)
	}
	// A QoS 0 PUBLISH to "a/b" with 200 bytes of payload: a remaining
	// length of 205, in two bytes.
	pub := append([]byte{0x30, 205&0x7f | 0x80, 205 >> 7, 0, 3, 'a', '/', 'b'}, make([]byte, 200)...)
	for _, c := range []struct {
		have, want int
	}{{1, 0}, {2, 0}, {3, len(pub)}, {len(pub) - 1, len(pub)}, {len(pub), 0}} {
		n, _, err := s.Next(pub[:c.have])
		if err != nil {
			t.Fatalf("%d bytes: %v", c.have, err)
		}
		if got := s.PacketLen(); got != c.want {
			t.Errorf("with %d of %d bytes PacketLen is %d, want %d (Next %d)", c.have, len(pub), got, c.want, n)
		}
	}
}
