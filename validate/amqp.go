package validate

import (
	"encoding/binary"
	"fmt"
)

// AMQPProtocolHeader opens every AMQP 0-9-1 connection.
const AMQPProtocolHeader = "AMQP\x00\x00\x09\x01"

// AMQP 0-9-1 frame types and the frame end octet.
const (
	AMQPFrameMethod    byte = 1
	AMQPFrameHeader    byte = 2
	AMQPFrameBody      byte = 3
	AMQPFrameHeartbeat byte = 8
	amqpFrameEnd       byte = 0xCE
	// AMQPMinFrameMax is the smallest frame-max a peer may negotiate.
	AMQPMinFrameMax = 4096
)

// AMQP reply codes for connection.close.
const (
	AMQPFrameError      = 501
	AMQPSyntaxError     = 502
	AMQPCommandInvalid  = 503
	AMQPChannelError    = 504
	AMQPUnexpectedFrame = 505
)

// AMQPError is a violation with the connection.close reply code that
// answers it.
type AMQPError struct {
	Code  int
	Msg   string
	class error
}

func (e *AMQPError) Error() string { return "amqp: " + e.Msg + ": " + e.class.Error() }
func (e *AMQPError) Unwrap() error { return e.class }

func amqpErr(class error, code int, format string, args ...any) error {
	return &AMQPError{Code: code, Msg: fmt.Sprintf(format, args...), class: class}
}

// ErrAMQPHeader means the connection did not start with the AMQP 0-9-1
// protocol header; a broker answers with its own header and closes.
var ErrAMQPHeader = amqpErr(ErrMalformed, AMQPSyntaxError, "not an AMQP 0-9-1 protocol header")

// AMQPLimits bounds client frames.
type AMQPLimits struct {
	// MaxFrameBytes caps frame-max whatever the client asks for in
	// connection.tune-ok.
	MaxFrameBytes int
	// MaxChannels caps channel-max likewise.
	MaxChannels int
	// MaxTableDepth bounds nested field tables and arrays.
	MaxTableDepth int
}

// DefaultAMQPLimits are used where a config is silent.
func DefaultAMQPLimits() AMQPLimits {
	return AMQPLimits{MaxFrameBytes: 128 << 10, MaxChannels: 2047, MaxTableDepth: 8}
}

// AMQPFrame is one framed frame; it aliases the scanned buffer.
type AMQPFrame struct {
	Type    byte
	Channel uint16
	// Class and Method identify a method frame.
	Class, Method uint16
	// Raw is the whole frame; Payload is between the header and frame end.
	Raw, Payload []byte
}

// Connection phases: what the client may send next.
const (
	amqpWantHeader = iota
	amqpWantStartOk
	amqpWantTuneOk // secure-ok also allowed
	amqpWantOpen
	amqpOpen
)

// content tracks a channel's content in progress after basic.publish.
type content struct {
	wantHeader bool
	remaining  uint64
}

// AMQPScanner frames and checks the client side of an AMQP 0-9-1
// connection: the protocol header, the connection handshake order, frame
// types, channels within channel-max, frame sizes within frame-max, the
// frame-end octet, known methods with well-formed arguments (field tables
// bounded in depth), and content header and body frames in sequence with
// sizes adding up.
type AMQPScanner struct {
	Limits AMQPLimits
	// FrameMax and ChannelMax are in force: the limits until tune-ok, then
	// what it negotiated (capped by the limits).
	FrameMax, ChannelMax int

	phase    int
	contents map[uint16]content
	fr       AMQPFrame
	want     int // see FrameLen
}

// NewAMQPScanner returns a scanner; zero limits take the defaults.
func NewAMQPScanner(lim AMQPLimits) *AMQPScanner {
	d := DefaultAMQPLimits()
	if lim.MaxFrameBytes < AMQPMinFrameMax {
		lim.MaxFrameBytes = d.MaxFrameBytes
	}
	if lim.MaxChannels <= 0 || lim.MaxChannels > 65535 {
		lim.MaxChannels = d.MaxChannels
	}
	if lim.MaxTableDepth <= 0 {
		lim.MaxTableDepth = d.MaxTableDepth
	}
	return &AMQPScanner{Limits: lim, FrameMax: lim.MaxFrameBytes, ChannelMax: lim.MaxChannels, contents: map[uint16]content{}}
}

