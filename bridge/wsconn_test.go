package bridge

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/outcome"
)

// counter is an adapter session that answers each message with its
// length, and a refusal with a text message of its own before the close,
// as a protocol's error would.
type counter struct{ Session }

func (c *counter) GoAway(string)      { c.Finish("shutdown", "", CloseGoingAway, 0, nil) }
func (c *counter) OnMessage(b []byte) { c.Write(gws.OpcodeText, fmt.Appendf(nil, "got %d", len(b))) }
func (c *counter) Refuse(r Refusal) {
	c.Finish(r.Outcome, r.Reason, r.Code, gws.OpcodeText, []byte("refused: "+r.Reason))
}
func (c *counter) OnClose(err error) {
	c.Ended(err, "client_closed")
	c.Release()
}
func (c *counter) Begin(ws *gws.Conn, remote string, release func()) {
	c.Start(ws, remote, release, DefaultWSOptions(), func() {}, nil)
}

// serveCounter serves counter sessions with o and returns the address.
func serveCounter(t *testing.T, o WSOptions) string {
	t.Helper()
	return serveCounterRoute(t, o, false)
}

func serveCounterRoute(t *testing.T, o WSOptions, binaryOnly bool) string {
	t.Helper()
	return serveSessions(t, o, binaryOnly, func() gws.SessionStorage { return &counter{} })
}

// serveSessions serves the sessions newSession makes with o, and returns
// the address.
func serveSessions(t *testing.T, o WSOptions, binaryOnly bool, newSession func() gws.SessionStorage) string {
	t.Helper()
	origins, _ := front.NewOrigins(nil)
	a := &Admission{Protocol: "test", Route: "/", Origins: origins, Conns: front.NewConns(256, 0),
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Upgraders: NewUpgraders(Handler{}, o, nil, newSession)}
	a.Upgraders.BinaryOnly = binaryOnly
	srv := &http.Server{Handler: a}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// rawWS is a WebSocket client on a bare socket, so that a test can send
// frames as a hostile or careless client would: one huge frame, endless
// fragments, a message that stops halfway, and keep sending while the
// server closes.
type rawWS struct {
	conn net.Conn
	br   *bufio.Reader
}

func dialRawWS(t *testing.T, addr string) *rawWS {
	t.Helper()
	return dialRawWSFrom(t, addr, "")
}

// dialRawWSFrom is dialRawWS from the source address from ("": any).
func dialRawWSFrom(t *testing.T, addr, from string) *rawWS {
	t.Helper()
	d := net.Dialer{}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return &rawWS{conn: conn, br: br}
}

// header is a masked client frame header (the mask is zero: payloads go
// as they are).
func header(fin bool, op byte, n int) []byte {
	b := []byte{op, 0x80}
	if fin {
		b[0] |= 0x80
	}
	switch {
	case n < 126:
		b[1] |= byte(n)
	case n < 1<<16:
		b[1] |= 126
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b[1] |= 127
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, 0, 0, 0, 0)
}

func frame(fin bool, op byte, payload []byte) []byte {
	return append(header(fin, op, len(payload)), payload...)
}

// next reads one server frame.
func (r *rawWS) next() (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r.br, l[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(r.br, l[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint64(l[:]))
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(r.br, payload)
	return h[0] & 0x0f, payload, err
}

// untilClose reads the server's frames up to its close frame and returns
// the text messages before it and the close code and reason. A reset or
// EOF before the close frame fails the test: that is what a client would
// see as 1006.
func (r *rawWS) untilClose(t *testing.T) (texts []string, code uint16, reason string) {
	t.Helper()
	r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		op, p, err := r.next()
		if err != nil {
			t.Fatalf("connection ended without a close frame (a client sees 1006): %v; got %q before", err, texts)
		}
		switch op {
		case 1:
			texts = append(texts, string(p))
		case 8:
			if len(p) < 2 {
				t.Fatalf("close frame without a code: %x", p)
			}
			return texts, binary.BigEndian.Uint16(p), string(p[2:])
		}
	}
}

// keepSending writes chunks until the server stops reading or stop is
// closed, as a client stack that is still flushing a large message does.
func (r *rawWS) keepSending(t *testing.T, chunk []byte) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r.conn.SetWriteDeadline(time.Now().Add(3 * time.Second))
			if _, err := r.conn.Write(chunk); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })
}

