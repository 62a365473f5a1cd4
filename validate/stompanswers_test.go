package validate

import (
	"testing"
)

func TestAppendSTOMPError(t *testing.T) {
	tests := []struct {
		name    string
		v       STOMPVersion
		msg     string
		detail  string
		receipt []byte
		want    string
	}{
		{"plain", STOMP12, "access refused", "not yours", nil,
			"ERROR\nmessage:access refused\ncontent-type:text/plain\ncontent-length:9\n\nnot yours\x00"},
		{"escaped in 1.2", STOMP12, "a:b\\c\nd\re", "", nil,
			"ERROR\nmessage:a\\cb\\\\c\\nd\\re\ncontent-type:text/plain\ncontent-length:0\n\n\x00"},
		{"escaped in 1.1", STOMP11, "x:y", "", nil,
			"ERROR\nmessage:x\\cy\ncontent-type:text/plain\ncontent-length:0\n\n\x00"},
		{"1.0 has no escapes: line breaks become spaces", STOMP10, "a:b\\c\nd\re", "", nil,
			"ERROR\nmessage:a:b\\c d e\ncontent-type:text/plain\ncontent-length:0\n\n\x00"},
		{"receipt as sent", STOMP12, "m", "d", []byte("r\\c1"),
			"ERROR\nmessage:m\nreceipt-id:r\\c1\ncontent-type:text/plain\ncontent-length:1\n\nd\x00"},
		{"empty receipt kept", STOMP12, "m", "", []byte{},
			"ERROR\nmessage:m\nreceipt-id:\ncontent-type:text/plain\ncontent-length:0\n\n\x00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendSTOMPError([]byte("x"), tc.v, tc.msg, tc.detail, tc.receipt)
			if string(got) != "x"+tc.want {
				t.Fatalf("got  %q\nwant %q", got, "x"+tc.want)
			}
			if tc.v < STOMP11 {
				return
			}
			// What a client's parser makes of it: the message as given.
			s := NewSTOMPScanner(DefaultSTOMPLimits(), true)
			n, f, err := s.Next(got[1:])
			if err != nil || f == nil || n != len(got)-1 {
				t.Fatalf("scanning it: n=%d frame=%v err=%v", n, f, err)
			}
			if m, _ := f.Header("message"); unescapeSTOMPForTest(string(m)) != tc.msg {
				t.Errorf("message header reads %q, want %q", unescapeSTOMPForTest(string(m)), tc.msg)
			}
			if string(f.Body()) != tc.detail {
				t.Errorf("body %q, want %q", f.Body(), tc.detail)
			}
		})
	}
}

func unescapeSTOMPForTest(s string) string {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			out = append(out, s[i])
			continue
		}
		i++
		out = append(out, map[byte]byte{'\\': '\\', 'n': '\n', 'r': '\r', 'c': ':'}[s[i]])
	}
	return string(out)
}

func TestAppendSTOMPHeader(t *testing.T) {
	tests := []struct {
		v           STOMPVersion
		value, want string
	}{
		{STOMP12, "/topic/a", "destination:/topic/a\n"},
		{STOMP12, "a:b", "destination:a\\cb\n"},
		{STOMP11, "\\", "destination:\\\\\n"},
		{STOMP10, "a:b\n", "destination:a:b \n"},
		{STOMP12, "", "destination:\n"},
	}
	for _, tc := range tests {
		t.Run(tc.v.String()+" "+tc.value, func(t *testing.T) {
			if got := AppendSTOMPHeader(nil, tc.v, "destination", tc.value); string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAppendSTOMPErrorAllocs(t *testing.T) {
	buf := make([]byte, 0, 256)
	receipt := []byte("r1")
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendSTOMPError(buf[:0], STOMP12, "slow consumer", "queue full", receipt)
	}); n != 0 {
		t.Errorf("%v allocations into a buffer with room", n)
	}
}
