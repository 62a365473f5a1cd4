package validate

import (
	"bytes"
	"fmt"
	"unicode/utf8"
)

// STOMPVersion is a negotiated STOMP protocol version.
type STOMPVersion uint8

// STOMP protocol versions; the zero value means "not negotiated yet".
const (
	STOMP10 STOMPVersion = iota + 1
	STOMP11
	STOMP12
)

func (v STOMPVersion) String() string {
	switch v {
	case STOMP10:
		return "1.0"
	case STOMP11:
		return "1.1"
	case STOMP12:
		return "1.2"
	}
	return "none"
}

// ParseSTOMPVersion reads a version header value ("1.0", "1.1", "1.2").
func ParseSTOMPVersion(b []byte) STOMPVersion {
	switch string(b) {
	case "1.0":
		return STOMP10
	case "1.1":
		return STOMP11
	case "1.2":
		return STOMP12
	}
	return 0
}

// STOMPCommand identifies a frame's command.
type STOMPCommand uint8

// Client and server frame commands.
const (
	CmdUnknown STOMPCommand = iota
	CmdConnect
	CmdStomp
	CmdSend
	CmdSubscribe
	CmdUnsubscribe
	CmdBegin
	CmdCommit
	CmdAbort
	CmdAck
	CmdNack
	CmdDisconnect
	CmdConnected
	CmdMessage
	CmdReceipt
	CmdError
)

var stompCommandNames = [...]string{
	"UNKNOWN", "CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "BEGIN", "COMMIT",
	"ABORT", "ACK", "NACK", "DISCONNECT", "CONNECTED", "MESSAGE", "RECEIPT", "ERROR",
}

func (c STOMPCommand) String() string {
	if int(c) < len(stompCommandNames) {
		return stompCommandNames[c]
	}
	return "UNKNOWN"
}

// The switch on string(b) compiles to comparisons without allocating.
func lookupSTOMPCommand(b []byte, server bool) STOMPCommand {
	if server {
		switch string(b) {
		case "CONNECTED":
			return CmdConnected
		case "MESSAGE":
			return CmdMessage
		case "RECEIPT":
			return CmdReceipt
		case "ERROR":
			return CmdError
		}
		return CmdUnknown
	}
	switch string(b) {
	case "SEND":
		return CmdSend
	case "ACK":
		return CmdAck
	case "NACK":
		return CmdNack
	case "SUBSCRIBE":
		return CmdSubscribe
	case "UNSUBSCRIBE":
		return CmdUnsubscribe
	case "BEGIN":
		return CmdBegin
	case "COMMIT":
		return CmdCommit
	case "ABORT":
		return CmdAbort
	case "CONNECT":
		return CmdConnect
	case "STOMP":
		return CmdStomp
	case "DISCONNECT":
		return CmdDisconnect
	}
	return CmdUnknown
}

// STOMPLimits bounds what a peer may send in one frame.
type STOMPLimits struct {
	// MaxFrameBytes bounds a whole frame: command, headers, body and NUL.
	MaxFrameBytes int
	// MaxHeaders bounds the number of header lines in a frame.
	MaxHeaders int
	// MaxHeaderLineBytes bounds the command line and each header line.
	MaxHeaderLineBytes int
}

// DefaultSTOMPLimits are the limits for client frames when a config sets none:
// a frame carries a 1 MiB body with its headers, as browsers' clients send
// without a second thought.
func DefaultSTOMPLimits() STOMPLimits {
	return STOMPLimits{MaxFrameBytes: 1<<20 + 64<<10, MaxHeaders: 64, MaxHeaderLineBytes: 8 << 10}
}

// Frame offsets are int32; a larger limit could not be represented.
const maxSTOMPFrameLimit = 1<<31 - 1

type headerSpan struct{ name0, name1, val0, val1 int32 }

// STOMPFrame is one parsed frame. It aliases the scanned buffer and is valid
// until the next call to Next on the scanner that returned it.
type STOMPFrame struct {
	Command STOMPCommand
	// Raw holds the whole frame, from the command to the terminating NUL.
	Raw   []byte
	hdrs  []headerSpan
	body0 int
}

