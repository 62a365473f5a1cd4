package main

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/wsbridge/wsbridge/validate"
)

// amqpConn is one AMQP 0-9-1 connection with one channel, as lean as a
// load tool needs: PLAIN login, an exclusive server-named queue bound to
// a topic exchange and consumed without acks, and basic.publish with a
// one-frame body. Nothing else.
type amqpConn struct {
	*transport
	exchange  string
	onMessage func(body []byte)
	ctrl      chan amqpMethod
	carry

	// The delivery being assembled from its method, header and body frames
	// (reading goroutine only).
	inDelivery bool
	bodySize   int
	body       []byte
}

// amqpMethod is a method frame the dialogue waits for.
type amqpMethod struct {
	classMethod uint32 // class<<16 | method; 0 when the connection ended
	args        []byte
	err         error
}

const (
	amqpStart      = 10<<16 | 10
	amqpTune       = 10<<16 | 30
	amqpOpenOK     = 10<<16 | 41
	amqpClose      = 10<<16 | 50
	amqpChanOpenOK = 20<<16 | 11
	amqpChanClose  = 20<<16 | 40
	amqpDeclareOK  = 50<<16 | 11
	amqpBindOK     = 50<<16 | 21
	amqpConsumeOK  = 60<<16 | 21
	amqpDeliver    = 60<<16 | 60
)

// dialAMQP connects, logs in and opens channel 1.
func dialAMQP(url, login, passcode, vhost, exchange string, onMessage func([]byte)) (*amqpConn, error) {
	c := &amqpConn{exchange: exchange, onMessage: onMessage, ctrl: make(chan amqpMethod, 16)}
	t, err := dialTransport(url, "", true, c.feed, func(err error) { c.ctrl <- amqpMethod{err: fmt.Errorf("connection ended: %v", err)} })
	if err != nil {
		return nil, err
	}
	c.transport = t
	if err := c.handshake(login, passcode, vhost); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *amqpConn) handshake(login, passcode, vhost string) error {
	if err := c.write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return err
	}
	if _, err := c.await(amqpStart); err != nil {
		return err
	}
	// client-properties: capabilities, so that a refused login is a
	// connection.close with the reason rather than a dropped socket.
	capability := validate.AppendAMQPShortString(nil, "authentication_failure_close")
	capability = append(capability, 't', 1)
	props := validate.AppendAMQPShortString(nil, "capabilities")
	props = binary.BigEndian.AppendUint32(append(props, 'F'), uint32(len(capability)))
	props = append(props, capability...)
	args := binary.BigEndian.AppendUint32(nil, uint32(len(props)))
	args = append(args, props...)
	args = validate.AppendAMQPShortString(args, "PLAIN")
	args = validate.AppendAMQPLongString(args, "\x00"+login+"\x00"+passcode)
	args = validate.AppendAMQPShortString(args, "en_US")
	if err := c.send(0, 10, 11, args); err != nil {
		return err
	}
	tune, err := c.await(amqpTune)
	if err != nil {
		return err
	}
	if len(tune) < 8 {
		return fmt.Errorf("connection.tune of %d bytes", len(tune))
	}
	// The server's channel-max and frame-max, no heartbeats.
	tuneOK := append(append([]byte(nil), tune[:6]...), 0, 0)
	if err := c.send(0, 10, 31, tuneOK); err != nil {
		return err
	}
	if err := c.send(0, 10, 40, append(validate.AppendAMQPShortString(validate.AppendAMQPShortString(nil, vhost), ""), 0)); err != nil {
		return err
	}
	if _, err := c.await(amqpOpenOK); err != nil {
		return err
	}
	if err := c.send(1, 20, 10, validate.AppendAMQPShortString(nil, "")); err != nil {
		return err
	}
	_, err = c.await(amqpChanOpenOK)
	return err
}

// send writes one method frame.
func (c *amqpConn) send(ch uint16, class, method uint16, args []byte) error {
	return c.write(validate.AppendAMQPMethod(nil, ch, class, method, args))
}

// await waits for the method want; connection.close or channel.close
// instead is an error carrying the server's reason.
func (c *amqpConn) await(want uint32) ([]byte, error) {
	select {
	case m := <-c.ctrl:
		switch {
		case m.err != nil:
			return nil, m.err
		case m.classMethod == want:
			return m.args, nil
		case m.classMethod == amqpClose || m.classMethod == amqpChanClose:
			if len(m.args) >= 3 && len(m.args) >= 3+int(m.args[2]) {
				return nil, fmt.Errorf("closed by the server: %d %s", binary.BigEndian.Uint16(m.args), m.args[3:3+int(m.args[2])])
			}
			return nil, fmt.Errorf("closed by the server")
		}
		return nil, fmt.Errorf("got method %d.%d, want %d.%d", m.classMethod>>16, m.classMethod&0xffff, want>>16, want&0xffff)
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("no method %d.%d within 10s", want>>16, want&0xffff)
	}
}

