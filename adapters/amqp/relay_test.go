package amqp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/internal/authtest"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/validate"
)

func startRelay(t *testing.T, o Options) string {
	t.Helper()
	return brokertest.ServeRoute(t, "/amqp", nil, func(e brokertest.RouteEnv) http.Handler {
		o.Origins, o.Conns, o.Log, o.Route, o.Backend = e.Origins, e.Conns, e.Log, "/amqp", "rabbitmq"
		if reflect.ValueOf(o.WS).IsZero() { // WSOptions holds a func: no ==
			o.WS = e.WS
		}
		return NewRelay(o)
	})
}

// wsConn is a net.Conn over a WebSocket, so amqp091-go can dial through
// the gateway: every Write is one binary message.
type wsConn struct {
	gws.BuiltinEventHandler
	conn   *gws.Conn
	msgs   chan []byte
	buf    []byte
	closed chan struct{}
	err    error

	// perFrame sends every AMQP frame as a message of its own, as a
	// client may: a basic.publish then arrives apart from its header.
	perFrame bool
	unsent   []byte
}

func (c *wsConn) OnMessage(_ *gws.Conn, m *gws.Message) { c.msgs <- bytes.Clone(m.Bytes()); m.Close() }
func (c *wsConn) OnClose(_ *gws.Conn, err error)        { c.err = err; close(c.closed) }

func (c *wsConn) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		select {
		case c.buf = <-c.msgs:
		case <-c.closed:
			select {
			case c.buf = <-c.msgs:
			default:
				return 0, io.EOF
			}
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}
func (c *wsConn) Write(p []byte) (int, error) {
	if !c.perFrame {
		return len(p), c.conn.WriteMessage(gws.OpcodeBinary, p)
	}
	c.unsent = append(c.unsent, p...)
	for {
		n := 8 // the protocol header
		if !bytes.HasPrefix(c.unsent, []byte("AMQP")) {
			if len(c.unsent) < 7 {
				break
			}
			n = 8 + int(binary.BigEndian.Uint32(c.unsent[3:]))
		}
		if len(c.unsent) < n {
			break
		}
		if err := c.conn.WriteMessage(gws.OpcodeBinary, c.unsent[:n]); err != nil {
			return 0, err
		}
		c.unsent = c.unsent[n:]
	}
	return len(p), nil
}

// Close lets the gateway's WebSocket close arrive first, as a browser
// would, so tests can read its code; then drops the socket.
func (c *wsConn) Close() error {
	select {
	case <-c.closed:
	case <-time.After(2 * time.Second):
	}
	return c.conn.NetConn().Close()
}
func (c *wsConn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr               { return c.conn.RemoteAddr() }
func (c *wsConn) SetDeadline(t time.Time) error      { return nil }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return nil }

func dialWS(t *testing.T, url string) *wsConn {
	t.Helper()
	c := &wsConn{msgs: make(chan []byte, 256), closed: make(chan struct{})}
	conn, _, err := gws.NewClient(c, &gws.ClientOption{Addr: url})
	if err != nil {
		t.Fatal(err)
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { c.Close() })
	return c
}

// amqpThrough opens an amqp091-go connection through the gateway with
// placeholder credentials.
func amqpThrough(t *testing.T, url string) *amqp091.Connection {
	t.Helper()
	conn, err := amqp091.DialConfig("amqp://placeholder:placeholder@gateway/", amqp091.Config{
		Dial: func(network, addr string) (net.Conn, error) { return dialWS(t, url), nil },
	})
	if err != nil {
		t.Fatalf("amqp through the gateway: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestRelayAMQP091(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	tap := brokertest.NewTapProxy(t, brokertest.RabbitAMQP(t))
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred}})
	conn := amqpThrough(t, url)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	ex := fmt.Sprintf("wsbridge-test-%d", time.Now().UnixNano())
	if err := ch.ExchangeDeclare(ex, "topic", false, true, false, false, amqp091.Table{"x-test": int32(1)}); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, amqp091.Table{"x-max-length": int32(100)})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "prices.*", ex, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	if err := ch.Qos(10, 0, false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	big := strings.Repeat("x", 300<<10) // spans many frames
	for i, body := range []string{"one", "two", big} {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, ex, "prices.eur", false, false, amqp091.Publishing{
			ContentType: "text/plain", Headers: amqp091.Table{"n": int32(i)}, Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("confirm %d: %v %v", i, ok, err)
		}
	}
	got, ok, err := ch.Get(q.Name, false)
	if err != nil || !ok || string(got.Body) != "one" || got.Headers["n"] != int32(0) {
		t.Fatalf("basic.get: %v %v %q %v", ok, err, got.Body, got.Headers)
	}
	got.Reject(true) // requeue
	deliveries, err := ch.Consume(q.Name, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < 3 {
		select {
		case d := <-deliveries:
			seen[string(d.Body[:min(3, len(d.Body))])] = true
			if d.ContentType != "text/plain" {
				t.Fatalf("content type %q", d.ContentType)
			}
			d.Ack(false)
		case <-ctx.Done():
			t.Fatalf("consumed %v", seen)
		}
	}
	if err := conn.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	tap.Close()
	sent := tap.Sent()
	if strings.Contains(sent, "placeholder") {
		t.Fatal("the client's credentials reached RabbitMQ")
	}
	if !strings.Contains(sent, "\x00"+cred.Username+"\x00") {
		t.Fatal("the keyring identity was not sent")
	}
}

func TestRelayAMQPBrokerSeesKeyringIdentity(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	tap := brokertest.NewTapProxy(t, brokertest.RabbitAMQP(t))
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred}})
	conn := amqpThrough(t, url)
	port := fmt.Sprint(tap.Ports()[0])
	out, err := exec.Command("rabbitmqctl", "list_connections", "peer_port", "user", "-q", "-s").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl: %v %s", err, out)
	}
	found := false
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == port {
			found = true
			if f[1] != cred.Username {
				t.Fatalf("RabbitMQ says the user is %q, want %q", f[1], cred.Username)
			}
		}
	}
	if !found {
		t.Fatalf("connection from port %s not listed:\n%s", port, out)
	}
	conn.Close()
}

