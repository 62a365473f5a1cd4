package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	_ "image/png"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/adapters/amqp"
	"github.com/wsbridge/wsbridge/adapters/mqtt"
	"github.com/wsbridge/wsbridge/adapters/stomp"
	"github.com/wsbridge/wsbridge/admin"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/broker/natsbroker"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/sse"
)

func TestTallyCountsLostAndDuplicated(t *testing.T) {
	tl := newTally(2, 2, 0) // two publishers, each message due twice (two topic subscribers)
	for seq := range 3 {
		tl.published(0, seq)
		tl.published(1, seq)
	}
	ms := time.Millisecond
	for _, d := range []struct{ p, seq int }{{0, 0}, {0, 0}, {0, 1}, {0, 2}, {0, 2}, {0, 2}, {1, 0}, {1, 1}, {1, 1}, {1, 2}, {1, 2}} {
		tl.deliver(d.p, d.seq, ms*time.Duration(d.seq+1))
	}
	if first := tl.deliver(0, 99, ms); first {
		t.Fatal("a message never sent counted as delivered")
	}
	r := finished(tl)
	// p0: seq1 once (1 lost), seq2 thrice (1 duplicate); p1: seq0 once (1 lost).
	if r.Sent != 6 || r.Delivered != 11 || r.Lost != 2 || r.Duplicated != 1 || r.Copies != 2 {
		t.Fatalf("%+v", r)
	}
	if r.P50us != 2000 || r.MaxUs != 3000 || r.MsgsPerSec != 11 {
		t.Fatalf("percentiles/throughput %+v", r)
	}
}

// finished is the tally's result over one second.
func finished(tl *tally) result {
	var r result
	tl.finish(&r, time.Second)
	return r
}

