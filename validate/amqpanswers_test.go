package validate

import (
	"bytes"
	"strings"
	"testing"
)

func TestAppendAMQPAnswers(t *testing.T) {
	long := strings.Repeat("y", 300)
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"frame", AppendAMQPFrame(nil, AMQPFrameBody, 0x0102, []byte("hi")),
			[]byte{3, 0x01, 0x02, 0, 0, 0, 2, 'h', 'i', 0xCE}},
		{"empty frame", AppendAMQPFrame(nil, AMQPFrameHeartbeat, 0, nil), []byte{8, 0, 0, 0, 0, 0, 0, 0xCE}},
		{"method", AppendAMQPMethod(nil, 1, 20, 10, []byte{0}),
			[]byte{1, 0, 1, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE}},
		{"connection.close", AppendAMQPConnectionClose(nil, 403, "NO", 0, 0),
			[]byte{1, 0, 0, 0, 0, 0, 13, 0, 10, 0, 50, 0x01, 0x93, 2, 'N', 'O', 0, 0, 0, 0, 0xCE}},
		{"connection.close with cause", AppendAMQPConnectionClose(nil, 530, "", 60, 40),
			[]byte{1, 0, 0, 0, 0, 0, 11, 0, 10, 0, 50, 0x02, 0x12, 0, 0, 60, 0, 40, 0xCE}},
		{"connection.close long text", AppendAMQPConnectionClose(nil, 501, long, 0, 0),
			append(append([]byte{1, 0, 0, 0, 0, 1, 10, 0, 10, 0, 50, 0x01, 0xF5, 255}, long[:255]...), 0, 0, 0, 0, 0xCE)},
		{"connection.close-ok", AppendAMQPConnectionCloseOK(nil), []byte{1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 51, 0xCE}},
		{"channel.close", AppendAMQPChannelClose(nil, 7, 403, "NO", 50, 10),
			[]byte{1, 0, 7, 0, 0, 0, 13, 0, 20, 0, 40, 0x01, 0x93, 2, 'N', 'O', 0, 50, 0, 10, 0xCE}},
		{"short string", AppendAMQPShortString([]byte{9}, "ab"), []byte{9, 2, 'a', 'b'}},
		{"long string", AppendAMQPLongString(nil, "ab"), []byte{0, 0, 0, 2, 'a', 'b'}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Equal(tc.got, tc.want) {
				t.Fatalf("got  % x\nwant % x", tc.got, tc.want)
			}
		})
	}
}

func TestAMQPAnswersAllocs(t *testing.T) {
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendAMQPConnectionClose(buf[:0], 320, "CONNECTION_FORCED - bye", 0, 0)
		buf = AppendAMQPChannelClose(buf, 1, 403, "ACCESS_REFUSED", 60, 40)
	}); n != 0 {
		t.Errorf("%v allocations into a buffer with room", n)
	}
}