// A message over the limit is refused at its header, and the client,
// still sending it, reads the refusal and the close frame 1009 instead of
// a reset: sent as one huge frame, or as endless fragments, or after a
// small message in the same write (which is answered first).
func TestOversizeMessageClosesWith1009TheClientReceives(t *testing.T) {
	o := DefaultWSOptions()
	o.MaxMessageBytes = 64 << 10
	addr := serveCounter(t, o)
	junk := bytes.Repeat([]byte("x"), 32<<10)
	cases := []struct {
		name  string
		first []byte // written at once
		more  []byte // then written over and over
		want  []string
	}{
		{"one huge frame", header(true, 2, 64<<20), junk, nil},
		{"a frame just over", frame(true, 2, make([]byte, 64<<10+1)), junk, nil},
		{"endless fragments", frame(false, 2, junk), frame(false, 0, junk), nil},
		{"after a small message", append(frame(true, 1, []byte("hello")), header(true, 2, 1<<30)...), junk, []string{"got 5"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRawWS(t, addr)
			if _, err := r.conn.Write(c.first); err != nil {
				t.Fatal(err)
			}
			r.keepSending(t, c.more)
			texts, code, reason := r.untilClose(t)
			if code != CloseTooLarge || !strings.Contains(reason, "websocket.max_message_bytes") {
				t.Fatalf("closed with %d %q, want 1009 naming websocket.max_message_bytes", code, reason)
			}
			want := append(c.want, "refused: message larger than 65536 bytes (websocket.max_message_bytes)")
			if fmt.Sprint(texts) != fmt.Sprint(want) {
				t.Fatalf("got %q before the close, want %q", texts, want)
			}
		})
	}
}

// On a binary-only route a text message is refused at its first frame's
// header with 1003, which the client receives, after the messages before
// it are answered; the session never sees it. Other routes take text.
func TestBinaryOnlyRouteRefusesTextWith1003(t *testing.T) {
	binary := serveCounterRoute(t, DefaultWSOptions(), true)
	cases := []struct {
		name string
		in   []byte
		want []string
	}{
		{"a text message", frame(true, 1, []byte("hello")), nil},
		{"after a binary message", append(frame(true, 2, []byte("ab")), frame(true, 1, []byte("hello"))...), []string{"got 2"}},
		{"a fragmented text message", append(frame(false, 1, []byte("he")), frame(true, 0, []byte("llo"))...), nil},
		{"text that is not UTF-8", frame(true, 1, []byte{0x30, 0xff}), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRawWS(t, binary)
			if _, err := r.conn.Write(c.in); err != nil {
				t.Fatal(err)
			}
			texts, code, reason := r.untilClose(t)
			if code != CloseUnsupportedData || !strings.Contains(reason, "binary messages only") {
				t.Fatalf("closed with %d %q, want 1003", code, reason)
			}
			want := append(c.want, "refused: "+reason)
			if fmt.Sprint(texts) != fmt.Sprint(want) {
				t.Fatalf("got %q before the close, want %q", texts, want)
			}
		})
	}
	for name, addr := range map[string]string{"binary on a binary-only route": binary, "text elsewhere": serveCounter(t, DefaultWSOptions())} {
		r := dialRawWS(t, addr)
		sent := byte(2)
		if addr != binary {
			sent = 1
		}
		r.conn.Write(frame(true, sent, []byte("hello")))
		r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if op, p, err := r.next(); err != nil || op != 1 || string(p) != "got 5" {
			t.Fatalf("%s: %d %q %v", name, op, p, err)
		}
	}
}

