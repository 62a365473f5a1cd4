package bridge_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/internal/brokertest"
)

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
	b := bridge.NewSTOMP(bridge.STOMPOptions{Address: tap.Addr(), Credential: &cred, Backend: "rabbit-stomp",
		Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	topic := fmt.Sprintf("wsbridge.stomplog.%d", time.Now().UnixNano())
	got := make(chan bridge.Message, 1)
	sub, err := b.Subscribe(ctx, topic, func(m bridge.Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	// go-stomp's Subscribe returns before its connection has taken the
	// subscription in, and a loss before that would never end it: a
	// message through it says it is in place.
	if err := b.Publish(ctx, bridge.Message{Topic: topic, Data: []byte("in place")}); err != nil {
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
