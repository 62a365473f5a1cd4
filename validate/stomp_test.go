package validate

import (
	"errors"
	"strings"
	"testing"
)

const connect12 = "CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:10000,10000\n\n\x00"

// scanAll feeds in to a fresh client scanner in pieces of size step (0: all
// at once), the way an adapter does: unconsumed bytes are carried over and
// the next piece appended. It returns the frames' commands and the error.
func scanAll(t testing.TB, lim STOMPLimits, in []byte, step int) ([]string, error) {
	t.Helper()
	s := NewSTOMPScanner(lim, false)
	var (
		cmds    []string
		pending []byte
	)
	if step <= 0 {
		step = len(in)
	}
	for off := 0; off < len(in); off += step {
		end := min(off+step, len(in))
		pending = append(pending, in[off:end]...)
		for {
			n, f, err := s.Next(pending)
			if err != nil {
				return cmds, err
			}
			if n == 0 {
				break
			}
			if f != nil {
				if f.Raw[len(f.Raw)-1] != 0 || len(f.Raw) != n {
					t.Fatalf("frame %s: Raw does not end at its NUL", f.Command)
				}
				cmds = append(cmds, f.Command.String())
			} else if len(cmds) == 0 || cmds[len(cmds)-1] != "EOL" {
				cmds = append(cmds, "EOL") // EOLs split across pieces count once
			}
			pending = pending[n:]
		}
	}
	return cmds, nil
}

func TestSTOMPScannerAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"connect 1.2", connect12, "CONNECT"},
		{"connect 1.0 without accept-version", "CONNECT\nlogin:a\npasscode:b\n\n\x00", "CONNECT"},
		{"stomp command", "STOMP\naccept-version:1.2\nhost:/\n\n\x00", "STOMP"},
		{"CRLF line endings", "CONNECT\r\naccept-version:1.2\r\n\r\n\x00", "CONNECT"},
		{"send with text body", connect12 + "SEND\ndestination:/queue/a\n\nhello\x00", "CONNECT SEND"},
		{"send with content-length and NULs in body", connect12 + "SEND\ndestination:/queue/a\ncontent-length:5\n\na\x00b\x00c\x00", "CONNECT SEND"},
		{"heart-beats between frames", connect12 + "\n\r\n\nSEND\ndestination:/topic/x\n\n\x00\n", "CONNECT EOL SEND EOL"},
		{"escaped header value in 1.2", connect12 + "SEND\ndestination:/queue/a\\cb\nx-note:line\\nbreak\\\\\\r\n\n\x00", "CONNECT SEND"},
		{"repeated header first wins", connect12 + "SEND\ndestination:/queue/a\ndestination:/queue/b\n\n\x00", "CONNECT SEND"},
		{"subscribe client-individual", connect12 + "SUBSCRIBE\nid:0\ndestination:/exchange/amq.topic/a.*\nack:client-individual\n\n\x00", "CONNECT SUBSCRIBE"},
		{"ack and nack 1.2", connect12 + "ACK\nid:T_1\n\n\x00NACK\nid:T_2\n\n\x00", "CONNECT ACK NACK"},
		{"transactions", connect12 + "BEGIN\ntransaction:tx1\n\n\x00SEND\ndestination:/queue/a\ntransaction:tx1\n\nx\x00COMMIT\ntransaction:tx1\n\n\x00ABORT\ntransaction:tx2\n\n\x00", "CONNECT BEGIN SEND COMMIT ABORT"},
		{"unsubscribe and disconnect with receipt", connect12 + "UNSUBSCRIBE\nid:0\n\n\x00DISCONNECT\nreceipt:77\n\n\x00", "CONNECT UNSUBSCRIBE DISCONNECT"},
		{"1.0 ack with message-id only", "CONNECT\n\n\x00ACK\nmessage-id:m1\n\n\x00", "CONNECT ACK"},
		{"1.0 raw colon in value", "CONNECT\n\n\x00SEND\ndestination:/queue/a:b\n\n\x00", "CONNECT SEND"},
		{"1.1 ack", "CONNECT\naccept-version:1.1\n\n\x00ACK\nmessage-id:m\nsubscription:s\n\n\x00", "CONNECT ACK"},
		{"empty header value", connect12 + "SEND\ndestination:/queue/a\nx-empty:\n\n\x00", "CONNECT SEND"},
		{"utf-8 header", connect12 + "SEND\ndestination:/queue/é\n\n\x00", "CONNECT SEND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, step := range []int{0, 1, 2, 3, 7} {
				cmds, err := scanAll(t, STOMPLimits{}, []byte(tt.in), step)
				if err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				if got := strings.Join(cmds, " "); got != tt.want {
					t.Fatalf("step %d: got %q, want %q", step, got, tt.want)
				}
			}
		})
	}
}

