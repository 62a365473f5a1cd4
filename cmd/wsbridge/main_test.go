package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/keyring"
)

func wsbridge(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), code
}

func TestKeyringCommands(t *testing.T) {
	dir := t.TempDir()
	kr := filepath.Join(dir, "gw.keyring")
	t.Setenv("WSBRIDGE_KEYRING", kr)
	t.Setenv("WSBRIDGE_KEYRING_KEY", "")
	t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", "")

	out, errOut, code := wsbridge(t, "", "keyring", "init")
	if code != 0 || !strings.Contains(out, kr+".key") {
		t.Fatalf("init: %d %q %q", code, out, errOut)
	}
	for _, f := range []string{kr, kr + ".key"} {
		st, err := os.Stat(f)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, err, st)
		}
	}
	if _, errOut, code := wsbridge(t, "", "keyring", "init"); code == 0 || !strings.Contains(errOut, "already exists") {
		t.Fatalf("second init: %d %q", code, errOut)
	}

	if _, errOut, code := wsbridge(t, "", "keyring", "set", "rabbit", "--username", "gw"); code == 0 || !strings.Contains(errOut, "password-stdin") {
		t.Fatalf("set without -password-stdin: %d %q", code, errOut)
	}
	if out, errOut, code := wsbridge(t, "Pa55:word\n", "keyring", "set", "rabbit", "--username", "gw", "--password-stdin"); code != 0 || strings.Contains(out, "Pa55") {
		t.Fatalf("set: %d %q %q", code, out, errOut)
	}
	wsbridge(t, "x\n", "keyring", "set", "other", "-username", "u2", "-password-stdin")
	out, _, code = wsbridge(t, "", "keyring", "list")
	if code != 0 || out != "other\tu2\nrabbit\tgw\n" {
		t.Fatalf("list: %d %q", code, out)
	}
	key, _ := keyring.LoadKeyFile(kr + ".key")
	k, _ := keyring.Open(kr, key)
	if c, err := k.Get("rabbit"); err != nil || c.Password.Reveal() != "Pa55:word" {
		t.Fatalf("stored credential: %v %v", c, err)
	}
	if _, _, code := wsbridge(t, "", "keyring", "delete", "other"); code != 0 {
		t.Fatal("delete failed")
	}
	if out, _, _ := wsbridge(t, "", "keyring", "list"); out != "rabbit\tgw\n" {
		t.Fatalf("after delete: %q", out)
	}
	if _, errOut, code := wsbridge(t, "", "keyring", "delete", "other"); code == 0 || !strings.Contains(errOut, "no such entry") {
		t.Fatalf("delete missing: %d %q", code, errOut)
	}

	// A wrong or missing master key is a clear error, not a panic.
	other := filepath.Join(dir, "other.key")
	keyring.GenerateKeyFile(other)
	t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", other)
	if _, errOut, code := wsbridge(t, "", "keyring", "list"); code != 1 || !strings.Contains(errOut, "does not open") {
		t.Fatalf("wrong key: %d %q", code, errOut)
	}
	t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", filepath.Join(dir, "nope.key"))
	if _, errOut, code := wsbridge(t, "", "keyring", "list"); code != 1 || !strings.Contains(errOut, "WSBRIDGE_KEYRING_KEY") {
		t.Fatalf("missing key: %d %q", code, errOut)
	}
	t.Setenv("WSBRIDGE_KEYRING_KEY", "AGE-SECRET-KEY-1BOGUS")
	if _, errOut, code := wsbridge(t, "", "keyring", "list"); code != 1 || strings.Contains(errOut, "BOGUS") {
		t.Fatalf("malformed key: %d %q", code, errOut)
	}
}

// gatewayProcess runs `wsbridge serve` in-process until the test ends.
type gatewayProcess struct {
	addr string
	logs *brokertest.Logs
	stop func() error
}

// serve runs `wsbridge serve args -listen 127.0.0.1:0` until the test ends.
func serve(t *testing.T, args ...string) *gatewayProcess {
	t.Helper()
	g, err := startServe(t, append(args, "-listen", "127.0.0.1:0")...)
	if err != nil {
		t.Fatalf("serve failed: %v\n%s", err, g.logs)
	}
	return g
}

// startServe runs `wsbridge serve args` until the test ends; err is why
// it did not start listening.
func startServe(t *testing.T, args ...string) (*gatewayProcess, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g := &gatewayProcess{logs: &brokertest.Logs{}}
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- serveCommand(ctx, args, g.logs, func(a net.Addr) { addrc <- a })
	}()
	select {
	case a := <-addrc:
		g.addr = a.String()
		var once sync.Once
		var err error
		g.stop = func() error {
			once.Do(func() { cancel(); err = <-errc })
			return err
		}
		t.Cleanup(func() { g.stop() })
		return g, nil
	case err := <-errc:
		cancel()
		return g, err
	}
}

