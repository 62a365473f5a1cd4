package sse

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/memory"
)

// e2eDir holds the real JavaScript clients (npm ci --prefix testdata/e2e).
const e2eDir = "../testdata/e2e"

func requireEventSource(t *testing.T) {
	t.Helper()
	_, errNode := exec.LookPath("node")
	_, errMods := os.Stat(filepath.Join(e2eDir, "node_modules", "eventsource"))
	if errNode != nil || errMods != nil {
		msg := "node or the e2e clients are missing: run `npm ci --prefix testdata/e2e`"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// A real EventSource refused because the memory budget cannot hold the
// topic's events gets a busy stream, comes back by itself after its retry
// hint (it would give up for good on a 503), and is admitted once the
// budget can hold them again.
func TestEventSourceComesBackAfterTheBudget(t *testing.T) {
	requireEventSource(t)
	budget := memory.NewBudget(4 * mib)
	s := startHub(t, natsBroker(t), Options{Budget: budget})
	topic := uniqueTopic(t)
	held := openStream(t, s.url+"/sse/"+topic, nil) // keeps the topic live
	fill := budget.Limit()
	if !budget.Take(fill) { // other routes hold all of it
		t.Fatal("the budget is in use")
	}
	s.send(t, topic, "not covered")
	if e := held.next(t); e.data != "not covered" {
		t.Fatalf("got %q", e.data)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(e2eDir, "eventsource-follow.mjs"), s.url+"/sse/"+topic, "in")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "busy ") || !strings.Contains(lines.Text(), "limits.memory_bytes") {
		cmd.Wait()
		t.Fatalf("eventsource: %q, want a busy event naming limits.memory_bytes", lines.Text())
	}
	budget.Give(fill)
	// The client comes back within its retry hint; until then, and until
	// its stream is in, the message is published again.
	done := make(chan string, 1)
	go func() {
		var last string
		for lines.Scan() {
			last = lines.Text()
		}
		done <- last
	}()
	tick := time.NewTicker(100 * time.Millisecond) // pacing the publishes, not synchronisation
	defer tick.Stop()
	for {
		select {
		case last := <-done:
			if err := cmd.Wait(); err != nil || !strings.HasPrefix(last, "OK busy=1") {
				t.Fatalf("eventsource: %v %q, want OK after one busy stream", err, last)
			}
			if st := s.hub.Stats(); st.BudgetRefused != 1 || st.Unbudgeted != 1 {
				t.Fatalf("stats %+v", st)
			}
			return
		case <-tick.C:
			s.send(t, topic, "in")
		}
	}
}
