package stomp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/validate"
)

func brokerAddr(t testing.TB) string                 { return brokertest.RabbitSTOMP(t) }
func testCredential(t testing.TB) keyring.Credential { return brokertest.RabbitCredential(t) }

// gateway is a relay route served on a loopback port.
type gateway struct {
	url   string
	conns *front.Conns
	logs  *syncBuffer
}

func startGateway(t testing.TB, o Options) *gateway {
	t.Helper()
	logs := newSyncBuffer()
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(logs, nil))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway logs:\n%s", logs)
		}
	})
	if o.Route == "" {
		o.Route = "/stomp"
	}
	if o.Backend == "" {
		o.Backend = "rabbitmq"
	}
	var conns *front.Conns
	url := brokertest.ServeRoute(t, o.Route, o.Log, func(e brokertest.RouteEnv) http.Handler {
		if o.Origins == nil {
			o.Origins = e.Origins
		}
		o.Conns, conns = e.Conns, e.Conns
		if reflect.ValueOf(o.WS).IsZero() { // WSOptions holds a func: no ==
			o.WS = e.WS
		}
		return NewRelay(o)
	})
	return &gateway{url: url, conns: conns, logs: logs}
}

// syncBuffer collects log output and lets a test wait for a line.
type syncBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{wrote: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case s.wrote <- struct{}{}:
	default:
	}
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// waitFor waits until the logs contain want.
func (s *syncBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for !strings.Contains(s.String(), want) {
		select {
		case <-s.wrote:
		case <-timeout:
			t.Fatalf("logs lack %q within 10s:\n%s", want, s)
		}
	}
}

// wsMsg is one WebSocket message received by a test client.
type wsMsg struct {
	op   gws.Opcode
	data []byte
}

// client is a raw WebSocket client for sending exact bytes and reading
// exact messages.
type client struct {
	conn      *gws.Conn
	msgs      chan wsMsg
	done      chan struct{}
	closeErr  error
	closeOnce sync.Once
	mute      atomic.Bool   // do not answer pings, like a dead peer
	pings     chan struct{} // one per ping received
}

func (c *client) OnOpen(*gws.Conn) {}
func (c *client) OnPing(s *gws.Conn, p []byte) {
	select {
	case c.pings <- struct{}{}:
	default:
	}
	if !c.mute.Load() {
		s.WritePong(p)
	}
}
func (c *client) OnPong(*gws.Conn, []byte) {}
func (c *client) OnClose(_ *gws.Conn, err error) {
	c.closeOnce.Do(func() { c.closeErr = err; close(c.done) })
}
func (c *client) OnMessage(_ *gws.Conn, m *gws.Message) {
	c.msgs <- wsMsg{m.Opcode, bytes.Clone(m.Bytes())}
	m.Close()
}

func dial(t *testing.T, url string, header http.Header) *client {
	t.Helper()
	c, err := tryDial(url, header)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.NetConn().Close(); <-c.done })
	return c
}

func tryDial(url string, header http.Header) (*client, error) {
	c := &client{msgs: make(chan wsMsg, 1024), done: make(chan struct{}), pings: make(chan struct{}, 16)}
	if header == nil {
		header = http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}
	}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{Addr: url, RequestHeader: header, ReadMaxPayloadSize: 64 << 20})
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(resp.Body)
			return nil, fmt.Errorf("status %d: %s: %w", resp.StatusCode, body, err)
		}
		return nil, err
	}
	c.conn = conn
	go conn.ReadLoop()
	return c, nil
}

func (c *client) send(t *testing.T, s string) {
	t.Helper()
	if err := c.conn.WriteMessage(gws.OpcodeText, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

// next returns the next message, failing after a generous deadline.
func (c *client) next(t *testing.T) wsMsg {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-c.done:
		select {
		case m := <-c.msgs:
			return m
		default:
		}
		t.Fatalf("connection closed (%v) while waiting for a message", c.closeErr)
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return wsMsg{}
}

// frame reads the next message that is a frame, skipping heart-beats. A
// frame's message may end in EOLs, never hold a second frame.
func (c *client) frame(t *testing.T) *validate.STOMPFrame {
	t.Helper()
	for {
		m := c.next(t)
		if len(bytes.Trim(m.data, "\r\n")) == 0 {
			continue
		}
		sc := validate.NewSTOMPScanner(validate.STOMPLimits{MaxFrameBytes: 64 << 20}, true)
		n, f, err := sc.Next(m.data)
		if err != nil || f == nil || len(bytes.Trim(m.data[n:], "\r\n")) != 0 {
			t.Fatalf("message is not exactly one frame (n=%d, err=%v): %q", n, err, m.data)
		}
		return f
	}
}

// closed waits for the server's close and returns its code.
func (c *client) closed(t *testing.T) uint16 {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed within 10s")
	}
	var ce *gws.CloseError
	if errors.As(c.closeErr, &ce) {
		return ce.Code
	}
	t.Fatalf("closed without a close frame: %v", c.closeErr)
	return 0
}

// connect sends a STOMP 1.2 CONNECT and expects CONNECTED.
func (c *client) connect(t *testing.T) {
	t.Helper()
	c.send(t, connect12)
	if f := c.frame(t); f.Command != validate.CmdConnected {
		t.Fatalf("got %s %q, want CONNECTED", f.Command, f.Raw)
	}
}

// expectError expects an ERROR frame whose message mentions mention, then
// the close code.
func (c *client) expectError(t *testing.T, mention string, code uint16) {
	t.Helper()
	f := c.frame(t)
	if f.Command != validate.CmdError {
		t.Fatalf("got %s %q, want ERROR", f.Command, f.Raw)
	}
	if msg := header(t, f, "message"); !strings.Contains(msg, mention) {
		t.Fatalf("ERROR message %q does not mention %q", msg, mention)
	}
	if got := c.closed(t); got != code {
		t.Fatalf("close code %d, want %d", got, code)
	}
}

func header(t *testing.T, f *validate.STOMPFrame, name string) string {
	t.Helper()
	v, _ := f.Header(name)
	return string(v)
}

// waitGoroutines waits for the goroutine count to return to base; there is
// no event for a goroutine's end, so it polls.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d, baseline %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stompLogin returns the login RabbitMQ recorded for the STOMP connection
// coming from local port port.
func stompLogin(t *testing.T, port int) string {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "list_stomp_connections", "peer_port", "auth_login", "-q", "-s").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == fmt.Sprint(port) {
			return f[1]
		}
	}
	t.Fatalf("no STOMP connection from port %d in:\n%s", port, out)
	return ""
}

func uniqueName(t testing.TB) string {
	return fmt.Sprintf("wsbridge-test-%s-%d", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()), time.Now().UnixNano())
}

// uniqueQueue is uniqueName for a queue the test makes on RabbitMQ, which
// is deleted when the test ends; call it before starting the gateway (see
// brokertest.RabbitQueue).
func uniqueQueue(t testing.TB) string { return brokertest.RabbitQueue(t, uniqueName(t)) }