// authFailureClose is client properties asking RabbitMQ to refuse a login
// with connection.close rather than by closing the socket, as
// @cloudamqp/amqp-client and most clients do (amqp091-go does not).
var authFailureClose = func() []byte {
	const name = "authentication_failure_close"
	inner := append(append([]byte{byte(len(name))}, name...), 't', 1)
	p := append([]byte{12}, "capabilities"...)
	p = append(p, 'F', 0, 0, 0, byte(len(inner)))
	return append(p, inner...)
}()

// TestRelayAMQPBrokerRefusesTheGatewaysCredential: with a wrong password
// in the keyring, RabbitMQ refuses the gateway's start-ok with
// connection.close 403. The client gets the code with a generic text;
// the operator's log gets the broker's words at WARN with the backend and
// the keyring entry (the route's own, or the identity's), never the
// password.
func TestRelayAMQPBrokerRefusesTheGatewaysCredential(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	addr := brokertest.RabbitAMQP(t)
	password := fmt.Sprintf("wrong-password-%d", time.Now().UnixNano())
	wrong := keyring.Credential{Username: cred.Username, Password: keyring.NewSecret(password)}
	cases := []struct {
		name, entry string
		route       bridge.RouteOptions
		login       string
	}{
		{"route credential", "rabbit-gateway", bridge.RouteOptions{Credential: &wrong, CredentialName: "rabbit-gateway"}, "anything"},
		{"per-identity credential", "user/alice", bridge.RouteOptions{Credential: &cred, CredentialName: "rabbit-gateway",
			Auth: authtest.JWTPolicy(t, func(o *auth.Options) {
				o.Credential, o.Lookup = "user/{sub}", authtest.Lookup(map[string]keyring.Credential{"user/alice": wrong})
			})},
			authtest.Token(t, "alice", []string{"writer"}, time.Hour, nil)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.route.Address = addr
			url, logs := startAuthRelay(t, Options{RouteOptions: c.route})
			ws := dialWS(t, url)
			ws.Write([]byte(validate.AMQPProtocolHeader))
			readFrame(t, ws) // connection.start
			ws.Write(startOkWith(authFailureClose, c.login))
			f := readFrame(t, ws)
			want := "ACCESS_REFUSED - " + bridge.BrokerRefusedCredential
			if len(f) < 13 || f[8] != 10 || f[10] != 50 || int(f[11])<<8|int(f[12]) != 403 || !strings.Contains(string(f), want) {
				t.Fatalf("got %q, want connection.close 403 %q", f, want)
			}
			if strings.Contains(string(f), cred.Username) {
				t.Fatalf("the client learnt the gateway's broker user %q: %q", cred.Username, f)
			}
			ws.Write(closeOkFrame) // as a client does; the broker then ends the connection
			select {
			case <-ws.closed:
			case <-time.After(10 * time.Second):
				t.Fatal("the connection stayed open")
			}
			logs.WaitFor(t, "broker refused the gateway's credential")
			var line string
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "broker refused the gateway's credential") {
					line = l
				}
			}
			for _, w := range []string{"level=WARN", "backend=rabbitmq", "keyring_entry=" + c.entry, "reply_code=403", "ACCESS_REFUSED"} {
				if !strings.Contains(line, w) {
					t.Errorf("log line lacks %q: %s", w, line)
				}
			}
			// The session's end says why, though the client's close-ok
			// closed it (it read client_closed at INFO).
			logs.WaitFor(t, "amqp connection closed")
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "amqp connection closed") && (!strings.Contains(l, "level=WARN") || !strings.Contains(l, "outcome=broker_refused")) {
					t.Errorf("close line: %s", l)
				}
			}
			if strings.Contains(logs.String(), password) {
				t.Fatalf("the password reached the logs:\n%s", logs)
			}
		})
	}
}

