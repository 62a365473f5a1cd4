package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsbridge/wsbridge/memory"
)

// hostileKinds are the misbehaving clients the hostile scenario can
// drive, each aimed at a different place where the gateway holds bytes
// for a client.
var hostileKinds = []string{"oversize", "silent", "fragments", "partial-frame", "slow-publish", "slow-reader", "reader-control"}

// hostileOptions configure the hostile scenario: a well-behaved probe
// client timed alone, then beside N hostile clients of one kind.
type hostileOptions struct {
	URL, Label, Kind string
	PublishPath      string // the gateway's HTTP publish route, for slow-publish
	N                int
	Ramp             float64 // hostile clients started per second
	Concurrency      int     // handshakes in flight at once
	Sources          int     // hostile clients use 127.0.0.2 ... 127.0.0.<1+Sources>
	Baseline         time.Duration
	Duration         time.Duration
	// Pause is how long a hostile client that was closed waits before it
	// connects again.
	Pause time.Duration
	// The probe: STOMP round trips of ProbeBody bytes at ProbeRate on its
	// own destination.
	ProbeRate float64
	ProbeBody int
	// The busy destinations' load, for slow-reader and reader-control:
	// FanoutRate messages a second of FanoutBody bytes to each of
	// FanoutTopics topics, hostile client i subscribed to topic
	// i%FanoutTopics. One topic makes each message a burst of N
	// deliveries, which holds a core for the whole burst; spread over
	// topics (published in turn) the same bytes a second go out evenly.
	FanoutRate   float64
	FanoutBody   int
	FanoutTopics int
	// Size is what a hostile message declares: a fragment's or a partial
	// STOMP frame's length, or an HTTP publish's Content-Length.
	Size int
	// MaxMessage is the gateway's websocket.max_message_bytes, which an
	// oversize message exceeds.
	MaxMessage int
	// RcvBuf is a slow reader's SO_RCVBUF: small, so it stops reading
	// early rather than once the kernel's autotuned buffer is full.
	RcvBuf int
	// Split runs the hostile clients in a process of their own.
	Split bool
	// Where the gateway's RSS is read, every Sample.
	StatsURL string
	PID      int
	Sample   time.Duration
	// Bound is the RSS the gateway must stay under; 0: computed from
	// MemoryBytes (see hostileBound).
	Bound       int64
	MemoryBytes int64
}

// hostileResult is what the hostile scenario measured.
type hostileResult struct {
	Label    string `json:"label,omitempty"`
	Scenario string `json:"scenario"`
	Target   string `json:"target"`
	Kind     string `json:"kind"`
	Clients  int    `json:"clients"`
	// Attempts counts hostile connections made (reconnections included),
	// Held those that reached their hostile act.
	Attempts int `json:"attempts"`
	Held     int `json:"held"`
	// Refusals counts how hostile clients were ended, by what they got:
	// "ws 1009", "http 503", "no close frame", ...
	Refusals map[string]int `json:"refusals"`

	ProbeRate     float64 `json:"probe_rate"`
	BaselineP50us float64 `json:"baseline_p50_us"`
	BaselineP99us float64 `json:"baseline_p99_us"`
	P50us         float64 `json:"p50_us"`
	P99us         float64 `json:"p99_us"`
	P99Ratio      float64 `json:"p99_ratio"`
	ProbeSent     int     `json:"probe_sent"`
	ProbeLost     int     `json:"probe_lost"`
	// WorstPerSecond is the probe's slowest round trip in each second of
	// the hostile window, in ms: whether a p99 is steady or one burst.
	WorstPerSecond []float64 `json:"probe_worst_per_second_ms"`
	// ProbeErrors counts what ended the probe's session, when anything did.
	ProbeErrors map[string]int `json:"probe_errors,omitempty"`

	FanoutRate   float64 `json:"fanout_rate,omitempty"`
	FanoutBody   int     `json:"fanout_body,omitempty"`
	FanoutTopics int     `json:"fanout_topics,omitempty"`
	// FanoutBytes is what the hostile clients are sent a second, in all.
	FanoutBytes float64 `json:"fanout_bytes_per_second,omitempty"`

	RSSIdle      int64   `json:"rss_idle_bytes,omitempty"`
	RSSPeak      int64   `json:"rss_peak_bytes,omitempty"`
	Bound        int64   `json:"bound_bytes,omitempty"`
	PeakOverBnd  float64 `json:"peak_over_bound,omitempty"`
	BoundFormula string  `json:"bound_formula,omitempty"`
	// TCPMem is the machine's TCP socket memory (/proc/net/sockstat "TCP:
	// ... mem", pages) at its peak less what it was at rest: what hostile
	// clients park in the kernel, outside the process and its bound. It is
	// every socket's, the tool's and other programs' too.
	TCPMemIdle int64 `json:"tcp_mem_idle_bytes,omitempty"`
	TCPMemPeak int64 `json:"tcp_mem_peak_bytes,omitempty"`
}