// serveRabbitMQExample serves testdata/rabbitmq.yaml with the test keyring.
func serveRabbitMQExample(t *testing.T) (*gatewayProcess, keyring.Credential) {
	t.Helper()
	brokertest.RabbitSTOMP(t)
	path, keyFile := brokertest.RabbitKeyring(t)
	t.Setenv("WSBRIDGE_KEYRING_KEY", "")
	t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", keyFile)
	return serve(t, "-config", "../../testdata/rabbitmq.yaml", "-keyring", path), brokertest.RabbitCredential(t)
}

type wsClient struct {
	gws.BuiltinEventHandler
	msgs   chan []byte
	closed chan error
}

func (c *wsClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	c.msgs <- bytes.Clone(m.Bytes())
	m.Close()
}
func (c *wsClient) OnClose(_ *gws.Conn, err error) { c.closed <- err }

// dialSTOMP opens a STOMP WebSocket to the gateway at addr, from origin
// when it is not empty.
func dialSTOMP(t *testing.T, addr, origin string) (*gws.Conn, *wsClient) {
	t.Helper()
	h := http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}
	if origin != "" {
		h.Set("Origin", origin)
	}
	c := &wsClient{msgs: make(chan []byte, 16), closed: make(chan error, 1)}
	conn, _, err := gws.NewClient(c, &gws.ClientOption{Addr: "ws://" + addr + "/stomp", RequestHeader: h})
	if err != nil {
		t.Fatal(err)
	}
	go conn.ReadLoop()
	t.Cleanup(func() { conn.NetConn().Close() })
	return conn, c
}

