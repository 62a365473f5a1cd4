package stompbroker_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/broker/stompbroker"
)

func TestContract(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T) broker.Broker {
			return stompbroker.New(stompbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.RabbitSTOMP(t),
				Credential: &cred}})
		},
		At: func(t *testing.T, addr string) broker.Broker {
			return stompbroker.New(stompbroker.Options{Endpoint: broker.Endpoint{Address: addr, DialTimeout: time.Second}})
		},
		// RabbitMQ has no such user: it refuses as it does a wrong password.
		Refusing: func(t *testing.T) (broker.Broker, string) {
			wrong, password := brokertest.WrongLogin()
			// The refusals' WARN lines are LoginCheck's, tested there.
			return stompbroker.New(stompbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.RabbitSTOMP(t),
				Credential: wrong, Log: slog.New(slog.DiscardHandler)}}), password
		},
		ContentType: true,
	})
}

// RabbitMQ behind a TLS terminator.
func TestOverTLS(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	brokertest.RunTLS(t, func(t *testing.T, ca *brokertest.CA, conf *tls.Config) broker.Broker {
		return stompbroker.New(stompbroker.Options{Endpoint: broker.Endpoint{Address: brokertest.TLSProxy(t, ca, brokertest.RabbitSTOMP(t)), Credential: &cred, DialTimeout: 2 * time.Second, TLS: conf}})
	})
}

// Against a RabbitMQ user made for the test.
func TestLogin(t *testing.T) {
	user, password := brokertest.RabbitUser(t)
	brokertest.RunLogin(t, broker.Login{Endpoint: broker.Endpoint{Address: brokertest.RabbitSTOMP(t), Backend: "rabbit",
		CredentialName: "gw"}, Protocol: "stomp", Attempt: stompbroker.Login}, user, password, true)
}

// What go-stomp itself reports about the gateway's connection (here a
// subscription ended by the connection's loss) goes to the gateway's
// logger, structured, naming the backend, at DEBUG as the gateway handles
// the loss itself; not to stderr through the standard log package, where
// it came out unstructured beside the gateway's lines and cluttered every
// test run.
func TestSTOMPClientLogsThroughTheGatewayLogger(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	tap := brokertest.NewTapProxy(t, brokertest.RabbitSTOMP(t))
	// The standard logger is the process's: this test runs alone.
	var std brokertest.Logs
	prev, flags := log.Writer(), log.Flags()
	log.SetOutput(&std)
	t.Cleanup(func() { log.SetOutput(prev); log.SetFlags(flags) })

	var logs brokertest.Logs
	b := stompbroker.New(stompbroker.Options{Endpoint: broker.Endpoint{Address: tap.Addr(), Credential: &cred,
		Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Backend: "rabbit-stomp"}})
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	topic := fmt.Sprintf("wsbridge.stomplog.%d", time.Now().UnixNano())
	got := make(chan broker.Message, 1)
	sub, err := b.Subscribe(ctx, topic, func(m broker.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	// go-stomp's Subscribe returns before its connection has taken the
	// subscription in, and a loss before that would never end it: a
	// message through it says it is in place.
	if err := b.Publish(ctx, broker.Message{Topic: topic, Data: []byte("in place")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("the subscription got nothing")
	}
	tap.Cut()
	// go-stomp logs before it hands the subscription its error, which is
	// what ends it.
	select {
	case <-sub.Done():
	case <-ctx.Done():
		t.Fatal("the subscription outlived its connection")
	}
	if strings.Contains(std.String(), "Subscription") {
		t.Errorf("go-stomp wrote to the standard logger:\n%s", std.String())
	}
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "/topic/"+topic) {
			line = l
		}
	}
	for _, want := range []string{"level=DEBUG", `msg="stomp client: Subscription`, "connection closed", "backend=rabbit-stomp"} {
		if !strings.Contains(line, want) {
			t.Fatalf("no gateway log line about the subscription with %q:\n%s", want, logs.String())
		}
	}
}
