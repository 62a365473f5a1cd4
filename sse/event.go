package sse

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"unicode/utf8"
)

// event is one broker message, encoded once for every stream it goes to:
// plain for single-topic streams (EventSource onmessage), named with
// "event: <topic>" for multi-topic streams.
type event struct {
	seq   uint64
	plain []byte
	named []byte
}

// bytesFor returns the encoding for a stream of one or several topics.
func (e *event) bytesFor(multi bool) []byte {
	if multi {
		return e.named
	}
	return e.plain
}

// newEvent encodes data under id. Text is sent as is, one "data:" line per
// line; bytes that are not UTF-8 cannot travel in SSE and are sent
// base64-encoded as event type "binary" (single-topic streams) or
// "binary:<topic>" (multi-topic streams).
func newEvent(epoch string, seq uint64, topic string, data []byte) *event {
	var id []byte
	id = append(id, "id: "...)
	id = append(id, epoch...)
	id = append(id, '-')
	id = strconv.AppendUint(id, seq, 10)
	id = append(id, '\n')

	binary := !utf8.Valid(data)
	var body []byte
	if binary {
		enc := make([]byte, base64.StdEncoding.EncodedLen(len(data)))
		base64.StdEncoding.Encode(enc, data)
		body = dataLines(nil, enc)
	} else {
		body = dataLines(nil, data)
	}
	body = append(body, '\n')

	plain := make([]byte, 0, len(id)+len(body)+16)
	plain = append(plain, id...)
	if binary {
		plain = append(plain, "event: binary\n"...)
	}
	plain = append(plain, body...)

	named := make([]byte, 0, len(id)+len(body)+len(topic)+24)
	named = append(named, id...)
	named = append(named, "event: "...)
	if binary {
		named = append(named, "binary:"...)
	}
	named = append(named, topic...)
	named = append(named, '\n')
	named = append(named, body...)
	return &event{seq: seq, plain: plain, named: named}
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
