package amqpbroker_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/amqpbroker"
	"github.com/wsbridge/wsbridge/broker/brokertest"
)

func TestContract(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T) broker.Broker {
			return amqpbroker.New(amqpbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.RabbitAMQP(t), Credential: &cred}})
		},
		At: func(t *testing.T, addr string) broker.Broker {
			return amqpbroker.New(amqpbroker.Options{Endpoint: broker.Endpoint{Address: addr, DialTimeout: time.Second}})
		},
		// RabbitMQ has no such user: it refuses as it does a wrong password.
		Refusing: func(t *testing.T) (broker.Broker, string) {
			wrong, password := brokertest.WrongLogin()
			// The refusals' WARN lines are LoginCheck's, tested there.
			return amqpbroker.New(amqpbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.RabbitAMQP(t),
				Credential: wrong, Log: slog.New(slog.DiscardHandler)}}), password
		},
		ContentType: true,
	})
}

// RabbitMQ behind a TLS terminator.
func TestOverTLS(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	brokertest.RunTLS(t, func(t *testing.T, ca *brokertest.CA, conf *tls.Config) broker.Broker {
		return amqpbroker.New(amqpbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.TLSProxy(t, ca, brokertest.RabbitAMQP(t)), Credential: &cred, DialTimeout: 2 * time.Second, TLS: conf}})
	})
}

// Against a RabbitMQ user made for the test.
func TestLogin(t *testing.T) {
	user, password := brokertest.RabbitUser(t)
	brokertest.RunLogin(t, broker.Login{Endpoint: broker.Endpoint{Address: brokertest.RabbitAMQP(t), Backend: "rabbit",
		CredentialName: "gw"}, Protocol: "amqp", Attempt: amqpbroker.Login}, user, password, true)
}

// TestAMQPUnsubscribeWhileDelivering provokes the TestContract/publish_and_subscribe
// flake (504 CHANNEL_ERROR - expected 'channel.open'): a subscription is
// dropped while the broker is still delivering to it, so its delivery loop
// is acking while Unsubscribe closes the channel. An ack that leaves after
// channel.close reaches RabbitMQ on a channel it has closed, and it ends the
// whole connection, taking every other subscription with it. Each round
// leaves deliveries in flight; a witness subscription on the same
// connection must live through all of them and still get messages.
func TestAMQPUnsubscribeWhileDelivering(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	b := amqpbroker.New(amqpbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.RabbitAMQP(t), Credential: &cred}})
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := fmt.Sprintf("wsbridge.unsub.%d", time.Now().UnixNano())

	witnessGot := make(chan broker.Message, 1)
	witness, err := b.Subscribe(ctx, base+".witness", func(m broker.Message) {
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
		sub, err := b.Subscribe(ctx, topic, func(broker.Message) { once.Do(func() { close(first) }) })
		if err != nil {
			t.Fatalf("round %d: subscribe: %v", i, err)
		}
		// The burst is published from another goroutine so that deliveries
		// are still arriving (and being acked) when Unsubscribe runs.
		var wg sync.WaitGroup
		wg.Go(func() {
			for range burst {
				if b.Publish(ctx, broker.Message{Topic: topic, Data: []byte("x")}) != nil {
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
	if err := b.Publish(ctx, broker.Message{Topic: base + ".witness", Data: []byte("still here")}); err != nil {
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