// Open reports whether connection.open has been sent.
func (s *AMQPScanner) Open() bool { return s.phase == amqpOpen }

// FrameLen is the whole length of the frame the last Next was waiting on,
// once its header is in (and within frame-max); 0 before then or when
// Next was not waiting. A caller gathering the frame's pieces can size its
// buffer for it once.
func (s *AMQPScanner) FrameLen() int { return s.want }

// Next examines buf, which starts at a frame boundary (or at the protocol
// header). It returns the number of bytes consumed and the frame (nil for
// the protocol header), 0 and nil when more bytes are needed, or an error
// (*AMQPError) after which the scanner must not be used.
func (s *AMQPScanner) Next(buf []byte) (int, *AMQPFrame, error) {
	s.want = 0
	if s.phase == amqpWantHeader {
		n := min(len(buf), len(AMQPProtocolHeader))
		if string(buf[:n]) != AMQPProtocolHeader[:n] {
			return 0, nil, ErrAMQPHeader
		}
		if n < len(AMQPProtocolHeader) {
			return 0, nil, nil
		}
		s.phase = amqpWantStartOk
		return n, nil, nil
	}
	if len(buf) < 7 {
		return 0, nil, nil
	}
	typ, ch, size := buf[0], binary.BigEndian.Uint16(buf[1:3]), int(binary.BigEndian.Uint32(buf[3:7]))
	if size+8 > s.FrameMax {
		return 0, nil, amqpErr(ErrTooLarge, AMQPFrameError, "frame of %d bytes exceeds frame-max %d", size+8, s.FrameMax)
	}
	if len(buf) < size+8 {
		s.want = size + 8
		return 0, nil, nil
	}
	if buf[7+size] != amqpFrameEnd {
		return 0, nil, amqpErr(ErrMalformed, AMQPFrameError, "frame does not end with 0xCE")
	}
	s.fr = AMQPFrame{Type: typ, Channel: ch, Raw: buf[:size+8], Payload: buf[7 : 7+size]}
	if err := s.check(&s.fr); err != nil {
		return 0, nil, err
	}
	return size + 8, &s.fr, nil
}

func (s *AMQPScanner) check(f *AMQPFrame) error {
	if int(f.Channel) > s.ChannelMax {
		return amqpErr(ErrMalformed, AMQPChannelError, "channel %d beyond channel-max %d", f.Channel, s.ChannelMax)
	}
	c, inContent := s.contents[f.Channel]
	switch f.Type {
	case AMQPFrameHeartbeat:
		if f.Channel != 0 || len(f.Payload) != 0 {
			return amqpErr(ErrMalformed, AMQPFrameError, "heartbeat frame must be empty and on channel 0")
		}
		return nil
	case AMQPFrameHeader:
		if !inContent || !c.wantHeader {
			return amqpErr(ErrMalformed, AMQPUnexpectedFrame, "content header on channel %d without basic.publish", f.Channel)
		}
		return s.checkContentHeader(f)
	case AMQPFrameBody:
		if !inContent || c.wantHeader {
			return amqpErr(ErrMalformed, AMQPUnexpectedFrame, "content body on channel %d without its header", f.Channel)
		}
		if uint64(len(f.Payload)) > c.remaining {
			return amqpErr(ErrMalformed, AMQPFrameError, "content body longer than its header's body-size")
		}
		c.remaining -= uint64(len(f.Payload))
		if c.remaining == 0 {
			delete(s.contents, f.Channel)
		} else {
			s.contents[f.Channel] = c
		}
		return nil
	case AMQPFrameMethod:
		if inContent {
			return amqpErr(ErrMalformed, AMQPUnexpectedFrame, "method frame on channel %d while content is incomplete", f.Channel)
		}
		return s.checkMethod(f)
	}
	return amqpErr(ErrMalformed, AMQPFrameError, "unknown frame type %d", f.Type)
}