func TestSTOMPScannerRejects(t *testing.T) {
	small := STOMPLimits{MaxFrameBytes: 256, MaxHeaders: 4, MaxHeaderLineBytes: 64}
	tests := []struct {
		name    string
		lim     STOMPLimits
		in      string
		class   error
		mention string
	}{
		{"unknown command", STOMPLimits{}, "HELLO\n\n\x00", ErrMalformed, "unknown command"},
		{"server command from client", STOMPLimits{}, connect12 + "MESSAGE\n\n\x00", ErrMalformed, "unknown command"},
		{"lower-case command", STOMPLimits{}, "connect\n\n\x00", ErrMalformed, "unknown command"},
		{"send before connect", STOMPLimits{}, "SEND\ndestination:/queue/a\n\n\x00", ErrPolicy, "first frame"},
		{"connect twice", STOMPLimits{}, connect12 + connect12, ErrPolicy, "twice"},
		{"stomp without accept-version", STOMPLimits{}, "STOMP\nhost:/\n\n\x00", ErrMalformed, "accept-version"},
		{"unsupported version", STOMPLimits{}, "CONNECT\naccept-version:2.0\n\n\x00", ErrPolicy, "no supported version"},
		{"bad heart-beat", STOMPLimits{}, "CONNECT\naccept-version:1.2\nheart-beat:fast\n\n\x00", ErrMalformed, "heart-beat"},
		{"send without destination", STOMPLimits{}, connect12 + "SEND\n\nhi\x00", ErrMalformed, "destination"},
		{"send with empty destination", STOMPLimits{}, connect12 + "SEND\ndestination:\n\nhi\x00", ErrMalformed, "destination"},
		{"subscribe without id in 1.2", STOMPLimits{}, connect12 + "SUBSCRIBE\ndestination:/queue/a\n\n\x00", ErrMalformed, "id"},
		{"subscribe bad ack mode", STOMPLimits{}, connect12 + "SUBSCRIBE\nid:1\ndestination:/queue/a\nack:never\n\n\x00", ErrMalformed, "ack"},
		{"unsubscribe without id", STOMPLimits{}, connect12 + "UNSUBSCRIBE\ndestination:/queue/a\n\n\x00", ErrMalformed, "id"},
		{"ack without id in 1.2", STOMPLimits{}, connect12 + "ACK\nmessage-id:1\n\n\x00", ErrMalformed, "id"},
		{"nack in 1.0", STOMPLimits{}, "CONNECT\n\n\x00NACK\nmessage-id:1\n\n\x00", ErrMalformed, "NACK"},
		{"begin without transaction", STOMPLimits{}, connect12 + "BEGIN\n\n\x00", ErrMalformed, "transaction"},
		{"body on subscribe", STOMPLimits{}, connect12 + "SUBSCRIBE\nid:1\ndestination:/queue/a\n\nbody\x00", ErrMalformed, "body"},
		{"header without colon", STOMPLimits{}, connect12 + "SEND\ndestination\n\n\x00", ErrMalformed, "colon"},
		{"empty header name", STOMPLimits{}, connect12 + "SEND\n:x\ndestination:/q\n\n\x00", ErrMalformed, "empty name"},
		{"raw colon in 1.2 value", STOMPLimits{}, connect12 + "SEND\ndestination:/queue/a:b\n\n\x00", ErrMalformed, "colon"},
		{"undefined escape", STOMPLimits{}, connect12 + "SEND\ndestination:/queue/\\t\n\n\x00", ErrMalformed, "escape"},
		{"trailing backslash", STOMPLimits{}, connect12 + "SEND\ndestination:/queue/a\\\n\n\x00", ErrMalformed, "escape"},
		{"\\r escape in 1.1", STOMPLimits{}, "CONNECT\naccept-version:1.1\n\n\x00SEND\ndestination:/q\\r\n\n\x00", ErrMalformed, "escape"},
		{"raw CR inside header", STOMPLimits{}, connect12 + "SEND\ndestination:/q\rinjected:1\n\n\x00", ErrMalformed, "CR"},
		{"NUL inside header", STOMPLimits{}, connect12 + "SEND\ndestination:/q\x00x\n\n\x00", ErrMalformed, "NUL"},
		{"invalid utf-8 header", STOMPLimits{}, connect12 + "SEND\ndestination:/q\xff\n\n\x00", ErrMalformed, "UTF-8"},
		{"CR without LF between frames", STOMPLimits{}, connect12 + "\rSEND\n\n\x00", ErrMalformed, "CR"},
		{"content-length not a number", STOMPLimits{}, connect12 + "SEND\ndestination:/q\ncontent-length:5x\n\nhello\x00", ErrMalformed, "content-length"},
		{"content-length negative", STOMPLimits{}, connect12 + "SEND\ndestination:/q\ncontent-length:-1\n\n\x00", ErrMalformed, "content-length"},
		{"content-length shorter than body", STOMPLimits{}, connect12 + "SEND\ndestination:/q\ncontent-length:3\n\nhello\x00", ErrMalformed, "NUL"},
		{"content-length beyond limit", small, connect12 + "SEND\ndestination:/q\ncontent-length:1000000000\n\n", ErrTooLarge, "frame"},
		{"huge content-length", small, connect12 + "SEND\ndestination:/q\ncontent-length:99999999999999\n\n", ErrTooLarge, "content-length"},
		{"frame over limit without NUL", small, connect12 + "SEND\ndestination:/q\n\n" + strings.Repeat("x", 300), ErrTooLarge, "frame"},
		{"frame over limit with NUL", small, connect12 + "SEND\ndestination:/q\n\n" + strings.Repeat("x", 300) + "\x00", ErrTooLarge, "frame"},
		{"too many headers", small, connect12 + "SEND\ndestination:/q\na:1\nb:2\nc:3\nd:4\n\n\x00", ErrTooLarge, "headers"},
		{"header line too long", small, connect12 + "SEND\ndestination:/" + strings.Repeat("q", 100) + "\n\n\x00", ErrTooLarge, "header line"},
		{"header line too long, unterminated", small, connect12 + "SEND\ndestination:/" + strings.Repeat("q", 100), ErrTooLarge, "header line"},
		{"command line too long", small, strings.Repeat("C", 100), ErrTooLarge, "command line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, step := range []int{0, 1, 5} {
				_, err := scanAll(t, tt.lim, []byte(tt.in), step)
				if !errors.Is(err, tt.class) {
					t.Fatalf("step %d: got %v, want class %v", step, err, tt.class)
				}
				if !strings.Contains(err.Error(), tt.mention) {
					t.Fatalf("step %d: error %q does not mention %q", step, err, tt.mention)
				}
			}
		})
	}
}

