package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/lxzan/gws"
)

// transport is a client connection over a WebSocket (ws://, wss://) or
// plain TCP (tcp://, the direct-to-broker baseline). What arrives goes to
// feed on the reading goroutine; closed is called once when it ends.
type transport struct {
	writeFn func([]byte) error
	closeFn func()
}

func (t *transport) write(b []byte) error { return t.writeFn(b) }
func (t *transport) close()               { t.closeFn() }

func dialTransport(url, subprotocol string, binary bool, feed func([]byte), closed func(error)) (*transport, error) {
	switch {
	case strings.HasPrefix(url, "tcp://"):
		nc, err := net.Dial("tcp", strings.TrimPrefix(url, "tcp://"))
		if err != nil {
			return nil, err
		}
		var mu sync.Mutex
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := nc.Read(buf)
				if n > 0 {
					feed(buf[:n])
				}
				if err != nil {
					closed(err)
					return
				}
			}
		}()
		return &transport{
			writeFn: func(b []byte) error { mu.Lock(); defer mu.Unlock(); _, err := nc.Write(b); return err },
			closeFn: func() { nc.Close() },
		}, nil
	case strings.HasPrefix(url, "ws://"), strings.HasPrefix(url, "wss://"):
		header := http.Header{}
		if subprotocol != "" {
			header.Set("Sec-Websocket-Protocol", subprotocol)
		}
		ws, _, err := gws.NewClient(&wsHandler{feed: feed, closed: closed}, &gws.ClientOption{Addr: url, ReadMaxPayloadSize: 64 << 20,
			RequestHeader: header})
		if err != nil {
			return nil, err
		}
		go ws.ReadLoop()
		op := gws.OpcodeText
		if binary {
			op = gws.OpcodeBinary
		}
		return &transport{
			writeFn: func(b []byte) error { return ws.WriteMessage(op, b) },
			closeFn: func() { ws.NetConn().Close() },
		}, nil
	}
	return nil, fmt.Errorf("url %q: want ws://, wss:// or tcp://", url)
}

type wsHandler struct {
	gws.BuiltinEventHandler
	feed   func([]byte)
	closed func(error)
}

func (h *wsHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	h.feed(m.Bytes())
	m.Close()
}

func (h *wsHandler) OnClose(_ *gws.Conn, err error) { h.closed(err) }

// carry joins what arrives to the partial unit (frame, packet) left over
// from the last read, and keeps what split leaves unconsumed for the next.
type carry struct{ pending []byte }

// feed hands split everything there is; split returns how many bytes it
// used.
func (c *carry) feed(data []byte, split func([]byte) int) {
	if len(c.pending) > 0 {
		c.pending = append(c.pending, data...)
		data = c.pending
	}
	used := split(data)
	c.pending = append(c.pending[:0], data[used:]...)
}
