package stomp

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-stomp/stomp/v3"
	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/internal/authtest"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/validate"
)

const connect12 = "CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:0,0\n\n\x00"

// wsStream lets go-stomp's client speak through a WebSocket: each Write is
// one message (so frames arrive split and packed as bufio flushes them).
type wsStream struct {
	c   *client
	buf []byte
}

func (s *wsStream) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		select {
		case m := <-s.c.msgs:
			s.buf = m.data
		case <-s.c.done:
			return 0, io.EOF
		}
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func (s *wsStream) Write(p []byte) (int, error) {
	op := gws.OpcodeText
	if !utf8.Valid(p) {
		op = gws.OpcodeBinary
	}
	return len(p), s.c.conn.WriteMessage(op, p)
}

func (s *wsStream) Close() error { return s.c.conn.WriteClose(1000, nil) }

func stompOverWS(t *testing.T, url string) *stomp.Conn {
	t.Helper()
	c := dial(t, url, nil)
	conn, err := stomp.Connect(&wsStream{c: c}, stomp.ConnOpt.HeartBeat(0, 0), stomp.ConnOpt.Logger(newStompLog(t)))
	if err != nil {
		t.Fatalf("STOMP connect through the gateway: %v", err)
	}
	return conn
}

// stompLog takes go-stomp's own log lines, which it would print with the
// standard log package: its routine ones (a subscription ended by its
// connection closing) are dropped, its warnings and errors go to the
// test's log until the test ends (t.Logf after that panics).
type stompLog struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func newStompLog(t testing.TB) *stompLog {
	l := &stompLog{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.done = true
	})
	return l
}

func (l *stompLog) logf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Logf("go-stomp: "+format, v...)
	}
}

func (l *stompLog) Debugf(string, ...any)            {}
func (l *stompLog) Infof(string, ...any)             {}
func (l *stompLog) Warningf(format string, v ...any) { l.logf(format, v...) }
func (l *stompLog) Errorf(format string, v ...any)   { l.logf(format, v...) }
func (l *stompLog) Debug(string)                     {}
func (l *stompLog) Info(string)                      {}
func (l *stompLog) Warning(msg string)               { l.logf("%s", msg) }
func (l *stompLog) Error(msg string)                 { l.logf("%s", msg) }

func recv(t *testing.T, sub *stomp.Subscription) *stomp.Message {
	t.Helper()
	select {
	case m := <-sub.C:
		if m.Err != nil {
			t.Fatalf("subscription: %v", m.Err)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

func TestRelayRoundTripWithInjectedCredentials(t *testing.T) {
	addr := brokerAddr(t)
	cred := testCredential(t)
	q := "/queue/" + uniqueQueue(t)
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Credential: &cred}})
	base := runtime.NumGoroutine()
	conn := stompOverWS(t, gw.url)

	sub, err := conn.Subscribe(q, stomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	binary := []byte{0, 1, 2, 0xff, 0xfe, 0, '\n', 0}
	if err := conn.Send(q, "text/plain", []byte("hello"), stomp.SendOpt.Receipt); err != nil {
		t.Fatalf("send with receipt: %v", err)
	}
	if err := conn.Send(q, "application/octet-stream", binary, stomp.SendOpt.Header("x-escaped", "a:b\nc\\d")); err != nil {
		t.Fatal(err)
	}
	m1 := recv(t, sub)
	if string(m1.Body) != "hello" {
		t.Fatalf("body %q", m1.Body)
	}
	m2 := recv(t, sub)
	if !bytes.Equal(m2.Body, binary) {
		t.Fatalf("binary body %v, want %v", m2.Body, binary)
	}
	if got := m2.Header.Get("x-escaped"); got != "a:b\nc\\d" {
		t.Fatalf("escaped header came back as %q", got)
	}
	if err := conn.Ack(m1); err != nil {
		t.Fatal(err)
	}
	if err := conn.Ack(m2); err != nil {
		t.Fatal(err)
	}
	// No sub.Unsubscribe(): go-stomp v3.1.5's at times waits 30 s for a
	// RECEIPT it seems to miss (seen in CI).
	// The relay forwards UNSUBSCRIBE like any checked frame (the validator's
	// tests cover the frame); DISCONNECT ends this one.
	if err := conn.Disconnect(); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	waitGoroutines(t, base)
}

func TestRelayBinaryBodyIsABinaryMessage(t *testing.T) {
	addr := brokerAddr(t)
	cred := testCredential(t)
	q := "/queue/" + uniqueQueue(t)
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Credential: &cred}})
	c := dial(t, gw.url, nil)
	c.connect(t)
	c.send(t, "SUBSCRIBE\nid:s1\ndestination:"+q+"\nreceipt:r1\n\n\x00")
	if f := c.frame(t); f.Command != validate.CmdReceipt || header(t, f, "receipt-id") != "r1" {
		t.Fatalf("got %s %q", f.Command, f.Raw)
	}
	body := "\xff\x00\xfe"
	send := fmt.Sprintf("SEND\ndestination:%s\ncontent-length:%d\n\n%s\x00", q, len(body), body)
	if err := c.conn.WriteMessage(gws.OpcodeBinary, []byte(send)); err != nil {
		t.Fatal(err)
	}
	m := c.next(t)
	if m.op != gws.OpcodeBinary || !bytes.HasPrefix(m.data, []byte("MESSAGE\n")) {
		t.Fatalf("MESSAGE with a binary body came as opcode %d: %q", m.op, m.data)
	}
	c.send(t, "SEND\ndestination:"+q+"\n\ntext\x00")
	if m := c.next(t); m.op != gws.OpcodeText {
		t.Fatalf("MESSAGE with a text body came as opcode %d", m.op)
	}
}

