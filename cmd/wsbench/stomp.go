package main

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/wsbridge/wsbridge/validate"
)

// stompConn is one STOMP session. MESSAGE bodies go to onMessage on the
// reading goroutine, other frames to ctrl.
type stompConn struct {
	*transport
	onMessage func(body []byte)
	ctrl      chan string // "COMMAND message-header"

	sc *validate.STOMPScanner
	carry
}

// dialSTOMP connects and sends CONNECT, waiting for CONNECTED.
func dialSTOMP(url, login, passcode, vhost string, onMessage func([]byte)) (*stompConn, error) {
	c := &stompConn{onMessage: onMessage, ctrl: make(chan string, 16),
		sc: validate.NewSTOMPScanner(validate.STOMPLimits{MaxFrameBytes: 64 << 20}, true)}
	t, err := dialTransport(url, "v12.stomp", false, c.feed, func(err error) { c.ctrl <- fmt.Sprint("CLOSED ", err) })
	if err != nil {
		return nil, err
	}
	c.transport = t
	if err := c.write(stompConnect(login, passcode, vhost)); err != nil {
		c.close()
		return nil, err
	}
	if err := c.await("CONNECTED"); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// stompConnect is a STOMP 1.2 CONNECT without heart-beats; login only
// when given.
func stompConnect(login, passcode, vhost string) []byte {
	connect := "CONNECT\naccept-version:1.2\nheart-beat:0,0\nhost:" + vhost + "\n"
	if login != "" {
		connect += "login:" + login + "\npasscode:" + passcode + "\n"
	}
	return []byte(connect + "\n\x00")
}

// feed parses what arrived, carrying a partial frame to the next read.
func (c *stompConn) feed(data []byte) { c.carry.feed(data, c.frames) }

// frames handles the complete frames in data and returns the bytes used.
func (c *stompConn) frames(data []byte) int {
	off := 0
	for off < len(data) {
		n, f, err := c.sc.Next(data[off:])
		if err != nil {
			c.ctrl <- "INVALID " + err.Error()
			return len(data)
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
	return off
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

// publish sends a SEND frame.
func (c *stompConn) publish(buf []byte, dest string, body []byte) ([]byte, error) {
	buf = append(buf[:0], "SEND\ndestination:"...)
	buf = append(buf, dest...)
	buf = append(buf, "\ncontent-type:text/plain\n\n"...)
	buf = append(append(buf, body...), 0)
	return buf, c.write(buf)
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