// Header returns the raw (still escaped) value of the first header named
// name, as STOMP says repeated headers resolve to the first.
func (f *STOMPFrame) Header(name string) ([]byte, bool) {
	for _, h := range f.hdrs {
		if string(f.Raw[h.name0:h.name1]) == name {
			return f.Raw[h.val0:h.val1], true
		}
	}
	return nil, false
}

// NumHeaders is the number of header lines, repeats included.
func (f *STOMPFrame) NumHeaders() int { return len(f.hdrs) }

// HeaderAt returns the raw name and value of the i-th header line.
func (f *STOMPFrame) HeaderAt(i int) (name, value []byte) {
	h := f.hdrs[i]
	return f.Raw[h.name0:h.name1], f.Raw[h.val0:h.val1]
}

// Body returns the frame body without the terminating NUL.
func (f *STOMPFrame) Body() []byte { return f.Raw[f.body0 : len(f.Raw)-1] }

const (
	phaseIdle uint8 = iota
	phaseCommand
	phaseHeaders
	phaseBody
)

// STOMPScanner is an incremental STOMP parser and checker. Feed it a buffer
// that starts at a frame boundary; when it reports an incomplete frame, call
// it again with the same bytes plus whatever arrived since. It resumes where
// it stopped, so a frame split into many pieces costs linear time, and the
// size limits hold across pieces.
//
// A client scanner (Server false) accepts client commands only, enforces
// CONNECT first and once, header grammar, escapes, UTF-8 and the headers each
// command requires. A server scanner accepts server commands and checks
// framing and limits only: it is for splitting a trusted broker's stream.
type STOMPScanner struct {
	Limits STOMPLimits
	Server bool
	// Version decides header escaping. A client scanner sets it from the
	// CONNECT frame's accept-version; the caller may lower it to what the
	// broker's CONNECTED frame chose.
	Version STOMPVersion

	connected bool
	phase     uint8
	pos       int // next byte to examine in the current frame
	lineScan  int // how far a partial header line was searched for LF
	bodyLen   int // content-length, or -1 when absent
	frame     STOMPFrame
}

// NewSTOMPScanner returns a scanner with the given limits. Zero limits take
// the defaults.
func NewSTOMPScanner(lim STOMPLimits, server bool) *STOMPScanner {
	d := DefaultSTOMPLimits()
	if lim.MaxFrameBytes <= 0 || lim.MaxFrameBytes > maxSTOMPFrameLimit {
		lim.MaxFrameBytes = d.MaxFrameBytes
	}
	if lim.MaxHeaders <= 0 {
		lim.MaxHeaders = d.MaxHeaders
	}
	if lim.MaxHeaderLineBytes <= 0 {
		lim.MaxHeaderLineBytes = d.MaxHeaderLineBytes
	}
	return &STOMPScanner{Limits: lim, Server: server, frame: STOMPFrame{hdrs: make([]headerSpan, 0, 8)}}
}

// Connected reports whether a client scanner has accepted a CONNECT frame.
func (s *STOMPScanner) Connected() bool { return s.connected }

