package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsbridge/wsbridge/memory"
)

// connsOptions configure the conns scenario: N idle connections opened at
// a ramp rate and held, to measure what each costs the server.
type connsOptions struct {
	URL, Label string
	// Mode is what each connection does after connecting: upgrade (the
	// WebSocket handshake only), stomp (CONNECT, CONNECTED) or mqtt
	// (CONNECT, CONNACK).
	Mode        string
	N           int
	Ramp        float64 // connections started per second
	Concurrency int     // handshakes in flight at once
	Sources     int     // source addresses 127.0.0.1 ... 127.0.0.<Sources>
	Hold        time.Duration
	// StatsURL (the gateway's /debug/stats) or PID (any process, from
	// /proc) is where the server's RSS is read; neither: not measured.
	StatsURL string
	PID      int
	// GC asks the gateway (through StatsURL) to collect garbage before
	// RSS is read, as it would by itself within minutes of idling.
	GC bool
	// Login and Passcode go into STOMP CONNECT, for a broker's own
	// WebSocket plugin; the gateway replaces them.
	Login, Passcode string
}

// connsResult is what the conns scenario measured.
type connsResult struct {
	Label       string         `json:"label,omitempty"`
	Scenario    string         `json:"scenario"`
	Target      string         `json:"target"`
	Mode        string         `json:"mode"`
	Attempted   int            `json:"attempted"`
	Connected   int            `json:"connected"`
	Failed      int            `json:"failed"`
	Errors      map[string]int `json:"errors,omitempty"` // failures by reason
	HeldToEnd   int            `json:"held_to_end"`      // connections still open when the hold ended
	RampSeconds float64        `json:"ramp_seconds"`
	P50us       float64        `json:"handshake_p50_us"`
	P90us       float64        `json:"handshake_p90_us"`
	P99us       float64        `json:"handshake_p99_us"`
	MaxUs       float64        `json:"handshake_max_us"`
	RSSBefore   int64          `json:"rss_before_bytes,omitempty"`
	RSSAfter    int64          `json:"rss_after_bytes,omitempty"`
	// BytesPerConn is the server's RSS growth divided by the connections
	// held: what one idle connection costs it, all included.
	BytesPerConn float64 `json:"rss_per_conn_bytes,omitempty"`
	// With -gc, RSS is read twice after the hold: as it was (the two
	// fields above) and after the gateway collected its garbage.
	RSSAfterGC          int64   `json:"rss_after_gc_bytes,omitempty"`
	BytesPerConnAfterGC float64 `json:"rss_per_conn_after_gc_bytes,omitempty"`
}

func (r *connsResult) summary() string {
	s := fmt.Sprintf("conns %s -> %s: %d of %d connected (%d failed) in %.1fs, %d still open after the hold\n"+
		"  handshake p50 %.0fus p90 %.0fus p99 %.0fus max %.0fus",
		r.Mode, r.Target, r.Connected, r.Attempted, r.Failed, r.RampSeconds, r.HeldToEnd, r.P50us, r.P90us, r.P99us, r.MaxUs)
	if r.RSSAfter > 0 {
		s += fmt.Sprintf("\n  server RSS %.1f MiB -> %.1f MiB: %.1f KB per connection",
			float64(r.RSSBefore)/(1<<20), float64(r.RSSAfter)/(1<<20), r.BytesPerConn/1000)
	}
	if r.RSSAfterGC > 0 {
		s += fmt.Sprintf("; after a GC %.1f MiB: %.1f KB per connection", float64(r.RSSAfterGC)/(1<<20), r.BytesPerConnAfterGC/1000)
	}
	if len(r.Errors) > 0 {
		reasons := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			reasons = append(reasons, k)
		}
		sort.Strings(reasons)
		for _, k := range reasons {
			s += fmt.Sprintf("\n  failed %dx: %s", r.Errors[k], k)
		}
	}
	return s
}

