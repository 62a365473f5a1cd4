package bridge_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/internal/brokertest"
	"github.com/wsbridge/wsbridge/keyring"
)

// hangUp is a loopback address that takes every connection and closes it
// at once, as a broker going down does; it counts them.
func hangUp(t *testing.T) (addr string, dials *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dials = new(atomic.Int64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String(), dials
}

// A subscription through Shared whose broker cannot be reached fails at
// once with the broker client's own error, after one attempt: not after
// dialling the broker over and over until the caller's context ends, with
// nothing but "context deadline exceeded" to show for it (an SSE stream
// was held that long and its log line had no cause).
func TestSharedSubscribeFailsOnceWithTheCause(t *testing.T) {
	for name, mk := range map[string]func(addr string) bridge.Broker{
		"amqp": func(a string) bridge.Broker {
			return bridge.NewAMQP(bridge.AMQPOptions{Address: a, DialTimeout: time.Second})
		},
		"mqtt": func(a string) bridge.Broker {
			return bridge.NewMQTT(bridge.MQTTOptions{Address: a, DialTimeout: time.Second})
		},
		"stomp": func(a string) bridge.Broker {
			return bridge.NewSTOMP(bridge.STOMPOptions{Address: a, DialTimeout: time.Second})
		},
	} {
		t.Run(name, func(t *testing.T) {
			addr, dials := hangUp(t)
			// One attempt of the client itself, for its count of dials
			// (paho tries MQTT 3.1.1, then 3.1).
			alone := mk(addr)
			t.Cleanup(func() { alone.Close() })
			if _, err := alone.Subscribe(context.Background(), "a", func(bridge.Message) {}); err == nil {
				t.Fatal("subscribed through a broker that hangs up")
			}
			perAttempt := dials.Swap(0)
			b := mk(addr)
			t.Cleanup(func() { b.Close() })
			shared := bridge.NewShared(b)
			const patience = 5 * time.Second
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			start := time.Now()
			_, err := shared.Subscribe(ctx, "a", func(bridge.Message) {})
			took := time.Since(start)
			if !errors.Is(err, bridge.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got %v, want the broker client's error wrapping ErrUnavailable", err)
			}
			if n := dials.Load(); n != perAttempt || took > patience/2 {
				t.Fatalf("%d dials in %s, want %d (one attempt), well within the caller's %s", n, took, perAttempt, patience)
			}
			if shared.Topics() != 0 {
				t.Fatalf("%d upstream subscriptions left", shared.Topics())
			}
		})
	}
}

// A broker refusing the gateway's credential makes Subscribe and Publish
// fail with ErrLoginRefused as well as ErrUnavailable, so the SSE hub can
// tell the operator which it is; the error carries no password.
func TestBrokersReportARefusedLogin(t *testing.T) {
	var b [8]byte
	rand.Read(b[:])
	user, password := "wsbridge-test-"+hex.EncodeToString(b[:4]), hex.EncodeToString(b[4:])
	wrong := &keyring.Credential{Username: user, Password: keyring.NewSecret("not-" + password)}
	quiet := slog.New(slog.DiscardHandler) // the refusals' WARN lines are LoginCheck's, tested there
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, Username: user, Password: password, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	brokers := map[string]func(t *testing.T) bridge.Broker{
		// RabbitMQ has no such user: it refuses as it does a wrong password.
		"amqp": func(t *testing.T) bridge.Broker {
			return bridge.NewAMQP(bridge.AMQPOptions{Address: brokertest.RabbitAMQP(t), Credential: wrong, Log: quiet})
		},
		"stomp": func(t *testing.T) bridge.Broker {
			return bridge.NewSTOMP(bridge.STOMPOptions{Address: brokertest.RabbitSTOMP(t), Credential: wrong, Log: quiet})
		},
		"mqtt": func(t *testing.T) bridge.Broker {
			addr := brokertest.MosquittoWithPasswords(t, map[string]string{user: password})
			return bridge.NewMQTT(bridge.MQTTOptions{Address: addr, Credential: wrong, Log: quiet})
		},
		"nats": func(t *testing.T) bridge.Broker {
			n, err := bridge.NewNATS(bridge.NATSOptions{URL: "nats://" + ns.Addr().String(), Credential: wrong, Log: quiet})
			if err != nil {
				t.Fatal(err)
			}
			return n
		},
	}
	for name, mk := range brokers {
		t.Run(name, func(t *testing.T) {
			b := mk(t)
			t.Cleanup(func() { b.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, bridge.ErrLoginRefused) || !errors.Is(err, bridge.ErrUnavailable) {
					t.Fatalf("%s: %v, want ErrLoginRefused and ErrUnavailable", what, err)
				}
				if strings.Contains(err.Error(), password) {
					t.Fatalf("%s: the error carries the password: %v", what, err)
				}
			}
			if name == "nats" {
				// nats.go connects in the background and learns of the
				// refusal from its first attempt, which has no event of
				// its own outside the package: readiness says when.
				for !errors.Is(b.Ready(ctx), bridge.ErrLoginRefused) {
					if ctx.Err() != nil {
						t.Fatal("nats: the refusal never showed")
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			_, err := b.Subscribe(ctx, "a", func(bridge.Message) {})
			check("subscribe", err)
			check("publish", b.Publish(ctx, bridge.Message{Topic: "a", Data: []byte("x")}))
		})
	}
}
