package mqtt

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/internal/authtest"
)

// loginTimeout is the tests' limits.login_timeout: short, but long enough
// for a CONNECT sent at once to beat it on a loaded machine.
const loginTimeout = 300 * time.Millisecond

// startLoginRelay serves a relay with loginTimeout, logging to the
// returned Logs.
func startLoginRelay(t *testing.T, o Options) (string, *brokertest.Logs) {
	t.Helper()
	logs := &brokertest.Logs{}
	return brokertest.ServeRoute(t, "/mqtt", slog.New(slog.NewTextHandler(logs, nil)), func(e brokertest.RouteEnv) http.Handler {
		o.Origins, o.Conns, o.Log, o.Route, o.Backend, o.WS = e.Origins, e.Conns, e.Log, "/mqtt", "mosquitto", e.WS
		o.WS.LoginTimeout = loginTimeout
		return NewRelay(o)
	}), logs
}

// TestLoginTimeout: a WebSocket that has not sent CONNECT within
// limits.login_timeout is closed with 1008 and a reason naming the limit
// and its key, with no MQTT packet first (before CONNACK neither 3.1.1
// nor 5 has one for it), and the close line says login_timeout; with a
// token at the upgrade too, and however slowly it trickles a CONNECT. A
// client that sent CONNECT in time stays.
func TestLoginTimeout(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	anon, anonLogs := startLoginRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr}})
	jwt, jwtLogs := startLoginRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Auth: authtest.JWTPolicy(t, nil)}})
	token := authtest.Token(t, "alice", []string{"writer"}, time.Hour, nil)

	// Opened first, so its deadline has passed once the others' have.
	early := dialRaw(t, anon)
	early.send(t, connect(t, 4, fmt.Sprintf("early-%d", time.Now().UnixNano())))
	if ack := early.next(t); ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK %x", ack)
	}

	// A CONNECT a byte every 10 ms takes a few seconds (mqtt.js splits one
	// into ~10 messages): were the deadline moved by traffic, CONNACK
	// would come instead of the close.
	trickle := func(whole []byte) func(*rawClient, <-chan struct{}) time.Duration {
		return func(c *rawClient, stop <-chan struct{}) time.Duration {
			go func() {
				tick := time.NewTicker(10 * time.Millisecond) // pacing, not synchronisation
				defer tick.Stop()
				for _, b := range whole {
					select {
					case <-tick.C:
					case <-stop:
						return
					}
					if c.conn.WriteMessage(gws.OpcodeBinary, []byte{b}) != nil {
						return
					}
				}
			}()
			return time.Duration(len(whole)) * 10 * time.Millisecond
		}
	}
	padded := func(v byte) []byte {
		return connectToken(t, v, "slow-"+strings.Repeat("c", 200), token, "")
	}
	cases := []struct {
		name  string
		url   string
		sends func(*rawClient, <-chan struct{}) time.Duration // how long the sending takes
	}{
		{"anonymous route, silent", anon, nil},
		{"jwt route, silent", jwt, nil},
		{"jwt route, trickles a 3.1.1 CONNECT", jwt, trickle(padded(4))},
		{"jwt route, trickles a 5 CONNECT", jwt, trickle(padded(5))},
		{"jwt route, token at the upgrade, silent", jwt + "?access_token=" + token, nil},
	}
	t.Run("no CONNECT in time", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				c := dialRaw(t, tc.url)
				opened := time.Now()
				sending := time.Duration(0)
				if tc.sends != nil {
					stop := make(chan struct{})
					defer close(stop)
					sending = tc.sends(c, stop)
				}
				select {
				case err := <-c.closed:
					var ce *gws.CloseError
					if !errors.As(err, &ce) || ce.Code != bridge.ClosePolicy || !strings.Contains(string(ce.Reason), "limits.login_timeout") {
						t.Fatalf("closed with %v, want 1008 naming limits.login_timeout", err)
					}
				case m := <-c.msgs:
					t.Fatalf("got %x, want the close", m)
				case <-time.After(10 * time.Second):
					t.Fatal("not closed within 10s")
				}
				if len(c.msgs) > 0 {
					t.Fatalf("got %x before the close", <-c.msgs)
				}
				switch lived := time.Since(opened); {
				case lived < loginTimeout-loginTimeout/10: // the client starts its clock after the gateway
					t.Fatalf("closed after %s, before the deadline", lived)
				case sending > 0 && lived >= sending:
					t.Fatalf("closed after %s: the trickle bought time", lived)
				}
			})
		}
	})
	anonLogs.WaitFor(t, "outcome=login_timeout")
	jwtLogs.WaitFor(t, "identity=unauthenticated outcome=login_timeout")
	t.Run("CONNECT in time", func(t *testing.T) {
		early.send(t, []byte{0xC0, 0x00}) // PINGREQ
		if m := early.next(t); m[0] != 0xD0 {
			t.Fatalf("got %x, want PINGRESP", m)
		}
	})
}
