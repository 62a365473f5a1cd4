package validate

import (
	"errors"
	"strings"
	"testing"
)

func TestTopic(t *testing.T) {
	for _, ok := range []string{"prices", "prices.eur", "a-b_c.D9", strings.Repeat("x", MaxTopicBytes)} {
		if err := Topic(ok); err != nil {
			t.Errorf("Topic(%q): %v", ok, err)
		}
	}
	tests := []struct {
		topic string
		class error
	}{
		{"", ErrMalformed},
		{strings.Repeat("x", MaxTopicBytes+1), ErrTooLarge},
		{".a", ErrMalformed},
		{"a.", ErrMalformed},
		{"a..b", ErrMalformed},
		{"a.*", ErrMalformed},
		{"a.>", ErrMalformed},
		{"a/#", ErrMalformed},
		{"a/+", ErrMalformed},
		{"a/b", ErrMalformed},
		{"a b", ErrMalformed},
		{"a\nb", ErrMalformed},
		{"a\x00", ErrMalformed},
		{"é", ErrMalformed},
	}
	for _, tt := range tests {
		if err := Topic(tt.topic); !errors.Is(err, tt.class) {
			t.Errorf("Topic(%q) = %v, want %v", tt.topic, err, tt.class)
		}
	}
}

func FuzzTopic(f *testing.F) {
	f.Add("prices.eur")
	f.Add("a..b")
	f.Fuzz(func(t *testing.T, s string) {
		if Topic(s) != nil {
			return
		}
		if strings.ContainsAny(s, "*>#+/ \x00\r\n") || strings.Contains(s, "..") || len(s) > MaxTopicBytes {
			t.Fatalf("accepted %q", s)
		}
	})
}