// sseLines follows an SSE stream and yields its lines until it ends.
func sseLines(t *testing.T, url string) <-chan string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The README's production shape: testdata/rabbitmq.yaml, a keyring from the
// environment, health and readiness endpoints, one log line per connection
// open and close, and a clean shutdown.
func TestServeRabbitMQConfig(t *testing.T) {
	g, cred := serveRabbitMQExample(t)

	if code, body := get(t, "http://"+g.addr+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	if code, body := get(t, "http://"+g.addr+"/readyz"); code != 200 {
		t.Fatalf("readyz: %d %q", code, body)
	}

	conn, c := dialSTOMP(t, g.addr, "http://localhost:3000")
	conn.WriteString("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00")
	select {
	case m := <-c.msgs:
		if !strings.HasPrefix(string(m), "CONNECTED\n") {
			t.Fatalf("got %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no CONNECTED")
	}
	if err := g.stop(); err != nil {
		t.Fatalf("serve returned %v", err)
	}
	select {
	case err := <-c.closed:
		var ce *gws.CloseError
		if !errors.As(err, &ce) || ce.Code != 1001 {
			t.Fatalf("shutdown closed the client with %v, want 1001", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client not closed by shutdown")
	}
	logs := g.logs.String()
	for _, want := range []string{"stomp connection opened", "stomp connection closed", "outcome=shutdown"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("logs lack %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, cred.Password.Reveal()) {
		t.Fatal("the broker password reached the logs")
	}
}

// Every relay route's backend counts for /readyz, whatever its protocol.
func TestServeReadyzReportsDownBackend(t *testing.T) {
	for _, proto := range []string{"stomp", "mqtt", "amqp"} {
		t.Run(proto, func(t *testing.T) {
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			dead := ln.Addr().String()
			ln.Close()
			cfg := filepath.Join(t.TempDir(), "c.yaml")
			args := []string{"-config", cfg}
			backend := "backends:\n  gone:\n    protocol: " + proto + "\n    address: " + dead + "\n"
			if proto == "amqp" { // an AMQP route logs in with a keyring entry
				path, keyFile := brokertest.RabbitKeyring(t)
				t.Setenv("WSBRIDGE_KEYRING_KEY", "")
				t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", keyFile)
				backend += "    credential: " + brokertest.RabbitEntry + "\n"
				args = append(args, "-keyring", path)
			}
			os.WriteFile(cfg, []byte(backend+"routes:\n  - {path: /"+proto+", protocol: "+proto+", backend: gone}\n"), 0o600)
			g := serve(t, args...)
			code, body := get(t, "http://"+g.addr+"/readyz")
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "gone") || !strings.Contains(body, dead) {
				t.Fatalf("readyz with a dead backend: %d %q", code, body)
			}
			if code, _ := get(t, "http://"+g.addr+"/healthz"); code != 200 {
				t.Fatalf("healthz must not depend on backends: %d", code)
			}
		})
	}
}

// One config serves /stomp, /sse and /publish on RabbitMQ: a STOMP SEND to
// /topic/prices.eur and an HTTP publish both reach an SSE subscriber of
// prices.eur, and an SSE stream sees what STOMP subscribers see.
func TestCrossProtocolSTOMPToSSE(t *testing.T) {
	brokertest.RabbitAMQP(t)
	g, _ := serveRabbitMQExample(t)
	topic := fmt.Sprintf("prices.eur%d", time.Now().UnixNano())

	lines := sseLines(t, "http://"+g.addr+"/sse/"+topic)

	conn, _ := dialSTOMP(t, g.addr, "")
	conn.WriteString("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00SEND\ndestination:/topic/" + topic + "\n\nfrom stomp\x00")
	post, err := http.Post("http://"+g.addr+"/publish/"+topic, "application/json", strings.NewReader(`{"p":1.01}`))
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if post.StatusCode != http.StatusAccepted {
		t.Fatalf("publish: %d", post.StatusCode)
	}
	want := map[string]bool{"data: from stomp": false, `data: {"p":1.01}`: false}
	timeout := time.After(10 * time.Second)
	for seen := 0; seen < len(want); {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			if done, ok := want[l]; ok && !done {
				want[l] = true
				seen++
			}
		case <-timeout:
			t.Fatalf("SSE subscriber did not get everything: %v", want)
		}
	}
}

// With no config at all: embedded NATS, STOMP translated onto it, SSE and
// publish on the same topics, and the demo page.
func TestEmbeddedDefaultWorksWithNoSetup(t *testing.T) {
	g := serve(t)
	if code, body := get(t, "http://"+g.addr+"/"); code != 200 || !strings.Contains(body, "wsbridge demo") {
		t.Fatalf("demo page: %d", code)
	}
	if code, body := get(t, "http://"+g.addr+"/readyz"); code != 200 {
		t.Fatalf("readyz: %d %q", code, body)
	}
	lines := sseLines(t, "http://"+g.addr+"/sse/demo")
	conn, c := dialSTOMP(t, g.addr, "http://localhost:5173")
	conn.WriteString("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00SUBSCRIBE\nid:1\ndestination:/topic/demo\nreceipt:r\n\n\x00")
	for _, want := range []string{"CONNECTED\n", "RECEIPT\n"} {
		select {
		case m := <-c.msgs:
			if !strings.HasPrefix(string(m), want) {
				t.Fatalf("got %q, want %s", m, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s", want)
		}
	}
	post, err := http.Post("http://"+g.addr+"/publish/demo", "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	select {
	case m := <-c.msgs:
		if !strings.HasPrefix(string(m), "MESSAGE\n") || !strings.Contains(string(m), "\n\nhi\x00") {
			t.Fatalf("STOMP subscriber got %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("STOMP subscriber got nothing")
	}
	for l := range lines {
		if l == "data: hi" {
			return
		}
	}
	t.Fatal("SSE stream ended without the message")
}

// limits.login_timeout reaches the routes: a STOMP client that never sends
// CONNECT gets ERROR naming the key, then close 1008.
func TestServeLoginTimeoutFromConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("limits: {login_timeout: 300ms}\nbackends:\n  n: {protocol: nats, embedded: true, address: 127.0.0.1:4222}\n"+
		"routes:\n  - {path: /stomp, protocol: stomp, mode: translate, backend: n}\n"), 0o600)
	g := serve(t, "-config", cfg)
	_, c := dialSTOMP(t, g.addr, "")
	select {
	case m := <-c.msgs:
		if !strings.HasPrefix(string(m), "ERROR\n") || !strings.Contains(string(m), "message:login not completed within 300ms (limits.login_timeout)") {
			t.Fatalf("got %q, want ERROR naming limits.login_timeout", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no ERROR within 10s")
	}
	select {
	case err := <-c.closed:
		var ce *gws.CloseError
		if !errors.As(err, &ce) || ce.Code != 1008 {
			t.Fatalf("closed with %v, want 1008", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not closed within 10s")
	}
}

// With no -config and no -listen the embedded default (no auth, open
// HTTP publish) listens on loopback only and says so; -listen or a
// config's listen still choose.
func TestServeListenAddress(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nbackends:\n  n: {protocol: nats, embedded: true, address: 127.0.0.1:4222}\n"+
		"routes:\n  - {path: /sse, protocol: sse, backend: n}\n"), 0o600)
	const note = `note="embedded default: loopback only; pass -listen :8080 to expose it"`
	cases := []struct {
		name     string
		args     []string
		wantHost string // "" for every interface
		wantPort string // "" for any
		note     bool
	}{
		{"embedded default", nil, "127.0.0.1", "8080", true},
		{"-listen exposes it", []string{"-listen", ":0"}, "", "", false},
		{"-listen on loopback", []string{"-listen", "127.0.0.1:0"}, "127.0.0.1", "", false},
		{"a config's listen", []string{"-config", cfg}, "127.0.0.1", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := startServe(t, tc.args...)
			if errors.Is(err, syscall.EADDRINUSE) {
				t.Skipf("the embedded default's port is taken here: %v", err)
			}
			if err != nil {
				t.Fatalf("serve failed: %v\n%s", err, g.logs)
			}
			host, port, _ := net.SplitHostPort(g.addr)
			if ip := net.ParseIP(host); tc.wantHost == "" && !ip.IsUnspecified() || tc.wantHost != "" && host != tc.wantHost {
				t.Fatalf("listening on %s, want host %q (\"\": every interface)", g.addr, tc.wantHost)
			}
			if tc.wantPort != "" && port != tc.wantPort {
				t.Fatalf("listening on %s, want port %s", g.addr, tc.wantPort)
			}
			if got := strings.Contains(g.logs.String(), note); got != tc.note {
				t.Fatalf("startup note logged: %v, want %v:\n%s", got, tc.note, g.logs)
			}
			g.stop()
		})
	}
}
