package stomp

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/internal/authtest"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/validate"
)

func connectWith(login, passcode string) string {
	return "CONNECT\naccept-version:1.2\nheart-beat:0,0\nlogin:" + login + "\npasscode:" + passcode + "\n\n\x00"
}

// TestAuthTokenCarriers: a valid token is accepted in each carrier, and
// what the client sent as login never reaches RabbitMQ.
func TestAuthTokenCarriers(t *testing.T) {
	cred := testCredential(t)
	tap := brokertest.NewTapProxy(t, brokerAddr(t))
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred, Auth: authtest.JWTPolicy(t, nil)}})
	tok := authtest.Token(t, "alice", []string{"reader"}, time.Hour, nil)
	sp := http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}
	with := func(k, v string) http.Header { h := sp.Clone(); h.Set(k, v); return h }
	cases := []struct {
		name    string
		url     string
		header  http.Header
		connect string
	}{
		{"authorization header", gw.url, with("Authorization", "Bearer "+tok), connect12},
		{"cookie", gw.url, with("Cookie", "wsbridge_token="+tok), connect12},
		{"query parameter", gw.url + "?access_token=" + url.QueryEscape(tok), sp, connect12},
		{"passcode", gw.url, sp, connectWith("alice", tok)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := dial(t, c.url, c.header)
			cl.send(t, c.connect)
			if f := cl.frame(t); f.Command != validate.CmdConnected {
				t.Fatalf("got %s %q", f.Command, f.Raw)
			}
			cl.send(t, "DISCONNECT\n\n\x00")
			cl.closed(t)
		})
	}
	gw.logs.waitFor(t, "identity=\"alice (reader)\"")
	if strings.Contains(tap.Sent(), tok) {
		t.Fatal("the client's token reached the broker")
	}
	if strings.Contains(gw.logs.String(), tok) || strings.Contains(gw.logs.String(), cred.Password.Reveal()) {
		t.Fatal("a token or the broker password reached the logs")
	}
}

// TestAuthTokenRefusals: every way a token can be wrong is refused before
// any byte reaches the broker, with the reason: in STOMP's ERROR frame when
// the token came in the passcode, as HTTP 401 when it came with the upgrade.
func TestAuthTokenRefusals(t *testing.T) {
	cred := testCredential(t)
	tap := brokertest.NewTapProxy(t, brokerAddr(t))
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred, Auth: authtest.JWTPolicy(t, nil)}})
	roles := []string{"writer"}
	cases := []struct {
		name, token, reason string
	}{
		{"wrong signature", authtest.TokenWithKey(t, "another-secret-that-is-long-enough!!", "alice", roles), "signature is invalid"},
		{"expired", authtest.Token(t, "alice", roles, -time.Hour, nil), "token expired"},
		{"not yet valid", authtest.Token(t, "alice", roles, time.Hour, authtest.Claims{"nbf": time.Now().Add(time.Hour).Unix()}), "not valid yet"},
		{"wrong audience", authtest.Token(t, "alice", roles, time.Hour, authtest.Claims{"aud": "another-service"}), "audience"},
		{"wrong issuer", authtest.Token(t, "alice", roles, time.Hour, authtest.Claims{"iss": "mallory"}), "issuer"},
		{"alg none", authtest.TokenAlgNone(t, "alice", roles), "not signed with HS256"},
		{"no token at all", "", "a token is required"},
	}
	sp := http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}
	for _, c := range cases {
		t.Run(c.name+"/passcode", func(t *testing.T) {
			cl := dial(t, gw.url, sp)
			cl.send(t, connectWith("alice", c.token))
			f := cl.frame(t)
			if f.Command != validate.CmdError || header(t, f, "message") != "authentication failed" || !strings.Contains(string(f.Body()), c.reason) {
				t.Fatalf("got %s %q, want ERROR authentication failed: %s", f.Command, f.Raw, c.reason)
			}
			if code := cl.closed(t); code != 1008 {
				t.Fatalf("close code %d, want 1008", code)
			}
		})
		if c.token == "" {
			continue
		}
		t.Run(c.name+"/header", func(t *testing.T) {
			h := sp.Clone()
			h.Set("Authorization", "Bearer "+c.token)
			_, err := tryDial(gw.url, h)
			if err == nil || !strings.Contains(err.Error(), "status 401") || !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("upgrade with a bad token: %v; want 401 naming %q", err, c.reason)
			}
		})
	}
	if sent := tap.Sent(); sent != "" {
		t.Fatalf("refused clients reached the broker: %q", sent)
	}
	for _, c := range cases {
		if c.token != "" && strings.Contains(gw.logs.String(), c.token) {
			t.Fatalf("token %q reached the logs", c.name)
		}
	}
}

