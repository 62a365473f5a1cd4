package validate

import (
	"bytes"
	"strings"
	"testing"
)

func TestAppendMQTTFixedHeader(t *testing.T) {
	tests := []struct {
		remaining int
		want      []byte
	}{
		{0, []byte{0x30, 0x00}},
		{127, []byte{0x30, 0x7F}},
		{128, []byte{0x30, 0x80, 0x01}},
		{16383, []byte{0x30, 0xFF, 0x7F}},
		{16384, []byte{0x30, 0x80, 0x80, 0x01}},
		{268435455, []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}},
	}
	for _, tc := range tests {
		got := AppendMQTTFixedHeader(nil, 0x30, tc.remaining)
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%d: got % x, want % x", tc.remaining, got, tc.want)
		}
		if v, used, ok := MQTTVarInt(got[1:]); !ok || v != tc.remaining || used != len(got)-1 {
			t.Errorf("%d: MQTTVarInt reads %d, %d, %v", tc.remaining, v, used, ok)
		}
	}
}

func TestAppendMQTTAnswers(t *testing.T) {
	long := strings.Repeat("x", 120)
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"CONNACK 3.1.1", AppendMQTTConnack(nil, 4, 0x05, "ignored"), []byte{0x20, 0x02, 0x00, 0x05}},
		{"CONNACK 3.1", AppendMQTTConnack(nil, 3, 0x03, ""), []byte{0x20, 0x02, 0x00, 0x03}},
		{"CONNACK 5 bare", AppendMQTTConnack(nil, 5, 0x87, ""), []byte{0x20, 0x03, 0x00, 0x87, 0x00}},
		{"CONNACK 5 reason", AppendMQTTConnack(nil, 5, 0x95, "no"),
			[]byte{0x20, 0x08, 0x00, 0x95, 0x05, 0x1F, 0x00, 0x02, 'n', 'o'}},
		{"CONNACK 5 long reason", AppendMQTTConnack(nil, 5, 0x81, long),
			append([]byte{0x20, 3 + 3 + 120, 0x00, 0x81, 3 + 120, 0x1F, 0x00, 120}, long...)},
		{"DISCONNECT bare", AppendMQTTDisconnect(nil, 0x8B, ""), []byte{0xE0, 0x02, 0x8B, 0x00}},
		{"DISCONNECT reason", AppendMQTTDisconnect(nil, 0x87, "no"),
			[]byte{0xE0, 0x07, 0x87, 0x05, 0x1F, 0x00, 0x02, 'n', 'o'}},
		{"SUBACK 3.1.1", AppendMQTTSuback(nil, 4, 0x0102, []byte{0x00, 0x80}), []byte{0x90, 0x04, 0x01, 0x02, 0x00, 0x80}},
		{"SUBACK 5", AppendMQTTSuback(nil, 5, 7, []byte{0x01, 0x87}), []byte{0x90, 0x05, 0x00, 0x07, 0x00, 0x01, 0x87}},
		{"SUBACK many", AppendMQTTSuback(nil, 4, 1, make([]byte, 200)),
			append([]byte{0x90, 0xCA, 0x01, 0x00, 0x01}, make([]byte, 200)...)},
		{"PUBACK", AppendMQTTAck(nil, MQTTPuback, 0x0A0B, 0), []byte{0x40, 0x02, 0x0A, 0x0B}},
		{"PUBACK refused", AppendMQTTAck(nil, MQTTPuback, 1, 0x87), []byte{0x40, 0x03, 0x00, 0x01, 0x87}},
		{"PUBREC refused", AppendMQTTAck(nil, MQTTPubrec, 1, 0x87), []byte{0x50, 0x03, 0x00, 0x01, 0x87}},
		{"PUBREL", AppendMQTTAck(nil, MQTTPubrel, 2, 0), []byte{0x62, 0x02, 0x00, 0x02}},
		{"appends", AppendMQTTAck([]byte{1}, MQTTPubcomp, 2, 0), []byte{1, 0x70, 0x02, 0x00, 0x02}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Equal(tc.got, tc.want) {
				t.Fatalf("got  % x\nwant % x", tc.got, tc.want)
			}
		})
	}
}

// TestMQTTAnswersScan: each answer is one whole packet as a client frames
// the stream: its remaining length ends where the answer does.
func TestMQTTAnswersScan(t *testing.T) {
	for _, b := range [][]byte{
		AppendMQTTConnack(nil, 5, 0x95, "packet too large"),
		AppendMQTTDisconnect(nil, 0x87, "not authorized"),
		AppendMQTTSuback(nil, 5, 9, []byte{0, 1, 0x87}),
	} {
		rl, used, ok := MQTTVarInt(b[1:])
		if !ok || 1+used+rl != len(b) {
			t.Errorf("% x: remaining length %d over %d bytes, packet is %d", b, rl, used, len(b))
		}
	}
}

func TestMQTTAnswersAllocs(t *testing.T) {
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendMQTTDisconnect(buf[:0], 0x97, "quota exceeded")
		buf = AppendMQTTAck(buf, MQTTPuback, 1, 0)
	}); n != 0 {
		t.Errorf("%v allocations into a buffer with room", n)
	}
}
