package amqp

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/internal/authtest"
	"github.com/wsbridge/wsbridge/validate"
)

// loginTimeout is the tests' limits.login_timeout: short, but long enough
// for a start-ok sent at once to beat it on a loaded machine.
const loginTimeout = 300 * time.Millisecond

func startLoginRelay(t *testing.T, o Options) (string, *brokertest.Logs) {
	t.Helper()
	logs := &brokertest.Logs{}
	return brokertest.ServeRoute(t, "/amqp", slog.New(slog.NewTextHandler(logs, nil)), func(e brokertest.RouteEnv) http.Handler {
		o.Origins, o.Conns, o.Log, o.Route, o.Backend, o.WS = e.Origins, e.Conns, e.Log, "/amqp", "rabbitmq", e.WS
		o.WS.LoginTimeout = loginTimeout
		return NewRelay(o)
	}), logs
}

// TestLoginTimeout: a WebSocket that has not sent connection.start-ok
// within limits.login_timeout gets connection.close 403 naming the limit
// and its key, then (after its close-ok) close 1008, and the close line
// says login_timeout: before the protocol header or after it, with a
// token at the upgrade too, and however slowly it trickles a start-ok. A
// client that logged in in time stays.
func TestLoginTimeout(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	addr := brokertest.RabbitAMQP(t)
	url, logs := startLoginRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Credential: &cred, Auth: authtest.JWTPolicy(t, nil)}})
	token := authtest.Token(t, "alice", []string{"writer"}, time.Hour, nil)

	// Opened first, so its deadline has passed once the others' have.
	early, _, err := dialToken(t, url, token)
	if err != nil {
		t.Fatalf("login in time: %v", err)
	}

	header := func(t *testing.T, c *wsConn) {
		t.Helper()
		c.Write([]byte(validate.AMQPProtocolHeader))
		if f := readFrame(t, c); len(f) < 11 || f[8] != 10 || f[10] != 10 {
			t.Fatalf("got %q, want connection.start", f)
		}
	}
	cases := []struct {
		name  string
		url   string
		sends func(t *testing.T, c *wsConn, stop <-chan struct{}) time.Duration // how long the sending takes
	}{
		{"silent", url, nil},
		{"protocol header, no start-ok", url, func(t *testing.T, c *wsConn, _ <-chan struct{}) time.Duration { header(t, c); return 0 }},
		{"token at the upgrade, silent", url + "?access_token=" + token, nil},
		// A start-ok a byte every 10 ms takes seconds: were the deadline
		// moved by traffic, connection.tune would come instead.
		{"trickles start-ok", url, func(t *testing.T, c *wsConn, stop <-chan struct{}) time.Duration {
			header(t, c)
			whole := startOk(token)
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
		}},
	}
	t.Run("no start-ok in time", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				c := dialWS(t, tc.url)
				opened := time.Now()
				sending := time.Duration(0)
				if tc.sends != nil {
					stop := make(chan struct{})
					defer close(stop)
					sending = tc.sends(t, c, stop)
				}
				f := readFrame(t, c)
				if len(f) < 14 || f[8] != 10 || f[10] != 50 || int(f[11])<<8|int(f[12]) != 403 ||
					!strings.Contains(string(f), "ACCESS_REFUSED - login not completed within 300ms (limits.login_timeout)") {
					t.Fatalf("got %q, want connection.close 403 naming limits.login_timeout", f)
				}
				lived := time.Since(opened)
				c.Write(closeOkFrame)
				<-c.closed
				if code := closeCode(c.err); code != bridge.ClosePolicy {
					t.Fatalf("WebSocket close %v, want 1008", c.err)
				}
				switch {
				case lived < loginTimeout-loginTimeout/10: // the client starts its clock after the gateway
					t.Fatalf("closed after %s, before the deadline", lived)
				case sending > 0 && lived >= sending:
					t.Fatalf("closed after %s: the trickle bought time", lived)
				}
			})
		}
	})
	logs.WaitFor(t, "identity=unauthenticated outcome=login_timeout")
	t.Run("start-ok in time", func(t *testing.T) {
		ch, err := early.Channel()
		if err != nil {
			t.Fatalf("the connection that logged in in time: %v", err)
		}
		ch.Close()
	})
}