func TestRelayTransactionsAndNack(t *testing.T) {
	addr := brokerAddr(t)
	cred := testCredential(t)
	q := "/queue/" + uniqueQueue(t)
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Credential: &cred}})
	conn := stompOverWS(t, gw.url)
	sub, err := conn.Subscribe(q, stomp.AckClient)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.BeginWithError()
	if err != nil {
		t.Fatal(err)
	}
	tx.Send(q, "text/plain", []byte("aborted"))
	if err := tx.Abort(); err != nil {
		t.Fatal(err)
	}
	tx, _ = conn.BeginWithError()
	tx.Send(q, "text/plain", []byte("committed"))
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	m := recv(t, sub)
	if string(m.Body) != "committed" {
		t.Fatalf("first message %q: an aborted send was delivered", m.Body)
	}
	if err := conn.Nack(m); err != nil {
		t.Fatal(err)
	}
	again := recv(t, sub) // NACK requeues in RabbitMQ
	if string(again.Body) != "committed" || again.Header.Get("redelivered") != "true" {
		t.Fatalf("after NACK got %q redelivered=%q", again.Body, again.Header.Get("redelivered"))
	}
	if err := conn.Ack(again); err != nil {
		t.Fatal(err)
	}
	conn.Disconnect()
}

// The broker must see the keyring identity, whatever the client claims.
func TestRelayClientCredentialsAreReplaced(t *testing.T) {
	addr := brokerAddr(t)
	cred := testCredential(t)
	tap := brokertest.NewTapProxy(t, addr)
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred}})
	c := dial(t, gw.url, nil)
	c.send(t, "CONNECT\naccept-version:1.2\nhost:evil-vhost\nlogin:intruder\npasscode:letmein\nlogin:second\n\n\x00")
	f := c.frame(t)
	if f.Command != validate.CmdConnected {
		t.Fatalf("got %s %q", f.Command, f.Raw)
	}
	sent := tap.Sent()
	for _, bad := range []string{"intruder", "letmein", "second", "evil-vhost"} {
		if strings.Contains(sent, bad) {
			t.Fatalf("client-supplied %q reached the broker: %q", bad, sent)
		}
	}
	if !strings.Contains(sent, "login:"+cred.Username+"\n") || !strings.Contains(sent, "host:/\n") {
		t.Fatalf("injected identity missing from %q", strings.ReplaceAll(sent, cred.Password.Reveal(), "<pw>"))
	}
	port := tap.Ports()[0]
	if got := stompLogin(t, port); got != cred.Username {
		t.Fatalf("RabbitMQ says the connection is %q, want the keyring's %q", got, cred.Username)
	}
	c.send(t, "DISCONNECT\n\n\x00")
	gw.logs.waitFor(t, "stomp connection closed")
	if strings.Contains(gw.logs.String(), cred.Password.Reveal()) {
		t.Fatal("the broker password reached the logs")
	}
}