func (r *hostileResult) summary() string {
	s := fmt.Sprintf("hostile %s x%d -> %s: %d connections made, %d reached their act\n"+
		"  probe at %.0f/s: alone p50 %.0fus p99 %.0fus; beside them p50 %.0fus p99 %.0fus: p99 x%.2f; %d sent, %d lost",
		r.Kind, r.Clients, r.Target, r.Attempts, r.Held, r.ProbeRate, r.BaselineP50us, r.BaselineP99us, r.P50us, r.P99us, r.P99Ratio, r.ProbeSent, r.ProbeLost)
	if r.FanoutRate > 0 {
		s += fmt.Sprintf("\n  busy destinations: %d topics, %g msg/s each of %d bytes: %.1f MB/s to the hostile clients",
			r.FanoutTopics, r.FanoutRate, r.FanoutBody, r.FanoutBytes/1e6)
	}
	if r.RSSPeak > 0 {
		s += fmt.Sprintf("\n  gateway RSS %.1f MiB at rest, peak %.1f MiB; bound %.1f MiB (%s): peak/bound %.2f",
			mib(r.RSSIdle), mib(r.RSSPeak), mib(r.Bound), r.BoundFormula, r.PeakOverBnd)
	}
	if r.TCPMemPeak > 0 {
		s += fmt.Sprintf("\n  kernel TCP memory (every socket of the machine) %.1f MiB at rest, peak %.1f MiB",
			mib(r.TCPMemIdle), mib(r.TCPMemPeak))
	}
	for _, k := range sortedKeys(r.Refusals) {
		s += fmt.Sprintf("\n  ended %dx: %s", r.Refusals[k], k)
	}
	for _, k := range sortedKeys(r.ProbeErrors) {
		s += fmt.Sprintf("\n  probe ended %dx: %s", r.ProbeErrors[k], k)
	}
	return s
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// hostileBound is the RSS the gateway is documented to stay under (README,
// limits.memory_bytes): what it had at rest, the budget, and
// memory.ConnectionBytes for each connection.
func hostileBound(idle, memoryBytes int64, conns int) (int64, string) {
	return idle + memoryBytes + int64(conns)*memory.ConnectionBytes,
		fmt.Sprintf("RSS at rest + limits.memory_bytes %d MiB + %d connections x %d KiB", memoryBytes>>20, conns, memory.ConnectionBytes>>10)
}

// runHostile times the probe alone, then starts the hostile clients and
// times it again while sampling the gateway's RSS.
func runHostile(o hostileOptions) (*hostileResult, error) {
	u, err := url.Parse(o.URL)
	if err != nil || u.Scheme != "ws" || u.Host == "" {
		return nil, fmt.Errorf("hostile: -url %q: want ws://host:port/path", o.URL)
	}
	r := &hostileResult{Label: o.Label, Scenario: "hostile", Target: o.URL, Kind: o.Kind, Clients: o.N, ProbeRate: o.ProbeRate}
	rss := &rssSampler{statsURL: o.StatsURL, pid: o.PID}
	if r.RSSIdle, err = rss.read(); err != nil {
		return nil, err
	}
	r.TCPMemIdle = rss.tcpMem.Load()
	run := fmt.Sprintf("wsbench.hostile.%d", time.Now().UnixNano())
	p, err := startProbe(o.URL, "/topic/"+run+".probe", o.ProbeRate, o.ProbeBody)
	if err != nil {
		return nil, fmt.Errorf("hostile: the probe: %w", err)
	}
	defer p.stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rss.sample(ctx, o.Sample)

	// The probe alone; its first second (or baseline, if shorter), as in
	// the other scenarios, is the connection settling.
	time.Sleep(min(time.Second, o.Baseline) + o.Baseline) // the baseline window is the measurement
	baseEnd := time.Now()
	baseline := p.window(baseEnd.Add(-o.Baseline), baseEnd)

	var fan *fanout
	if o.Kind == "slow-reader" || o.Kind == "reader-control" {
		r.FanoutRate, r.FanoutBody, r.FanoutTopics = o.FanoutRate, o.FanoutBody, o.FanoutTopics
		r.FanoutBytes = o.FanoutRate * float64(o.FanoutBody) * float64(o.N)
		if fan, err = startFanout(o.URL, "/topic/"+run+".busy.", o.FanoutTopics, o.FanoutRate, o.FanoutBody); err != nil {
			return nil, fmt.Errorf("hostile: the busy destination's publisher: %w", err)
		}
		defer fan.stop()
	}
	var stop func() (hostileLoad, error)
	if o.Split {
		stop, err = startHostileProcess(o, run)
	} else {
		stop = startHostiles(o, u, run)
	}
	if err != nil {
		return nil, err
	}
	start := time.Now()
	time.Sleep(o.Duration) // the hostile window is the measurement
	end := time.Now()
	// The round trips due in the window come back before the hostile
	// clients are stopped: 2,000 sockets closing at once are not what the
	// window measures.
	p.await(end, 2*time.Second)
	load, err := stop()
	if err != nil {
		return nil, err
	}
	r.Attempts, r.Held, r.Refusals = load.Attempts, load.Held, load.Refusals
	with := p.window(start, end)
	sent, lost, perrs := p.finish()

	r.BaselineP50us, r.BaselineP99us = percentile(baseline, 0.5), percentile(baseline, 0.99)
	r.P50us, r.P99us = percentile(with, 0.5), percentile(with, 0.99)
	if r.BaselineP99us > 0 {
		r.P99Ratio = r.P99us / r.BaselineP99us
	}
	r.ProbeSent, r.ProbeLost, r.ProbeErrors = sent, lost, perrs
	for from := start; from.Before(end); from = from.Add(time.Second) {
		to := from.Add(time.Second)
		if to.After(end) {
			to = end
		}
		r.WorstPerSecond = append(r.WorstPerSecond, percentile(p.window(from, to), 1)/1000)
	}
	if r.RSSIdle > 0 {
		r.RSSPeak = rss.peak.Load()
		r.Bound, r.BoundFormula = hostileBound(r.RSSIdle, o.MemoryBytes, o.N+2)
		if o.Bound > 0 {
			r.Bound, r.BoundFormula = o.Bound, "given with -bound"
		}
		r.PeakOverBnd = float64(r.RSSPeak) / float64(r.Bound)
	}
	r.TCPMemPeak = rss.tcpMemPeak.Load()
	return r, nil
}

// hostileLoad is what the hostile clients did.
type hostileLoad struct {
	Attempts, Held int
	Refusals       map[string]int
}

// startHostiles starts the hostile clients at the ramp's pace and returns
// once all are started; stop ends them and waits for them.
func startHostiles(o hostileOptions, u *url.URL, run string) (stop func() (hostileLoad, error)) {
	ctx, cancel := context.WithCancel(context.Background())
	h := &hostiles{o: o, u: u, busy: "/topic/" + run + ".busy.", topic: run, refusals: map[string]int{}}
	var wg sync.WaitGroup
	slots := make(chan struct{}, o.Concurrency)
	interval := time.Duration(float64(time.Second) / o.Ramp)
	rampStart := time.Now()
	for i := range o.N {
		if d := time.Until(rampStart.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d) // the ramp
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.client(ctx, i, slots)
		}()
	}
	return func() (hostileLoad, error) {
		cancel()
		wg.Wait()
		return hostileLoad{Attempts: int(h.attempts.Load()), Held: int(h.held.Load()), Refusals: h.refusals}, nil
	}
}

