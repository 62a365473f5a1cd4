package validate

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// FuzzSTOMPScanner checks that the scanner never panics, never reports a
// frame beyond its limits, and gives the same verdict whether the bytes come
// at once or in pieces. Seeds live in testdata/fuzz/FuzzSTOMPScanner.
func FuzzSTOMPScanner(f *testing.F) {
	f.Add([]byte(connect12+"SEND\ndestination:/queue/a\ncontent-length:3\n\na\x00b\x00"), uint8(3))
	f.Add([]byte(connect12+"\r\nSUBSCRIBE\nid:0\ndestination:/topic/x\n\n\x00"), uint8(1))
	lim := STOMPLimits{MaxFrameBytes: 512, MaxHeaders: 8, MaxHeaderLineBytes: 128}
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		whole, errWhole := scanAll(t, lim, in, 0)
		split, errSplit := scanAll(t, lim, in, int(step)+1)
		if !slices.Equal(whole, split) || classOf(errWhole) != classOf(errSplit) {
			t.Fatalf("whole: %v %v; in pieces of %d: %v %v", whole, errWhole, int(step)+1, split, errSplit)
		}
		s := NewSTOMPScanner(lim, false)
		for rest := in; len(rest) > 0; {
			n, fr, err := s.Next(rest)
			if err != nil || n == 0 {
				return
			}
			if n > len(rest) {
				t.Fatalf("consumed %d of %d bytes", n, len(rest))
			}
			if fr != nil {
				if len(fr.Raw) > lim.MaxFrameBytes || fr.NumHeaders() > lim.MaxHeaders {
					t.Fatalf("frame over limits: %d bytes, %d headers", len(fr.Raw), fr.NumHeaders())
				}
				if bytes.IndexByte(fr.Raw[:fr.body0], 0) >= 0 {
					t.Fatalf("NUL inside headers of an accepted frame")
				}
			}
			rest = rest[n:]
		}
	})
}

func classOf(err error) error {
	for _, c := range []error{ErrMalformed, ErrTooLarge, ErrPolicy} {
		if errors.Is(err, c) {
			return c
		}
	}
	return err
}