// A message whose rest never comes is refused at websocket.message_timeout
// (1008), however the client trickles it; messages that complete pass.
func TestMessageTimeout(t *testing.T) {
	o := DefaultWSOptions()
	o.MessageTimeout = 300 * time.Millisecond
	addr := serveCounter(t, o)

	r := dialRawWS(t, addr)
	start := time.Now()
	msg := frame(true, 2, make([]byte, 1000))
	r.conn.Write(msg[:500])
	go func() { // a byte every 50 ms: never done in time
		for i := 500; i < 600; i++ {
			time.Sleep(50 * time.Millisecond) // pacing, not synchronisation
			if _, err := r.conn.Write(msg[i : i+1]); err != nil {
				return
			}
		}
	}()
	texts, code, reason := r.untilClose(t)
	if code != ClosePolicy || !strings.Contains(reason, "websocket.message_timeout") || len(texts) != 1 {
		t.Fatalf("closed with %d %q after %q, want 1008 naming websocket.message_timeout", code, reason, texts)
	}
	if took := time.Since(start); took < o.MessageTimeout || took > o.MessageTimeout+2*time.Second {
		t.Fatalf("refused after %s, want about %s", took, o.MessageTimeout)
	}

	ok := dialRawWS(t, addr)
	ok.conn.Write(msg[:500])
	ok.conn.Write(msg[500:])
	ok.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if op, p, err := ok.next(); err != nil || op != 1 || string(p) != "got 1000" {
		t.Fatalf("a message sent in two parts: %d %q %v", op, p, err)
	}
}

// Messages being assembled take from the process-wide budget: past it a
// new one is refused with 1013, and what a finished or refused message
// held is given back.
func TestMessagesBeingAssembledTakeFromTheBudget(t *testing.T) {
	o := DefaultWSOptions()
	o.Budget = memory.NewBudget(100 << 10)
	addr := serveCounter(t, o)

	first := dialRawWS(t, addr)
	first.conn.Write(header(true, 2, 60<<10)) // declared, not yet sent
	waitFor(t, func() bool { return o.Budget.Used() == 60<<10 })

	second := dialRawWS(t, addr)
	second.conn.Write(header(true, 2, 60<<10))
	second.keepSending(t, make([]byte, 1<<10))
	texts, code, reason := second.untilClose(t)
	if code != CloseTryAgainLater || !strings.Contains(reason, "limits.memory_bytes") || len(texts) != 1 {
		t.Fatalf("closed with %d %q after %q, want 1013 naming limits.memory_bytes", code, reason, texts)
	}

	first.conn.Write(make([]byte, 60<<10))
	first.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if op, p, err := first.next(); err != nil || op != 1 || string(p) != fmt.Sprint("got ", 60<<10) {
		t.Fatalf("the first message: %d %q %v", op, p, err)
	}
	waitFor(t, func() bool { return o.Budget.Used() == 0 })
}

// A fragmented message holds twice what it declares (gws grows the buffer
// it gathers fragments in by doubling), so it takes that from the budget:
// here 600 KiB in two fragments is refused where one frame fits.
func TestFragmentedMessagesTakeWhatGWSAllocates(t *testing.T) {
	o := DefaultWSOptions()
	o.Budget = memory.NewBudget(1 << 20)
	addr := serveCounter(t, o)
	half := make([]byte, 300<<10)

	whole := dialRawWS(t, addr)
	whole.conn.Write(header(true, 2, 600<<10))
	waitFor(t, func() bool { return o.Budget.Used() == 600<<10 })
	whole.conn.Close()
	waitFor(t, func() bool { return o.Budget.Used() == 0 })

	r := dialRawWS(t, addr)
	r.conn.Write(frame(false, 2, half))
	r.conn.Write(header(false, 0, len(half)))
	r.keepSending(t, half[:1<<10])
	if _, code, reason := r.untilClose(t); code != CloseTryAgainLater || !strings.Contains(reason, "limits.memory_bytes") {
		t.Fatalf("closed with %d %q, want 1013 naming limits.memory_bytes", code, reason)
	}
	waitFor(t, func() bool { return o.Budget.Used() == 0 })
}