// hostileChild is what the parent tells a hostile-load child process.
type hostileChild struct {
	Options hostileOptions
	Run     string
}

// startHostileProcess runs the hostile clients in a child process
// (wsbench hostile-load), so that on a core they share with the probe
// the kernel's scheduler, not the Go scheduler of one saturated process,
// decides when the probe runs: in one process the probe's replies
// waited behind thousands of runnable hostile goroutines, and the load
// tool's own saturation was counted against the gateway. The child
// starts the clients, says "started", and stops them when its stdin
// ends, answering with a hostileLoad.
func startHostileProcess(o hostileOptions, run string) (func() (hostileLoad, error), error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "hostile-load")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("hostile: the hostile clients' process: %w", err)
	}
	br := bufio.NewReader(out)
	fail := func(err error) error {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("hostile: the hostile clients' process: %w", err)
	}
	if err := json.NewEncoder(in).Encode(hostileChild{Options: o, Run: run}); err != nil {
		return nil, fail(err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "started\n" {
		return nil, fail(fmt.Errorf("said %q (%v) instead of started", line, err))
	}
	return func() (hostileLoad, error) {
		in.Close()
		var l hostileLoad
		derr := json.NewDecoder(br).Decode(&l)
		if err := cmd.Wait(); err != nil || derr != nil {
			return l, fmt.Errorf("hostile: the hostile clients' process: %w", errors.Join(err, derr))
		}
		return l, nil
	}, nil
}

// hostileLoadCommand is the child process of startHostileProcess.
func hostileLoadCommand(stdin io.Reader, stdout io.Writer) error {
	br := bufio.NewReader(stdin)
	var c hostileChild
	if err := json.NewDecoder(br).Decode(&c); err != nil {
		return fmt.Errorf("hostile-load: %w", err)
	}
	u, err := url.Parse(c.Options.URL)
	if err != nil {
		return fmt.Errorf("hostile-load: %w", err)
	}
	stop := startHostiles(c.Options, u, c.Run)
	if _, err := io.WriteString(stdout, "started\n"); err != nil {
		stop()
		return err
	}
	io.Copy(io.Discard, br) // until the parent closes our stdin
	l, _ := stop()
	return json.NewEncoder(stdout).Encode(l)
}

// percentile of latencies in microseconds; 0 when there are none.
func percentile(l []time.Duration, q float64) float64 {
	if len(l) == 0 {
		return 0
	}
	slices.Sort(l)
	return float64(l[int(q*float64(len(l)-1))]) / 1e3
}

// rssSampler reads the gateway's RSS and the machine's TCP memory and
// keeps their peaks.
type rssSampler struct {
	statsURL           string
	pid                int
	peak               atomic.Int64
	tcpMem, tcpMemPeak atomic.Int64
}

func (s *rssSampler) read() (int64, error) {
	rss, err := serverRSS(s.statsURL, s.pid, false)
	if rss > s.peak.Load() {
		s.peak.Store(rss)
	}
	if m := tcpMemBytes(); m > 0 {
		s.tcpMem.Store(m)
		if m > s.tcpMemPeak.Load() {
			s.tcpMemPeak.Store(m)
		}
	}
	return rss, err
}

// tcpMemBytes is the kernel's TCP socket memory from /proc/net/sockstat
// (counted in pages); 0 where there is none to read.
func tcpMemBytes() int64 {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(f); i += 2 {
			if f[i] == "mem" {
				pages, _ := strconv.ParseInt(f[i+1], 10, 64)
				return pages * int64(os.Getpagesize())
			}
		}
	}
	return 0
}

