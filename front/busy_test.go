package front

import (
	"testing"
	"time"
)

func TestRetryHint(t *testing.T) {
	for _, least := range []time.Duration{0, 10 * time.Millisecond, 3 * time.Second} {
		t.Run(least.String(), func(t *testing.T) {
			lo := max(least, RetryMin)
			hi := lo + RetrySpread
			seenLow, seenHigh := false, false
			for range 1000 {
				d := RetryHint(least)
				if d < lo || d > hi {
					t.Fatalf("hint %s outside [%s, %s]", d, lo, hi)
				}
				seenLow = seenLow || d < lo+RetrySpread/4
				seenHigh = seenHigh || d > hi-RetrySpread/4
			}
			if !seenLow || !seenHigh {
				t.Fatal("hints not spread over the range")
			}
		})
	}
}
