package validate

import (
	"bytes"
	"testing"
)

// sendFrame builds a SEND frame of exactly size bytes.
func sendFrame(size int) []byte {
	head := "SEND\ndestination:/exchange/amq.topic/prices.eur\ncontent-type:application/json\ncontent-length:"
	bodyLen := size - len(head) - 2 - 1
	bodyLen -= len(itoa(bodyLen))
	frame := []byte(head + itoa(bodyLen) + "\n\n")
	frame = append(frame, bytes.Repeat([]byte("x"), bodyLen)...)
	return append(frame, 0)
}

func benchmarkSTOMPSend(b *testing.B, size int) {
	frame := sendFrame(size)
	if len(frame) != size {
		b.Fatalf("built a %d-byte frame, want %d", len(frame), size)
	}
	s := NewSTOMPScanner(STOMPLimits{}, false)
	if _, _, err := s.Next([]byte(connect12)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for range b.N {
		n, f, err := s.Next(frame)
		if err != nil || f == nil || n != len(frame) {
			b.Fatalf("n=%d err=%v", n, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}

func itoa(n int) string {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(buf[i:])
		}
	}
}

// BenchmarkSTOMPSend128 and BenchmarkSTOMPSend4K measure the client hot
// path: one whole SEND frame of 128 bytes or 4 KiB.
func BenchmarkSTOMPSend128(b *testing.B) { benchmarkSTOMPSend(b, 128) }
func BenchmarkSTOMPSend4K(b *testing.B)  { benchmarkSTOMPSend(b, 4096) }

// BenchmarkSTOMPSend4KNoLength is the worst case for the scanner: a 4 KiB
// body without content-length, searched for its NUL.
func BenchmarkSTOMPSend4KNoLength(b *testing.B) {
	frame := []byte("SEND\ndestination:/exchange/amq.topic/prices.eur\n\n")
	frame = append(frame, bytes.Repeat([]byte("x"), 4096-len(frame)-1)...)
	frame = append(frame, 0)
	s := NewSTOMPScanner(STOMPLimits{}, false)
	if _, _, err := s.Next([]byte(connect12)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if n, f, err := s.Next(frame); err != nil || f == nil || n != len(frame) {
			b.Fatalf("n=%d err=%v", n, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}