// sample reads the RSS every interval until ctx ends, and once more then.
func (s *rssSampler) sample(ctx context.Context, every time.Duration) {
	if s.statsURL == "" && s.pid == 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.read()
			return
		case <-t.C:
			s.read()
		}
	}
}

// probe is the well-behaved client: it sends a small message to its own
// destination at a steady rate and times each one from when it was due
// until it comes back.
type probe struct {
	url, dest string
	rate      float64
	body      int
	start     time.Time
	done      chan struct{}
	wg        sync.WaitGroup

	mu       sync.Mutex
	conn     *stompConn
	sent     int
	due      []time.Time     // by seq
	got      []time.Duration // by seq; 0 while awaited
	errs     map[string]int
	redialed bool
}

func startProbe(url, dest string, rate float64, body int) (*probe, error) {
	p := &probe{url: url, dest: dest, rate: rate, body: body, done: make(chan struct{}), errs: map[string]int{}}
	if err := p.dial(); err != nil {
		return nil, err
	}
	p.start = time.Now()
	p.wg.Add(1)
	go p.send()
	return p, nil
}

// dial connects and subscribes; a session that ends is counted and
// replaced, so one refusal does not end the measurement.
func (p *probe) dial() error {
	c, err := dialSTOMP(p.url, "", "", "/", func(body []byte) {
		_, seq, _, err := parseBody(body)
		now := time.Now()
		p.mu.Lock()
		if err == nil && seq < len(p.got) && p.got[seq] == 0 {
			p.got[seq] = max(now.Sub(p.due[seq]), time.Nanosecond)
		}
		p.mu.Unlock()
	})
	if err != nil {
		return err
	}
	if err := c.subscribe(1, p.dest); err != nil {
		c.close()
		return err
	}
	p.mu.Lock()
	p.conn = c
	p.mu.Unlock()
	go func() { // what ends the session: a control frame the probe never asked for
		select {
		case why := <-c.ctrl:
			p.mu.Lock()
			if p.conn == c {
				p.errs[why]++
				p.conn = nil
			}
			p.mu.Unlock()
			c.close()
		case <-p.done:
		}
	}()
	return nil
}

