package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/adapters/stomp"
	"github.com/wsbridge/wsbridge/admin"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/broker/natsbroker"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/sse"
)

// hostileGateway is the embedded default in this process (STOMP translated
// onto an embedded NATS server, HTTP publish beside it) with short timeouts
// and a small budget, so that a hundred hostile clients of each kind meet
// every limit within seconds. It returns the STOMP URL, an admin stats URL
// and the budget.
func hostileGateway(t *testing.T, budget int64) (string, string, *memory.Budget) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := natsbroker.StartEmbedded(natsbroker.EmbeddedOptions{Port: -1, MaxPayload: 2 << 20, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nb, err := natsbroker.New(natsbroker.Options{Endpoint: broker.Endpoint{Address: "nats://" + e.Addr(), Log: log},
		InProcess: e.Server()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nb.Close() })
	broker := broker.NewShared(nb)
	srv := front.NewServer(log, front.ServerOptions{MaxConns: 1000})
	origins, _ := front.NewOrigins(nil)
	ws := bridge.DefaultWSOptions()
	// Short enough for a hundred clients of each kind to meet them within
	// seconds, long enough for the probe under the race detector.
	ws.LoginTimeout, ws.MessageTimeout, ws.WriteTimeout = 2*time.Second, 3*time.Second, time.Second
	ws.Budget = memory.NewBudget(budget)
	// A slow reader's writes then block within a second at the test's
	// rates, rather than once the kernel's autotuned 4 MiB are full.
	ws.SendBufferBytes = 64 << 10
	// As cmd/wsbridge does: the collector's soft limit follows the bound.
	t.Cleanup(memory.FollowLimit(ws.Budget, srv.Conns.Len, 100*time.Millisecond))
	ro := bridge.RouteOptions{Route: "/stomp", Backend: "nats", WS: ws, Origins: origins, Conns: srv.Conns, Log: log}
	srv.Handle("/stomp", stomp.NewRelay(stomp.Options{RouteOptions: ro, Broker: broker}))
	so := sse.DefaultOptions()
	so.BodyTimeout, so.Budget, so.Origins, so.Conns, so.Log = ws.MessageTimeout, ws.Budget, origins, srv.Conns, log
	hub := sse.NewHub(broker, so)
	t.Cleanup(hub.Close)
	srv.Handle("/publish/", hub.PublishHandler("/publish", nil))
	url := "ws://" + brokertest.Serve(t, srv) + "/stomp"
	adminSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(admin.Stats{RSSBytes: testRSS()})
	}))
	t.Cleanup(adminSrv.Close)
	return url, adminSrv.URL, ws.Budget
}

// testRSS is this process's RSS, where the gateway under test runs. Under
// the race detector its shadow memory (several times the heap) is in the
// RSS too; then it is what the Go runtime has mapped and not returned,
// which is the RSS without it.
func testRSS() int64 {
	if !raceEnabled {
		return memory.ProcessRSS(os.Getpid())
	}
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64() - s[1].Value.Uint64())
}

// A hundred hostile clients of each kind against a gateway with a 64 MiB
// budget: the gateway's memory stays under the documented bound (its
// memory at rest + limits.memory_bytes + 128 KiB per connection), the
// well-behaved probe gets every reply, each kind is ended by the limit
// aimed at it with the close code (or HTTP status) the client receives,
// and the budget is whole again afterwards. Timings are the tool's
// business (hostile.sh): on a shared 2-core box they would only be noise
// here.
func TestHostile(t *testing.T) {
	const budget = 64 << 20
	url, stats, b := hostileGateway(t, budget)
	for _, tc := range []struct {
		kind  string
		args  []string
		ended []string // at least one of these must have ended a hostile client
	}{
		{"oversize", nil, []string{"ws 1009"}},
		{"silent", nil, []string{"ws 1008"}},
		// Long enough for websocket.message_timeout to end them where a
		// loaded machine keeps most of them under the budget.
		{"fragments", []string{"-size", "524288", "-duration", "4s"}, []string{"ws 1013", "ws 1008"}},
		{"partial-frame", nil, []string{"ws 1013"}},
		{"slow-publish", []string{"-publish", "/publish"}, []string{"http 503"}},
		// Dropped when its queue overflows or a write has waited
		// websocket.write_timeout: the close cannot reach a client that
		// does not read.
		{"slow-reader", []string{"-fanout-rate", "20", "-fanout-body", "16384", "-fanout-topics", "1", "-duration", "5s"}, []string{"no close frame (reset)", "no close frame (EOF)", "no close frame (broken pipe)"}},
		{"reader-control", []string{"-fanout-rate", "20", "-fanout-body", "16384", "-fanout-topics", "1"}, nil},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			args := append([]string{"hostile", "-url", url, "-kind", tc.kind, "-n", "100", "-ramp", "2000", "-sources", "4",
				"-baseline", "300ms", "-duration", "2500ms", "-pause", "100ms", "-probe-rate", "50",
				"-stats", stats, "-memory-bytes", "67108864"}, tc.args...)
			var out, errb bytes.Buffer
			if code := run(context.Background(), args, &out, &errb, nil); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			t.Log(strings.TrimSpace(errb.String()))
			var r hostileResult
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("%q: %v", out.String(), err)
			}
			switch {
			case r.RSSPeak <= 0:
				t.Errorf("no RSS read")
			case r.RSSPeak > r.Bound && raceEnabled:
				// The race detector's allocator and its delayed frees are
				// not the gateway's: .ci/run checks the bound in a run
				// without it.
				t.Logf("under -race, peak %d bytes over the bound %d (%s): not judged", r.RSSPeak, r.Bound, r.BoundFormula)
			case r.RSSPeak > r.Bound:
				t.Errorf("peak %d bytes, bound %d (%s)", r.RSSPeak, r.Bound, r.BoundFormula)
			}
			if r.ProbeSent == 0 || r.ProbeLost > 0 || len(r.ProbeErrors) > 0 {
				t.Errorf("the probe sent %d, lost %d, was ended by %v", r.ProbeSent, r.ProbeLost, r.ProbeErrors)
			}
			if r.Held == 0 {
				t.Errorf("no hostile client reached its act")
			}
			found := len(tc.ended) == 0
			for _, e := range tc.ended {
				found = found || r.Refusals[e] > 0
			}
			if !found {
				t.Errorf("ended by %v, want some of %v", r.Refusals, tc.ended)
			}
			if tc.kind == "reader-control" && len(r.Refusals) > 0 {
				t.Errorf("readers were ended: %v", r.Refusals)
			}
			waitFor(t, func() bool { return b.Used() == 0 }, func() string { return fmt.Sprintf("%d bytes still taken from the budget", b.Used()) })
		})
	}
}

// waitFor polls cond for up to 10 s: what is given back to the budget is
// given on the gateway's goroutines as sessions end, with no event a test
// can wait on.
func waitFor(t *testing.T, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
