package validate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Helpers that encode AMQP 0-9-1 pieces.
func frame(typ byte, ch uint16, payload []byte) []byte {
	b := []byte{typ, byte(ch >> 8), byte(ch), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[3:], uint32(len(payload)))
	return append(append(b, payload...), 0xCE)
}

func method(ch, class, id uint16, args ...[]byte) []byte {
	p := []byte{byte(class >> 8), byte(class), byte(id >> 8), byte(id)}
	for _, a := range args {
		p = append(p, a...)
	}
	return frame(AMQPFrameMethod, ch, p)
}

func sstr(s string) []byte { return append([]byte{byte(len(s))}, s...) }
func lstr(s string) []byte { return append(u32(uint32(len(s))), s...) }
func u16(v uint16) []byte  { return []byte{byte(v >> 8), byte(v)} }
func u32(v uint32) []byte  { return binary.BigEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte  { return binary.BigEndian.AppendUint64(nil, v) }
func table(entries ...[]byte) []byte {
	var body []byte
	for _, e := range entries {
		body = append(body, e...)
	}
	return append(u32(uint32(len(body))), body...)
}
func entry(name string, typ byte, v []byte) []byte { return append(append(sstr(name), typ), v...) }

func handshake() []byte {
	b := []byte(AMQPProtocolHeader)
	props := table(entry("product", 'S', lstr("test")), entry("capabilities", 'F', table(entry("publisher_confirms", 't', []byte{1}))))
	b = append(b, method(0, 10, 11, props, sstr("PLAIN"), lstr("\x00guest\x00guest"), sstr("en_US"))...)
	b = append(b, method(0, 10, 31, u16(2047), u32(131072), u16(60))...)
	b = append(b, method(0, 10, 40, sstr("/"), sstr(""), []byte{0})...)
	return b
}

func publish(ch uint16, body string, chunks int) []byte {
	b := method(ch, 60, 40, u16(0), sstr("amq.topic"), sstr("prices.eur"), []byte{0})
	hdr := append(append(u16(60), u16(0)...), u64(uint64(len(body)))...)
	hdr = append(hdr, u16(1<<15|1<<13|1<<12)...) // content-type, headers, delivery-mode
	hdr = append(hdr, sstr("text/plain")...)
	hdr = append(hdr, table(entry("x-a", 'I', u32(7)), entry("list", 'A', append(u32(5), 'I', 0, 0, 0, 1)))...)
	hdr = append(hdr, 2)
	b = append(b, frame(AMQPFrameHeader, ch, hdr)...)
	step := (len(body) + chunks - 1) / chunks
	for i := 0; i < len(body); i += step {
		b = append(b, frame(AMQPFrameBody, ch, []byte(body[i:min(i+step, len(body))]))...)
	}
	return b
}

func scanAMQP(t testing.TB, lim AMQPLimits, in []byte, step int) ([]string, error) {
	t.Helper()
	s := NewAMQPScanner(lim)
	var seen []string
	var pending []byte
	if step <= 0 {
		step = len(in)
	}
	for off := 0; off < len(in); off += step {
		pending = append(pending, in[off:min(off+step, len(in))]...)
		for {
			n, f, err := s.Next(pending)
			if err != nil {
				return seen, err
			}
			if n == 0 {
				break
			}
			switch {
			case f == nil:
				seen = append(seen, "header")
			case f.Type == AMQPFrameMethod:
				seen = append(seen, f.MethodName())
			default:
				seen = append(seen, []string{1: "m", 2: "content-header", 3: "body", 8: "heartbeat"}[f.Type])
			}
			pending = pending[n:]
		}
	}
	return seen, nil
}

func TestAMQPScannerAccepts(t *testing.T) {
	in := handshake()
	in = append(in, method(1, 20, 10, sstr(""))...)
	in = append(in, method(1, 40, 10, u16(0), sstr("ex"), sstr("topic"), []byte{0b10}, table(entry("alternate-exchange", 'S', lstr("alt"))))...)
	in = append(in, method(1, 50, 10, u16(0), sstr("q"), []byte{0}, table(entry("x-max-length", 'l', u64(10)), entry("nested", 'F', table(entry("v", 'V', nil)))))...)
	in = append(in, method(1, 85, 10, []byte{0})...)
	in = append(in, publish(1, strings.Repeat("x", 100), 3)...)
	in = append(in, frame(AMQPFrameHeartbeat, 0, nil)...)
	in = append(in, method(1, 60, 80, u64(1), []byte{0})...)
	in = append(in, method(0, 10, 50, u16(200), sstr("bye"), u16(0), u16(0))...)
	want := "header connection.start-ok connection.tune-ok connection.open channel.open exchange.declare queue.declare confirm.select basic.publish content-header body body body heartbeat basic.ack connection.close"
	for _, step := range []int{0, 1, 7} {
		seen, err := scanAMQP(t, AMQPLimits{}, in, step)
		if err != nil {
			t.Fatalf("step %d: %v (after %v)", step, err, seen)
		}
		if got := strings.Join(seen, " "); got != want {
			t.Fatalf("step %d:\n got %s\nwant %s", step, got, want)
		}
	}
}

func TestAMQPScannerRejects(t *testing.T) {
	h := handshake()
	open := func(more ...[]byte) []byte {
		b := append([]byte(nil), h...)
		for _, m := range more {
			b = append(b, m...)
		}
		return b
	}
	badEnd := method(1, 20, 10, sstr(""))
	badEnd[len(badEnd)-1] = 0
	deep := table(entry("v", 'V', nil))
	for range 10 {
		deep = table(entry("t", 'F', deep))
	}
	pub := publish(1, "hello world", 1)
	hdrLen := len(method(1, 60, 40, u16(0), sstr("amq.topic"), sstr("prices.eur"), []byte{0}))
	pubNoBody := pub[:len(pub)-len(frame(AMQPFrameBody, 1, []byte("hello world")))]
	tests := []struct {
		name  string
		in    []byte
		class error
		code  int
	}{
		{"not amqp", []byte("GET / HTTP/1.1\r\n"), ErrMalformed, AMQPSyntaxError},
		{"amqp 1.0 header", []byte("AMQP\x00\x01\x00\x00"), ErrMalformed, AMQPSyntaxError},
		{"open before tune-ok", append([]byte(AMQPProtocolHeader), append(method(0, 10, 11, table(), sstr("PLAIN"), lstr("x"), sstr("en")), method(0, 10, 40, sstr("/"), sstr(""), []byte{0})...)...), ErrPolicy, AMQPCommandInvalid},
		{"channel before open", append([]byte(AMQPProtocolHeader), method(1, 20, 10, sstr(""))...), ErrPolicy, AMQPCommandInvalid},
		{"start-ok twice", open(method(0, 10, 11, table(), sstr("PLAIN"), lstr("x"), sstr("en"))), ErrPolicy, AMQPCommandInvalid},
		{"bad frame end", open(badEnd), ErrMalformed, AMQPFrameError},
		{"unknown frame type", open(frame(4, 1, nil)), ErrMalformed, AMQPFrameError},
		{"unknown method", open(method(1, 60, 99)), ErrMalformed, AMQPCommandInvalid},
		{"server-only method", open(method(1, 60, 60, u64(1))), ErrMalformed, AMQPCommandInvalid},
		{"connection method on channel 1", open(method(1, 10, 50, u16(200), sstr(""), u16(0), u16(0))), ErrMalformed, AMQPChannelError},
		{"basic method on channel 0", open(method(0, 60, 80, u64(1), []byte{0})), ErrMalformed, AMQPChannelError},
		{"channel beyond channel-max", open(method(3000, 20, 10, sstr(""))), ErrMalformed, AMQPChannelError},
		{"frame over frame-max", open(frame(AMQPFrameBody, 1, make([]byte, 200000))), ErrTooLarge, AMQPFrameError},
		{"body without publish", open(frame(AMQPFrameBody, 1, []byte("x"))), ErrMalformed, AMQPUnexpectedFrame},
		{"header without publish", open(frame(AMQPFrameHeader, 1, make([]byte, 14))), ErrMalformed, AMQPUnexpectedFrame},
		{"method before content header", open(pub[:hdrLen], method(1, 60, 80, u64(1), []byte{0})), ErrMalformed, AMQPUnexpectedFrame},
		{"body longer than body-size", open(pubNoBody, frame(AMQPFrameBody, 1, []byte("hello world!"))), ErrMalformed, AMQPFrameError},
		{"truncated short string", open(method(1, 20, 10, []byte{5, 'a'})), ErrMalformed, AMQPSyntaxError},
		{"bytes after arguments", open(method(1, 20, 10, sstr(""), []byte{1})), ErrMalformed, AMQPSyntaxError},
		{"table nested too deep", open(method(1, 50, 10, u16(0), sstr("q"), []byte{0}, deep)), ErrMalformed, AMQPSyntaxError},
		{"unknown field type", open(method(1, 50, 10, u16(0), sstr("q"), []byte{0}, table(entry("x", 'Z', nil)))), ErrMalformed, AMQPSyntaxError},
		{"table size past frame", open(method(1, 50, 10, u16(0), sstr("q"), []byte{0}, u32(1000))), ErrMalformed, AMQPSyntaxError},
		{"heartbeat on channel 1", open(frame(AMQPFrameHeartbeat, 1, nil)), ErrMalformed, AMQPFrameError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, step := range []int{0, 3} {
				_, err := scanAMQP(t, AMQPLimits{}, tt.in, step)
				var ae *AMQPError
				if !errors.As(err, &ae) || !errors.Is(err, tt.class) || ae.Code != tt.code {
					t.Fatalf("step %d: got %v, want %v with code %d", step, err, tt.class, tt.code)
				}
			}
		})
	}
}