func (p *probe) send() {
	defer p.wg.Done()
	interval := time.Duration(float64(time.Second) / p.rate)
	var buf, body []byte
	for seq := 0; ; seq++ {
		due := p.start.Add(time.Duration(seq) * interval)
		select {
		case <-p.done:
			return
		case <-time.After(time.Until(due)):
		}
		p.mu.Lock()
		c := p.conn
		p.due = append(p.due, due)
		p.got = append(p.got, 0)
		p.sent++
		p.mu.Unlock()
		if c == nil {
			if err := p.dial(); err != nil {
				p.mu.Lock()
				p.errs["redial: "+err.Error()]++
				p.mu.Unlock()
				continue
			}
			p.mu.Lock()
			c = p.conn
			p.mu.Unlock()
		}
		body = appendBody(body[:0], 0, seq, due, p.body)
		buf, _ = c.publish(buf, p.dest, body)
	}
}

// await waits, up to limit, until every round trip due before end is back.
func (p *probe) await(end time.Time, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		out := false
		for i, d := range p.due {
			if d.Before(end) && p.got[i] == 0 {
				out = true
				break
			}
		}
		p.mu.Unlock()
		if !out {
			return
		}
		time.Sleep(10 * time.Millisecond) // a load tool's poll, not a test's synchronisation
	}
}

