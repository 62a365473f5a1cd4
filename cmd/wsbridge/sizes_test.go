package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
)

// defaultsConfig serves every WebSocket protocol and SSE on every broker
// kind and sets no limit at all: what these tests prove holds for the
// shipped defaults.
const defaultsConfig = `listen: "127.0.0.1:0"
backends:
  rabbit-stomp: {protocol: stomp, address: %[1]q, credential: rabbit}
  rabbit-amqp: {protocol: amqp, address: %[2]q, credential: rabbit}
  mosquitto: {protocol: mqtt, address: %[3]q}
routes:
  - {path: /stomp, protocol: stomp, backend: rabbit-stomp}
  - {path: /amqp, protocol: amqp, backend: rabbit-amqp}
  - {path: /mqtt, protocol: mqtt, backend: mosquitto}
  - {path: /sse, protocol: sse, backend: rabbit-amqp}
  - {path: /publish, protocol: publish, backend: rabbit-amqp}
  - {path: /via-mqtt/sse, protocol: sse, backend: mosquitto}
  - {path: /via-mqtt/publish, protocol: publish, backend: mosquitto}
  - {path: /via-stomp/sse, protocol: sse, backend: rabbit-stomp}
  - {path: /via-stomp/publish, protocol: publish, backend: rabbit-stomp}
`

// serveDefaults serves defaultsConfig on the real brokers with the test
// keyring.
func serveDefaults(t *testing.T) *gatewayProcess {
	t.Helper()
	requireNodeClients(t)
	cfg := fmt.Sprintf(defaultsConfig, brokertest.RabbitSTOMP(t), brokertest.RabbitAMQP(t), brokertest.Mosquitto(t))
	file := filepath.Join(t.TempDir(), "defaults.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	path, keyFile := brokertest.RabbitKeyring(t)
	t.Setenv("WSBRIDGE_KEYRING_KEY", "")
	t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", keyFile)
	return serve(t, "-config", file, "-keyring", path)
}

// node runs a script of testdata/e2e and returns its output, failing the
// test unless it printed a line starting with "OK " or "{".
func node(t *testing.T, g *gatewayProcess, script string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "node", append([]string{filepath.Join(e2eDir, script)}, args...)...).CombinedOutput()
	if s := string(out); err != nil || !(strings.HasPrefix(s, "OK ") || strings.HasPrefix(s, "{")) {
		t.Fatalf("node %s %s: %v\n%s\ngateway logs:\n%s", script, strings.Join(args, " "), err, out, g.logs)
	}
	return strings.TrimSpace(string(out))
}

// A 1 MiB application message round-trips through every protocol with
// the real browser clients and the shipped defaults, and arrives byte for
// byte (sizes.mjs compares SHA-256 of what was sent and what came back):
// stompjs relayed to RabbitMQ and translated onto the embedded NATS,
// mqtt.js with MQTT 3.1.1 and 5 relayed to Mosquitto, AMQPWebSocketClient
// (which packs a publish's frames into one WebSocket message) relayed to
// RabbitMQ, and HTTP publish followed over SSE on each kind of broker.
func TestOneMiBThroughEveryProtocol(t *testing.T) {
	run := time.Now().UnixNano()
	queue := "/queue/" + brokertest.RabbitQueue(t, fmt.Sprintf("wsbridge-sizes-%d", run))
	g := serveDefaults(t)
	ws, base := "ws://"+g.addr, "http://"+g.addr
	cases := []struct {
		name string
		args []string
	}{
		{"stompjs relay RabbitMQ", []string{"stomp", ws + "/stomp", queue, "2"}},
		{"mqtt.js 3.1.1 Mosquitto", []string{"mqtt", ws + "/mqtt", "4", "2"}},
		{"mqtt.js 5 Mosquitto", []string{"mqtt", ws + "/mqtt", "5", "2"}},
		{"amqp-client RabbitMQ", []string{"amqp", ws + "/amqp", "2"}},
		{"SSE on RabbitMQ AMQP", []string{"sse", base, fmt.Sprintf("sizes.amqp.%d", run), "2"}},
		{"SSE on Mosquitto", []string{"sse", base + "/via-mqtt", fmt.Sprintf("sizes.mqtt.%d", run), "2"}},
		{"SSE on RabbitMQ STOMP", []string{"sse", base + "/via-stomp", fmt.Sprintf("sizes.stomp.%d", run), "2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := node(t, g, "sizes.mjs", c.args...)
			if !strings.Contains(out, "bytes=1048576 n=2 ") {
				t.Fatalf("sizes.mjs: %s", out)
			}
			t.Log(out)
		})
	}

	// The embedded default: STOMP translated onto NATS, and SSE on it.
	def := serve(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"stompjs translate embedded NATS", []string{"stomp", "ws://" + def.addr + "/stomp", "/topic/sizes.translate", "2"}},
		{"SSE on embedded NATS", []string{"sse", "http://" + def.addr, "sizes.nats", "2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := node(t, def, "sizes.mjs", c.args...)
			if !strings.Contains(out, "bytes=1048576 n=2 ") {
				t.Fatalf("sizes.mjs: %s", out)
			}
			t.Log(out)
		})
	}
	for _, logs := range []string{g.logs.String(), def.logs.String()} {
		if strings.Contains(logs, "level=WARN") || strings.Contains(logs, "level=ERROR") {
			t.Fatalf("the gateway warned:\n%s", logs)
		}
	}
}