func FuzzAMQPScanner(f *testing.F) {
	f.Add(append(handshake(), publish(1, "hello", 2)...), uint8(3))
	f.Add(handshake(), uint8(0))
	lim := AMQPLimits{MaxFrameBytes: 8192, MaxChannels: 16, MaxTableDepth: 4}
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		whole, errWhole := scanAMQP(t, lim, in, 0)
		split, errSplit := scanAMQP(t, lim, in, int(step)+1)
		if strings.Join(whole, " ") != strings.Join(split, " ") || classOf(errWhole) != classOf(errSplit) {
			t.Fatalf("whole: %v %v; in pieces of %d: %v %v", whole, errWhole, int(step)+1, split, errSplit)
		}
	})
}

func BenchmarkAMQPPublish(b *testing.B) {
	for _, size := range []int{128, 4096} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			s := NewAMQPScanner(AMQPLimits{})
			if _, err := scanAMQPInto(s, handshake()); err != nil {
				b.Fatal(err)
			}
			msg := publish(1, strings.Repeat("x", size), 1)
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := scanAMQPInto(s, msg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "messages/s")
		})
	}
}

// scanAMQPInto feeds whole frames to s without allocating.
func scanAMQPInto(s *AMQPScanner, in []byte) (int, error) {
	frames := 0
	for len(in) > 0 {
		n, _, err := s.Next(in)
		if err != nil {
			return frames, err
		}
		if n == 0 {
			return frames, errors.New("incomplete")
		}
		in = in[n:]
		frames++
	}
	return frames, nil
}