// window is the latencies of the round trips due in [from, to); one not
// back yet counts as what it has waited so far.
func (p *probe) window(from, to time.Time) []time.Duration {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	var l []time.Duration
	for i, d := range p.due {
		if d.Before(from) || !d.Before(to) {
			continue
		}
		if g := p.got[i]; g > 0 {
			l = append(l, g)
		} else {
			l = append(l, now.Sub(d))
		}
	}
	return l
}

// finish waits (up to 2 s) for the round trips still out, stops the
// probe and counts what never came back.
func (p *probe) finish() (sent, lost int, errs map[string]int) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		p.mu.Lock()
		lost = 0
		for _, g := range p.got {
			if g == 0 {
				lost++
			}
		}
		sent = p.sent
		p.mu.Unlock()
		if lost == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // replies arrive on another goroutine; nothing to wait on but them
	}
	p.stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.errs) > 0 {
		errs = p.errs
	}
	return sent, lost, errs
}

func (p *probe) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	p.wg.Wait()
	p.mu.Lock()
	if p.conn != nil {
		p.conn.close()
		p.conn = nil
	}
	p.mu.Unlock()
}

// fanout publishes to the busy destinations in turn at a steady rate.
type fanout struct {
	c    *stompConn
	done chan struct{}
	wg   sync.WaitGroup
}

func startFanout(url, prefix string, topics int, rate float64, size int) (*fanout, error) {
	c, err := dialSTOMP(url, "", "", "/", func([]byte) {})
	if err != nil {
		return nil, err
	}
	f := &fanout{c: c, done: make(chan struct{})}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		t := time.NewTicker(time.Duration(float64(time.Second) / rate / float64(topics)))
		defer t.Stop()
		body := make([]byte, size)
		for i := range body {
			body[i] = 'b'
		}
		var buf []byte
		for i := 0; ; i++ {
			select {
			case <-f.done:
				return
			case <-t.C:
				buf, _ = c.publish(buf, prefix+strconv.Itoa(i%topics), body)
			}
		}
	}()
	return f, nil
}

func (f *fanout) stop() {
	close(f.done)
	f.wg.Wait()
	f.c.close()
}

// hostiles runs the hostile clients of one kind.
type hostiles struct {
	o        hostileOptions
	u        *url.URL
	busy     string // the busy destinations' prefix
	topic    string // prefix of the topics hostile publishes name
	attempts atomic.Int64
	held     atomic.Int64

	mu       sync.Mutex
	refusals map[string]int
}

// chunk is what hostile clients send as payload: unmasked with a zero
// masking key, so one buffer serves every client and costs no CPU.
var chunk = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = 'x'
	}
	return b
}()

// client is hostile client i: it acts, and once it is ended it comes back
// after the pause, until ctx ends.
func (h *hostiles) client(ctx context.Context, i int, slots chan struct{}) {
	src := net.IPv4(127, 0, 0, byte(2+i%h.o.Sources))
	for n := 0; ctx.Err() == nil; n++ {
		h.attempts.Add(1)
		why := h.once(ctx, src, i, n, slots)
		if ctx.Err() != nil {
			return
		}
		h.mu.Lock()
		h.refusals[why]++
		h.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(h.o.Pause):
		}
	}
}