// feed splits what arrived into frames, carrying a partial one over.
func (c *amqpConn) feed(data []byte) { c.carry.feed(data, c.frames) }

// frames handles the complete frames in data and returns the bytes used.
func (c *amqpConn) frames(data []byte) int {
	off := 0
	for off+7 <= len(data) {
		size := int(binary.BigEndian.Uint32(data[off+3:]))
		if off+8+size > len(data) {
			break
		}
		c.frame(data[off], data[off+7:off+7+size])
		off += 8 + size
	}
	return off
}

// frame handles one frame: a delivery's three parts, or a method the
// dialogue waits for.
func (c *amqpConn) frame(typ byte, p []byte) {
	switch {
	case typ == validate.AMQPFrameMethod && len(p) >= 4:
		cm := binary.BigEndian.Uint32(p)
		if cm == amqpDeliver {
			c.inDelivery, c.body = true, c.body[:0]
			return
		}
		c.ctrl <- amqpMethod{classMethod: cm, args: append([]byte(nil), p[4:]...)}
	case typ == validate.AMQPFrameHeader && c.inDelivery && len(p) >= 12:
		c.bodySize = int(binary.BigEndian.Uint64(p[4:]))
		if c.bodySize == 0 {
			c.inDelivery = false
			c.onMessage(nil)
		}
	case typ == validate.AMQPFrameBody && c.inDelivery:
		if len(c.body) == 0 && len(p) == c.bodySize {
			c.inDelivery = false
			c.onMessage(p) // the usual case: the body in one frame, no copy
			return
		}
		if c.body = append(c.body, p...); len(c.body) >= c.bodySize {
			c.inDelivery = false
			c.onMessage(c.body)
		}
	}
}

// subscribe declares an exclusive server-named queue, binds it to the
// exchange with the routing key and consumes it without acks.
func (c *amqpConn) subscribe(_ int, key string) error {
	declare := append(binary.BigEndian.AppendUint16(nil, 0), 0) // reserved, queue "" (server-named)
	declare = append(declare, 0x0C)                             // exclusive, auto-delete
	declare = binary.BigEndian.AppendUint32(declare, 0)         // arguments
	if err := c.send(1, 50, 10, declare); err != nil {
		return err
	}
	ok, err := c.await(amqpDeclareOK)
	if err != nil {
		return err
	}
	if len(ok) < 1 || len(ok) < 1+int(ok[0]) {
		return fmt.Errorf("queue.declare-ok of %d bytes", len(ok))
	}
	queue := string(ok[1 : 1+ok[0]])
	bind := validate.AppendAMQPShortString(validate.AppendAMQPShortString(validate.AppendAMQPShortString(binary.BigEndian.AppendUint16(nil, 0), queue), c.exchange), key)
	bind = binary.BigEndian.AppendUint32(append(bind, 0), 0)
	if err := c.send(1, 50, 20, bind); err != nil {
		return err
	}
	if _, err := c.await(amqpBindOK); err != nil {
		return err
	}
	consume := validate.AppendAMQPShortString(validate.AppendAMQPShortString(binary.BigEndian.AppendUint16(nil, 0), queue), "")
	consume = binary.BigEndian.AppendUint32(append(consume, 0x02), 0) // no-ack
	if err := c.send(1, 60, 20, consume); err != nil {
		return err
	}
	_, err = c.await(amqpConsumeOK)
	return err
}

// publish sends basic.publish with its header and body frames in one
// write.
func (c *amqpConn) publish(buf []byte, key string, body []byte) ([]byte, error) {
	buf, at := validate.BeginAMQPFrame(buf[:0], validate.AMQPFrameMethod, 1)
	buf = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint32(buf, 60<<16|40), 0)
	buf = validate.EndAMQPFrame(append(validate.AppendAMQPShortString(validate.AppendAMQPShortString(buf, c.exchange), key), 0), at)
	buf, at = validate.BeginAMQPFrame(buf, validate.AMQPFrameHeader, 1)
	buf = binary.BigEndian.AppendUint32(buf, 60<<16) // class basic, weight 0
	buf = binary.BigEndian.AppendUint64(buf, uint64(len(body)))
	buf = validate.EndAMQPFrame(append(buf, 0, 0), at) // no properties
	buf, at = validate.BeginAMQPFrame(buf, validate.AMQPFrameBody, 1)
	buf = validate.EndAMQPFrame(append(buf, body...), at)
	return buf, c.write(buf)
}

// runAMQPPubSub runs the scenario over AMQP: every subscriber has its own
// queue bound to the routing key, so each gets every message.
func runAMQPPubSub(o pubsubOptions) (*result, error) {
	return runPubSub("amqp-pubsub", o, o.Subscribers, func(onMessage func([]byte)) (pubsubClient, error) {
		return dialAMQP(o.URL, o.Login, o.Passcode, o.VHost, o.Exchange, onMessage)
	})
}