func TestRelayRejectsMalformedFrames(t *testing.T) {
	addr := brokerAddr(t)
	cred := testCredential(t)
	q := "/queue/" + uniqueQueue(t)
	lim := validate.STOMPLimits{MaxFrameBytes: 1024, MaxHeaders: 8, MaxHeaderLineBytes: 256}
	tests := []struct {
		name     string
		messages []string // sent after a valid CONNECT unless noConnect
		noConn   bool
		code     uint16
		mention  string
		bad      string // must never reach the broker
		good     string // must reach the broker (sent before the bad frame)
	}{
		{name: "send before connect", noConn: true, messages: []string{"SEND\ndestination:" + q + "\n\nearly\x00"},
			code: bridge.ClosePolicy, mention: "first frame", bad: "early"},
		{name: "second connect", messages: []string{"CONNECT\naccept-version:1.2\nlogin:x\n\n\x00"},
			code: bridge.ClosePolicy, mention: "twice", bad: "login:x"},
		{name: "unknown command", messages: []string{"PUBLISH\ndestination:" + q + "\n\nx\x00"},
			code: bridge.CloseProtocolError, mention: "unknown command", bad: "PUBLISH"},
		{name: "header injection with raw CR", messages: []string{"SEND\ndestination:" + q + "\rinjected:1\n\ncr\x00"},
			code: bridge.CloseProtocolError, mention: "CR", bad: "injected"},
		{name: "raw colon in a 1.2 value", messages: []string{"SEND\ndestination:" + q + "\nx-h:a:b\n\ncolon\x00"},
			code: bridge.CloseProtocolError, mention: "colon", bad: "colon"},
		{name: "undefined escape", messages: []string{"SEND\ndestination:" + q + "\nx-h:\\t\n\nesc\x00"},
			code: bridge.CloseProtocolError, mention: "escape", bad: "esc\x00"},
		{name: "content-length mismatch", messages: []string{"SEND\ndestination:" + q + "\ncontent-length:2\n\nmismatch\x00"},
			code: bridge.CloseProtocolError, mention: "content-length", bad: "mismatch"},
		{name: "invalid utf-8 header in a binary message", messages: []string{"SEND\ndestination:" + q + "\xc3\x28\n\nutf\x00"},
			code: bridge.CloseProtocolError, mention: "UTF-8", bad: "utf"},
		{name: "missing destination", messages: []string{"SEND\n\nnodest\x00"},
			code: bridge.CloseProtocolError, mention: "destination", bad: "nodest"},
		{name: "oversize frame across messages", messages: []string{"SEND\ndestination:" + q + "\n\n" + strings.Repeat("x", 600), strings.Repeat("y", 600) + "\x00"},
			code: bridge.CloseTooLarge, mention: "larger than 1024", bad: "xxxxxxxx"},
		{name: "oversize content-length", messages: []string{"SEND\ndestination:" + q + "\ncontent-length:1000000000\n\n"},
			code: bridge.CloseTooLarge, mention: "1024-byte frame limit", bad: "1000000000"},
		{name: "too many headers", messages: []string{"SEND\ndestination:" + q + "\na:1\nb:2\nc:3\nd:4\ne:5\nf:6\ng:7\nh:8\n\nmany\x00"},
			code: bridge.CloseTooLarge, mention: "headers", bad: "many"},
		{name: "valid frame then bad frame in one message", messages: []string{
			"SEND\ndestination:" + q + "\n\ngood-one\x00SEND\ndestination:" + q + "\nx:\\q\n\nbad-one\x00"},
			code: bridge.CloseProtocolError, mention: "escape", bad: "bad-one", good: "good-one"},
		{name: "bad frame split across messages", messages: []string{"SEND\ndestination:" + q + "\n", "x-h:\\z\n\nsplit\x00"},
			code: bridge.CloseProtocolError, mention: "escape", bad: "split"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tap := brokertest.NewTapProxy(t, addr)
			gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred}, Limits: lim})
			c := dial(t, gw.url, nil)
			if !tt.noConn {
				c.connect(t)
			}
			for _, m := range tt.messages {
				op := gws.OpcodeText
				if !utf8.ValidString(m) {
					op = gws.OpcodeBinary
				}
				if err := c.conn.WriteMessage(op, []byte(m)); err != nil {
					t.Fatal(err)
				}
			}
			c.expectError(t, tt.mention, tt.code)
			tap.Close() // waits until every byte the gateway sent has passed
			sent := tap.Sent()
			if strings.Contains(sent, tt.bad) {
				t.Fatalf("offending bytes %q reached the broker: %q", tt.bad, sent)
			}
			if tt.good != "" && !strings.Contains(sent, tt.good) {
				t.Fatalf("valid frame %q before the bad one did not reach the broker", tt.good)
			}
		})
	}
}

func TestRelayBrokerUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens here now
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: dead, DialTimeout: time.Second}})
	base := runtime.NumGoroutine()
	c := dial(t, gw.url, nil)
	start := time.Now()
	c.send(t, connect12)
	c.expectError(t, "broker unavailable", bridge.CloseInternal)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v to report an unreachable broker", d)
	}
	gw.logs.waitFor(t, "outcome=broker_unavailable")
	waitGoroutines(t, base)
}

// TestRelayBrokerRefusesTheGatewaysCredential: with a wrong password in
// the keyring, RabbitMQ answers CONNECT with an ERROR naming the gateway's
// broker user ("Access refused for user 'guest'"). The client gets a
// generic ERROR and close 1011 at once instead (RabbitMQ would close only
// 10 s later); the operator's log gets the broker's words at WARN with the
// backend and the keyring entry (the route's own, or the identity's), and
// never the password.
func TestRelayBrokerRefusesTheGatewaysCredential(t *testing.T) {
	addr := brokerAddr(t)
	cred := testCredential(t)
	password := fmt.Sprintf("wrong-password-%d", time.Now().UnixNano())
	wrong := keyring.Credential{Username: cred.Username, Password: keyring.NewSecret(password)}
	token := authtest.Token(t, "alice", []string{"writer"}, time.Hour, nil)
	cases := []struct {
		name, entry string
		route       bridge.RouteOptions
		connect     string
	}{
		{"route credential", "rabbit-gateway", bridge.RouteOptions{Credential: &wrong, CredentialName: "rabbit-gateway"}, connect12},
		{"per-identity credential", "user/alice", bridge.RouteOptions{Credential: &cred, CredentialName: "rabbit-gateway",
			Auth: authtest.JWTPolicy(t, func(o *auth.Options) {
				o.Credential, o.Lookup = "user/{sub}", authtest.Lookup(map[string]keyring.Credential{"user/alice": wrong})
			})},
			"CONNECT\naccept-version:1.2\npasscode:" + token + "\n\n\x00"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.route.Address = addr
			gw := startGateway(t, Options{RouteOptions: c.route})
			cl := dial(t, gw.url, nil)
			start := time.Now()
			cl.send(t, c.connect)
			f := cl.frame(t)
			if f.Command != validate.CmdError || header(t, f, "message") != bridge.BrokerRefusedCredential {
				t.Fatalf("got %s %q, want ERROR %q", f.Command, f.Raw, bridge.BrokerRefusedCredential)
			}
			if strings.Contains(string(f.Raw), cred.Username) {
				t.Fatalf("the client learnt the gateway's broker user %q: %q", cred.Username, f.Raw)
			}
			if code := cl.closed(t); code != bridge.CloseInternal {
				t.Fatalf("close code %d, want %d", code, bridge.CloseInternal)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("the refusal took %v", d)
			}
			gw.logs.waitFor(t, "outcome=broker_refused")
			var line string
			for _, l := range strings.Split(gw.logs.String(), "\n") {
				if strings.Contains(l, "broker refused the gateway's credential") {
					line = l
				}
			}
			for _, want := range []string{"level=WARN", "backend=rabbitmq", "keyring_entry=" + c.entry, cred.Username} {
				if !strings.Contains(line, want) {
					t.Errorf("log line lacks %q: %s", want, line)
				}
			}
			if strings.Contains(gw.logs.String(), password) {
				t.Fatalf("the password reached the logs:\n%s", gw.logs)
			}
		})
	}
}