func TestSTOMPScannerIncompleteFrameWaits(t *testing.T) {
	s := NewSTOMPScanner(STOMPLimits{}, false)
	in := []byte(connect12 + "SEND\ndestination:/q\ncontent-length:4\n\nab")
	n, f, err := s.Next(in)
	if err != nil || f == nil || f.Command != CmdConnect {
		t.Fatalf("connect: n=%d f=%v err=%v", n, f, err)
	}
	rest := in[n:]
	if n, f, err := s.Next(rest); n != 0 || f != nil || err != nil {
		t.Fatalf("partial SEND: n=%d f=%v err=%v, want a wait", n, f, err)
	}
	rest = append(rest, "cd\x00"...)
	n, f, err = s.Next(rest)
	if err != nil || f == nil || n != len(rest) {
		t.Fatalf("completed SEND: n=%d f=%v err=%v", n, f, err)
	}
	if string(f.Body()) != "abcd" {
		t.Fatalf("body %q", f.Body())
	}
	if d, _ := f.Header("destination"); string(d) != "/q" {
		t.Fatalf("destination %q", d)
	}
}

func TestSTOMPScannerServerFrames(t *testing.T) {
	s := NewSTOMPScanner(STOMPLimits{}, true)
	in := []byte("CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00\nMESSAGE\ndestination:/queue/a\nmessage-id:1\ncontent-length:3\n\na\x00b\x00")
	var cmds []string
	for len(in) > 0 {
		n, f, err := s.Next(in)
		if err != nil || n == 0 {
			t.Fatalf("n=%d err=%v", n, err)
		}
		if f != nil {
			cmds = append(cmds, f.Command.String())
		}
		in = in[n:]
	}
	if got := strings.Join(cmds, " "); got != "CONNECTED MESSAGE" {
		t.Fatalf("got %q", got)
	}
	if _, _, err := NewSTOMPScanner(STOMPLimits{}, true).Next([]byte("SEND\n\n\x00")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("server scanner took a client command: %v", err)
	}
}

func TestSTOMPScannerVersionFromConnect(t *testing.T) {
	tests := []struct {
		in   string
		want STOMPVersion
	}{
		{"CONNECT\n\n\x00", STOMP10},
		{"CONNECT\naccept-version:1.0,1.1\n\n\x00", STOMP11},
		{"CONNECT\naccept-version:1.1, 1.2, 3.0\n\n\x00", STOMP12},
	}
	for _, tt := range tests {
		s := NewSTOMPScanner(STOMPLimits{}, false)
		if _, _, err := s.Next([]byte(tt.in)); err != nil {
			t.Fatal(err)
		}
		if s.Version != tt.want || !s.Connected() {
			t.Fatalf("%q: version %s connected %v, want %s", tt.in, s.Version, s.Connected(), tt.want)
		}
	}
}