// Method argument encodings: o octet, s short, l long, L long long,
// S short string, X long string, b one octet of packed bits, t field table.
type amqpMethod struct {
	name    string
	args    string
	content bool
}

var amqpMethods = map[uint32]amqpMethod{
	10<<16 | 11:  {"connection.start-ok", "tSXS", false},
	10<<16 | 21:  {"connection.secure-ok", "X", false},
	10<<16 | 31:  {"connection.tune-ok", "sls", false},
	10<<16 | 40:  {"connection.open", "SSb", false},
	10<<16 | 50:  {"connection.close", "sSss", false},
	10<<16 | 51:  {"connection.close-ok", "", false},
	10<<16 | 70:  {"connection.update-secret", "XS", false},
	20<<16 | 10:  {"channel.open", "S", false},
	20<<16 | 20:  {"channel.flow", "b", false},
	20<<16 | 21:  {"channel.flow-ok", "b", false},
	20<<16 | 40:  {"channel.close", "sSss", false},
	20<<16 | 41:  {"channel.close-ok", "", false},
	40<<16 | 10:  {"exchange.declare", "sSSbt", false},
	40<<16 | 20:  {"exchange.delete", "sSb", false},
	40<<16 | 30:  {"exchange.bind", "sSSSbt", false},
	40<<16 | 40:  {"exchange.unbind", "sSSSbt", false},
	50<<16 | 10:  {"queue.declare", "sSbt", false},
	50<<16 | 20:  {"queue.bind", "sSSSbt", false},
	50<<16 | 30:  {"queue.purge", "sSb", false},
	50<<16 | 40:  {"queue.delete", "sSb", false},
	50<<16 | 50:  {"queue.unbind", "sSSSt", false},
	60<<16 | 10:  {"basic.qos", "lsb", false},
	60<<16 | 20:  {"basic.consume", "sSSbt", false},
	60<<16 | 30:  {"basic.cancel", "Sb", false},
	60<<16 | 31:  {"basic.cancel-ok", "S", false},
	60<<16 | 40:  {"basic.publish", "sSSb", true},
	60<<16 | 70:  {"basic.get", "sSb", false},
	60<<16 | 80:  {"basic.ack", "Lb", false},
	60<<16 | 90:  {"basic.reject", "Lb", false},
	60<<16 | 100: {"basic.recover-async", "b", false},
	60<<16 | 110: {"basic.recover", "b", false},
	60<<16 | 120: {"basic.nack", "Lb", false},
	85<<16 | 10:  {"confirm.select", "b", false},
	90<<16 | 10:  {"tx.select", "", false},
	90<<16 | 20:  {"tx.commit", "", false},
	90<<16 | 30:  {"tx.rollback", "", false},
}

// MethodName names a frame's method, for messages and logs.
func (f *AMQPFrame) MethodName() string {
	if m, ok := amqpMethods[uint32(f.Class)<<16|uint32(f.Method)]; ok {
		return m.name
	}
	return fmt.Sprintf("method %d.%d", f.Class, f.Method)
}