// TestAuthACL: the worked example's rules against RabbitMQ. A reader gets
// what a writer sends; a reader's SEND, a broader filter and someone
// else's queue are refused with ERROR, and the refused frames never reach
// the broker.
func TestAuthACL(t *testing.T) {
	cred := testCredential(t)
	tap := brokertest.NewTapProxy(t, brokerAddr(t))
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred, Auth: authtest.JWTPolicy(t, nil)}})
	sp := http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}
	login := func(sub, role string) *client {
		cl := dial(t, gw.url, sp)
		cl.send(t, connectWith(sub, authtest.Token(t, sub, []string{role}, time.Hour, nil)))
		if f := cl.frame(t); f.Command != validate.CmdConnected {
			t.Fatalf("%s: got %s %q", sub, f.Command, f.Raw)
		}
		return cl
	}
	topic := "demo." + strings.ReplaceAll(uniqueName(t), ".", "-")

	reader := login("rita", "reader")
	reader.send(t, "SUBSCRIBE\nid:0\ndestination:/topic/"+topic+"\nreceipt:r1\n\n\x00")
	if f := reader.frame(t); f.Command != validate.CmdReceipt {
		t.Fatalf("reader's allowed SUBSCRIBE: %s %q", f.Command, f.Raw)
	}
	writer := login("will", "writer")
	writer.send(t, "SEND\ndestination:/topic/"+topic+"\n\nfrom will\x00")
	if f := reader.frame(t); f.Command != validate.CmdMessage || string(f.Body()) != "from will" {
		t.Fatalf("reader got %s %q, want will's MESSAGE", f.Command, f.Raw)
	}

	refusals := []struct {
		name, role, frame, mention string
	}{
		{"reader sends", "reader", "SEND\ndestination:/topic/" + topic + "\nreceipt:s1\n\nsneaky\x00", "publish to " + topic},
		{"writer subscribes outside demo", "writer", "SUBSCRIBE\nid:1\ndestination:/topic/secret.x\n\n\x00", "subscribe to secret.x"},
		{"filter broader than demo.*", "writer", "SUBSCRIBE\nid:1\ndestination:/topic/demo.#\n\n\x00", "subscribe to demo.#"},
		{"same topic through another exchange", "writer", "SEND\ndestination:/exchange/amq.fanout/" + topic + "\n\nsneaky\x00", "exchange:amq.fanout"},
		{"someone else's queue behind a topic", "writer", "SUBSCRIBE\nid:1\ndestination:/topic/" + topic + "\nx-queue-name:victim-queue\n\n\x00", "queue:victim-queue"},
		{"a named queue", "writer", "SEND\ndestination:/queue/jobs\n\nsneaky\x00", "queue:jobs"},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			cl := login("x-"+r.role, r.role)
			cl.send(t, r.frame)
			f := cl.frame(t)
			if f.Command != validate.CmdError || header(t, f, "message") != "access refused" || !strings.Contains(string(f.Body()), r.mention) {
				t.Fatalf("got %s %q, want ERROR access refused naming %q", f.Command, f.Raw, r.mention)
			}
			if strings.Contains(r.frame, "receipt:s1") && header(t, f, "receipt-id") != "s1" {
				t.Fatalf("ERROR lacks the refused frame's receipt-id: %q", f.Raw)
			}
			if code := cl.closed(t); code != 1008 {
				t.Fatalf("close code %d, want 1008", code)
			}
			gw.logs.waitFor(t, "destination="+strings.SplitN(r.mention, " ", 3)[len(strings.SplitN(r.mention, " ", 3))-1])
		})
	}
	if strings.Contains(tap.Sent(), "sneaky") || strings.Contains(tap.Sent(), "victim-queue") || strings.Contains(tap.Sent(), "secret.x") {
		t.Fatal("a refused frame reached the broker")
	}
	// Nothing refused was delivered, and the reader is still fine.
	writer.send(t, "SEND\ndestination:/topic/"+topic+"\n\nsecond\x00")
	if f := reader.frame(t); string(f.Body()) != "second" {
		t.Fatalf("reader got %q, want will's second message and nothing refused before it", f.Raw)
	}
	gw.logs.waitFor(t, "stomp access denied")
	if !strings.Contains(gw.logs.String(), `identity="x-reader (reader)"`) {
		t.Fatalf("denials are not logged with the identity:\n%s", gw.logs)
	}
}

