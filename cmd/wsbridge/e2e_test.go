package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/broker/brokertest"
)

// e2eDir holds the real JavaScript clients (npm ci --prefix testdata/e2e).
const e2eDir = "../../testdata/e2e"

func requireNodeClients(t *testing.T) {
	t.Helper()
	_, errNode := exec.LookPath("node")
	_, errMods := os.Stat(filepath.Join(e2eDir, "node_modules", "@stomp", "stompjs"))
	if errNode != nil || errMods != nil {
		msg := "node or the e2e clients are missing: run `npm ci --prefix testdata/e2e`"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// @stomp/stompjs, as a web page would use it, through the gateway to the
// real RabbitMQ, with no broker credential on the client side.
func TestStompJSThroughGateway(t *testing.T) {
	requireNodeClients(t)
	queue := "/queue/" + brokertest.RabbitQueue(t, fmt.Sprintf("wsbridge-stompjs-%d", time.Now().UnixNano()))
	g, cred := serveRabbitMQExample(t)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "node", filepath.Join(e2eDir, "stompjs.mjs"), "ws://"+g.addr+"/stomp", queue).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "OK version=1.2") {
		t.Fatalf("stompjs: %v\n%s\ngateway logs:\n%s", err, out, g.logs)
	}
	t.Logf("stompjs: %s", strings.TrimSpace(string(out)))
	if strings.Contains(g.logs.String(), cred.Password.Reveal()) {
		t.Fatal("the broker password reached the logs")
	}
}

// The embedded default serves the demo page; two pages chat over STOMP
// and the SSE panel follows, in headless Chromium; empty panes say what to
// do, a phone's 390 px width does not scroll sideways, and no request fails
// (favicon included). Screenshots go to artifacts/demo.png and
// demo-390.png (gitignored).
func TestDemoPageInChromium(t *testing.T) {
	requireNodeClients(t)
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		msg := "Chromium not installed (apt-get install chromium, or set CHROMIUM)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	g := serve(t)
	if err := os.MkdirAll("../../artifacts", 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(e2eDir, "demo.mjs"), "http://"+g.addr, "../../artifacts/demo.png")
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "OK ") {
		t.Fatalf("demo page: %v\n%s\ngateway logs:\n%s", err, out, g.logs)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}

// mqtt.js, v4 and v5, through the gateway to Mosquitto with
// testdata/mosquitto.yaml.
func TestMQTTJSThroughGateway(t *testing.T) {
	requireNodeClients(t)
	brokertest.Mosquitto(t)
	g := serve(t, "-config", "../../testdata/mosquitto.yaml")
	for _, v := range []string{"4", "5"} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := exec.CommandContext(ctx, "node", filepath.Join(e2eDir, "mqttjs.mjs"), "ws://"+g.addr+"/mqtt", v).CombinedOutput()
		cancel()
		if err != nil || !strings.HasPrefix(string(out), "OK ") {
			t.Fatalf("mqtt.js v%s: %v\n%s\ngateway logs:\n%s", v, err, out, g.logs)
		}
		t.Logf("mqtt.js: %s", strings.TrimSpace(string(out)))
	}
}

// @cloudamqp/amqp-client's AMQPWebSocketClient through /amqp of
// testdata/rabbitmq.yaml, with the keyring identity injected.
func TestAMQPClientThroughGateway(t *testing.T) {
	requireNodeClients(t)
	brokertest.RabbitAMQP(t)
	g, cred := serveRabbitMQExample(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "node", filepath.Join(e2eDir, "amqpclient.mjs"), "ws://"+g.addr+"/amqp").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "OK ") {
		t.Fatalf("amqp-client: %v\n%s\ngateway logs:\n%s", err, out, g.logs)
	}
	t.Logf("amqp-client: %s", strings.TrimSpace(string(out)))
	if strings.Contains(g.logs.String(), cred.Password.Reveal()) {
		t.Fatal("the broker password reached the logs")
	}
}

// The three browser clients against testdata/jwt.yaml with tokens from
// `wsbridge token`: allowed and refused publish and subscribe on RabbitMQ
// (STOMP, AMQP) and Mosquitto (MQTT 5).
func TestBrowserClientsWithTokens(t *testing.T) {
	requireNodeClients(t)
	g, reader, writer := serveJWTExample(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "node", filepath.Join(e2eDir, "auth.mjs"), "ws://"+g.addr, reader, writer).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "OK ") {
		t.Fatalf("auth.mjs: %v\n%s\ngateway logs:\n%s", err, out, g.logs)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
	if strings.Contains(g.logs.String(), reader) || strings.Contains(g.logs.String(), writer) {
		t.Fatal("a token reached the logs")
	}
}