func TestRelayBrokerDrops(t *testing.T) {
	addr := brokerAddr(t)
	cred := testCredential(t)
	tap := brokertest.NewTapProxy(t, addr)
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred}})
	base := runtime.NumGoroutine()
	c := dial(t, gw.url, nil)
	c.connect(t)
	tap.Cut()
	c.expectError(t, "broker connection lost", bridge.CloseInternal)
	waitGoroutines(t, base)
}

// Heart-beats are negotiated with the broker and flow both ways.
func TestRelayHeartBeatsEndToEnd(t *testing.T) {
	addr := brokerAddr(t)
	cred := testCredential(t)
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Credential: &cred}})
	c := dial(t, gw.url, nil)
	// We promise a beat every 1s and ask for one every 200ms.
	c.send(t, "CONNECT\naccept-version:1.2\nheart-beat:1000,200\n\n\x00")
	f := c.frame(t)
	if hb := header(t, f, "heart-beat"); hb == "" || hb == "0,0" {
		t.Fatalf("broker did not negotiate heart-beats: %q", hb)
	}
	beat := time.NewTicker(300 * time.Millisecond) // the client's own heart-beat schedule
	defer beat.Stop()
	beats := 0
	for beats < 5 {
		select {
		case m := <-c.msgs:
			if string(m.data) == "\n" {
				beats++
			}
		case <-beat.C:
			c.send(t, "\n")
		case <-c.done:
			t.Fatalf("closed while heart-beating: %v", c.closeErr)
		case <-time.After(5 * time.Second):
			t.Fatal("no heart-beat from the broker within 5s")
		}
	}
	// Stop beating: RabbitMQ must notice through the gateway and drop us.
	beat.Stop()
	if code := c.closed(t); code != bridge.CloseInternal {
		t.Fatalf("close code %d after the client stopped beating, want 1011", code)
	}
}

func TestRelayHandshake(t *testing.T) {
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: "127.0.0.1:1"}})
	httpURL := "http" + strings.TrimPrefix(gw.url, "ws")
	req, _ := http.NewRequest("GET", httpURL, nil)
	req.Header = http.Header{
		"Origin": {"http://evil.example"}, "Upgrade": {"websocket"}, "Connection": {"Upgrade"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"},
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "allowed_origins") {
		t.Fatalf("foreign origin: %d %q", resp.StatusCode, body)
	}

	tests := []struct {
		offer, want string
	}{
		{"v10.stomp, v11.stomp, v12.stomp", "v12.stomp"},
		{"v11.stomp,v10.stomp", "v11.stomp"},
		{"", ""},
	}
	for _, tt := range tests {
		h := http.Header{"Origin": {"http://allowed.example"}}
		if tt.offer != "" {
			h.Set("Sec-Websocket-Protocol", tt.offer)
		}
		c := dial(t, gw.url, h)
		if got := c.conn.SubProtocol(); got != tt.want {
			t.Fatalf("offered %q, got %q, want %q", tt.offer, got, tt.want)
		}
	}
	resp, err = http.Get(httpURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || !strings.Contains(string(body), "WebSocket") {
		t.Fatalf("plain GET: %d %q", resp.StatusCode, body)
	}
	_, err = tryDial(gw.url, http.Header{"Sec-Websocket-Protocol": {"mqtt"}})
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "v12.stomp") {
		t.Fatalf("unsupported subprotocol: %v", err)
	}
}

