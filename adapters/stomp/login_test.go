package stomp

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/internal/authtest"
	"github.com/wsbridge/wsbridge/validate"
)

// loginTimeout is the tests' limits.login_timeout: short, but long enough
// for a CONNECT sent at once to beat it on a loaded machine.
const loginTimeout = 300 * time.Millisecond

func withLoginTimeout(o Options) Options {
	o.WS = bridge.DefaultWSOptions()
	o.WS.LoginTimeout = loginTimeout
	return o
}

// TestLoginTimeout: a WebSocket that has not sent CONNECT within
// limits.login_timeout gets ERROR naming the limit and its key, then close
// 1008, and the close line says login_timeout; on every kind of route,
// with a token at the upgrade too, and however slowly it trickles a
// CONNECT. A client that sent CONNECT in time stays.
func TestLoginTimeout(t *testing.T) {
	cred := testCredential(t)
	relay := startGateway(t, withLoginTimeout(Options{RouteOptions: bridge.RouteOptions{Address: brokerAddr(t), Credential: &cred}}))
	jwt := startGateway(t, withLoginTimeout(Options{RouteOptions: bridge.RouteOptions{Address: brokerAddr(t), Credential: &cred,
		Auth: authtest.JWTPolicy(t, nil)}}))
	translate, _ := startTranslator(t, withLoginTimeout(Options{}))
	sp := http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}
	withToken := sp.Clone()
	withToken.Set("Authorization", "Bearer "+authtest.Token(t, "alice", []string{"reader"}, time.Hour, nil))

	// Opened first, so its deadline has passed once the others' have.
	early := dial(t, relay.url, sp)
	early.connect(t)

	// A CONNECT a byte every 10 ms takes seconds: were the deadline moved
	// by traffic, CONNECTED would come instead of ERROR.
	slowConnect := "CONNECT\naccept-version:1.2\nheart-beat:0,0\nx-pad:" + strings.Repeat("p", 300) + "\n\n\x00"
	trickleFor := time.Duration(len(slowConnect)) * 10 * time.Millisecond
	trickle := func(c *client, stop <-chan struct{}) {
		tick := time.NewTicker(10 * time.Millisecond) // pacing, not synchronisation
		defer tick.Stop()
		for i := range len(slowConnect) {
			select {
			case <-tick.C:
			case <-stop:
				return
			}
			if c.conn.WriteMessage(gws.OpcodeText, []byte{slowConnect[i]}) != nil {
				return
			}
		}
	}
	cases := []struct {
		name   string
		gw     *gateway
		header http.Header
		sends  func(c *client, stop <-chan struct{})
	}{
		{"relay, silent", relay, sp, nil},
		{"relay, trickles CONNECT", relay, sp, trickle},
		{"jwt route, silent", jwt, sp, nil},
		{"jwt route, token at the upgrade, silent", jwt, withToken, nil},
		{"jwt route, trickles CONNECT", jwt, withToken, trickle},
		{"translate, silent", translate, sp, nil},
	}
	t.Run("no CONNECT in time", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				c := dial(t, tc.gw.url, tc.header)
				opened := time.Now()
				if tc.sends != nil {
					stop := make(chan struct{})
					defer close(stop)
					go tc.sends(c, stop)
				}
				f := c.frame(t)
				if f.Command != validate.CmdError || !strings.Contains(header(t, f, "message"), "limits.login_timeout") {
					t.Fatalf("got %s %q, want ERROR naming limits.login_timeout", f.Command, f.Raw)
				}
				if got := c.closed(t); got != bridge.ClosePolicy {
					t.Fatalf("close code %d, want 1008", got)
				}
				switch lived := time.Since(opened); {
				case lived < loginTimeout-loginTimeout/10: // the client starts its clock after the gateway
					t.Fatalf("ended after %s, before the deadline", lived)
				case tc.sends != nil && lived >= trickleFor:
					t.Fatalf("ended after %s: the trickle bought time", lived)
				}
			})
		}
	})
	for _, gw := range []*gateway{relay, jwt, translate} {
		gw.logs.waitFor(t, "outcome=login_timeout")
	}
	jwt.logs.waitFor(t, "identity=unauthenticated outcome=login_timeout")
	t.Run("CONNECT in time", func(t *testing.T) {
		early.send(t, "SUBSCRIBE\nid:0\ndestination:/topic/login-deadline\nreceipt:r\n\n\x00")
		if f := early.frame(t); f.Command != validate.CmdReceipt {
			t.Fatalf("got %s %q, want RECEIPT", f.Command, f.Raw)
		}
	})
}