// TestAMQPProperties: the readers the ACL uses find reply-to and the
// headers table (with an array inside) wherever the flags put them, and
// refuse what the scanner refuses.
func TestAMQPProperties(t *testing.T) {
	hdr := func(flags uint16, props ...[]byte) []byte {
		b := append(append(u16(60), u16(0)...), u64(0)...)
		b = append(b, u16(flags)...)
		for _, p := range props {
			b = append(b, p...)
		}
		return b
	}
	vals := append(append([]byte{'S'}, lstr("a.b")...), 'I', 0, 0, 0, 9)
	cc := table(entry("CC", 'A', append(u32(uint32(len(vals))), vals...)), entry("n", 'I', u32(7)))
	tests := []struct {
		name    string
		payload []byte
		replyTo string // "-" for absent
		headers []string
		err     bool
	}{
		{"none", hdr(0), "-", nil, false},
		{"reply-to alone", hdr(1<<9, sstr("amq.rabbitmq.reply-to")), "amq.rabbitmq.reply-to", nil, false},
		{"reply-to after headers and correlation-id", hdr(1<<15|1<<13|1<<10|1<<9, sstr("text/plain"), cc, sstr("c1"), sstr("rq")),
			"rq", []string{"CC A [S:a.b I]", "n I"}, false},
		{"empty reply-to", hdr(1<<9, sstr("")), "", nil, false},
		{"truncated reply-to", hdr(1<<9, []byte{9, 'x'}), "-", nil, true},
		{"bytes after the properties", hdr(0, []byte{0}), "-", nil, true},
		{"reserved flag bit", hdr(1), "-", nil, true},
		{"not basic", append(u16(50), hdr(0)[2:]...), "-", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pr, err := ParseAMQPProperties(tt.payload, 4)
			if (err != nil) != tt.err {
				t.Fatalf("err %v, want error %v", err, tt.err)
			}
			if err != nil {
				return
			}
			rt, ok := pr.String(AMQPReplyTo)
			if got := map[bool]string{true: string(rt), false: "-"}[ok]; got != tt.replyTo {
				t.Fatalf("reply-to %q, want %q", got, tt.replyTo)
			}
			var got []string
			if h, ok := pr.Headers(); ok {
				for name, v, ok := h.Next(); ok; name, v, ok = h.Next() {
					s := string(name) + " " + string(v.Type)
					if arr, ok := v.Array(); ok {
						var vals []string
						for _, e, ok := arr.Next(); ok; _, e, ok = arr.Next() {
							if str, ok := e.String(); ok {
								vals = append(vals, "S:"+string(str))
							} else {
								vals = append(vals, string(e.Type))
							}
						}
						s += " [" + strings.Join(vals, " ") + "]"
					}
					got = append(got, s)
				}
				if h.Err() != nil {
					t.Fatal(h.Err())
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.headers, ",") {
				t.Fatalf("headers %q, want %q", got, tt.headers)
			}
		})
	}
	t.Run("malformed table", func(t *testing.T) {
		f := NewAMQPFields(append(u32(3), 5, 'a', 'b'))
		if _, _, ok := f.Next(); ok || f.Err() == nil {
			t.Fatal("a truncated entry was read")
		}
		f = NewAMQPFields(u32(9))
		if _, _, ok := f.Next(); ok || f.Err() == nil {
			t.Fatal("a size past the bytes was accepted")
		}
	})
}