// A message of at most memory.OwnBytes is the connection's own: when others have
// spent the budget it still passes, though it arrives in two reads; a
// larger one in two reads is refused.
func TestSmallMessagesDoNotWaitForTheBudget(t *testing.T) {
	o := DefaultWSOptions()
	o.Budget = memory.NewBudget(0) // spent
	addr := serveCounter(t, o)
	for _, n := range []int{1000, memory.OwnBytes, memory.OwnBytes + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := dialRawWS(t, addr)
			msg := frame(true, 2, make([]byte, n))
			r.conn.Write(msg[:len(msg)/2])
			time.Sleep(50 * time.Millisecond) // pacing: the halves arrive in two reads
			r.conn.Write(msg[len(msg)/2:])
			if n > memory.OwnBytes {
				if _, code, reason := r.untilClose(t); code != CloseTryAgainLater || !strings.Contains(reason, "limits.memory_bytes") {
					t.Fatalf("closed with %d %q, want 1013 naming limits.memory_bytes", code, reason)
				}
				return
			}
			r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if op, p, err := r.next(); err != nil || op != 1 || string(p) != fmt.Sprint("got ", n) {
				t.Fatalf("%d %q %v", op, p, err)
			}
		})
	}
}

// A refused client's connection is gone within the linger bound even when
// it never closes its side, and the sessions' goroutines end.
func TestLingeringCloseIsBounded(t *testing.T) {
	base := runtime.NumGoroutine()
	o := DefaultWSOptions()
	o.MaxMessageBytes = 1 << 10
	addr := serveCounter(t, o)
	r := dialRawWS(t, addr)
	r.conn.Write(header(true, 2, 1<<20))
	r.keepSending(t, make([]byte, 8<<10))
	r.untilClose(t)
	start := time.Now()
	r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, r.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the gateway kept the socket open")
	}
	if took := time.Since(start); took > 2*lingerTime+time.Second {
		t.Fatalf("the socket closed %s after the close frame, want within about %s", took, lingerTime)
	}
	r.conn.Close()
	waitFor(t, func() bool { return runtime.NumGoroutine() <= base+2 }) // the test's own server goroutines
}

// Past the process-wide linger budget a refused client's socket is
// closed right after the close frame instead of being drained for up to
// lingerTime: a flood of clients over a limit cannot make the gateway
// spend its CPU reading and dropping what they send.
func TestLingerBudgetCutsTheDrainShort(t *testing.T) {
	for _, c := range []struct {
		name    string
		linger  *Linger
		lingers bool
	}{
		{"no budget", nil, true},
		{"budget spent", NewLinger(4 << 10), false}, // a drain read of 8 KiB never fits
	} {
		t.Run(c.name, func(t *testing.T) {
			o := DefaultWSOptions()
			o.MaxMessageBytes = 1 << 10
			o.Linger = c.linger
			took := refusedWhileSending(t, dialRawWS(t, serveCounter(t, o)))
			if c.lingers && took < lingerTime/2 || !c.lingers && took > lingerTime/2 {
				t.Fatalf("the socket closed %s after the close frame; lingering: %v (for up to %s)", took, c.lingers, lingerTime)
			}
		})
	}
}