func TestRelayAMQPRejects(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	addr := brokertest.RabbitAMQP(t)
	t.Run("bad protocol header gets the right one back", func(t *testing.T) {
		url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Credential: &cred}})
		c := dialWS(t, url)
		c.Write([]byte("AMQP\x00\x01\x00\x00"))
		b := make([]byte, 8)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != validate.AMQPProtocolHeader {
			t.Fatalf("got %q %v", b, err)
		}
		<-c.closed
		var ce *gws.CloseError
		if !errors.As(c.err, &ce) || ce.Code != bridge.CloseProtocolError {
			t.Fatalf("close %v", c.err)
		}
	})
	t.Run("vhost not allowed", func(t *testing.T) {
		tap := brokertest.NewTapProxy(t, addr)
		url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred}})
		_, err := amqp091.DialConfig("amqp://x:y@gateway/secret-vhost", amqp091.Config{
			Dial: func(network, a string) (net.Conn, error) { return dialWS(t, url), nil },
		})
		// amqp091-go reports a connection.close during open as ErrVhost.
		if !errors.Is(err, amqp091.ErrVhost) {
			t.Fatalf("got %v, want the vhost refused", err)
		}
		tap.Close()
		if strings.Contains(tap.Sent(), "secret-vhost") {
			t.Fatal("the refused connection.open reached RabbitMQ")
		}
	})
	// After a real handshake, each class of bad frame gets connection.close
	// with its reply code and the WebSocket close, and never reaches RabbitMQ.
	bad := []struct {
		name  string
		frame []byte
		reply int
		code  uint16
	}{
		{"truncated short string", []byte{1, 0, 5, 0, 0, 0, 6, 0, 20, 0, 10, 9, 'z', 0xCE}, validate.AMQPSyntaxError, bridge.CloseProtocolError},
		{"bad frame end", []byte{1, 0, 5, 0, 0, 0, 5, 0, 20, 0, 10, 0, 'z'}, validate.AMQPFrameError, bridge.CloseProtocolError},
		{"unknown method", []byte{1, 0, 5, 0, 0, 0, 4, 0, 60, 0, 99, 0xCE}, validate.AMQPCommandInvalid, bridge.CloseProtocolError},
		{"body without publish", []byte{3, 0, 5, 0, 0, 0, 1, 'z', 0xCE}, validate.AMQPUnexpectedFrame, bridge.CloseProtocolError},
		{"channel beyond channel-max", []byte{1, 0x7f, 0xff, 0, 0, 0, 5, 0, 20, 0, 10, 0, 0xCE}, validate.AMQPChannelError, bridge.CloseProtocolError},
		{"frame over frame-max", []byte{3, 0, 5, 0, 0x10, 0, 0}, validate.AMQPFrameError, bridge.CloseTooLarge},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			tap := brokertest.NewTapProxy(t, addr)
			url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred}})
			var raw *wsConn
			conn, err := amqp091.DialConfig("amqp://x:y@gateway/", amqp091.Config{
				Dial: func(network, a string) (net.Conn, error) { raw = dialWS(t, url); return raw, nil },
			})
			if err != nil {
				t.Fatal(err)
			}
			closed := conn.NotifyClose(make(chan *amqp091.Error, 1))
			raw.Write(tt.frame)
			select {
			case e := <-closed:
				if e == nil || e.Code != tt.reply {
					t.Fatalf("got %v, want connection.close %d", e, tt.reply)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no connection.close")
			}
			<-raw.closed
			var ce *gws.CloseError
			if !errors.As(raw.err, &ce) || ce.Code != tt.code {
				t.Fatalf("WebSocket close %v, want %d", raw.err, tt.code)
			}
			tap.Close()
			if bytes.Contains([]byte(tap.Sent()), tt.frame[:7]) {
				t.Fatal("the bad frame reached RabbitMQ")
			}
		})
	}
	t.Run("broker unreachable", func(t *testing.T) {
		url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: brokertest.DeadAddr(t), Credential: &cred, DialTimeout: time.Second}})
		_, err := amqp091.DialConfig("amqp://x:y@gateway/", amqp091.Config{
			Dial: func(network, a string) (net.Conn, error) { return dialWS(t, url), nil },
		})
		if err == nil {
			t.Fatal("connected with the broker down")
		}
	})
}

// connection.update-secret would give the broker a new secret for the
// gateway's own login: it never reaches the broker, and the client is told
// why (connection.close 530) before the WebSocket closes.
func TestRelayAMQPRefusesUpdateSecret(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	tap := brokertest.NewTapProxy(t, brokertest.RabbitAMQP(t))
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred}})
	conn := amqpThrough(t, url)
	closed := conn.NotifyClose(make(chan *amqp091.Error, 1))
	err := conn.UpdateSecret("a-secret-of-the-client", "refresh")
	if err == nil {
		t.Fatal("update-secret succeeded through the gateway")
	}
	select {
	case e := <-closed:
		if e == nil || e.Code != 530 || !strings.Contains(e.Reason, "update-secret") {
			t.Fatalf("closed with %v, want 530 naming update-secret", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not closed")
	}
	tap.Close()
	if strings.Contains(tap.Sent(), "a-secret-of-the-client") {
		t.Fatal("the client's secret reached RabbitMQ")
	}
}
