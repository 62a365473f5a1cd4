package bridge_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/internal/brokertest"
	"github.com/wsbridge/wsbridge/keyring"
)

// BackendLogin.Try, what readiness and a CLI check call, against a
// RabbitMQ user made for the test: the right password is accepted; a
// wrong one, or a virtual host the user may not open, is ErrLoginRefused
// whose text names no one, with the broker's words kept for the log; a
// broker that is not there is ErrUnavailable, not a refusal.
func TestBackendLoginTry(t *testing.T) {
	user, password := brokertest.RabbitUser(t)
	right := &keyring.Credential{Username: user, Password: keyring.NewSecret(password)}
	wrong := &keyring.Credential{Username: user, Password: keyring.NewSecret("not-" + password)}
	type tcase struct {
		name   string
		login  bridge.BackendLogin
		refuse bool
	}
	var cases []tcase
	for _, p := range []struct{ protocol, addr string }{
		{"amqp", brokertest.RabbitAMQP(t)}, {"stomp", brokertest.RabbitSTOMP(t)},
	} {
		l := bridge.BackendLogin{Backend: "rabbit", Protocol: p.protocol, Address: p.addr, CredentialName: "gw"}
		ok, bad, vhost := l, l, l
		ok.Credential, bad.Credential = right, wrong
		vhost.Credential, vhost.VHost = right, "wsbridge-no-such-vhost"
		cases = append(cases, tcase{p.protocol + " right password", ok, false}, tcase{p.protocol + " wrong password", bad, true},
			tcase{p.protocol + " vhost not allowed", vhost, true})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := tc.login.Try(ctx)
			if !tc.refuse {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var le *bridge.LoginError
			if !errors.Is(err, bridge.ErrLoginRefused) || !errors.As(err, &le) {
				t.Fatalf("got %v, want a refusal", err)
			}
			if err.Error() != "login refused" || le.Backend != "rabbit" || le.Entry != "gw" || le.Said == "" {
				t.Fatalf("refusal %q %+v", err, le)
			}
			if strings.Contains(le.Said, password) {
				t.Fatalf("the broker's words carry the password: %q", le.Said)
			}
		})
	}
	t.Run("RabbitMQ's MQTT plugin", func(t *testing.T) {
		addr := brokertest.RabbitMQTT(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l := bridge.BackendLogin{Backend: "rabbit-mqtt", Protocol: "mqtt", Address: addr, CredentialName: "gw", Credential: right}
		if err := l.Try(ctx); err != nil {
			t.Fatalf("right password: %v", err)
		}
		l.Credential = wrong
		if err := l.Try(ctx); !errors.Is(err, bridge.ErrLoginRefused) {
			t.Fatalf("wrong password: %v, want a refusal", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		l := bridge.BackendLogin{Protocol: "amqp", Address: brokertest.DeadAddr(t), Credential: right, DialTimeout: time.Second}
		if err := l.Try(context.Background()); !errors.Is(err, bridge.ErrUnavailable) || errors.Is(err, bridge.ErrLoginRefused) {
			t.Fatalf("got %v, want unavailable", err)
		}
	})
}
