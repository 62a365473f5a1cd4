package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// crowdClient is one browser of a crowd behind one address, reduced to
// what matters here: it connects, and when it is refused for load it
// follows the hint, as EventSource does by itself and as a page would do
// with a WebSocket's 1013 close reason. Once in, it keeps its socket and
// no goroutine: 2000 of them stay within the race detector's goroutine
// limit beside the gateway's own.
type crowdClient struct {
	addr    string
	refused atomic.Int64 // refusals followed, all clients together
	maxHint atomic.Int64 // the longest hint, in ms
}

// errRefused carries a refusal's retry hint.
type errRefused struct{ retry time.Duration }

func (e errRefused) Error() string { return "refused; retry in " + e.retry.String() }

// join connects with try until it gets in, waiting out each refusal's
// hint; any other failure ends it.
func (cc *crowdClient) join(try func() (net.Conn, error)) (net.Conn, error) {
	for {
		nc, err := try()
		var r errRefused
		if !errors.As(err, &r) {
			return nc, err
		}
		cc.refused.Add(1)
		for ms := r.retry.Milliseconds(); ; {
			old := cc.maxHint.Load()
			if ms <= old || cc.maxHint.CompareAndSwap(old, ms) {
				break
			}
		}
		time.Sleep(r.retry) // the hint: what the client was told to do
	}
}

var retryInReason = regexp.MustCompile(`retry in ([0-9.]+s)$`)

// stomp opens /stomp the way stompjs does in a browser (subprotocol
// offered, CONNECT as soon as the socket opens) and waits for CONNECTED;
// a close 1013 is a refusal whose reason carries the hint.
func (cc *crowdClient) stomp() (net.Conn, error) {
	nc, err := net.Dial("tcp", cc.addr)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (net.Conn, error) { nc.Close(); return nil, err }
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(nc, "GET /stomp HTTP/1.1\r\nHost: crowd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n")
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fail(fmt.Errorf("upgrade answered %s: a browser sees 1006", resp.Status))
	}
	connect := "CONNECT\naccept-version:1.2\nhost:/\nheart-beat:0,0\n\n\x00"
	frame := append([]byte{0x81, 0x80 | byte(len(connect)), 0, 0, 0, 0}, connect...) // masked with a zero key
	if _, err := nc.Write(frame); err != nil {
		return fail(err)
	}
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return fail(err)
	}
	n := int(hdr[1] & 0x7f)
	if n == 126 {
		var ext [2]byte
		io.ReadFull(br, ext[:])
		n = int(binary.BigEndian.Uint16(ext[:]))
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		return fail(err)
	}
	switch op := hdr[0] & 0x0f; {
	case op == 1 && strings.HasPrefix(string(payload), "CONNECTED"):
		nc.SetDeadline(time.Time{})
		return nc, nil
	case op == 8 && n >= 2 && binary.BigEndian.Uint16(payload) == 1013:
		nc.Write([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xf5}) // the close answered, as a browser does
		nc.Close()
		m := retryInReason.FindStringSubmatch(string(payload[2:]))
		if m == nil {
			return nil, fmt.Errorf("close 1013 without a retry hint: %q", payload[2:])
		}
		d, _ := time.ParseDuration(m[1])
		return nil, errRefused{d}
	default:
		return fail(fmt.Errorf("opcode %d: %q", op, payload))
	}
}

// sse opens /sse/crowd as EventSource does and reads the first event: the
// stream's own retry hint means it is in; event busy means it was
// refused, with the hint in its retry field.
func (cc *crowdClient) sse() (net.Conn, error) {
	nc, err := net.Dial("tcp", cc.addr)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (net.Conn, error) { nc.Close(); return nil, err }
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(nc, "GET /sse/crowd HTTP/1.1\r\nHost: crowd\r\nAccept: text/event-stream\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		return fail(fmt.Errorf("answered %s %s: EventSource gives up for good", resp.Status, resp.Header.Get("Content-Type")))
	}
	body := bufio.NewReader(resp.Body)
	var retry time.Duration
	busy := false
	for {
		line, err := body.ReadString('\n')
		if err != nil {
			return fail(err)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, "retry: "); ok {
			ms, _ := strconv.Atoi(v)
			retry = time.Duration(ms) * time.Millisecond
		}
		busy = busy || line == "event: busy"
	}
	if busy {
		nc.Close()
		return nil, errRefused{retry}
	}
	nc.SetDeadline(time.Time{})
	return nc, nil
}

// TestCrowdReconnects: a thousand browsers behind one address, each with a
// STOMP WebSocket and an SSE stream, all connecting at once to a gateway
// on the default config (as after its restart), are all connected within
// 30 s. Those refused for load are told when to come back, and do.
func TestCrowdReconnects(t *testing.T) {
	if testing.Short() {
		t.Skip("2000 connections")
	}
	const browsers = 1000
	g := serve(t)
	cc := &crowdClient{addr: g.addr}

	var (
		mu    sync.Mutex
		conns []net.Conn
		last  time.Duration
		wg    sync.WaitGroup
	)
	start := make(chan struct{})
	var began time.Time
	for i := range 2 * browsers {
		try := cc.stomp
		if i%2 == 1 {
			try = cc.sse
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			nc, err := cc.join(try)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			last = max(last, time.Since(began))
			mu.Unlock()
		}()
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	began = time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d of %d connections in, the last after %s; %d refusals followed, longest hint %dms",
		len(conns), 2*browsers, last.Round(time.Millisecond), cc.refused.Load(), cc.maxHint.Load())
	if len(conns) != 2*browsers || last > 30*time.Second {
		t.Fatalf("%d connections in after %s, want %d within 30s\ngateway logs:\n%.4000s", len(conns), last, 2*browsers, g.logs)
	}
}