// A frame split into many messages and many frames packed into one both
// reach the broker intact.
func TestRelaySplitAndPackedFrames(t *testing.T) {
	addr := brokerAddr(t)
	cred := testCredential(t)
	q := "/queue/" + uniqueQueue(t)
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Credential: &cred}})
	c := dial(t, gw.url, nil)
	for _, piece := range []string{"CONN", "ECT\naccept-version:1.2\n", "heart-beat:0,0\n\n", "\x00"} {
		c.send(t, piece)
	}
	if f := c.frame(t); f.Command != validate.CmdConnected {
		t.Fatalf("got %s", f.Command)
	}
	var packed strings.Builder
	packed.WriteString("SUBSCRIBE\nid:1\ndestination:" + q + "\n\n\x00")
	for i := range 20 {
		fmt.Fprintf(&packed, "SEND\ndestination:%s\n\nmsg-%d\x00\n", q, i)
	}
	c.send(t, packed.String())
	for i := range 20 {
		f := c.frame(t)
		if f.Command != validate.CmdMessage || string(f.Body()) != fmt.Sprintf("msg-%d", i) {
			t.Fatalf("message %d: %s %q", i, f.Command, f.Body())
		}
	}
	// One frame, byte by byte.
	one := "SEND\ndestination:" + q + "\ncontent-length:8\n\nbytewise\x00"
	for i := range len(one) {
		c.send(t, one[i:i+1])
	}
	if f := c.frame(t); string(f.Body()) != "bytewise" {
		t.Fatalf("byte-by-byte frame arrived as %q", f.Body())
	}
}

func TestRelayShutdownClosesWithGoingAway(t *testing.T) {
	addr := brokerAddr(t)
	cred := testCredential(t)
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Credential: &cred}})
	c := dial(t, gw.url, nil)
	c.connect(t)
	go gw.conns.CloseAll(t.Context())
	c.expectError(t, "shutting down", bridge.CloseGoingAway)
}

// A peer that answers pings stays; one that goes silent is closed.
func TestRelayKeepalive(t *testing.T) {
	ws := bridge.DefaultWSOptions()
	ws.PingInterval = 200 * time.Millisecond // roomy enough for a loaded CI machine
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: "127.0.0.1:1", WS: ws}})

	alive := dial(t, gw.url, nil)
	for range 5 {
		select {
		case <-alive.pings:
		case <-alive.done:
			t.Fatalf("a client answering pings was closed: %v", alive.closeErr)
		case <-time.After(5 * time.Second):
			t.Fatal("no ping within 5s")
		}
	}

	silent := dial(t, gw.url, nil)
	silent.mute.Store(true)
	if code := silent.closed(t); code != bridge.CloseGoingAway {
		t.Fatalf("silent client closed with %d, want 1001", code)
	}
	gw.logs.waitFor(t, "outcome=keepalive_timeout")
	select {
	case <-alive.done:
		t.Fatalf("the live client was closed too: %v", alive.closeErr)
	default:
	}
}