// TestAuthUsersFile: login and passcode checked against bcrypt hashes.
func TestAuthUsersFile(t *testing.T) {
	cred := testCredential(t)
	p := authtest.UsersPolicy(t, map[string][2]string{"alice": {"alice-password", "writer"}})
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: brokerAddr(t), Credential: &cred, Auth: p}})
	sp := http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}
	// A CONNECT with no login is told to log in, as an HTTP request is.
	const noLogin = "CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00"
	for _, c := range []struct{ name, connect, want, body string }{
		{"alice", connectWith("alice", "alice-password"), "CONNECTED", ""},
		{"wrong password", connectWith("alice", "wrong"), "ERROR", "unknown user or wrong password"},
		{"unknown user", connectWith("mallory", "alice-password"), "ERROR", "unknown user or wrong password"},
		{"empty login", connectWith("", ""), "ERROR", "log in with a username and password"},
		{"no login", noLogin, "ERROR", "log in with a username and password"},
	} {
		cl := dial(t, gw.url, sp)
		cl.send(t, c.connect)
		f := cl.frame(t)
		if f.Command.String() != c.want {
			t.Fatalf("%s: got %q, want %s", c.name, f.Raw, c.want)
		}
		if !strings.Contains(string(f.Body()), c.body) {
			t.Fatalf("%s: ERROR body %q, want %q", c.name, f.Body(), c.body)
		}
	}
	if strings.Contains(gw.logs.String(), "alice-password") {
		t.Fatal("a password reached the logs")
	}
}

// TestAuthPerIdentityCredential: the template user/{sub} picks alice's
// keyring entry, which RabbitMQ then sees; bob has none and is refused
// without the gateway ever dialling the broker.
func TestAuthPerIdentityCredential(t *testing.T) {
	cred := testCredential(t)
	tap := brokertest.NewTapProxy(t, brokerAddr(t))
	pol := authtest.JWTPolicy(t, func(o *auth.Options) {
		o.Credential = "user/{sub}"
		o.Lookup = authtest.Lookup(map[string]keyring.Credential{"user/alice": cred})
	})
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Auth: pol}}) // no route credential to fall back to
	sp := http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}

	bob := dial(t, gw.url, sp)
	bob.send(t, connectWith("", authtest.Token(t, "bob", []string{"writer"}, time.Hour, nil)))
	bob.expectError(t, "access refused", 1008)
	if len(tap.Ports()) != 0 {
		t.Fatal("the gateway dialled the broker for an identity without a credential")
	}

	alice := dial(t, gw.url, sp)
	alice.send(t, connectWith("", authtest.Token(t, "alice", []string{"writer"}, time.Hour, nil)))
	if f := alice.frame(t); f.Command != validate.CmdConnected {
		t.Fatalf("alice: %s %q", f.Command, f.Raw)
	}
	if got := stompLogin(t, tap.Ports()[0]); got != cred.Username {
		t.Fatalf("RabbitMQ sees %q, want alice's keyring entry's %q", got, cred.Username)
	}
	gw.logs.waitFor(t, "stomp identity has no broker credential")
}

// TestAuthTokenExpiry: a session outlives its token by the grace only, and
// is told why.
func TestAuthTokenExpiry(t *testing.T) {
	cred := testCredential(t)
	pol := authtest.JWTPolicy(t, func(o *auth.Options) { o.ExpiryGrace = 500 * time.Millisecond })
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: brokerAddr(t), Credential: &cred, Auth: pol}})
	cl := dial(t, gw.url, http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}})
	start := time.Now()
	tok := authtest.Token(t, "alice", []string{"reader"}, 2*time.Second, nil) // exp has whole-second resolution
	cl.send(t, connectWith("", tok))
	if f := cl.frame(t); f.Command != validate.CmdConnected {
		t.Fatalf("%s %q", f.Command, f.Raw)
	}
	cl.expectError(t, "token expired", 1008)
	if lived := time.Since(start); lived < time.Second {
		t.Fatalf("closed after %s, before the token expired", lived)
	}
	gw.logs.waitFor(t, "outcome=token_expired")
}