func (s *AMQPScanner) checkMethod(f *AMQPFrame) error {
	p := f.Payload
	if len(p) < 4 {
		return amqpErr(ErrMalformed, AMQPFrameError, "method frame shorter than its class and method ids")
	}
	f.Class, f.Method = binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])
	m, ok := amqpMethods[uint32(f.Class)<<16|uint32(f.Method)]
	if !ok {
		return amqpErr(ErrMalformed, AMQPCommandInvalid, "unknown or server-only method %d.%d", f.Class, f.Method)
	}
	if (f.Class == 10) != (f.Channel == 0) {
		return amqpErr(ErrMalformed, AMQPChannelError, "%s on channel %d", m.name, f.Channel)
	}
	if err := s.order(f, m); err != nil {
		return err
	}
	end, err := args(p, 4, m.args, s.Limits.MaxTableDepth)
	if err != nil {
		return amqpErr(ErrMalformed, AMQPSyntaxError, "%s: %v", m.name, err)
	}
	if end != len(p) {
		return amqpErr(ErrMalformed, AMQPSyntaxError, "%s: %d bytes after its arguments", m.name, len(p)-end)
	}
	if f.Class == 10 && f.Method == 31 { // tune-ok sets the limits in force
		chMax, frMax := int(binary.BigEndian.Uint16(p[4:])), int(binary.BigEndian.Uint32(p[6:]))
		if chMax == 0 || chMax > s.Limits.MaxChannels {
			chMax = s.Limits.MaxChannels
		}
		if frMax != 0 && frMax < AMQPMinFrameMax {
			return amqpErr(ErrMalformed, AMQPSyntaxError, "frame-max %d below the minimum %d", frMax, AMQPMinFrameMax)
		}
		if frMax == 0 || frMax > s.Limits.MaxFrameBytes {
			frMax = s.Limits.MaxFrameBytes
		}
		s.ChannelMax, s.FrameMax = chMax, frMax
	}
	if m.content {
		if len(s.contents) >= s.ChannelMax {
			return amqpErr(ErrTooLarge, AMQPFrameError, "content in progress on too many channels")
		}
		s.contents[f.Channel] = content{wantHeader: true}
	}
	return nil
}

// order enforces the connection handshake: start-ok, then secure-ok or
// tune-ok, then open; nothing but connection methods before open.
func (s *AMQPScanner) order(f *AMQPFrame, m amqpMethod) error {
	want := func(what string) error {
		return amqpErr(ErrPolicy, AMQPCommandInvalid, "%s sent when %s was due", m.name, what)
	}
	switch s.phase {
	case amqpWantStartOk:
		if f.Class != 10 || f.Method != 11 {
			return want("connection.start-ok")
		}
		s.phase = amqpWantTuneOk
	case amqpWantTuneOk:
		switch {
		case f.Class == 10 && f.Method == 21:
		case f.Class == 10 && f.Method == 31:
			s.phase = amqpWantOpen
		case f.Class == 10 && (f.Method == 50 || f.Method == 51):
		default:
			return want("connection.tune-ok")
		}
	case amqpWantOpen:
		switch {
		case f.Class == 10 && f.Method == 40:
			s.phase = amqpOpen
		case f.Class == 10 && (f.Method == 50 || f.Method == 51):
		default:
			return want("connection.open")
		}
	case amqpOpen:
		if f.Class == 10 && (f.Method == 11 || f.Method == 31 || f.Method == 40) {
			return amqpErr(ErrPolicy, AMQPCommandInvalid, "%s sent twice", m.name)
		}
	}
	return nil
}

// args walks the encoded arguments from off, returning the end offset.
func args(p []byte, off int, spec string, maxDepth int) (int, error) {
	for i := 0; i < len(spec); i++ {
		var err error
		switch spec[i] {
		case 'o', 'b':
			off, err = need(p, off, 1)
		case 's':
			off, err = need(p, off, 2)
		case 'l':
			off, err = need(p, off, 4)
		case 'L':
			off, err = need(p, off, 8)
		case 'S':
			off, err = shortStr(p, off)
		case 'X':
			off, err = longStr(p, off)
		case 't':
			off, err = fieldTable(p, off, 1, maxDepth)
		}
		if err != nil {
			return 0, err
		}
	}
	return off, nil
}

func need(p []byte, off, n int) (int, error) {
	if off+n > len(p) {
		return 0, fmt.Errorf("truncated at byte %d", off)
	}
	return off + n, nil
}

func shortStr(p []byte, off int) (int, error) {
	if off >= len(p) {
		return 0, fmt.Errorf("short string truncated at byte %d", off)
	}
	return need(p, off+1, int(p[off]))
}

func longStr(p []byte, off int) (int, error) {
	if off+4 > len(p) {
		return 0, fmt.Errorf("long string truncated at byte %d", off)
	}
	return need(p, off+4, int(binary.BigEndian.Uint32(p[off:])))
}

