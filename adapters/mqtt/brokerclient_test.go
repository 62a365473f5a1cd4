package mqtt

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/wsbridge/wsbridge/validate"
)

// mqttTCP is a direct MQTT 5 client on the broker, for what the ACL tests
// need on the broker's side of the gateway: a spy, a publisher of secrets,
// a share-group worker. paho.mqtt.golang speaks 3.1.1 only and would hide
// the properties (response topics) the tests look for.
type mqttTCP struct {
	conn   net.Conn
	mu     sync.Mutex // writes and nextID
	nextID uint16
	msgs   chan packets.Packet // PUBLISH, in the broker's order
	acks   chan packets.Packet // everything else
	// keep picks the PUBLISHes worth queueing (nil: all), so a spy on #
	// of a shared broker keeps up with everyone else's traffic.
	keep func(packets.Packet) bool
}

// dialMQTT connects a clean MQTT 5 session to the broker at addr and
// returns once the broker accepted it.
func dialMQTT(t *testing.T, addr, id string) *mqttTCP {
	t.Helper()
	return dialMQTTKeep(t, addr, id, nil)
}

// dialMQTTKeep is dialMQTT queueing only the PUBLISHes keep returns true
// for.
func dialMQTTKeep(t *testing.T, addr, id string, keep func(packets.Packet) bool) *mqttTCP {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &mqttTCP{conn: conn, msgs: make(chan packets.Packet, 1024), acks: make(chan packets.Packet, 64), keep: keep}
	t.Cleanup(func() { conn.Close() })
	go c.read()
	c.write(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: id}})
	if ack := c.ack(t, packets.Connack); ack.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK %#x", id, ack.ReasonCode)
	}
	return c
}

// read decodes broker packets until the connection ends, acknowledging
// QoS 1 deliveries so the broker keeps sending.
func (c *mqttTCP) read() {
	defer close(c.msgs)
	defer close(c.acks)
	r := bufio.NewReader(c.conn)
	for {
		first, err := r.ReadByte()
		if err != nil {
			return
		}
		var fh packets.FixedHeader
		if fh.Decode(first) != nil {
			return
		}
		n, _, err := packets.DecodeLength(r)
		if err != nil {
			return
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		fh.Remaining = n
		pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
		switch fh.Type {
		case packets.Publish:
			err = pk.PublishDecode(body)
			if err == nil && fh.Qos == 1 {
				ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: 5, PacketID: pk.PacketID}
				var b bytes.Buffer
				ack.PubackEncode(&b)
				c.mu.Lock()
				c.conn.Write(b.Bytes())
				c.mu.Unlock()
			}
			if err == nil && (c.keep == nil || c.keep(pk)) {
				c.msgs <- pk
			}
		case packets.Connack:
			err = pk.ConnackDecode(body)
		case packets.Suback:
			err = pk.SubackDecode(body)
		case packets.Puback:
			err = pk.PubackDecode(body)
		case packets.Disconnect:
			err = pk.DisconnectDecode(body)
		}
		if err != nil {
			return
		}
		if fh.Type != packets.Publish {
			c.acks <- pk
		}
	}
}

func (c *mqttTCP) write(t *testing.T, pk packets.Packet) {
	t.Helper()
	pk.Mods.AllowResponseInfo = true // or mochi leaves response topics out
	var b bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&b)
	case packets.Publish:
		err = pk.PublishEncode(&b)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&b)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.conn.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
}

func (c *mqttTCP) id() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	return c.nextID
}

// ack waits for the next non-PUBLISH packet, which must be of type typ.
func (c *mqttTCP) ack(t *testing.T, typ byte) packets.Packet {
	t.Helper()
	select {
	case pk, ok := <-c.acks:
		if !ok {
			t.Fatalf("broker closed the connection while waiting for packet type %d", typ)
		}
		if pk.FixedHeader.Type != typ {
			t.Fatalf("got packet type %d (reason %#x), want %d", pk.FixedHeader.Type, pk.ReasonCode, typ)
		}
		return pk
	case <-time.After(10 * time.Second):
		t.Fatalf("no packet type %d from the broker within 10s", typ)
	}
	return packets.Packet{}
}

// subscribe subscribes to filters at QoS 1 and returns the SUBACK codes.
func (c *mqttTCP) subscribe(t *testing.T, filters ...string) []byte {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 5, PacketID: c.id()}
	for _, f := range filters {
		pk.Filters = append(pk.Filters, packets.Subscription{Filter: f, Qos: 1})
	}
	c.write(t, pk)
	return c.ack(t, packets.Suback).ReasonCodes
}

// publish sends at QoS 1 and waits for the broker's PUBACK, so what was
// published before it has been routed when it returns.
func (c *mqttTCP) publish(t *testing.T, topic, payload string, retain bool) {
	t.Helper()
	c.write(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: retain}, ProtocolVersion: 5,
		PacketID: c.id(), TopicName: topic, Payload: []byte(payload)})
	if ack := c.ack(t, packets.Puback); ack.ReasonCode >= 0x80 {
		t.Fatalf("publish to %s: PUBACK %#x", topic, ack.ReasonCode)
	}
}

// until returns the messages received before the first one whose
// payload is fence, failing if it does not come within 10 s.
func (c *mqttTCP) until(t *testing.T, fence string) []packets.Packet {
	t.Helper()
	var got []packets.Packet
	timeout := time.After(10 * time.Second)
	for {
		select {
		case pk, ok := <-c.msgs:
			if !ok {
				t.Fatalf("broker connection ended before %q", fence)
			}
			if string(pk.Payload) == fence {
				return got
			}
			got = append(got, pk)
		case <-timeout:
			t.Fatalf("%q not received within 10s (got %d messages before)", fence, len(got))
		}
	}
}

// packetReader splits what the gateway sends a raw WebSocket client into
// MQTT packets: the gateway packs every whole packet it read from the
// broker into one WebSocket message.
type packetReader struct {
	c   *rawClient
	buf []byte
}

// next returns the next packet, or nil once the gateway has closed.
func (r *packetReader) next(t *testing.T) []byte {
	t.Helper()
	for {
		if _, count, err := completePackets(r.buf, 1<<20); err != nil {
			t.Fatal(err)
		} else if count > 0 {
			rl, used, _ := validate.MQTTVarInt(r.buf[1:])
			n := 1 + used + rl
			pk := r.buf[:n:n]
			r.buf = r.buf[n:]
			return pk
		}
		select {
		case m := <-r.c.msgs:
			r.buf = append(r.buf, m...)
		case err := <-r.c.closed:
			r.c.closed <- err // kept for closeCode
			select {
			case m := <-r.c.msgs:
				r.buf = append(r.buf, m...)
				continue
			default:
			}
			if len(r.buf) > 0 {
				t.Fatalf("gateway closed with a partial packet %x", r.buf)
			}
			return nil
		case <-time.After(10 * time.Second):
			t.Fatal("no packet from the gateway within 10s")
		}
	}
}