// once is one hostile connection, from dial to its end; it returns how it
// was ended.
func (h *hostiles) once(ctx context.Context, src net.IP, i, n int, slots chan struct{}) string {
	if h.o.Kind == "slow-publish" {
		return h.slowPublish(ctx, src, i, slots)
	}
	rcvbuf := 0
	if h.o.Kind == "slow-reader" {
		rcvbuf = h.o.RcvBuf
	}
	slots <- struct{}{}
	c, err := dialHostile(h.u, src, rcvbuf)
	if err == nil && h.o.Kind != "silent" {
		err = c.exchange(0x1, stompConnect("", "", "/"), "CONNECTED", "CONNECTED")
	}
	<-slots
	if err != nil {
		if c != nil {
			c.close()
		}
		return endedBy(err)
	}
	defer c.close()
	stop := context.AfterFunc(ctx, c.close) // unblocks whatever the client waits on
	defer stop()
	h.held.Add(1)
	switch h.o.Kind {
	case "oversize":
		return h.oversize(c, n%2 == 1)
	case "silent":
		return awaitClose(c)
	case "fragments":
		if err := c.writeRaw(wsHeader(0x1, false, h.o.Size), h.o.Size); err != nil {
			return endedBy(err)
		}
		return awaitClose(c)
	case "partial-frame":
		return h.partialFrame(ctx, c, i)
	case "slow-reader":
		return h.slowReader(ctx, c, i)
	case "reader-control":
		if err := c.writeFrame(0x1, subscribeFrame(h.busy+strconv.Itoa(i%h.o.FanoutTopics))); err != nil {
			return endedBy(err)
		}
		return awaitClose(c)
	}
	return "unknown kind"
}

// oversize sends a message larger than the gateway takes, in one frame or
// in 512 KiB fragments, until the gateway ends the session.
func (h *hostiles) oversize(c *hostileConn, fragmented bool) string {
	ended := make(chan string, 1)
	go func() { ended <- awaitClose(c) }()
	total := h.o.MaxMessage + 1
	var err error
	if !fragmented {
		err = c.writeRaw(wsHeader(0x1, true, total), total)
	} else {
		for sent, op := 0, byte(0x1); sent < total && err == nil; sent, op = sent+512<<10, 0 {
			n := min(512<<10, total-sent)
			err = c.writeRaw(wsHeader(op, sent+n >= total, n), n)
		}
	}
	if err != nil {
		c.close() // the gateway stopped taking it: what did it say?
	}
	return <-ended
}

// partialFrame sends a SEND frame declaring Size bytes of body and
// trickles the body, 16 KiB a second, never its last trickleBytes: the
// frame is never complete before the gateway's message timeout.
func (h *hostiles) partialFrame(ctx context.Context, c *hostileConn, i int) string {
	const trickleBytes = 300
	head := fmt.Appendf(nil, "SEND\ndestination:/topic/%s.pf%d\ncontent-length:%d\n\n", h.topic, i, h.o.Size)
	if err := c.writeFrame(0x1, head); err != nil {
		return endedBy(err)
	}
	ended := make(chan string, 1)
	go func() { ended <- awaitClose(c) }()
	left := h.o.Size - trickleBytes
	return h.trickle(ctx, c, ended, func() error {
		n := min(max(left, 1), 16<<10)
		left -= n
		return c.writeRaw(wsHeader(0x1, true, n), n)
	})
}

// trickle writes a little every second until the gateway ends the session.
func (h *hostiles) trickle(ctx context.Context, c *hostileConn, ended chan string, write func() error) string {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case why := <-ended:
			return why
		case <-ctx.Done():
			return "run ended"
		case <-t.C:
			if write() != nil {
				c.close()
				return <-ended
			}
		}
	}
}

// slowReader subscribes to the busy destination and never reads. It
// writes a heart-beat EOL every second, which fails once the gateway has
// dropped it; then it reads what reached it, to learn what it was told.
func (h *hostiles) slowReader(ctx context.Context, c *hostileConn, i int) string {
	if err := c.writeFrame(0x1, subscribeFrame(h.busy+strconv.Itoa(i%h.o.FanoutTopics))); err != nil {
		return endedBy(err)
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return "run ended"
		case <-t.C:
		}
		if c.writeFrame(0x1, []byte{'\n'}) != nil {
			c.nc.SetReadDeadline(time.Now().Add(time.Second))
			return awaitClose(c)
		}
	}
}