// Next examines buf, which starts at a frame boundary. It returns one of:
//   - n > 0 and a nil frame: buf[:n] are heart-beat EOLs between frames;
//   - n > 0 and a frame: buf[:n] is that complete, valid frame;
//   - n == 0, nil, nil: more bytes are needed;
//   - an error wrapping ErrMalformed, ErrTooLarge or ErrPolicy. The scanner
//     must not be used after an error.
func (s *STOMPScanner) Next(buf []byte) (int, *STOMPFrame, error) {
	if s.phase == phaseIdle {
		n := 0
	eols:
		for n < len(buf) {
			switch buf[n] {
			case '\n':
				n++
			case '\r':
				if n+1 == len(buf) {
					break eols
				}
				if buf[n+1] != '\n' {
					if n > 0 {
						break eols // hand over the good EOLs first
					}
					return 0, nil, fmt.Errorf("stomp: CR not followed by LF between frames: %w", ErrMalformed)
				}
				n += 2
			default:
				break eols
			}
		}
		if n > 0 || len(buf) == 0 || buf[0] == '\r' {
			return n, nil, nil
		}
		s.phase, s.pos, s.lineScan, s.bodyLen = phaseCommand, 0, 0, -1
		s.frame.hdrs = s.frame.hdrs[:0]
	}
	lim := &s.Limits
	if s.phase == phaseCommand {
		i := bytes.IndexByte(buf[s.pos:], '\n')
		if i < 0 {
			if len(buf) > lim.MaxHeaderLineBytes {
				return 0, nil, fmt.Errorf("stomp: command line longer than %d bytes: %w", lim.MaxHeaderLineBytes, ErrTooLarge)
			}
			s.pos = len(buf)
			return 0, nil, nil
		}
		end := s.pos + i
		if end > lim.MaxHeaderLineBytes {
			return 0, nil, fmt.Errorf("stomp: command line longer than %d bytes: %w", lim.MaxHeaderLineBytes, ErrTooLarge)
		}
		line := trimCR(buf[:end])
		s.frame.Command = lookupSTOMPCommand(line, s.Server)
		if s.frame.Command == CmdUnknown {
			return 0, nil, fmt.Errorf("stomp: unknown command %q: %w", clip(line), ErrMalformed)
		}
		s.pos, s.lineScan, s.phase = end+1, end+1, phaseHeaders
	}
	for s.phase == phaseHeaders {
		start := s.pos
		i := bytes.IndexByte(buf[s.lineScan:], '\n')
		if i < 0 {
			if len(buf)-start > lim.MaxHeaderLineBytes {
				return 0, nil, fmt.Errorf("stomp: header line longer than %d bytes: %w", lim.MaxHeaderLineBytes, ErrTooLarge)
			}
			if len(buf) > lim.MaxFrameBytes {
				return 0, nil, s.frameTooLarge()
			}
			s.lineScan = len(buf)
			return 0, nil, nil
		}
		end := s.lineScan + i
		if end-start > lim.MaxHeaderLineBytes {
			return 0, nil, fmt.Errorf("stomp: header line longer than %d bytes: %w", lim.MaxHeaderLineBytes, ErrTooLarge)
		}
		s.pos, s.lineScan = end+1, end+1
		if s.pos > lim.MaxFrameBytes {
			return 0, nil, s.frameTooLarge()
		}
		lineEnd := end
		if lineEnd > start && buf[lineEnd-1] == '\r' {
			lineEnd--
		}
		if lineEnd == start {
			s.phase = phaseBody
			s.frame.body0 = s.pos
			break
		}
		if err := s.header(buf, start, lineEnd); err != nil {
			return 0, nil, err
		}
	}
	var end int
	if s.bodyLen >= 0 {
		end = s.frame.body0 + s.bodyLen + 1
		if end > lim.MaxFrameBytes {
			return 0, nil, s.frameTooLarge()
		}
		if len(buf) < end {
			return 0, nil, nil
		}
		if buf[end-1] != 0 {
			return 0, nil, fmt.Errorf("stomp: %s body is longer than its content-length %d (no NUL after it): %w", s.frame.Command, s.bodyLen, ErrMalformed)
		}
	} else {
		i := bytes.IndexByte(buf[s.pos:], 0)
		if i < 0 {
			if len(buf) > lim.MaxFrameBytes {
				return 0, nil, s.frameTooLarge()
			}
			s.pos = len(buf)
			return 0, nil, nil
		}
		end = s.pos + i + 1
		if end > lim.MaxFrameBytes {
			return 0, nil, s.frameTooLarge()
		}
	}
	s.phase = phaseIdle
	s.frame.Raw = buf[:end]
	if !s.Server {
		if err := s.checkClientFrame(&s.frame); err != nil {
			return 0, nil, err
		}
	}
	return end, &s.frame, nil
}