// FrameLen names a partial frame's whole length as soon as its header is
// in, so that its pieces are gathered in one buffer of that size; nothing
// before then, and nothing once it is complete.
func TestAMQPScannerFrameLen(t *testing.T) {
	s := NewAMQPScanner(AMQPLimits{})
	hs := handshake()
	for off := 0; off < len(hs); {
		n, _, err := s.Next(hs[off:])
		if err != nil || n == 0 {
			t.Fatalf("handshake at %d: %d, %v", off, n, err)
		}
		off += n
	}
	pub := publish(1, strings.Repeat("x", 1000), 1)
	m, _, err := s.Next(pub)
	if err != nil || m == 0 {
		t.Fatalf("basic.publish: %d, %v", m, err)
	}
	hdr := pub[m:]
	hn := 8 + int(binary.BigEndian.Uint32(hdr[3:7]))
	for _, c := range []struct{ have, want int }{{6, 0}, {7, hn}, {hn - 1, hn}} {
		if _, _, err := s.Next(hdr[:c.have]); err != nil {
			t.Fatalf("%d bytes: %v", c.have, err)
		}
		if got := s.FrameLen(); got != c.want {
			t.Errorf("with %d of %d bytes FrameLen is %d, want %d", c.have, hn, got, c.want)
		}
	}
	if n, _, err := s.Next(hdr[:hn]); err != nil || n != hn || s.FrameLen() != 0 {
		t.Fatalf("whole frame: %d, %v, FrameLen %d", n, err, s.FrameLen())
	}
}