// A NATS server with its default max_payload (1 MiB, headers included)
// takes a 1 MiB HTTP publish without a Content-Type, which arrives on SSE
// whole; with a Content-Type the same body does not fit, and the client
// gets 413 naming the broker's limit, not 503 "unavailable" (retrying
// would not help).
func TestNATSMaxPayloadAtOneMiB(t *testing.T) {
	addr := brokertest.NATS(t)
	nc, err := nats.Connect("nats://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	maxPayload := nc.MaxPayload()
	nc.Close()
	if maxPayload != 1<<20 {
		t.Skipf("the NATS server at %s has max_payload %d, not the default 1 MiB", addr, maxPayload)
	}
	file := filepath.Join(t.TempDir(), "nats.yaml")
	cfg := fmt.Sprintf("backends:\n  nats: {protocol: nats, address: %q}\nroutes:\n"+
		"  - {path: /sse, protocol: sse, backend: nats}\n  - {path: /publish, protocol: publish, backend: nats}\n", addr)
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g := serve(t, "-config", file)
	topic := fmt.Sprintf("sizes.natsmax.%d", time.Now().UnixNano())

	resp, err := http.Get("http://" + g.addr + "/sse/" + topic)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	stream := bufio.NewReader(resp.Body)
	if _, err := stream.ReadString('\n'); err != nil { // retry: the subscription is live
		t.Fatal(err)
	}

	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	post := func(contentType string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+g.addr+"/publish/"+topic, bytes.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, msg := post("text/plain"); code != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "max_payload of 1048576") {
		t.Fatalf("1 MiB with a Content-Type: %d %s", code, msg)
	}
	if code, msg := post(""); code != http.StatusAccepted {
		t.Fatalf("1 MiB without a Content-Type: %d %s", code, msg)
	}
	for {
		line, err := stream.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			if data != string(body)+"\n" {
				t.Fatalf("SSE carried %d bytes, want the %d published", len(data)-1, len(body))
			}
			break
		}
	}
}

// The embedded NATS server takes the largest message the gateway's routes
// may publish, with its headers: NATS's own default does not fit a 1 MiB
// body with a Content-Type.
func TestEmbeddedMaxPayload(t *testing.T) {
	cfg, err := parseConfig("t.yaml", []byte("routes: [{path: /sse, protocol: sse, backend: n}]\nbackends: {n: {protocol: nats, embedded: true}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.embeddedMaxPayload(), int32(bridge.DefaultWSOptions().MaxMessageBytes+natsHeaderRoom); got != want || got <= 1<<20 {
		t.Fatalf("embedded max_payload %d, want %d", got, want)
	}
}

// refusal is what refusals.mjs reports the client received.
type refusal struct {
	Proto, Mode string
	Port        int
	Error       string
	Close       int
	Reason      string
}

// A message over websocket.max_message_bytes (2 MiB against the default),
// in one WebSocket message and in 64 KiB fragments, and as mqtt.js sends
// it (its PUBLISH header in a message of its own): the real client gets
// its protocol's own error naming the limit, then close 1009 (never 1006,
// a reset), and the gateway logs outcome too_large.
func TestOversizeRefusalsReachTheClient(t *testing.T) {
	g := serveDefaults(t)
	limit := fmt.Sprint(bridge.DefaultWSOptions().MaxMessageBytes)
	wsLimit := "message larger than " + limit + " bytes (websocket.max_message_bytes)"
	cases := []struct {
		proto, mode string
		wantError   string
	}{
		{"stomp", "one", "ERROR message:" + wsLimit},
		{"stomp", "fragments", "ERROR message:" + wsLimit},
		{"mqtt", "one", "DISCONNECT 0x95 " + wsLimit},
		{"mqtt", "fragments", "DISCONNECT 0x95 " + wsLimit},
		{"mqtt", "client", "DISCONNECT 0x95 packet of 2097177 bytes exceeds the " + limit + "-byte limit (limits.mqtt.max_packet_bytes)"},
		{"amqp", "one", "connection closed: FRAME_ERROR - " + wsLimit + " (501)"},
		{"amqp", "fragments", "connection closed: FRAME_ERROR - " + wsLimit + " (501)"},
	}
	for _, c := range cases {
		t.Run(c.proto+" "+c.mode, func(t *testing.T) {
			var r refusal
			out := node(t, g, "refusals.mjs", "ws://"+g.addr, c.proto, c.mode)
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if r.Error != c.wantError || r.Close != int(bridge.CloseTooLarge) {
				t.Fatalf("the client got %q and close %d, want %q and %d", r.Error, r.Close, c.wantError, bridge.CloseTooLarge)
			}
			line := closeLogLine(t, g, r.Port)
			if !strings.Contains(line, "msg=\""+c.proto+" connection closed\"") || !strings.Contains(line, " outcome=too_large ") {
				t.Fatalf("close log line: %s", line)
			}
		})
	}
}

// closeLogLine waits for the gateway's close log line of the client
// connection from port and returns it.
func closeLogLine(t *testing.T, g *gatewayProcess, port int) string {
	t.Helper()
	// The open line has the same remote, followed by subprotocol=.
	mark := fmt.Sprintf(" remote=127.0.0.1:%d identity=", port)
	g.logs.WaitFor(t, mark)
	return regexp.MustCompile(`.*` + regexp.QuoteMeta(mark) + `.*`).FindString(g.logs.String())
}