// An address refused again and again (a hostile client reconnecting to
// push oversize messages) gets no lingering close once it is a repeat
// offender, and so cannot spend the linger budget that clients elsewhere
// need for their close frames; another address still gets its linger.
func TestLingerSkipsRepeatOffenders(t *testing.T) {
	o := DefaultWSOptions()
	o.MaxMessageBytes = 1 << 10
	o.Linger = NewLinger(DefaultLingerBytesPerSecond)
	addr := serveCounter(t, o)
	// Refused until the gateway has counted lingerRepeats refusals of the
	// address: one whose client hung up before the gateway's refusal path
	// ran may not count, which a loaded machine makes likelier.
	refused := func() int {
		o.Linger.mu.Lock()
		defer o.Linger.mu.Unlock()
		return o.Linger.refused["127.0.0.1"]
	}
	for i := 0; refused() < lingerRepeats; i++ {
		if i == 4*lingerRepeats {
			t.Fatalf("%d refusals counted of %d", refused(), i)
		}
		r := dialRawWSFrom(t, addr, "127.0.0.1")
		r.conn.Write(header(true, 2, 1<<20))
		r.untilClose(t)
		r.conn.Close() // the drain ends at once
	}
	for _, c := range []struct {
		from    string
		lingers bool
	}{{"127.0.0.1", false}, {"127.0.0.2", true}} {
		t.Run(c.from, func(t *testing.T) {
			took := refusedWhileSending(t, dialRawWSFrom(t, addr, c.from))
			if c.lingers && took < lingerTime/2 || !c.lingers && took > lingerTime/2 {
				t.Fatalf("the socket closed %s after the close frame; lingering: %v (for up to %s)", took, c.lingers, lingerTime)
			}
		})
	}
}

// refusedWhileSending has r send a message over the limit and then keep
// sending, slowly, as a client stack flushing it does; it returns how
// long after the close frame the gateway closed the socket (the client's
// writes then fail).
func refusedWhileSending(t *testing.T, r *rawWS) time.Duration {
	t.Helper()
	r.conn.Write(header(true, 2, 1<<20))
	done, failed := make(chan struct{}), make(chan time.Time, 1)
	t.Cleanup(func() { close(done) })
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if _, err := r.conn.Write(make([]byte, 8<<10)); err != nil {
				failed <- time.Now()
				return
			}
		}
	}()
	if _, code, _ := r.untilClose(t); code != CloseTooLarge {
		t.Fatalf("closed with %d, want 1009", code)
	}
	start := time.Now()
	select {
	case end := <-failed:
		return end.Sub(start)
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway kept the socket open")
	}
	return 0
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() { // no event to wait on: the state is internal
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkWSConnScan is the frame following on the read path for a read
// holding many small messages: it must not allocate.
func BenchmarkWSConnScan(b *testing.B) {
	var buf []byte
	payload := make([]byte, 128)
	rand.Read(payload)
	for range 64 {
		buf = append(buf, frame(true, 2, payload)...)
	}
	c := &wsConn{maxMessage: 1 << 20, timeout: time.Second}
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if n, r := c.scan(buf); n != len(buf) || r != nil {
			b.Fatal(n, r)
		}
	}
}

// flooder writes 256 KiB messages to a client that asked for them until a
// write fails, and reports the outcome its session ended with.
type flooder struct {
	Session
	ended chan outcome.Outcome
}

func (f *flooder) GoAway(string) { f.Finish("shutdown", "", CloseGoingAway, 0, nil) }
func (f *flooder) OnMessage([]byte) {
	go func() { // as an upstream goroutine would
		big := make([]byte, 256<<10)
		for f.Write(gws.OpcodeBinary, big) {
		}
	}()
}
func (f *flooder) OnClose(err error) {
	outcome, _, _ := f.Ended(err, "client_closed")
	f.ended <- outcome
	f.Release()
}
func (f *flooder) Begin(ws *gws.Conn, remote string, release func()) {
	o := DefaultWSOptions()
	o.WriteTimeout = 200 * time.Millisecond
	f.Start(ws, remote, release, o, func() {}, nil)
}