// slowPublish is an HTTP publish declaring Size bytes of body that sends
// a byte a second.
func (h *hostiles) slowPublish(ctx context.Context, src net.IP, i int, slots chan struct{}) string {
	slots <- struct{}{}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: handshakeTimeout}
	nc, err := d.Dial("tcp", h.u.Host)
	<-slots
	if err != nil {
		return endedBy(errors.Unwrap(err))
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	h.held.Add(1)
	req := fmt.Sprintf("POST %s/%s.pub%d HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n",
		h.o.PublishPath, h.topic, i, h.u.Host, h.o.Size)
	if _, err := io.WriteString(nc, req); err != nil {
		return endedBy(err)
	}
	ended := make(chan string, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReaderSize(nc, 512), nil)
		if err != nil {
			ended <- endedBy(err)
			return
		}
		resp.Body.Close()
		ended <- "http " + strconv.Itoa(resp.StatusCode)
	}()
	c := &hostileConn{idleConn: idleConn{nc: nc}}
	return h.trickle(ctx, c, ended, func() error { _, err := nc.Write([]byte{'x'}); return err })
}

func subscribeFrame(dest string) []byte {
	return []byte("SUBSCRIBE\nid:1\ndestination:" + dest + "\nack:auto\n\n\x00")
}

// hostileConn is a hostile client's WebSocket, written against the RFC as
// idleConn is.
type hostileConn struct {
	idleConn
	closeOnce sync.Once
}

func (c *hostileConn) close() { c.closeOnce.Do(func() { c.nc.Close() }) }

// dialHostile connects from src with the given SO_RCVBUF (0: the
// kernel's) and upgrades.
func dialHostile(u *url.URL, src net.IP, rcvbuf int) (*hostileConn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: handshakeTimeout}
	if rcvbuf > 0 {
		// Before connect, so the window the client offers is small from
		// the start.
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
			return errors.Join(err, serr)
		}
	}
	nc, err := d.Dial("tcp", u.Host)
	if err != nil {
		return nil, errors.Unwrap(err)
	}
	c := &hostileConn{idleConn: idleConn{nc: nc, br: bufio.NewReaderSize(nc, 512)}}
	nc.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := c.start(u, connsOptions{Mode: "upgrade"}); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

// wsHeader is a masked client frame header for n payload bytes, with a
// zero masking key (the payload goes as it is).
func wsHeader(op byte, fin bool, n int) []byte {
	b := []byte{op, 0}
	if fin {
		b[0] |= 0x80
	}
	switch {
	case n < 126:
		b[1] = 0x80 | byte(n)
	case n < 1<<16:
		b[1] = 0x80 | 126
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b[1] = 0x80 | 127
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, 0, 0, 0, 0)
}

// writeRaw writes a header and n bytes of chunk after it.
func (c *hostileConn) writeRaw(hdr []byte, n int) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.nc.Write(hdr); err != nil {
		return err
	}
	for n > 0 {
		k := min(n, len(chunk))
		if _, err := c.nc.Write(chunk[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// awaitClose reads (and drops) what the gateway sends until it ends the
// session, and says how.
func awaitClose(c *hostileConn) string {
	for {
		op, payload, err := c.readFrame()
		if err != nil {
			return endedBy(err)
		}
		if op == 0x9 {
			c.writeFrame(0xA, payload)
		}
	}
}

// endedBy names how a hostile connection ended, in few enough words that
// the counts group: the close code the client received, else the error's
// class.
func endedBy(err error) string {
	s := err.Error()
	if rest, ok := strings.CutPrefix(s, "closed by the server: "); ok {
		code, _, _ := strings.Cut(rest, " ")
		return "ws " + code
	}
	if i := strings.Index(s, "closed by the server: "); i >= 0 { // during the login exchange
		return endedBy(errors.New(s[i:]))
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "no close frame (EOF)"
	case errors.Is(err, syscall.ECONNRESET), strings.Contains(s, "connection reset"):
		return "no close frame (reset)"
	case errors.Is(err, syscall.EPIPE), strings.Contains(s, "broken pipe"):
		return "no close frame (broken pipe)"
	case strings.Contains(s, "i/o timeout"):
		return "timeout"
	case strings.Contains(s, "use of closed network connection"):
		return "closed by the client"
	}
	return s
}