// FrameLen is the whole length of the frame Next is waiting on, once its
// headers are in and declared a content-length (within the frame size
// limit); 0 before then or without one. A caller gathering the frame's
// pieces can size its buffer for it once.
func (s *STOMPScanner) FrameLen() int {
	if s.phase != phaseBody || s.bodyLen < 0 {
		return 0
	}
	return s.frame.body0 + s.bodyLen + 1
}

func (s *STOMPScanner) frameTooLarge() error {
	return fmt.Errorf("stomp: %s frame larger than %d bytes: %w", s.frame.Command, s.Limits.MaxFrameBytes, ErrTooLarge)
}

// header checks one header line buf[a:b] (without its EOL) and records it.
func (s *STOMPScanner) header(buf []byte, a, b int) error {
	line := buf[a:b]
	c := bytes.IndexByte(line, ':')
	if c < 0 {
		return fmt.Errorf("stomp: header line without a colon: %w", ErrMalformed)
	}
	if c == 0 {
		return fmt.Errorf("stomp: header with an empty name: %w", ErrMalformed)
	}
	if len(s.frame.hdrs) >= s.Limits.MaxHeaders {
		return fmt.Errorf("stomp: more than %d headers: %w", s.Limits.MaxHeaders, ErrTooLarge)
	}
	name, val := line[:c], line[c+1:]
	if !s.Server {
		if bytes.IndexByte(line, '\r') >= 0 {
			return fmt.Errorf("stomp: raw CR in header %q: %w", clip(name), ErrMalformed)
		}
		if bytes.IndexByte(line, 0) >= 0 {
			return fmt.Errorf("stomp: NUL in header %q: %w", clip(name), ErrMalformed)
		}
		if !utf8.Valid(line) {
			return fmt.Errorf("stomp: header %q is not valid UTF-8: %w", clip(name), ErrMalformed)
		}
		// CONNECT and STOMP headers are never escaped (STOMP 1.2), and 1.0
		// has no escaping at all.
		cmd := s.frame.Command
		if s.Version >= STOMP11 && cmd != CmdConnect && cmd != CmdStomp {
			if !validEscapes(name, s.Version) {
				return fmt.Errorf("stomp: header name %q has an undefined escape: %w", clip(name), ErrMalformed)
			}
			if bytes.IndexByte(val, ':') >= 0 {
				return fmt.Errorf("stomp: raw colon in the value of header %q (escape it as \\c): %w", clip(name), ErrMalformed)
			}
			if !validEscapes(val, s.Version) {
				return fmt.Errorf("stomp: value of header %q has an undefined escape: %w", clip(name), ErrMalformed)
			}
		}
	}
	s.frame.hdrs = append(s.frame.hdrs, headerSpan{int32(a), int32(a + c), int32(a + c + 1), int32(b)})
	if s.bodyLen < 0 && string(name) == "content-length" {
		n, ok := parseDecimal(val, s.Limits.MaxFrameBytes)
		if !ok {
			if len(val) > 0 && isDigits(val) {
				return fmt.Errorf("stomp: content-length exceeds the %d-byte frame limit: %w", s.Limits.MaxFrameBytes, ErrTooLarge)
			}
			return fmt.Errorf("stomp: content-length %q is not a decimal byte count: %w", clip(val), ErrMalformed)
		}
		if s.pos+n+1 > s.Limits.MaxFrameBytes {
			return s.frameTooLarge()
		}
		s.bodyLen = n
	}
	return nil
}