// fieldTable checks a field table: a long size, then name/type/value entries
// filling it exactly, nested tables and arrays at most maxDepth deep.
func fieldTable(p []byte, off, depth, maxDepth int) (int, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("field tables nested deeper than %d", maxDepth)
	}
	if off+4 > len(p) {
		return 0, fmt.Errorf("field table truncated at byte %d", off)
	}
	end := off + 4 + int(binary.BigEndian.Uint32(p[off:]))
	if end > len(p) || end < off {
		return 0, fmt.Errorf("field table runs past the frame")
	}
	q := p[:end]
	for i := off + 4; i < end; {
		var err error
		if i, err = shortStr(q, i); err != nil {
			return 0, err
		}
		if i, err = fieldValue(q, i, depth, maxDepth); err != nil {
			return 0, err
		}
	}
	return end, nil
}

// fieldValue checks one typed value (RabbitMQ's field type set).
func fieldValue(p []byte, off, depth, maxDepth int) (int, error) {
	if off >= len(p) {
		return 0, fmt.Errorf("field value truncated at byte %d", off)
	}
	typ := p[off]
	off++
	switch typ {
	case 't', 'b', 'B':
		return need(p, off, 1)
	case 's', 'u':
		return need(p, off, 2)
	case 'I', 'i', 'f':
		return need(p, off, 4)
	case 'l', 'd', 'T':
		return need(p, off, 8)
	case 'D':
		return need(p, off, 5)
	case 'S', 'x':
		return longStr(p, off)
	case 'V':
		return off, nil
	case 'F':
		return fieldTable(p, off, depth+1, maxDepth)
	case 'A':
		if depth+1 > maxDepth {
			return 0, fmt.Errorf("field arrays nested deeper than %d", maxDepth)
		}
		if off+4 > len(p) {
			return 0, fmt.Errorf("field array truncated at byte %d", off)
		}
		end := off + 4 + int(binary.BigEndian.Uint32(p[off:]))
		if end > len(p) || end < off {
			return 0, fmt.Errorf("field array runs past the frame")
		}
		for i := off + 4; i < end; {
			var err error
			if i, err = fieldValue(p[:end], i, depth+1, maxDepth); err != nil {
				return 0, err
			}
		}
		return end, nil
	}
	return 0, fmt.Errorf("unknown field type %q", typ)
}

// Basic content properties in flag order (bit 15 down to bit 2).
const basicProps = "SStooSSSSLSSSS"

// Basic content properties, by their place in basicProps.
const (
	AMQPContentType = iota
	AMQPContentEncoding
	AMQPHeaders
	AMQPDeliveryMode
	AMQPPriority
	AMQPCorrelationID
	AMQPReplyTo
	AMQPExpiration
	AMQPMessageID
	AMQPTimestamp
	AMQPType
	AMQPUserID
	AMQPAppID
	AMQPClusterID
)

// AMQPProperties locates the basic properties of a content header. It
// holds offsets only, so reading a header allocates nothing.
type AMQPProperties struct {
	p   []byte
	at  [len(basicProps)]int32 // where each present property's value starts; 0: absent
	end [len(basicProps)]int32
}

// ParseAMQPProperties reads a content header's payload (class, weight,
// body size, property flags and list) as the scanner checks it, so it may
// run before the scanner has seen the frame; the error then is the one the
// scanner will give.
func ParseAMQPProperties(p []byte, maxTableDepth int) (AMQPProperties, error) {
	pr := AMQPProperties{p: p}
	if len(p) < 14 {
		return pr, amqpErr(ErrMalformed, AMQPFrameError, "content header shorter than 14 bytes")
	}
	if class, weight := binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:]); class != 60 || weight != 0 {
		return pr, amqpErr(ErrMalformed, AMQPFrameError, "content header class %d weight %d, want basic (60) and 0", class, weight)
	}
	flags := binary.BigEndian.Uint16(p[12:])
	if flags&0x3 != 0 {
		return pr, amqpErr(ErrMalformed, AMQPSyntaxError, "content header uses reserved property flag bits")
	}
	end := 14
	for i := 0; i < len(basicProps); i++ {
		if flags&(1<<(15-i)) == 0 {
			continue
		}
		start := end
		var err error
		if end, err = args(p, end, basicProps[i:i+1], maxTableDepth); err != nil {
			return pr, amqpErr(ErrMalformed, AMQPSyntaxError, "content header property %d: %v", i, err)
		}
		pr.at[i], pr.end[i] = int32(start), int32(end)
	}
	if end != len(p) {
		return pr, amqpErr(ErrMalformed, AMQPSyntaxError, "content header: %d bytes after its properties", len(p)-end)
	}
	return pr, nil
}