// serverRSS reads the measured server's RSS, or 0 when none is named;
// gc first asks the gateway to collect its garbage.
func (o *connsOptions) serverRSS(gc bool) (int64, error) { return serverRSS(o.StatsURL, o.PID, gc) }

// serverRSS reads a server's RSS from the gateway's admin stats at
// statsURL or from /proc for pid; 0 when neither is given. gc first asks
// the gateway to collect its garbage.
func serverRSS(statsURL string, pid int, gc bool) (int64, error) {
	switch {
	case statsURL != "":
		get := func() (*http.Response, error) { return http.Get(statsURL) }
		if gc {
			get = func() (*http.Response, error) {
				return http.Post(strings.TrimSuffix(statsURL, "/stats")+"/gc", "", nil)
			}
		}
		resp, err := get()
		if err != nil {
			return 0, fmt.Errorf("stats: %w", err)
		}
		defer resp.Body.Close()
		var s struct { // the one field of admin.Stats read here; wsbench links no pprof
			RSSBytes int64 `json:"rss_bytes"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("stats %s: %s %v", statsURL, resp.Status, err)
		}
		return s.RSSBytes, nil
	case pid > 0:
		rss := memory.ProcessRSS(pid)
		if rss == 0 {
			return 0, fmt.Errorf("no RSS for process %d in /proc", pid)
		}
		return rss, nil
	}
	return 0, nil
}

// runConns opens the connections at the ramp rate, holds them, then
// reads the server's RSS and counts the connections still open.
func runConns(o connsOptions) (*connsResult, error) {
	u, err := url.Parse(o.URL)
	if err != nil || u.Scheme != "ws" || u.Host == "" {
		return nil, fmt.Errorf("conns: -url %q: want ws://host:port/path", o.URL)
	}
	r := &connsResult{Label: o.Label, Scenario: "conns", Target: o.URL, Mode: o.Mode, Attempted: o.N, Errors: map[string]int{}}
	if r.RSSBefore, err = o.serverRSS(o.GC); err != nil {
		return nil, err
	}
	var (
		mu        sync.Mutex
		conns     []*idleConn
		latencies []time.Duration
	)
	slots := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / o.Ramp)
	start := time.Now()
	for i := range o.N {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			src := net.IPv4(127, 0, 0, byte(1+i%o.Sources))
			began := time.Now()
			c, err := dialIdle(u, src, o)
			took := time.Since(began)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.Errors[err.Error()]++
				return
			}
			conns = append(conns, c)
			latencies = append(latencies, took)
		}()
	}
	wg.Wait()
	r.RampSeconds = time.Since(start).Seconds()
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	r.Connected, r.Failed = len(conns), o.N-len(conns)
	time.Sleep(o.Hold) // the hold is the measurement: connections sit idle for it
	if r.RSSAfter, err = o.serverRSS(false); err != nil {
		return nil, err
	}
	if o.GC {
		if r.RSSAfterGC, err = o.serverRSS(true); err != nil {
			return nil, err
		}
	}
	for _, c := range conns {
		if !c.ended.Load() {
			r.HeldToEnd++
		}
	}
	if r.RSSAfter > 0 && r.HeldToEnd > 0 {
		r.BytesPerConn = float64(r.RSSAfter-r.RSSBefore) / float64(r.HeldToEnd)
		if r.RSSAfterGC > 0 {
			r.BytesPerConnAfterGC = float64(r.RSSAfterGC-r.RSSBefore) / float64(r.HeldToEnd)
		}
	}
	if len(latencies) > 0 {
		slices.Sort(latencies)
		at := func(q float64) float64 { return float64(latencies[int(q*float64(len(latencies)-1))]) / 1e3 }
		r.P50us, r.P90us, r.P99us, r.MaxUs = at(0.5), at(0.9), at(0.99), at(1)
	}
	if len(r.Errors) == 0 {
		r.Errors = nil
	}
	return r, nil
}

// idleConn is a client WebSocket that answers pings and otherwise sits
// still. It is written against the RFC, not a library, so that a
// connection costs the load tool one goroutine and a small buffer.
type idleConn struct {
	nc    net.Conn
	br    *bufio.Reader
	wmu   sync.Mutex
	ended atomic.Bool
}

const handshakeTimeout = 10 * time.Second

// dialIdle connects from src, upgrades, does the mode's session start and
// leaves a goroutine answering pings until the connection ends.
func dialIdle(u *url.URL, src net.IP, o connsOptions) (*idleConn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: handshakeTimeout}
	nc, err := d.Dial("tcp", u.Host)
	if err != nil {
		return nil, errors.Unwrap(err) // the reason, without the addresses that differ per connection
	}
	c := &idleConn{nc: nc, br: bufio.NewReaderSize(nc, 512)}
	nc.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := c.start(u, o); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	go c.answerPings()
	return c, nil
}

func (c *idleConn) start(u *url.URL, o connsOptions) error {
	key := make([]byte, 16)
	rand.Read(key)
	subprotocol := map[string]string{"stomp": "v12.stomp", "mqtt": "mqtt"}[o.Mode]
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key) + "\r\nSec-WebSocket-Version: 13\r\n"
	if subprotocol != "" {
		req += "Sec-WebSocket-Protocol: " + subprotocol + "\r\n"
	}
	if _, err := io.WriteString(c.nc, req+"\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("upgrade: %s", resp.Status)
	}
	switch o.Mode {
	case "stomp":
		return c.exchange(0x1, stompConnect(o.Login, o.Passcode, "/"), "CONNECTED", "CONNECTED")
	case "mqtt":
		id := make([]byte, 8)
		rand.Read(id)
		return c.exchange(0x2, mqttConnect("wsbench-"+base64.RawURLEncoding.EncodeToString(id), 0), "\x20\x02\x00\x00", "CONNACK 0")
	}
	return nil
}

// exchange sends one message and checks that the answer starts with want
// (named name in errors).
func (c *idleConn) exchange(op byte, msg []byte, want, name string) error {
	if err := c.writeFrame(op, msg); err != nil {
		return err
	}
	for {
		op, payload, err := c.readFrame()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", name, err)
		}
		if op == 0x9 { // a ping before the answer
			if err := c.writeFrame(0xA, payload); err != nil {
				return err
			}
			continue
		}
		if !strings.HasPrefix(string(payload), want) {
			return fmt.Errorf("answer %q, want %s", payload[:min(len(payload), 40)], name)
		}
		return nil
	}
}

// writeFrame writes one masked client frame (RFC 6455 section 5.2).
func (c *idleConn) writeFrame(op byte, payload []byte) error {
	b := make([]byte, 0, 14+len(payload))
	b = append(b, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	b = append(b, mask[:]...)
	for i, x := range payload {
		b = append(b, x^mask[i&3])
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// readFrame reads one server frame; a close frame is an error.
func (c *idleConn) readFrame() (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		_, err = io.ReadFull(c.br, l[:])
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		_, err = io.ReadFull(c.br, l[:])
		n = binary.BigEndian.Uint64(l[:])
	}
	if err != nil {
		return 0, nil, err
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("a %d-byte frame from the server", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, payload); err != nil {
		return 0, nil, err
	}
	if op = h[0] & 0x0f; op == 0x8 {
		code := 0
		if len(payload) >= 2 {
			code = int(binary.BigEndian.Uint16(payload))
		}
		return op, payload, fmt.Errorf("closed by the server: %d %s", code, payload[min(2, len(payload)):])
	}
	return op, payload, nil
}

// answerPings keeps the connection alive past the server's ping interval
// and records when it ends.
func (c *idleConn) answerPings() {
	defer c.ended.Store(true)
	for {
		op, payload, err := c.readFrame()
		if err != nil {
			return
		}
		if op == 0x9 {
			if c.writeFrame(0xA, payload) != nil {
				return
			}
		}
	}
}

func (c *idleConn) close() { c.nc.Close() }