// checkClientFrame applies the rules that need the whole frame: order,
// bodies, and the headers each command requires.
func (s *STOMPScanner) checkClientFrame(f *STOMPFrame) error {
	isConnect := f.Command == CmdConnect || f.Command == CmdStomp
	if !s.connected && !isConnect {
		return fmt.Errorf("stomp: first frame must be CONNECT or STOMP, not %s: %w", f.Command, ErrPolicy)
	}
	if s.connected && isConnect {
		return fmt.Errorf("stomp: %s sent twice on one connection: %w", f.Command, ErrPolicy)
	}
	if f.Command != CmdSend && len(f.Raw)-1 > f.body0 {
		return fmt.Errorf("stomp: %s frame must not have a body: %w", f.Command, ErrMalformed)
	}
	v := s.Version
	switch f.Command {
	case CmdConnect, CmdStomp:
		av, ok := f.Header("accept-version")
		v = STOMP10
		if ok {
			v = highestSTOMPVersion(av)
			if v == 0 {
				return fmt.Errorf("stomp: accept-version names no supported version (1.0, 1.1, 1.2): %w", ErrPolicy)
			}
		} else if f.Command == CmdStomp {
			return fmt.Errorf("stomp: STOMP frame requires an accept-version header: %w", ErrMalformed)
		}
		if hb, ok := f.Header("heart-beat"); ok && !validHeartBeat(hb) {
			return fmt.Errorf("stomp: heart-beat must be two comma-separated non-negative integers: %w", ErrMalformed)
		}
		s.connected, s.Version = true, v
		return nil
	case CmdSend:
		return require(f, "destination")
	case CmdSubscribe:
		if err := require(f, "destination"); err != nil {
			return err
		}
		if ack, ok := f.Header("ack"); ok {
			switch string(ack) {
			case "auto", "client", "client-individual":
			default:
				return fmt.Errorf("stomp: SUBSCRIBE ack must be auto, client or client-individual: %w", ErrMalformed)
			}
		}
		if v >= STOMP11 {
			return require(f, "id")
		}
	case CmdUnsubscribe:
		if v >= STOMP11 {
			return require(f, "id")
		}
		if require(f, "id") != nil && require(f, "destination") != nil {
			return fmt.Errorf("stomp: UNSUBSCRIBE requires an id or destination header: %w", ErrMalformed)
		}
	case CmdAck, CmdNack:
		switch {
		case v == STOMP10 && f.Command == CmdNack:
			return fmt.Errorf("stomp: NACK is not part of STOMP 1.0: %w", ErrMalformed)
		case v >= STOMP12:
			return require(f, "id")
		case v == STOMP11:
			if err := require(f, "message-id"); err != nil {
				return err
			}
			return require(f, "subscription")
		default:
			return require(f, "message-id")
		}
	case CmdBegin, CmdCommit, CmdAbort:
		return require(f, "transaction")
	}
	return nil
}

func require(f *STOMPFrame, name string) error {
	if v, ok := f.Header(name); !ok || len(v) == 0 {
		return fmt.Errorf("stomp: %s frame requires a non-empty %s header: %w", f.Command, name, ErrMalformed)
	}
	return nil
}

// highestSTOMPVersion picks the highest version we speak from a
// comma-separated accept-version list; unknown entries are ignored.
func highestSTOMPVersion(list []byte) STOMPVersion {
	var best STOMPVersion
	for len(list) > 0 {
		item := list
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			list = nil
		}
		if v := ParseSTOMPVersion(bytes.TrimSpace(item)); v > best {
			best = v
		}
	}
	return best
}

func validHeartBeat(b []byte) bool {
	i := bytes.IndexByte(b, ',')
	if i < 0 {
		return false
	}
	_, ok1 := parseDecimal(b[:i], 1<<31-1)
	_, ok2 := parseDecimal(b[i+1:], 1<<31-1)
	return ok1 && ok2
}

// validEscapes reports whether every backslash starts an escape defined by
// the version: \\ \n \c, and \r from 1.2 on.
func validEscapes(b []byte, v STOMPVersion) bool {
	for i := bytes.IndexByte(b, '\\'); i >= 0; i = bytes.IndexByte(b, '\\') {
		if i+1 >= len(b) {
			return false
		}
		switch b[i+1] {
		case '\\', 'n', 'c':
		case 'r':
			if v < STOMP12 {
				return false
			}
		default:
			return false
		}
		b = b[i+2:]
	}
	return true
}

// parseDecimal parses a non-empty run of ASCII digits no larger than max.
func parseDecimal(b []byte, max int) (int, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n <= max
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func trimCR(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}

// clip shortens client bytes quoted in an error message.
func clip(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}
