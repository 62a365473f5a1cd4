package bridge_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/internal/brokertest"
)

// Each Broker reaches its broker over TLS, trusting a CA file: RabbitMQ
// (AMQP, STOMP) and Mosquitto behind a TLS terminator, NATS with TLS of its
// own. A broker whose certificate the CA did not sign is unavailable.
func TestBrokersOverTLS(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	ca := brokertest.NewCA(t)
	clientTLS := func(t *testing.T) *tls.Config {
		c, err := front.ClientTLS{CAFile: ca.File}.Config("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	natsTLS := func(t *testing.T) string {
		certFile, keyFile := ca.ServerFiles(t, "nats")
		cert, _ := tls.LoadX509KeyPair(certFile, keyFile)
		s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
			TLS: true, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if !s.ReadyForConnections(5 * time.Second) {
			t.Fatal("nats with TLS did not start")
		}
		t.Cleanup(s.Shutdown)
		return s.Addr().String()
	}
	brokers := map[string]func(t *testing.T, conf *tls.Config) bridge.Broker{
		"amqp": func(t *testing.T, conf *tls.Config) bridge.Broker {
			return bridge.NewAMQP(bridge.AMQPOptions{Address: brokertest.TLSProxy(t, ca, brokertest.RabbitAMQP(t)), Credential: &cred, TLS: conf, DialTimeout: 2 * time.Second})
		},
		"stomp": func(t *testing.T, conf *tls.Config) bridge.Broker {
			return bridge.NewSTOMP(bridge.STOMPOptions{Address: brokertest.TLSProxy(t, ca, brokertest.RabbitSTOMP(t)), Credential: &cred, TLS: conf, DialTimeout: 2 * time.Second})
		},
		"mqtt": func(t *testing.T, conf *tls.Config) bridge.Broker {
			return bridge.NewMQTT(bridge.MQTTOptions{Address: brokertest.TLSProxy(t, ca, brokertest.Mosquitto(t)), TLS: conf, DialTimeout: 2 * time.Second})
		},
		"nats": func(t *testing.T, conf *tls.Config) bridge.Broker {
			n, err := bridge.NewNATS(bridge.NATSOptions{URL: "nats://" + natsTLS(t), TLS: conf, DialTimeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			return n
		},
	}
	for name, mk := range brokers {
		t.Run(name, func(t *testing.T) {
			b := mk(t, clientTLS(t))
			t.Cleanup(func() { b.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			topic := fmt.Sprintf("wsbridge.tls.%s.%d", name, time.Now().UnixNano())
			got := make(chan bridge.Message, 1)
			if _, err := b.Subscribe(ctx, topic, func(m bridge.Message) { got <- m }); err != nil {
				t.Fatal(err)
			}
			if err := b.Publish(ctx, bridge.Message{Topic: topic, Data: []byte("over tls")}); err != nil {
				t.Fatal(err)
			}
			select {
			case m := <-got:
				if string(m.Data) != "over tls" {
					t.Fatalf("got %q", m.Data)
				}
			case <-ctx.Done():
				t.Fatal("no message over TLS")
			}
		})
		t.Run(name+"/untrusted certificate", func(t *testing.T) {
			other, err := front.ClientTLS{CAFile: brokertest.NewCA(t).File}.Config("127.0.0.1")
			if err != nil {
				t.Fatal(err)
			}
			b := mk(t, other)
			t.Cleanup(func() { b.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if err := b.Publish(ctx, bridge.Message{Topic: "wsbridge.tls.untrusted", Data: []byte("x")}); err == nil {
				t.Fatal("published to a broker whose certificate is not trusted")
			}
		})
	}
}