// A client that stops reading is dropped at the write timeout, and the
// close log line says write_timeout, not that the client closed.
func TestStalledReaderEndsAsWriteTimeout(t *testing.T) {
	f := &flooder{ended: make(chan outcome.Outcome, 1)}
	origins, _ := front.NewOrigins(nil)
	a := &Admission{Protocol: "test", Route: "/", Origins: origins, Conns: front.NewConns(10, 0),
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Upgraders: NewUpgraders(Handler{}, DefaultWSOptions(), nil, func() gws.SessionStorage { return f })}
	srv := &http.Server{Handler: a}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	r := dialRawWS(t, ln.Addr().String())
	r.conn.Write(frame(true, 1, []byte("flood me"))) // and never read again
	select {
	case outcome := <-f.ended:
		if outcome != "write_timeout" {
			t.Fatalf("outcome %q, want write_timeout", outcome)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the stalled reader was not dropped")
	}
}

// slowFirst is a counter session whose handler takes hold of the read
// loop for its first message, as a busy gateway's would.
type slowFirst struct {
	counter
	hold time.Duration
	once sync.Once
}

func (s *slowFirst) OnMessage(b []byte) {
	s.once.Do(func() { time.Sleep(s.hold) }) // the handler's work, not synchronisation
	s.counter.OnMessage(b)
}

// A message the client has sent whole is not refused for the message
// timeout because the gateway's read loop was held up elsewhere: the
// client is not trickling, the gateway is slow. A message whose bytes
// really are missing is still refused (TestMessageTimeout).
func TestMessageTimeoutSparesAMessageTheGatewayHasNotRead(t *testing.T) {
	o := DefaultWSOptions()
	o.MessageTimeout = 200 * time.Millisecond
	addr := serveSessions(t, o, false, func() gws.SessionStorage { return &slowFirst{hold: 4 * o.MessageTimeout} })

	r := dialRawWS(t, addr)
	second := frame(true, 2, make([]byte, 3000))
	// The first message whole and the second's start in one write, which
	// the gateway reads together (its read buffer is 1 KiB): the second
	// is begun, its timer armed, when the first one's handler holds the
	// read loop. Its rest follows at once and waits in the kernel.
	r.conn.Write(append(frame(true, 2, []byte("first")), second[:500]...))
	r.conn.Write(second[500:])
	r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, want := range []string{"got 5", "got 3000"} {
		op, p, err := r.next()
		if err != nil || op != 1 || string(p) != want {
			t.Fatalf("want %q: got op %d %q %v", want, op, p, err)
		}
	}
}

// serveIntake serves counters behind an intake of rate bytes a second
// for messages of up to maxMessage, and takes every lane with a 64 KiB
// message never finished (from addresses 127.0.1.x), and the intake's
// burst with one more, from from: large messages after them book the rate. tweak, if set, changes
// the options first.
func serveIntake(t *testing.T, rate, maxMessage int, from string, tweak func(*WSOptions)) (string, WSOptions) {
	t.Helper()
	o := DefaultWSOptions()
	o.Budget = memory.NewBudget(64 << 20)
	o.Intake = NewIntake(rate, maxMessage)
	burst := max(rate/4, 2*maxMessage)
	o.MaxMessageBytes = burst
	if tweak != nil {
		tweak(&o)
	}
	addr := serveCounter(t, o)
	for i := range intakeLanes {
		dialRawWSFrom(t, addr, laneAddr(i)).conn.Write(header(true, 2, 64<<10))
	}
	waitFor(t, func() bool { return o.Budget.Used() == intakeLanes*64<<10 })
	dialRawWSFrom(t, addr, from).conn.Write(header(true, 2, burst))
	waitFor(t, func() bool { return o.Budget.Used() == intakeLanes*64<<10+int64(burst) })
	return addr, o
}

// Large messages are taken in at websocket.large_message_bytes_per_second
// once the intake's lanes are taken: past its burst one waits its turn
// and then arrives whole, one whose turn does not come within
// maxIntakeWait is refused with 1013 naming the key and a retry hint (the
// client reads it), and a small message never waits.
func TestLargeMessagesTakeTheirTurn(t *testing.T) {
	addr, o := serveIntake(t, 1<<20, 4<<20, "127.0.0.1", nil) // its burst: 8 MiB

	// 1.5 MiB more: its turn 1.5 s later at 1 MiB/s.
	const later = 3 << 19
	waiting := dialRawWS(t, addr)
	go func() {
		waiting.conn.Write(frame(true, 2, make([]byte, later)))
	}()
	waitFor(t, func() bool { return o.Intake.Waiting() == 1 })

	small := dialRawWS(t, addr)
	msg := frame(true, 2, make([]byte, memory.OwnBytes))
	small.conn.Write(msg[:len(msg)/2])
	time.Sleep(50 * time.Millisecond) // pacing: the halves arrive in two reads
	small.conn.Write(msg[len(msg)/2:])
	small.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if op, p, err := small.next(); err != nil || op != 1 || string(p) != fmt.Sprint("got ", memory.OwnBytes) {
		t.Fatalf("the small message: %d %q %v", op, p, err)
	}
	waiting.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	if _, _, err := waiting.next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the large message was answered before the small one that came after it: %v", err)
	}

	// 4 MiB after those: its turn would come 4 s after the other's.
	refused := dialRawWS(t, addr)
	refused.conn.Write(header(true, 2, 4<<20))
	refused.keepSending(t, make([]byte, 16<<10))
	texts, code, reason := refused.untilClose(t)
	if code != CloseTryAgainLater || !strings.Contains(reason, "websocket.large_message_bytes_per_second); retry in ") || len(texts) != 1 {
		t.Fatalf("closed with %d %q after %q, want 1013 naming websocket.large_message_bytes_per_second and a retry hint", code, reason, texts)
	}

	waiting.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if op, p, err := waiting.next(); err != nil || op != 1 || string(p) != fmt.Sprint("got ", later) {
		t.Fatalf("the message that waited its turn: %d %q %v", op, p, err)
	}
	if n := o.Intake.Waiting(); n != 0 {
		t.Fatalf("%d messages still waiting", n)
	}
}