func TestBodyRoundTrip(t *testing.T) {
	at := time.Unix(0, 1_700_000_000_123_456_789)
	b := appendBody(nil, 3, 123456, at, 128)
	if len(b) != 128 {
		t.Fatalf("body of %d bytes", len(b))
	}
	p, seq, ns, err := parseBody(b)
	if err != nil || p != 3 || seq != 123456 || ns != at.UnixNano() {
		t.Fatalf("%d %d %d %v", p, seq, ns, err)
	}
	for _, bad := range []string{"", "hello world", "1 2 x ", "1 2"} {
		if _, _, _, err := parseBody([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// runPubSub runs the scenario as a user would and decodes its JSON line.
func runScenario(t *testing.T, scenario string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(context.Background(), append([]string{scenario}, args...), &out, &errb, nil); code != 0 {
		t.Fatalf("wsbench %v: exit %d\n%s", args, code, errb.String())
	}
	var r result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("the machine-readable line %q: %v", out.String(), err)
	}
	if !strings.Contains(errb.String(), "msgs/s") {
		t.Fatalf("no human summary: %q", errb.String())
	}
	t.Logf("%s", strings.TrimSpace(errb.String()))
	return r
}

func checkClean(t *testing.T, r result) {
	t.Helper()
	if r.Sent == 0 || r.Delivered != r.Sent*r.Copies || r.Lost != 0 || r.Duplicated != 0 {
		t.Fatalf("sent %d, delivered %d (x%d), lost %d, duplicated %d", r.Sent, r.Delivered, r.Copies, r.Lost, r.Duplicated)
	}
	if !(r.P50us > 0 && r.P50us <= r.P90us && r.P90us <= r.P99us && r.P99us <= r.MaxUs) {
		t.Fatalf("percentiles out of order: %+v", r)
	}
}

// Straight to RabbitMQ's STOMP port, the direct baseline: two publishers,
// two subscribers on a topic, every message delivered twice.
func TestPubSubDirectToRabbitMQ(t *testing.T) {
	addr := brokertest.RabbitSTOMP(t)
	cred := brokertest.RabbitCredential(t)
	r := runScenario(t, "stomp-pubsub", "-url", "tcp://"+addr, "-login", cred.Username, "-passcode", cred.Password.Reveal(),
		"-publishers", "2", "-subscribers", "2", "-duration", "1s", "-window", "64")
	if r.Copies != 2 {
		t.Fatalf("copies %d", r.Copies)
	}
	checkClean(t, r)
}

// Through the bare relay, on a queue shared by two subscribers: each
// message delivered once.
func TestPubSubThroughBareRelay(t *testing.T) {
	addr := brokertest.RabbitSTOMP(t)
	cred := brokertest.RabbitCredential(t)
	queue := "/queue/" + brokertest.RabbitQueue(t, fmt.Sprintf("wsbench-test-%d", time.Now().UnixNano()))
	relay := startBareRelay(t, addr)
	r := runScenario(t, "stomp-pubsub", "-url", "ws://"+relay+"/", "-login", cred.Username, "-passcode", cred.Password.Reveal(),
		"-subscribers", "2", "-dest", queue, "-duration", "1s")
	if r.Copies != 1 {
		t.Fatalf("copies %d", r.Copies)
	}
	checkClean(t, r)
}

// Through wsbridge's STOMP relay at a fixed rate.
func TestPubSubThroughGatewayAtARate(t *testing.T) {
	addr := brokertest.RabbitSTOMP(t)
	cred := brokertest.RabbitCredential(t)
	url := brokertest.ServeRoute(t, "/stomp", nil, func(e brokertest.RouteEnv) http.Handler {
		return stomp.NewRelay(stomp.Options{RouteOptions: bridge.RouteOptions{Route: "/stomp", Backend: "rabbitmq", Address: addr, Credential: &cred, WS: e.WS, Origins: e.Origins, Conns: e.Conns, Log: e.Log}})
	})
	r := runScenario(t, "stomp-pubsub", "-url", url, "-rate", "2000", "-duration", "1s", "-warmup", "250ms")
	checkClean(t, r)
	if r.WarmupS != 0.25 {
		t.Fatalf("warmup_s %v, want 0.25", r.WarmupS)
	}
}

// The warm-up's messages count as delivered, lost or duplicated like any
// other, but their latencies stay out of the percentiles.
func TestTallyLeavesTheWarmUpUntimed(t *testing.T) {
	tl := newTally(1, 1, 0)
	tl.warm = 2
	sh := &shard{warm: 2}
	for seq := range 5 {
		tl.published(0, seq)
		latency := time.Millisecond
		if seq < 2 {
			latency = time.Hour // still settling
		}
		if seq != 3 {
			tl.deliver(0, seq, latency)
			sh.deliver(seq, latency)
		}
	}
	tl.merge(sh)
	r := finished(tl)
	if r.Delivered != 8 || r.Lost != 1 || r.Duplicated != 4 || r.MaxUs != 1000 {
		t.Fatalf("%+v", r)
	}
}

func TestWarmupMustLeaveTimeToMeasure(t *testing.T) {
	for _, args := range [][]string{
		{"stomp-pubsub", "-rate", "100", "-duration", "1s", "-warmup", "1s"},
		{"sse-fanout", "-duration", "1s", "-warmup", "2s"},
		{"mqtt-pubsub", "-rate", "100", "-warmup", "-1s"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb, nil); code == 0 || !strings.Contains(errb.String(), "-warmup") {
			t.Errorf("%v: exit %d, %q", args, code, errb.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"stomp-pubsub", "-body", "10"}, {"stomp-pubsub", "-publishers", "0"}, {"stomp-pubsub", "-url", "http://x"},
		{"mqtt-pubsub", "-qos", "2"}, {"amqp-pubsub", "-window", "0"}, {"conns", "-mode", "amqp"}, {"conns", "-gc"}, {"conns", "-sources", "0"},
		{"conns", "-url", "http://x"}, {"report", "/nonexistent.jsonl"},
		// Where the server's RSS was to come from does not answer: no run.
		{"conns", "-url", "ws://127.0.0.1:1/", "-pid", "999999999"},
		{"conns", "-url", "ws://127.0.0.1:1/", "-stats", "http://127.0.0.1:1/debug/stats"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb, nil); code == 0 {
			t.Errorf("%v: exit 0", args)
		}
	}
}

func TestReportMediansAndRatios(t *testing.T) {
	lines := []string{
		`{"label":"direct","rate":0,"msgs_per_s":100,"p99_us":10}`,
		`{"label":"wsbridge","rate":0,"msgs_per_s":120,"p99_us":12,"lost":1}`,
		`{"label":"direct","rate":0,"msgs_per_s":300,"p99_us":30}`,
		`{"label":"wsbridge","rate":0,"msgs_per_s":90,"p99_us":9}`,
		`{"label":"direct","rate":0,"msgs_per_s":200,"p99_us":20}`,
		`{"label":"wsbridge","rate":0,"msgs_per_s":110,"p99_us":11}`,
		`{"label":"wsbridge","rate":5000,"msgs_per_s":5000,"p99_us":1500,"warmup_s":1}`,
		"not json, skipped",
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"report", "-baseline", "direct", writeLines(t, lines)}, &out, &errb, nil); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	got := out.String()
	for _, want := range []string{
		"| direct | 3 | 200 | 1.00 |",                       // median of 100, 300, 200
		"| wsbridge | 3 | 110 | 0.55 | 0 | 0 | 11 | 0.55 |", // 110/200; p99 11/20
		"fixed rate 5000 msg/s; messages due in each run's first 1.0s not timed",
	} {
		if !strings.Contains(got, want) {
			t.Fatalf("report lacks %q:\n%s", want, got)
		}
	}
	if !strings.Contains(got, "| wsbridge | 3 | 110 | 0.55 | 0 | 0 | 11 | 0.55 | 0 | 1 | 0 |") {
		t.Fatalf("lost messages not summed:\n%s", got)
	}
}

func writeLines(t *testing.T, lines []string) string {
	t.Helper()
	path := t.TempDir() + "/results.jsonl"
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// MQTT at QoS 0 and 1: straight to Mosquitto, through the bare relay and
// through wsbridge's MQTT relay; two subscribers each get every message.
func TestMQTTPubSub(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	relay := startBareRelay(t, addr)
	gateway := brokertest.ServeRoute(t, "/mqtt", nil, func(e brokertest.RouteEnv) http.Handler {
		return mqtt.NewRelay(mqtt.Options{RouteOptions: bridge.RouteOptions{Route: "/mqtt", Backend: "mosquitto", Address: addr,
			WS: e.WS, Origins: e.Origins, Conns: e.Conns, Log: e.Log}})
	})
	for _, url := range []string{"tcp://" + addr, "ws://" + relay + "/", gateway} {
		for _, qos := range []string{"0", "1"} {
			t.Run(url+"/qos"+qos, func(t *testing.T) {
				r := runScenario(t, "mqtt-pubsub", "-url", url, "-qos", qos, "-subscribers", "2", "-duration", "500ms", "-window", "64")
				if r.Copies != 2 || r.QoS != int(qos[0]-'0') {
					t.Fatalf("%+v", r)
				}
				checkClean(t, r)
			})
		}
	}
}

// SSE fan-out through wsbridge's hub on NATS: every stream gets every
// message published over HTTP.
func TestSSEFanout(t *testing.T) {
	b, err := natsbroker.New(natsbroker.Options{Endpoint: broker.Endpoint{Address: "nats://" + brokertest.NATS(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	srv := front.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), front.ServerOptions{})
	origins, _ := front.NewOrigins(nil)
	h := sse.NewHub(b, sse.Options{Conns: srv.Conns, Origins: origins})
	srv.Handle("/sse/", h.StreamHandler("/sse", nil))
	srv.Handle("/publish/", h.PublishHandler("/publish", nil))
	t.Cleanup(h.Close)
	base := "http://" + brokertest.Serve(t, srv)
	r := runScenario(t, "sse-fanout", "-url", base, "-clients", "50", "-rate", "100", "-duration", "1s", "-warmup", "200ms")
	if r.Copies != 50 || r.Subscribers != 50 || r.WarmupS != 0.2 {
		t.Fatalf("%+v", r)
	}
	checkClean(t, r)
}

func TestShardMerge(t *testing.T) {
	tl := newTally(1, 2, 0)
	for seq := range 3 {
		tl.published(0, seq)
	}
	a, b := &shard{}, &shard{}
	for _, seq := range []int{0, 1, 2} {
		a.deliver(seq, time.Millisecond)
	}
	b.deliver(0, time.Millisecond)
	b.deliver(2, time.Millisecond)
	b.deliver(2, time.Millisecond) // a duplicate
	b.deliver(7, time.Millisecond) // never sent
	tl.merge(a)
	tl.merge(b)
	r := finished(tl)
	if r.Sent != 3 || r.Delivered != 6 || r.Lost != 1 || r.Duplicated != 1 {
		t.Fatalf("%+v", r)
	}
}

// conns opens idle sessions through a gateway whose registry admits 100:
// those beyond it are refused at the upgrade and counted by reason, the
// rest stay open through the hold, and the gateway's RSS comes from its
// admin stats (before, after, and after a GC). One handshake at a time:
// two racing for the last slot may both pass the gateway's check, and the
// loser is closed after its upgrade (1013) instead of refused before it.
func TestConns(t *testing.T) {
	stompAddr, mqttAddr := brokertest.RabbitSTOMP(t), brokertest.Mosquitto(t)
	cred := brokertest.RabbitCredential(t)
	for _, tc := range []struct{ mode, path string }{{"stomp", "/stomp"}, {"mqtt", "/mqtt"}, {"upgrade", "/stomp"}} {
		t.Run(tc.mode, func(t *testing.T) {
			var conns *front.Conns
			url := brokertest.ServeRoute(t, tc.path, nil, func(e brokertest.RouteEnv) http.Handler {
				conns = e.Conns
				ro := bridge.RouteOptions{Route: tc.path, Backend: "b", WS: e.WS, Origins: e.Origins, Conns: e.Conns, Log: e.Log}
				if tc.path == "/mqtt" {
					ro.Address = mqttAddr
					return mqtt.NewRelay(mqtt.Options{RouteOptions: ro})
				}
				ro.Address, ro.Credential = stompAddr, &cred
				return stomp.NewRelay(stomp.Options{RouteOptions: ro})
			})
			adminSrv := httptest.NewServer(admin.Handler(admin.Options{Conns: conns}))
			t.Cleanup(adminSrv.Close)
			var out, errb bytes.Buffer
			code := run(context.Background(), []string{"conns", "-url", url, "-mode", tc.mode, "-n", "110", "-ramp", "2000", "-concurrency", "1",
				"-hold", "200ms", "-sources", "4", "-stats", adminSrv.URL + "/debug/stats", "-gc"}, &out, &errb, nil)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			t.Log(strings.TrimSpace(errb.String()))
			var r connsResult
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("%q: %v", out.String(), err)
			}
			// Over the limit a client is upgraded and closed with 1013 and a
			// retry hint, which browsers can see (an HTTP 503 reads as
			// 1006 to them). A bare upgrade is done when the 101 arrives,
			// so in that mode the refused ones count as connected.
			refusedBy1013 := 0
			for reason, n := range r.Errors {
				if strings.Contains(reason, "1013") && strings.Contains(reason, "retry in") {
					refusedBy1013 += n
				}
			}
			if r.Attempted != 110 || r.HeldToEnd != 100 || r.Connected+r.Failed != 110 ||
				(tc.mode != "upgrade" && (r.Failed != 10 || refusedBy1013 != 10)) {
				t.Fatalf("%+v", r)
			}
			if !(r.P50us > 0 && r.P50us <= r.P99us && r.P99us <= r.MaxUs) || r.RSSBefore <= 0 || r.RSSAfter <= 0 || r.RSSAfterGC <= 0 {
				t.Fatalf("measures %+v", r)
			}
		})
	}
}

// AMQP straight to RabbitMQ, through the bare relay and through wsbridge's
// AMQP relay (which logs in with the keyring's credential, whatever the
// client sends): two subscribers, each with its own queue, get every
// message.
func TestAMQPPubSub(t *testing.T) {
	addr := brokertest.RabbitAMQP(t)
	cred := brokertest.RabbitCredential(t)
	relay := startBareRelay(t, addr)
	gateway := brokertest.ServeRoute(t, "/amqp", nil, func(e brokertest.RouteEnv) http.Handler {
		return amqp.NewRelay(amqp.Options{RouteOptions: bridge.RouteOptions{Route: "/amqp", Backend: "rabbitmq", Address: addr, Credential: &cred,
			WS: e.WS, Origins: e.Origins, Conns: e.Conns, Log: e.Log}})
	})
	for _, tc := range []struct{ url, login string }{
		{"tcp://" + addr, cred.Username}, {"ws://" + relay + "/", cred.Username}, {gateway, "someone-else"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			password := cred.Password.Reveal()
			if tc.url == gateway {
				password = "not the broker's"
			}
			r := runScenario(t, "amqp-pubsub", "-url", tc.url, "-login", tc.login, "-passcode", password,
				"-subscribers", "2", "-duration", "500ms", "-window", "64")
			if r.Copies != 2 || r.Scenario != "amqp-pubsub" {
				t.Fatalf("%+v", r)
			}
			checkClean(t, r)
		})
	}
	// A refused login is the scenario's error, with the broker's reason.
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"amqp-pubsub", "-url", "tcp://" + addr, "-login", "nobody", "-passcode", "x", "-duration", "100ms"},
		&out, &errb, nil); code != 1 || !strings.Contains(errb.String(), "ACCESS_REFUSED") {
		t.Fatalf("exit %d: %q", code, errb.String())
	}
}

// startBareRelay runs `wsbench baseline-relay` to target until the test
// ends and returns its address.
func startBareRelay(t *testing.T, target string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	listening := make(chan net.Addr, 1)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"baseline-relay", "-listen", "127.0.0.1:0", "-target", target}, &bytes.Buffer{}, &bytes.Buffer{},
			func(a net.Addr) { listening <- a })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return (<-listening).String()
}

