package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/validate"
)

// stompConn is one STOMP session over a WebSocket (ws://, wss://) or plain
// TCP (tcp://, the direct-to-broker baseline). Frames from the server are
// parsed on the reading goroutine: MESSAGE bodies go to onMessage, other
// frames to ctrl.
type stompConn struct {
	write     func([]byte) error
	close     func()
	onMessage func(body []byte)
	ctrl      chan string // "COMMAND message-header"

	sc      *validate.STOMPScanner
	pending []byte
}

// dialSTOMP connects and sends CONNECT, waiting for CONNECTED.
func dialSTOMP(url, login, passcode, vhost string, onMessage func([]byte)) (*stompConn, error) {
	c := &stompConn{onMessage: onMessage, ctrl: make(chan string, 16),
		sc: validate.NewSTOMPScanner(validate.STOMPLimits{MaxFrameBytes: 64 << 20}, true)}
	switch {
	case strings.HasPrefix(url, "tcp://"):
		nc, err := net.Dial("tcp", strings.TrimPrefix(url, "tcp://"))
		if err != nil {
			return nil, err
		}
		var mu sync.Mutex
		c.write = func(b []byte) error { mu.Lock(); defer mu.Unlock(); _, err := nc.Write(b); return err }
		c.close = func() { nc.Close() }
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := nc.Read(buf)
				if n > 0 {
					c.feed(buf[:n])
				}
				if err != nil {
					c.ctrl <- "CLOSED " + err.Error()
					return
				}
			}
		}()
	case strings.HasPrefix(url, "ws://"), strings.HasPrefix(url, "wss://"):
		h := &wsHandler{c: c}
		ws, _, err := gws.NewClient(h, &gws.ClientOption{Addr: url, ReadMaxPayloadSize: 64 << 20,
			RequestHeader: http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}})
		if err != nil {
			return nil, err
		}
		c.write = func(b []byte) error { return ws.WriteMessage(gws.OpcodeText, b) }
		c.close = func() { ws.NetConn().Close() }
		go ws.ReadLoop()
	default:
		return nil, fmt.Errorf("url %q: want ws://, wss:// or tcp://", url)
	}
	connect := "CONNECT\naccept-version:1.2\nheart-beat:0,0\nhost:" + vhost + "\n"
	if login != "" {
		connect += "login:" + login + "\npasscode:" + passcode + "\n"
	}
	if err := c.write([]byte(connect + "\n\x00")); err != nil {
		c.close()
		return nil, err
	}
	if err := c.await("CONNECTED"); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

type wsHandler struct {
	gws.BuiltinEventHandler
	c *stompConn
}

func (h *wsHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	h.c.feed(m.Bytes())
	m.Close()
}

func (h *wsHandler) OnClose(_ *gws.Conn, err error) {
	msg := "closed"
	if err != nil {
		msg = err.Error()
	}
	h.c.ctrl <- "CLOSED " + msg
}

// feed parses what arrived, carrying a partial frame to the next read.
func (c *stompConn) feed(data []byte) {
	if len(c.pending) > 0 {
		c.pending = append(c.pending, data...)
		data = c.pending
	}
	off := 0
	for off < len(data) {
		n, f, err := c.sc.Next(data[off:])
		if err != nil {
			c.ctrl <- "INVALID " + err.Error()
			return
		}
		if n == 0 {
			break
		}
		if f != nil {
			if f.Command == validate.CmdMessage {
				c.onMessage(f.Body())
			} else {
				msg, _ := f.Header("message")
				c.ctrl <- f.Command.String() + " " + string(msg)
			}
		}
		off += n
	}
	c.pending = append(c.pending[:0], data[off:]...)
}

// await waits for a control frame of the given command.
func (c *stompConn) await(cmd string) error {
	select {
	case got := <-c.ctrl:
		if !strings.HasPrefix(got, cmd) {
			return fmt.Errorf("got %s, want %s", got, cmd)
		}
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("no %s within 10s", cmd)
	}
}

// subscribe subscribes to dest and waits for the broker's receipt.
func (c *stompConn) subscribe(id int, dest string) error {
	if err := c.write(fmt.Appendf(nil, "SUBSCRIBE\nid:%d\ndestination:%s\nack:auto\nreceipt:sub-%d\n\n\x00", id, dest, id)); err != nil {
		return err
	}
	return c.await("RECEIPT")
}

// A message body is "<publisher> <seq> <send time, unix ns> " padded with
// 'x' to the body size, so a subscriber learns all it needs without a
// lookup.
func appendBody(b []byte, pub, seq int, at time.Time, size int) []byte {
	start := len(b)
	b = strconv.AppendInt(b, int64(pub), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, at.UnixNano(), 10)
	b = append(b, ' ')
	for len(b)-start < size {
		b = append(b, 'x')
	}
	return b
}

var errBody = errors.New("not a wsbench body")

func parseBody(b []byte) (pub, seq int, at int64, err error) {
	var fields [3]int64
	for i := range fields {
		sp := bytes.IndexByte(b, ' ')
		if sp <= 0 || sp > 19 {
			return 0, 0, 0, errBody
		}
		var v int64
		for _, c := range b[:sp] {
			if c < '0' || c > '9' {
				return 0, 0, 0, errBody
			}
			v = v*10 + int64(c-'0')
		}
		fields[i], b = v, b[sp+1:]
	}
	return int(fields[0]), int(fields[1]), fields[2], nil
}