// A small message in the same read as the start of a large one that must
// wait for its turn is not held back with it.
func TestSmallMessageDoesNotWaitWithTheLargeOneAfterIt(t *testing.T) {
	addr, o := serveIntake(t, 256<<10, 1<<20, "127.0.0.1", nil) // its burst: 2 MiB

	r := dialRawWS(t, addr)
	r.conn.Write(append(frame(true, 2, []byte("small")), header(true, 2, 1<<20)...))
	r.conn.SetReadDeadline(time.Now().Add(time.Second)) // the large one's turn: 4 s (refused at 2 s)
	if op, p, err := r.next(); err != nil || op != 1 || string(p) != "got 5" {
		t.Fatalf("the small message: %d %q %v", op, p, err)
	}
	// The large one then waits (from the read after the one that held
	// them both).
	waitFor(t, func() bool { return o.Intake.Waiting() == 1 })
}

// A few clients sending large messages back to back take the intake's
// lanes and never book its rate: 20 MiB in 1 MiB messages from one client
// all arrive, where at 1 MiB/s with an 8 MiB burst some would wait past
// maxIntakeWait and be refused.
func TestLargeMessagesOnALaneDoNotBookTheRate(t *testing.T) {
	o := DefaultWSOptions()
	o.Budget = memory.NewBudget(64 << 20)
	o.Intake = NewIntake(1<<20, 4<<20)
	addr := serveCounter(t, o)
	r := dialRawWS(t, addr)
	go func() {
		for range 20 {
			r.conn.Write(frame(true, 2, make([]byte, 1<<20)))
		}
	}()
	r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range 20 {
		if op, p, err := r.next(); err != nil || op != 1 || string(p) != fmt.Sprint("got ", 1<<20) {
			t.Fatalf("message %d: %d %q %v", i, op, p, err)
		}
	}
}