// conns lines get their own table (medians of memory per connection and
// handshake latency); -chart draws the medians as a PNG.
func TestReportConnsAndChart(t *testing.T) {
	lines := []string{
		`{"label":"web-stomp","scenario":"conns","mode":"stomp","attempted":10,"connected":10,"held_to_end":10,"handshake_p50_us":900,"handshake_p99_us":2000,"rss_per_conn_bytes":120000}`,
		`{"label":"wsbridge","scenario":"conns","mode":"stomp","attempted":10,"connected":9,"failed":1,"held_to_end":9,"handshake_p50_us":500,"handshake_p99_us":1000,"rss_per_conn_bytes":12000,"rss_per_conn_after_gc_bytes":9000}`,
		`{"label":"wsbridge","scenario":"conns","mode":"stomp","attempted":10,"connected":10,"held_to_end":10,"handshake_p50_us":700,"handshake_p99_us":3000,"rss_per_conn_bytes":11000,"rss_per_conn_after_gc_bytes":10000}`,
		`{"label":"direct","rate":0,"scenario":"stomp-pubsub","msgs_per_s":100,"p50_us":5,"p99_us":10}`,
	}
	png := filepath.Join(t.TempDir(), "c.png")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"report", "-baseline", "web-stomp", "-chart", png, writeLines(t, lines)}, &out, &errb, nil); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		"| wsbridge | stomp | 2 | 20 | 1 | 9 | 600 | 2000 | 11.5 | 0.10 | 9.5 |", // medians of two runs
		"| web-stomp | stomp | 1 | 10 | 0 | 10 | 900 | 2000 | 120.0 | 1.00 | - |",
		"| direct | 1 | 100 |", // pub/sub lines still reported
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("report lacks %q:\n%s", want, out.String())
		}
	}
	f, err := os.Open(png)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, format, err := image.DecodeConfig(f)
	if err != nil || format != "png" || cfg.Width < 800 {
		t.Fatalf("chart: %v %s %+v", err, format, cfg)
	}
}
