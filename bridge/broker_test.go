package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/internal/brokertest"
)

// Every Broker honours the same contract against its real broker: a
// subscription made before a publish gets it, body unchanged, content
// type carried where the protocol has one; after Unsubscribe nothing more
// arrives and Done stays open.
func TestBrokerContract(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	brokers := map[string]struct {
		make        func(t *testing.T) bridge.Broker
		contentType bool
	}{
		"amqp": {func(t *testing.T) bridge.Broker {
			return bridge.NewAMQP(bridge.AMQPOptions{Address: brokertest.RabbitAMQP(t), Credential: &cred})
		}, true},
		"nats": {func(t *testing.T) bridge.Broker {
			n, err := bridge.NewNATS(bridge.NATSOptions{URL: "nats://" + brokertest.NATS(t)})
			if err != nil {
				t.Fatal(err)
			}
			return n
		}, true},
		"mqtt": {func(t *testing.T) bridge.Broker {
			return bridge.NewMQTT(bridge.MQTTOptions{Address: brokertest.Mosquitto(t)})
		}, false},
		"stomp": {func(t *testing.T) bridge.Broker {
			return bridge.NewSTOMP(bridge.STOMPOptions{Address: brokertest.RabbitSTOMP(t), Credential: &cred})
		}, true},
	}
	for name, tt := range brokers {
		t.Run(name, func(t *testing.T) {
			b := tt.make(t)
			t.Cleanup(func() { b.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := b.Ready(ctx); err != nil {
				t.Fatal(err)
			}
			topic := fmt.Sprintf("wsbridge.contract.%s.%d", name, time.Now().UnixNano())
			got := make(chan bridge.Message, 16)
			sub, err := b.Subscribe(ctx, topic, func(m bridge.Message) { got <- m })
			if err != nil {
				t.Fatal(err)
			}
			body := []byte("line 1\n\x00\xffbinary")
			if err := b.Publish(ctx, bridge.Message{Topic: topic, Data: body, ContentType: "application/x-test"}); err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-got:
				if string(m.Data) != string(body) || m.Topic != topic {
					t.Fatalf("got %q on %q", m.Data, m.Topic)
				}
				if tt.contentType && m.ContentType != "application/x-test" {
					t.Fatalf("content type %q", m.ContentType)
				}
			case <-ctx.Done():
				t.Fatal("no message")
			}
			if err := sub.Unsubscribe(); err != nil {
				t.Fatal(err)
			}
			if err := b.Publish(ctx, bridge.Message{Topic: topic, Data: []byte("after")}); err != nil {
				t.Fatal(err)
			}
			// A second subscription proves "after" went out; the first must
			// not have had it.
			probe := make(chan bridge.Message, 1)
			sub2, err := b.Subscribe(ctx, topic, func(m bridge.Message) { probe <- m })
			if err != nil {
				t.Fatal(err)
			}
			defer sub2.Unsubscribe()
			b.Publish(ctx, bridge.Message{Topic: topic, Data: []byte("probe")})
			select {
			case <-probe:
			case <-ctx.Done():
				t.Fatal("probe not delivered")
			}
			select {
			case m := <-got:
				t.Fatalf("unsubscribed handler got %q", m.Data)
			case <-sub.Done():
				t.Fatal("Done closed by Unsubscribe")
			default:
			}

			// Two more subscriptions to the topic: all three get each
			// message, and unsubscribing one leaves the others. (paho keeps
			// one callback per filter: before MQTT shared one, the last
			// subscription took the others' messages and the first
			// Unsubscribe ended them all.)
			more := []chan bridge.Message{probe, make(chan bridge.Message, 1), make(chan bridge.Message, 1)}
			var subs []bridge.Subscription
			for _, c := range more[1:] {
				s, err := b.Subscribe(ctx, topic, func(m bridge.Message) { c <- m })
				if err != nil {
					t.Fatal(err)
				}
				defer s.Unsubscribe()
				subs = append(subs, s)
			}
			expectAll := func(chans []chan bridge.Message, body string) {
				t.Helper()
				if err := b.Publish(ctx, bridge.Message{Topic: topic, Data: []byte(body)}); err != nil {
					t.Fatal(err)
				}
				for i, c := range chans {
					select {
					case m := <-c:
						if string(m.Data) != body {
							t.Fatalf("subscription %d got %q, want %q", i, m.Data, body)
						}
					case <-ctx.Done():
						t.Fatalf("subscription %d of %d did not get %q", i, len(chans), body)
					}
				}
			}
			expectAll(more, "to three")
			if err := sub2.Unsubscribe(); err != nil {
				t.Fatal(err)
			}
			expectAll(more[1:], "to two")
		})
	}
}

func TestBrokersDownAreUnavailable(t *testing.T) {
	dead := brokertest.DeadAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, b := range map[string]bridge.Broker{
		"amqp":  bridge.NewAMQP(bridge.AMQPOptions{Address: dead, DialTimeout: time.Second}),
		"mqtt":  bridge.NewMQTT(bridge.MQTTOptions{Address: dead, DialTimeout: time.Second}),
		"stomp": bridge.NewSTOMP(bridge.STOMPOptions{Address: dead, DialTimeout: time.Second}),
	} {
		err := b.Publish(ctx, bridge.Message{Topic: "a", Data: []byte("x")})
		if !errors.Is(err, bridge.ErrUnavailable) {
			t.Errorf("%s publish with the broker down: %v", name, err)
		}
		if _, err := b.Subscribe(ctx, "a", func(bridge.Message) {}); !errors.Is(err, bridge.ErrUnavailable) {
			t.Errorf("%s subscribe with the broker down: %v", name, err)
		}
		if b.Ready(ctx) == nil {
			t.Errorf("%s ready with the broker down", name)
		}
	}
}