// TestAuthTranslateMode: the same ACL holds when the gateway terminates
// STOMP itself (here onto embedded NATS).
func TestAuthTranslateMode(t *testing.T) {
	gw, _ := startTranslator(t, Options{RouteOptions: bridge.RouteOptions{Auth: authtest.JWTPolicy(t, nil)}})
	sp := http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}
	cl := dial(t, gw.url, sp)
	cl.send(t, connectWith("", authtest.Token(t, "rita", []string{"reader"}, time.Hour, nil)))
	if f := cl.frame(t); f.Command != validate.CmdConnected {
		t.Fatalf("%s %q", f.Command, f.Raw)
	}
	cl.send(t, "SUBSCRIBE\nid:0\ndestination:/topic/demo.a\nreceipt:r\n\n\x00")
	if f := cl.frame(t); f.Command != validate.CmdReceipt {
		t.Fatalf("%s %q", f.Command, f.Raw)
	}
	cl.send(t, "SEND\ndestination:/topic/demo.a\n\nno\x00")
	cl.expectError(t, "access refused", 1008)
}

// TestAuthClientIDPerIdentity: RabbitMQ names durable subscriptions after
// CONNECT's client-id; the broker sees it prefixed with the identity.
func TestAuthClientIDPerIdentity(t *testing.T) {
	cred := testCredential(t)
	tap := brokertest.NewTapProxy(t, brokerAddr(t))
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred, Auth: authtest.JWTPolicy(t, nil)}})
	cl := dial(t, gw.url, http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}})
	cl.send(t, "CONNECT\naccept-version:1.2\nclient-id:app\npasscode:"+authtest.Token(t, "alice", []string{"reader"}, time.Hour, nil)+"\n\n\x00")
	if f := cl.frame(t); f.Command != validate.CmdConnected {
		t.Fatalf("%s %q", f.Command, f.Raw)
	}
	if sent := tap.Sent(); !strings.Contains(sent, "\nclient-id:alice:app\n") {
		t.Fatalf("client-id not namespaced: %q", strings.ReplaceAll(sent, cred.Password.Reveal(), "<pw>"))
	}
}

// TestAuthTokenInsideLeeway: a token is admitted until exp + leeway, and
// its session lives until then too (plus the grace), not ended at once;
// one past exp + leeway is refused at the door, in CONNECT or at the
// upgrade.
func TestAuthTokenInsideLeeway(t *testing.T) {
	cred := testCredential(t)
	sp := http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}
	cases := []struct {
		name          string
		age           time.Duration // how long ago the token's exp was
		leeway, grace time.Duration
		admitted      bool
	}{
		{"expired 1s ago, inside the leeway", time.Second, 3500 * time.Millisecond, 0, true},
		{"expired 1s ago, inside leeway and grace", time.Second, 2500 * time.Millisecond, time.Second, true},
		{"past exp + leeway", 4 * time.Second, 2 * time.Second, time.Hour, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			pol := authtest.JWTPolicy(t, func(o *auth.Options) { o.JWT, o.ExpiryGrace = authtest.Verifier(t, c.leeway), c.grace })
			gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: brokerAddr(t), Credential: &cred, Auth: pol}})
			exp := time.Unix(time.Now().Add(-c.age).Unix(), 0)
			tok := authtest.Token(t, "alice", []string{"reader"}, 0, authtest.Claims{"exp": exp.Unix()})
			if !c.admitted {
				cl := dial(t, gw.url, sp)
				cl.send(t, connectWith("", tok))
				cl.expectError(t, "authentication failed", 1008)
				if _, err := tryDial(gw.url, withHeader(sp, "Authorization", "Bearer "+tok)); err == nil || !strings.Contains(err.Error(), "status 401") {
					t.Fatalf("token at the upgrade: %v, want 401", err)
				}
				return
			}
			cl := dial(t, gw.url, sp)
			cl.send(t, connectWith("", tok))
			if f := cl.frame(t); f.Command != validate.CmdConnected {
				t.Fatalf("%s %q", f.Command, f.Raw)
			}
			connected := time.Now()
			cl.expectError(t, "token expired", 1008)
			end := exp.Add(c.leeway + c.grace)
			switch ended := time.Now(); {
			case ended.Sub(connected) < time.Second:
				t.Fatalf("ended %s after connecting", ended.Sub(connected))
			case ended.Before(end):
				t.Fatalf("ended %s before exp + leeway + grace", end.Sub(ended))
			}
		})
	}
}

func withHeader(h http.Header, k, v string) http.Header {
	h = h.Clone()
	h.Set(k, v)
	return h
}
