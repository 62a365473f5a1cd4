package natsbroker_test

import (
	"crypto/tls"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/broker/natsbroker"
)

func newBroker(t *testing.T, o natsbroker.Options) broker.Broker {
	t.Helper()
	n, err := natsbroker.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// startServer runs a NATS server of the test's own on a free loopback
// port.
func startServer(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	o.Host, o.Port, o.NoLog, o.NoSigs = "127.0.0.1", -1, true, true
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return s
}

func harness() brokertest.Harness {
	return brokertest.Harness{
		New: func(t *testing.T) broker.Broker {
			return newBroker(t, natsbroker.Options{Endpoint: broker.Endpoint{Address: "nats://" + brokertest.NATS(t)}})
		},
		At: func(t *testing.T, addr string) broker.Broker {
			return newBroker(t, natsbroker.Options{Endpoint: broker.Endpoint{Address: "nats://" + addr, DialTimeout: time.Second}})
		},
		Refusing: func(t *testing.T) (broker.Broker, string) {
			wrong, password := brokertest.WrongLogin()
			ns := startServer(t, &server.Options{Username: wrong.Username, Password: password})
			// The refusals' WARN lines are LoginCheck's, tested there.
			return newBroker(t, natsbroker.Options{Endpoint: broker.Endpoint{Address: "nats://" + ns.Addr().String(),
				Credential: wrong, Log: slog.New(slog.DiscardHandler)}}), password
		},
		ContentType: true,
		Background:  true,
	}
}

func TestContract(t *testing.T) { brokertest.Run(t, harness()) }

// The embedded server, reached in process, holds to the contract too, and
// its max_payload makes a larger publish ErrTooLarge.
func TestEmbeddedContract(t *testing.T) {
	const maxPayload = 64 << 10
	h := harness()
	h.MaxPayload = maxPayload
	h.New = func(t *testing.T) broker.Broker {
		e, err := natsbroker.StartEmbedded(natsbroker.EmbeddedOptions{Port: -1, MaxPayload: maxPayload, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Shutdown)
		return newBroker(t, natsbroker.Options{Endpoint: broker.Endpoint{Address: "nats://" + e.Addr()}, InProcess: e.Server()})
	}
	brokertest.Run(t, h)
}

func TestOverTLS(t *testing.T) {
	brokertest.RunTLS(t, func(t *testing.T, ca *brokertest.CA, conf *tls.Config) broker.Broker {
		certFile, keyFile := ca.ServerFiles(t, "nats")
		cert, _ := tls.LoadX509KeyPair(certFile, keyFile)
		s := startServer(t, &server.Options{TLS: true, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
		return newBroker(t, natsbroker.Options{Endpoint: broker.Endpoint{Address: "nats://" + s.Addr().String(),
			DialTimeout: 2 * time.Second, TLS: conf}})
	})
}

func TestLogin(t *testing.T) {
	user, password := brokertest.Stranger()
	s := startServer(t, &server.Options{Username: user, Password: password})
	brokertest.RunLogin(t, broker.Login{Endpoint: broker.Endpoint{Address: s.Addr().String(), Backend: "nats",
		CredentialName: "gw"}, Protocol: "nats", Attempt: natsbroker.Login}, user, password, false)
}
