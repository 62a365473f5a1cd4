package bridge_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/internal/brokertest"
)

// TestAMQPUnsubscribeWhileDelivering provokes the TestBrokerContract/amqp
// flake (504 CHANNEL_ERROR - expected 'channel.open'): a subscription is
// dropped while the broker is still delivering to it, so its delivery loop
// is acking while Unsubscribe closes the channel. An ack that leaves after
// channel.close reaches RabbitMQ on a channel it has closed, and it ends the
// whole connection, taking every other subscription with it. Each round
// leaves deliveries in flight; a witness subscription on the same
// connection must live through all of them and still get messages.
func TestAMQPUnsubscribeWhileDelivering(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	b := bridge.NewAMQP(bridge.AMQPOptions{Address: brokertest.RabbitAMQP(t), Credential: &cred})
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := fmt.Sprintf("wsbridge.unsub.%d", time.Now().UnixNano())

	witnessGot := make(chan bridge.Message, 1)
	witness, err := b.Subscribe(ctx, base+".witness", func(m bridge.Message) {
		select {
		case witnessGot <- m:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer witness.Unsubscribe()

	const rounds, burst = 40, 64
	for i := range rounds {
		topic := fmt.Sprintf("%s.r%d", base, i)
		first := make(chan struct{})
		var once sync.Once
		sub, err := b.Subscribe(ctx, topic, func(bridge.Message) { once.Do(func() { close(first) }) })
		if err != nil {
			t.Fatalf("round %d: subscribe: %v", i, err)
		}
		// The burst is published from another goroutine so that deliveries
		// are still arriving (and being acked) when Unsubscribe runs.
		var wg sync.WaitGroup
		wg.Go(func() {
			for range burst {
				if b.Publish(ctx, bridge.Message{Topic: topic, Data: []byte("x")}) != nil {
					return
				}
			}
		})
		select {
		case <-first:
		case <-ctx.Done():
			t.Fatalf("round %d: no delivery", i)
		}
		if err := sub.Unsubscribe(); err != nil {
			t.Fatalf("round %d: unsubscribe: %v", i, err)
		}
		wg.Wait()
		select {
		case <-witness.Done():
			t.Fatalf("round %d: the connection was lost (an ack on a closed channel?)", i)
		default:
		}
	}
	if err := b.Publish(ctx, bridge.Message{Topic: base + ".witness", Data: []byte("still here")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-witness.Done():
		t.Fatal("the connection was lost (an ack on a closed channel?)")
	case m := <-witnessGot:
		if string(m.Data) != "still here" {
			t.Fatalf("witness got %q", m.Data)
		}
	case <-ctx.Done():
		t.Fatal("the witness subscription got nothing")
	}
}
