package sse

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/memory"
)

// trickle starts a publish whose body of n declared bytes arrives a byte
// at a time, as a hostile client sends it; the connection is returned so
// the test can read the answer.
func trickle(t *testing.T, base string, n int, stop <-chan struct{}) net.Conn {
	t.Helper()
	host := strings.TrimPrefix(base, "http://")
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /publish/demo.slow HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\nx", host, n)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond) // pacing, not synchronisation
		defer tick.Stop()
		for range n - 1 {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	return c
}

func status(t *testing.T, c net.Conn) (int, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A publish whose body trickles is answered 408 at the body timeout,
// naming the limit; while it lasts it counts as a connection (the
// gateway's limit refuses others) and holds its body's size of the
// memory budget, given back after.
func TestPublishBodiesAreBoundedAndCounted(t *testing.T) {
	budget := memory.NewBudget(1 << 20)
	s := startHubOn(t, natsBroker(t), Options{BodyTimeout: 500 * time.Millisecond, Budget: budget}, nil, io.Discard,
		front.ServerOptions{MaxConns: 1}, nil)
	stop := make(chan struct{})
	defer close(stop)
	start := time.Now()
	slow := trickle(t, s.url, 600<<10, stop)

	waitUntil(t, func() bool { return budget.Used() == 600<<10 })
	if code, body, hdr := do(t, "POST", s.url+"/publish/demo.other", nil, "hi"); code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Fatalf("a publish beside one in flight with limits.max_connections 1: %d %q", code, body)
	}
	code, body := status(t, slow)
	if code != http.StatusRequestTimeout || !strings.Contains(body, "websocket.message_timeout") {
		t.Fatalf("trickled publish: %d %q, want 408 naming websocket.message_timeout", code, body)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("answered after %s, want about the 500ms body timeout", took)
	}
	waitUntil(t, func() bool { return budget.Used() == 0 })
	if code, body, _ := do(t, "POST", s.url+"/publish/demo.other", nil, "hi"); code != http.StatusAccepted {
		t.Fatalf("a publish once the slow one ended: %d %q", code, body)
	}
}

// A publish the memory budget cannot hold is refused with 503 and
// Retry-After, naming the limit, before its body is read.
func TestPublishOverBudget(t *testing.T) {
	s := startHub(t, natsBroker(t), Options{Budget: memory.NewBudget(1 << 10)})
	code, body, hdr := do(t, "POST", s.url+"/publish/demo.big", nil, strings.Repeat("x", 2<<10))
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || !strings.Contains(body, "limits.memory_bytes") {
		t.Fatalf("%d %q (Retry-After %q), want 503 naming limits.memory_bytes", code, body, hdr.Get("Retry-After"))
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() { // the state is internal: no event to wait on
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