// Real clients refused for load come back by themselves: the npm
// eventsource follows a busy stream's retry (it would give up for good on
// a 429), the npm ws client, which checks the subprotocol as browsers do,
// sees close 1013 with a retry hint where it would have seen an HTTP
// answer (1006 in a browser), and headless Chromium does both.
func TestClientsRefusedForLoadRetry(t *testing.T) {
	requireNodeClients(t)
	cases := []struct {
		name, limits string
		hold         bool // one STOMP session opened first takes the burst
		browser      bool // needs Chromium
		script       string
		args         func(addr string) []string
		want         *regexp.Regexp
	}{
		{"eventsource follows the busy stream", "handshake_burst: 3\n  handshakes_per_second: 2", false, false, "eventsource.mjs",
			func(addr string) []string { return []string{"http://" + addr, "10"} }, regexp.MustCompile(`^OK streams=10 busy=[1-9]`)},
		{"ws sees 1013", "handshake_burst: 1\n  handshakes_per_second: 0.01", true, false, "wsbusy.mjs",
			func(addr string) []string { return []string{"ws://" + addr + "/stomp"} },
			regexp.MustCompile(`^OK code=1013 reason=too many connection attempts .*; retry in [0-9.]+s`)},
		{"chromium", "handshake_burst: 2\n  handshakes_per_second: 1\n  max_connections_per_ip: 4", false, true, "busy-chromium.mjs",
			func(addr string) []string { return []string{"http://" + addr} },
			regexp.MustCompile(`^OK streams=4 busy=[1-9]\d* ws=1013 reason=too many connection(s| attempts) from this address .*; retry in [0-9.]+s`)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := os.Environ()
			if c.browser {
				chromium := os.Getenv("CHROMIUM")
				if chromium == "" {
					chromium = "/usr/bin/chromium"
				}
				if _, err := os.Stat(chromium); err != nil {
					msg := "Chromium not installed (apt-get install chromium, or set CHROMIUM)"
					if os.Getenv("CI") == "true" {
						t.Fatal(msg)
					}
					t.Skip(msg)
				}
				env = append(env, "CHROMIUM="+chromium)
			}
			config := filepath.Join(t.TempDir(), "limits.yaml")
			os.WriteFile(config, []byte(`allowed_origins: ["http://127.0.0.1:*"]
limits:
  `+c.limits+`
backends:
  nats: {protocol: nats, embedded: true, address: "127.0.0.1:0"}
routes:
  - {path: /stomp, protocol: stomp, mode: translate, backend: nats}
  - {path: /sse, protocol: sse, backend: nats}
  - {path: /publish, protocol: publish, backend: nats}
`), 0o600)
			g := serve(t, "-config", config)
			if c.hold {
				conn, cl := dialSTOMP(t, g.addr, "")
				conn.WriteMessage(gws.OpcodeText, []byte("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00"))
				if m := recv(t, cl.msgs); !strings.HasPrefix(string(m), "CONNECTED") {
					t.Fatalf("%q", m)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "node", append([]string{filepath.Join(e2eDir, c.script)}, c.args(g.addr)...)...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err != nil || !c.want.Match(out) {
				t.Fatalf("%s: %v\n%s\ngateway logs:\n%.4000s", c.script, err, out, g.logs)
			}
			t.Logf("%s", strings.TrimSpace(string(out)))
		})
	}
}

// docs/clients.md's reconnect patterns for stompjs, mqtt.js and
// @cloudamqp/amqp-client, against a gateway stopped and started again on
// the same address while they are subscribed: each must come back by
// itself with its subscription and get a message sent after the restart.
func TestClientsReconnectAfterRestart(t *testing.T) {
	requireNodeClients(t)
	stompAddr, amqpAddr, mqttAddr := brokertest.RabbitSTOMP(t), brokertest.RabbitAMQP(t), brokertest.Mosquitto(t)
	nonce := time.Now().UnixNano()
	brokertest.RabbitQueue(t, fmt.Sprintf("wsbridge-reconnect-%d", nonce)) // AMQPSession's named queue
	path, keyFile := brokertest.RabbitKeyring(t)
	t.Setenv("WSBRIDGE_KEYRING_KEY", "")
	t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", keyFile)
	cfg := filepath.Join(t.TempDir(), "reconnect.yaml")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`backends:
  rabbit-stomp: {protocol: stomp, address: %q, credential: rabbit}
  rabbit-amqp: {protocol: amqp, address: %q, credential: rabbit}
  mosquitto: {protocol: mqtt, address: %q}
routes:
  - {path: /stomp, protocol: stomp, backend: rabbit-stomp}
  - {path: /amqp, protocol: amqp, backend: rabbit-amqp}
  - {path: /mqtt, protocol: mqtt, backend: mosquitto}
`, stompAddr, amqpAddr, mqttAddr)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	g := serve(t, "-config", cfg, "-keyring", path)

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(e2eDir, "reconnect.mjs"), "ws://"+g.addr, fmt.Sprint(nonce))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "READY" {
		cmd.Wait()
		t.Fatalf("before the restart: %q %s\ngateway logs:\n%s", lines.Text(), stderr.String(), g.logs)
	}
	if err := g.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	g2, err := startServe(t, "-config", cfg, "-keyring", path, "-listen", g.addr)
	if err != nil {
		t.Fatalf("restart on %s: %v\n%s", g.addr, err, g2.logs)
	}
	ok := lines.Scan()
	cmd.Wait()
	if !ok || !strings.HasPrefix(lines.Text(), "OK ") {
		t.Fatalf("after the restart: %q %s\nfirst gateway:\n%s\nsecond gateway:\n%s", lines.Text(), stderr.String(), g.logs, g2.logs)
	}
	t.Log(lines.Text())
}