// RabbitMQ's destination kinds all pass through unchanged. Each
// subscription has a connection of its own, ended with DISCONNECT: go-stomp
// v3.1.5's Unsubscribe at times waits 30 s for a RECEIPT it seems to miss
// (seen in CI).
func TestRelayDestinationKinds(t *testing.T) {
	addr := brokerAddr(t)
	cred := testCredential(t)
	name := uniqueQueue(t)
	brokertest.RabbitQueue(t, name+"-amq")
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Credential: &cred}})
	// /amq/queue needs an existing queue: a /queue subscription declares it.
	declarer := stompOverWS(t, gw.url)
	if _, err := declarer.Subscribe("/queue/"+name+"-amq", stomp.AckAuto); err != nil {
		t.Fatal(err)
	}
	if err := declarer.Disconnect(); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ sub, send string }{
		{"/queue/" + name, "/queue/" + name},
		{"/topic/" + name + ".*", "/topic/" + name + ".eur"},
		{"/exchange/amq.topic/" + name + ".#", "/exchange/amq.topic/" + name + ".a.b"},
		{"/amq/queue/" + name + "-amq", "/queue/" + name + "-amq"},
	}
	for _, tt := range tests {
		conn := stompOverWS(t, gw.url)
		sub, err := conn.Subscribe(tt.sub, stomp.AckAuto)
		if err != nil {
			t.Fatalf("%s: %v", tt.sub, err)
		}
		if err := conn.Send(tt.send, "text/plain", []byte("to "+tt.send), stomp.SendOpt.Receipt); err != nil {
			t.Fatalf("%s: %v", tt.send, err)
		}
		if m := recv(t, sub); string(m.Body) != "to "+tt.send {
			t.Fatalf("%s: got %q", tt.sub, m.Body)
		}
		conn.Disconnect()
	}
}

// permessage-deflate, when enabled, carries frames both ways.
func TestRelayCompression(t *testing.T) {
	addr := brokerAddr(t)
	cred := testCredential(t)
	q := "/queue/" + uniqueQueue(t)
	ws := bridge.DefaultWSOptions()
	ws.Compression = true
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Credential: &cred, WS: ws}})
	c := &client{msgs: make(chan wsMsg, 64), done: make(chan struct{}), pings: make(chan struct{}, 1)}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{Addr: gw.url, PermessageDeflate: gws.PermessageDeflate{Enabled: true},
		RequestHeader: http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp.Header.Get("Sec-Websocket-Extensions"), "permessage-deflate") {
		t.Fatalf("compression not negotiated: %q", resp.Header.Get("Sec-Websocket-Extensions"))
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { conn.NetConn().Close(); <-c.done })
	body := strings.Repeat("compressible ", 200)
	c.send(t, connect12+"SUBSCRIBE\nid:1\ndestination:"+q+"\n\n\x00SEND\ndestination:"+q+"\n\n"+body+"\x00")
	if f := c.frame(t); f.Command != validate.CmdConnected {
		t.Fatalf("got %s", f.Command)
	}
	if f := c.frame(t); f.Command != validate.CmdMessage || string(f.Body()) != body {
		t.Fatalf("got %s with %d-byte body", f.Command, len(f.Body()))
	}
}

// A single WebSocket message over max_message_bytes is refused by the
// WebSocket layer with 1009 before any parsing.
func TestRelayOversizeMessage(t *testing.T) {
	ws := bridge.DefaultWSOptions()
	ws.MaxMessageBytes = 4096
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: "127.0.0.1:1", WS: ws}})
	c := dial(t, gw.url, nil)
	c.send(t, strings.Repeat("\n", 5000))
	if code := c.closed(t); code != bridge.CloseTooLarge {
		t.Fatalf("close code %d, want 1009", code)
	}
}

// A 1.1 session refuses the 1.2-only \r escape before RabbitMQ sees it.
func TestRelayEnforcesSessionVersion(t *testing.T) {
	addr := brokerAddr(t)
	cred := testCredential(t)
	tap := brokertest.NewTapProxy(t, addr)
	gw := startGateway(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred}})
	c := dial(t, gw.url, nil)
	c.send(t, "CONNECT\naccept-version:1.1\nheart-beat:0,0\n\n\x00")
	if f := c.frame(t); header(t, f, "version") != "1.1" {
		t.Fatalf("broker chose %q", header(t, f, "version"))
	}
	c.send(t, "SEND\ndestination:/queue/x\nx-h:a\\rb\n\nv12-only\x00")
	c.expectError(t, "escape", bridge.CloseProtocolError)
	tap.Close()
	if strings.Contains(tap.Sent(), "v12-only") {
		t.Fatal("a 1.2 escape reached a 1.1 session's broker")
	}
}