// A fragmented message waits for its turn once, at its first fragment:
// what later fragments add is booked without waiting, so an honest
// message sent at once is not timed out by waits for each fragment.
func TestFragmentedMessageWaitsOnce(t *testing.T) {
	addr, _ := serveIntake(t, 1<<20, 1<<20, "127.0.0.1", func(o *WSOptions) { o.MessageTimeout = time.Second })

	// 16 fragments of 64 KiB: booked twice over, 2 MiB, 2 s at 1 MiB/s
	// if every fragment waited.
	r := dialRawWS(t, addr)
	chunk := make([]byte, 64<<10)
	var msg []byte
	for i := range 16 {
		op := byte(0)
		if i == 0 {
			op = 2
		}
		msg = append(msg, frame(i == 15, op, chunk)...)
	}
	go r.conn.Write(msg)
	r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if op, p, err := r.next(); err != nil || op != 1 || string(p) != fmt.Sprint("got ", 1<<20) {
		t.Fatalf("the fragmented message: %d %q %v", op, p, err)
	}
}

// Turns go to addresses in rotation: one address with many large messages
// waiting, over many connections, does not make another address's
// message wait behind all of them (first come first served, it would be
// refused, its turn 2.5 s away); the address's own last one is refused.
func TestIntakeTurnsRotateOverAddresses(t *testing.T) {
	addr, o := serveIntake(t, 2<<20, 4<<20, "127.0.0.2", nil) // its burst: 8 MiB; a 1 MiB turn each 0.5 s
	var hog []*rawWS
	for i := range 5 {
		r := dialRawWSFrom(t, addr, "127.0.0.2")
		r.conn.Write(header(true, 2, 1<<20))
		r.keepSending(t, make([]byte, 16<<10))
		hog = append(hog, r)
		waitFor(t, func() bool { return o.Intake.Waiting() == i+1 })
	}

	other := dialRawWSFrom(t, addr, "127.0.0.3")
	go other.conn.Write(frame(true, 2, make([]byte, 1<<20)))
	other.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if op, p, err := other.next(); err != nil || op != 1 || string(p) != fmt.Sprint("got ", 1<<20) {
		t.Fatalf("the other address's message: %d %q %v", op, p, err)
	}
	if _, code, reason := hog[4].untilClose(t); code != CloseTryAgainLater || !strings.Contains(reason, "websocket.large_message_bytes_per_second") {
		t.Fatalf("the address's fifth waiting message: closed with %d %q, want 1013", code, reason)
	}
}

// One address may have intakeWaitersPerAddress messages waiting for their
// turn (their bytes wait in the kernel, outside the budget); the next is
// refused at once, while another address's message still waits its turn.
func TestIntakeWaitersPerAddressAreBounded(t *testing.T) {
	addr, o := serveIntake(t, 64<<10, 1<<20, "127.0.0.2", nil) // its burst: 2 MiB; a 1 MiB turn each 16 s
	for i := range intakeWaitersPerAddress {
		dialRawWSFrom(t, addr, "127.0.0.2").conn.Write(header(true, 2, 1<<20))
		waitFor(t, func() bool { return o.Intake.Waiting() == i+1 })
	}
	other := dialRawWSFrom(t, addr, "127.0.0.3")
	other.conn.Write(header(true, 2, 1<<20))
	waitFor(t, func() bool { return o.Intake.Waiting() == intakeWaitersPerAddress+1 })

	start := time.Now()
	over := dialRawWSFrom(t, addr, "127.0.0.2")
	over.conn.Write(header(true, 2, 1<<20))
	if _, code, reason := over.untilClose(t); code != CloseTryAgainLater || !strings.Contains(reason, "websocket.large_message_bytes_per_second") {
		t.Fatalf("closed with %d %q, want 1013", code, reason)
	}
	if waited := time.Since(start); waited >= maxIntakeWait {
		t.Fatalf("refused after %s, as a message whose turn did not come; want at once", waited)
	}
	if n := o.Intake.Waiting(); n != intakeWaitersPerAddress+1 {
		t.Fatalf("%d messages waiting, want the %d before", n, intakeWaitersPerAddress+1)
	}
}
