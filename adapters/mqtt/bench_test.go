package mqtt

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
)

// benchWindow bounds the messages in flight, as a real publisher with
// flow control would.
const benchWindow = 256

// BenchmarkRelayPubSub measures QoS 0 messages through the gateway: paho
// over WebSocket, relayed to Mosquitto's TCP port. Compare with
// BenchmarkDirectPubSub in the same run.
func BenchmarkRelayPubSub(b *testing.B) {
	addr := brokertest.Mosquitto(b)
	pubSub(b, startRelay(b, Options{RouteOptions: bridge.RouteOptions{Address: addr}}))
}

// BenchmarkDirectPubSub is BenchmarkRelayPubSub straight to Mosquitto.
func BenchmarkDirectPubSub(b *testing.B) { pubSub(b, "tcp://"+brokertest.Mosquitto(b)) }

// pubSub publishes b.N messages of 64 bytes at QoS 0 on one connection
// that is subscribed to their topic, and waits until all came back.
func pubSub(b *testing.B, broker string) {
	topic := fmt.Sprintf("wsbridge/bench/%d", time.Now().UnixNano())
	c := pahoClient(b, broker, "bench-"+topic[len(topic)-6:])
	slots, done := make(chan struct{}, benchWindow), make(chan struct{})
	var n atomic.Int64
	want := int64(b.N)
	wait(b, c.Subscribe(topic, 0, func(paho.Client, paho.Message) {
		<-slots
		if n.Add(1) == want {
			close(done)
		}
	}))
	payload := strings.Repeat("x", 64)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		slots <- struct{}{}
		c.Publish(topic, 0, false, payload)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.Fatalf("%d of %d messages came back", n.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
