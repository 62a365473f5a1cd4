package sse

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"sync/atomic"
	"unicode/utf8"

	"github.com/wsbridge/wsbridge/memory"
)

// event is one broker message, encoded once for every stream it goes to.
// A single-topic stream (EventSource onmessage) gets plain as it is; a
// multi-topic stream gets the same bytes with the topic's named type line
// in place of plain's: one copy of the payload serves both, so an event
// holds its payload's size once however its streams read it.
type event struct {
	seq uint64
	// plain is the id line, the type line ("event: binary", or none) and
	// the body; idEnd and bodyStart cut it there.
	plain            []byte
	idEnd, bodyStart int
	named            []byte // "event: <topic>\n" or "event: binary:<topic>\n", the topic's own
	// size is what the event holds in memory; it counts against the
	// per-stream queue and per-topic ring bytes.
	size int64
	// cost is what the event took from the memory budget: size, or 0 when
	// the budget could not cover it. The ring and each queue that hold
	// the event hold a reference; the last to let go gives cost back, so
	// the bytes count once however many streams the event waits for.
	cost int64
	refs atomic.Int32
}

// eventOverhead is what an event holds besides its bytes: the struct and
// the pointer to it in a queue or ring.
const eventOverhead = 128

// names are a topic's type lines for multi-topic streams, made once per
// topic and shared by its events.
type names struct{ text, binary []byte }

func newNames(topic string) *names {
	return &names{text: []byte("event: " + topic + "\n"), binary: []byte("event: binary:" + topic + "\n")}
}

// writeTo writes the event as a stream of one or several topics gets it,
// with write's answer: false once a write failed.
func (e *event) writeTo(write func([]byte) bool, multi bool) bool {
	if !multi {
		return write(e.plain)
	}
	return write(e.plain[:e.idEnd]) && write(e.named) && write(e.plain[e.bodyStart:])
}

// hold adds n references to the event.
func (e *event) hold(n int32) { e.refs.Add(n) }

// release drops one reference; the last gives the event's bytes back to b.
func (e *event) release(b *memory.Budget) { e.drop(1, b) }

// drop drops n references, as release does.
func (e *event) drop(n int32, b *memory.Budget) {
	if e.refs.Add(-n) == 0 {
		b.Give(e.cost)
	}
}

// newEvent encodes data under id. Text is sent as is, one "data:" line per
// line; bytes that are not UTF-8 cannot travel in SSE and are sent
// base64-encoded as event type "binary" (single-topic streams) or
// "binary:<topic>" (multi-topic streams). The payload is copied once, into
// an encoding of exactly the size it needs.
func newEvent(epoch string, seq uint64, n *names, data []byte) *event {
	binary := !utf8.Valid(data)
	size := len("id: ") + len(epoch) + 1 + 20 + 1 + len("\n") // id line, blank line
	if binary {
		size += len("event: binary\n") + len("data: \n") + base64.StdEncoding.EncodedLen(len(data))
	} else {
		lines := 1 + bytes.Count(data, []byte{'\n'}) + bytes.Count(data, []byte{'\r'})
		size += lines*len("data: \n") + len(data)
	}
	b := make([]byte, 0, size)
	b = append(b, "id: "...)
	b = append(b, epoch...)
	b = append(b, '-')
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, '\n')
	e := &event{seq: seq, idEnd: len(b), named: n.text}
	if binary {
		b = append(b, "event: binary\n"...)
		e.named = n.binary
	}
	e.bodyStart = len(b)
	if binary {
		b = append(b, "data: "...)
		b = base64.StdEncoding.AppendEncode(b, data)
		b = append(b, '\n')
	} else {
		b = dataLines(b, data)
	}
	e.plain = append(b, '\n')
	e.size = int64(cap(e.plain)) + eventOverhead
	return e
}

// dataLines appends one "data:" line per line of b; SSE ends lines at
// CRLF, LF or CR alike.
func dataLines(dst, b []byte) []byte {
	for {
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			dst = append(dst, "data: "...)
			dst = append(dst, b...)
			return append(dst, '\n')
		}
		dst = append(dst, "data: "...)
		dst = append(dst, b[:i]...)
		dst = append(dst, '\n')
		if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
			i++
		}
		b = b[i+1:]
	}
}