// String returns short-string property i (such as AMQPReplyTo) and
// whether it is present.
func (pr *AMQPProperties) String(i int) ([]byte, bool) {
	if i < 0 || i >= len(basicProps) || pr.at[i] == 0 || basicProps[i] != 'S' {
		return nil, false
	}
	return pr.p[pr.at[i]+1 : pr.end[i]], true
}

// Headers returns the headers table and whether it is present.
func (pr *AMQPProperties) Headers() (AMQPFields, bool) {
	if pr.at[AMQPHeaders] == 0 {
		return AMQPFields{}, false
	}
	return NewAMQPFields(pr.p[pr.at[AMQPHeaders]:pr.end[AMQPHeaders]]), true
}

func (s *AMQPScanner) checkContentHeader(f *AMQPFrame) error {
	p := f.Payload
	if _, err := ParseAMQPProperties(p, s.Limits.MaxTableDepth); err != nil {
		return err
	}
	if size := binary.BigEndian.Uint64(p[4:]); size > 0 {
		s.contents[f.Channel] = content{remaining: size}
	} else {
		delete(s.contents, f.Channel)
	}
	return nil
}

// AMQPFields walks the entries of a field table or the values of a field
// array that a scanner has accepted. It allocates nothing; on a malformed
// encoding Next stops and Err says why.
type AMQPFields struct {
	b     []byte // the entries or values, without the size
	off   int
	array bool
	err   error
}

// NewAMQPFields walks table, a field table's encoding with its long size.
func NewAMQPFields(table []byte) AMQPFields {
	if len(table) < 4 || int(binary.BigEndian.Uint32(table)) != len(table)-4 {
		return AMQPFields{err: fmt.Errorf("field table size does not match its bytes")}
	}
	return AMQPFields{b: table[4:]}
}

// Len reports the encoded size of the entries left, 0 for an empty table.
func (t *AMQPFields) Len() int { return len(t.b) - t.off }

// Next returns the next entry (an array's values have no name). Value is
// the encoding after the type octet; String reads a long string's bytes.
func (t *AMQPFields) Next() (name []byte, v AMQPValue, ok bool) {
	if t.err != nil || t.off >= len(t.b) {
		return nil, AMQPValue{}, false
	}
	i := t.off
	if !t.array {
		n, err := shortStr(t.b, i)
		if err != nil {
			t.err = err
			return nil, AMQPValue{}, false
		}
		name, i = t.b[i+1:n], n
	}
	// The depth was bounded when the frame was scanned; here only the
	// value's extent matters.
	end, err := fieldValue(t.b, i, 0, maxWalkDepth)
	if err != nil {
		t.err = err
		return nil, AMQPValue{}, false
	}
	t.off = end
	return name, AMQPValue{Type: t.b[i], Raw: t.b[i+1 : end]}, true
}

// Err reports why Next stopped early, nil at the end of the entries.
func (t *AMQPFields) Err() error { return t.err }

// maxWalkDepth bounds recursion when AMQPFields measures a value whose
// frame a scanner (with its own, smaller limit) has already accepted.
const maxWalkDepth = 64

// AMQPValue is one typed field value.
type AMQPValue struct {
	Type byte
	Raw  []byte
}

// String returns a long string's bytes ('S'), or false for any other type.
func (v AMQPValue) String() ([]byte, bool) {
	if v.Type != 'S' || len(v.Raw) < 4 {
		return nil, false
	}
	return v.Raw[4:], true
}

// Array walks an array's values ('A'), or reports false for any other type.
func (v AMQPValue) Array() (AMQPFields, bool) {
	if v.Type != 'A' || len(v.Raw) < 4 {
		return AMQPFields{}, false
	}
	return AMQPFields{b: v.Raw[4:], array: true}, true
}
