package main

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/wsbridge/wsbridge/validate"
)

// mqttConn is one MQTT 3.1.1 session, as lean as a load tool needs:
// CONNECT, SUBSCRIBE, PUBLISH at QoS 0 or 1 (deliveries at QoS 1 are
// acknowledged), and nothing else.
type mqttConn struct {
	*transport
	qos       byte
	onMessage func(body []byte)
	ctrl      chan string
	carry
	nextID uint16 // publisher's packet ids (one goroutine publishes)
}

func dialMQTT(url, clientID string, qos byte, onMessage func([]byte)) (*mqttConn, error) {
	c := &mqttConn{qos: qos, onMessage: onMessage, ctrl: make(chan string, 16)}
	t, err := dialTransport(url, "mqtt", true, c.feed, func(err error) { c.ctrl <- fmt.Sprint("CLOSED ", err) })
	if err != nil {
		return nil, err
	}
	c.transport = t
	if err := c.write(mqttConnect(clientID, 60)); err != nil {
		c.close()
		return nil, err
	}
	if err := c.await("CONNACK 0"); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// mqttConnect is an MQTT 3.1.1 CONNECT with a clean session and the
// keepalive in seconds (0: none).
func mqttConnect(clientID string, keepalive uint16) []byte {
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02}
	body = binary.BigEndian.AppendUint16(body, keepalive)
	body = binary.BigEndian.AppendUint16(body, uint16(len(clientID)))
	body = append(body, clientID...)
	return append(validate.AppendMQTTFixedHeader(nil, 0x10, len(body)), body...)
}

// feed frames what arrived into packets, carrying a partial one over.
func (c *mqttConn) feed(data []byte) { c.carry.feed(data, c.packets) }

// packets handles the complete packets in data and returns the bytes used.
func (c *mqttConn) packets(data []byte) int {
	off := 0
	for off+2 <= len(data) {
		rl, used, ok := validate.MQTTVarInt(data[off+1:])
		if !ok || off+1+used+rl > len(data) {
			break
		}
		first, body := data[off], data[off+1+used:off+1+used+rl]
		off += 1 + used + rl
		switch first >> 4 {
		case 2: // CONNACK
			if len(body) == 2 {
				c.ctrl <- fmt.Sprint("CONNACK ", body[1])
			}
		case 9: // SUBACK
			if len(body) >= 3 {
				c.ctrl <- fmt.Sprint("SUBACK ", body[2])
			}
		case 3: // PUBLISH
			if len(body) < 2 {
				continue
			}
			n := 2 + int(binary.BigEndian.Uint16(body))
			if first>>1&3 > 0 && n+2 <= len(body) {
				c.write(validate.AppendMQTTAck(nil, validate.MQTTPuback, binary.BigEndian.Uint16(body[n:]), 0))
				n += 2
			}
			if n <= len(body) {
				c.onMessage(body[n:])
			}
		}
	}
	return off
}

func (c *mqttConn) await(want string) error {
	select {
	case got := <-c.ctrl:
		if got != want {
			return fmt.Errorf("got %s, want %s", got, want)
		}
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("no %s within 10s", want)
	}
}

func (c *mqttConn) subscribe(id int, topic string) error {
	body := binary.BigEndian.AppendUint16(nil, uint16(id+1))
	body = binary.BigEndian.AppendUint16(body, uint16(len(topic)))
	body = append(append(body, topic...), c.qos)
	if err := c.write(append(validate.AppendMQTTFixedHeader(nil, 0x82, len(body)), body...)); err != nil {
		return err
	}
	return c.await(fmt.Sprint("SUBACK ", c.qos))
}

func (c *mqttConn) publish(buf []byte, topic string, body []byte) ([]byte, error) {
	n := 2 + len(topic) + len(body)
	if c.qos > 0 {
		n += 2
	}
	buf = validate.AppendMQTTFixedHeader(buf[:0], 0x30|c.qos<<1, n)
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(topic)))
	buf = append(buf, topic...)
	if c.qos > 0 {
		if c.nextID++; c.nextID == 0 {
			c.nextID = 1
		}
		buf = binary.BigEndian.AppendUint16(buf, c.nextID)
	}
	buf = append(buf, body...)
	return buf, c.write(buf)
}

// runMQTTPubSub runs the scenario over MQTT: every subscriber gets every
// message.
func runMQTTPubSub(o pubsubOptions, qos byte) (*result, error) {
	run := time.Now().UnixNano()
	n := 0
	r, err := runPubSub("mqtt-pubsub", o, o.Subscribers, func(onMessage func([]byte)) (pubsubClient, error) {
		n++
		return dialMQTT(o.URL, fmt.Sprintf("wsbench-%d-%d", run, n), qos, onMessage)
	})
	if r != nil {
		r.QoS = int(qos)
	}
	return r, err
}

// mqttTopic makes a destination given in STOMP style usable as a topic.
func mqttTopic(dest string) string { return strings.TrimPrefix(dest, "/") }
