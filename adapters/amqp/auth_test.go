package amqp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/internal/authtest"
	"github.com/wsbridge/wsbridge/validate"
)

// logBuffer collects a route's logs.
func startAuthRelay(t *testing.T, o Options) (string, *brokertest.Logs) {
	t.Helper()
	logs := &brokertest.Logs{}
	return brokertest.ServeRoute(t, "/amqp", slog.New(slog.NewTextHandler(logs, nil)), func(e brokertest.RouteEnv) http.Handler {
		o.Origins, o.Conns, o.Log, o.Route, o.Backend, o.WS = e.Origins, e.Conns, e.Log, "/amqp", "rabbitmq", e.WS
		return NewRelay(o)
	}), logs
}

func dialToken(t *testing.T, url, token string) (*amqp091.Connection, *wsConn, error) {
	t.Helper()
	var raw *wsConn
	conn, err := amqp091.DialConfig("amqp://gateway/", amqp091.Config{
		SASL: []amqp091.Authentication{&amqp091.PlainAuth{Username: "whoever", Password: token}},
		Dial: func(network, addr string) (net.Conn, error) { raw = dialWS(t, url); return raw, nil },
	})
	if err == nil {
		t.Cleanup(func() { conn.Close() })
	}
	return conn, raw, err
}

// TestAuthLogin: the token as the PLAIN password; a bad one is refused with
// connection.close 403 before anything but the protocol header reaches
// RabbitMQ, and neither token nor reason leaks a secret to the logs.
func TestAuthLogin(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	tap := brokertest.NewTapProxy(t, brokertest.RabbitAMQP(t))
	url, logs := startAuthRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred, Auth: authtest.JWTPolicy(t, nil)}})
	good := authtest.Token(t, "alice", []string{"writer"}, time.Hour, nil)
	if _, _, err := dialToken(t, url, good); err != nil {
		t.Fatalf("good token: %v", err)
	}
	for _, c := range []struct{ name, token, reason string }{
		{"expired", authtest.Token(t, "alice", []string{"writer"}, -time.Hour, nil), "token expired"},
		{"wrong signature", authtest.TokenWithKey(t, "another-secret-that-is-long-enough!!", "alice", nil), "signature is invalid"},
		{"alg none", authtest.TokenAlgNone(t, "alice", []string{"writer"}), "not signed with HS256"},
		{"wrong audience", authtest.Token(t, "alice", nil, time.Hour, authtest.Claims{"aud": "x"}), "audience"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, raw, err := dialToken(t, url, c.token)
			if err == nil {
				t.Fatal("connected")
			}
			<-raw.closed
			if code := closeCode(raw.err); code != bridge.ClosePolicy {
				t.Fatalf("WebSocket close %v, want 1008", raw.err)
			}
			if !strings.Contains(logs.String(), c.reason) {
				t.Fatalf("logs lack the reason %q:\n%s", c.reason, logs)
			}
		})
	}
	t.Run("the 403 and its reason as the client sees them", func(t *testing.T) {
		c := dialWS(t, url)
		c.Write([]byte(validate.AMQPProtocolHeader))
		readFrame(t, c) // connection.start
		c.Write(startOk(authtest.Token(t, "alice", nil, -time.Hour, nil)))
		f := readFrame(t, c)
		if len(f) < 13 || f[7] != 0 || f[8] != 10 || f[9] != 0 || f[10] != 50 || int(f[11])<<8|int(f[12]) != 403 ||
			!strings.Contains(string(f), "ACCESS_REFUSED - authentication failed: token expired") {
			t.Fatalf("got %q, want connection.close 403 naming the reason", f)
		}
	})
	tap.Close()
	if strings.Contains(tap.Sent(), "whoever") || strings.Contains(tap.Sent(), good) {
		t.Fatal("the client's login reached RabbitMQ")
	}
	if strings.Contains(logs.String(), good) {
		t.Fatal("a token reached the logs")
	}
}

func closeCode(err error) uint16 {
	if ce, ok := err.(*gws.CloseError); ok {
		return ce.Code
	}
	return 0
}

func readFrame(t *testing.T, c *wsConn) []byte {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no frame")
	}
	return nil
}

// startOk is connection.start-ok with PLAIN and password as the password.
func startOk(password string) []byte { return startOkWith(nil, password) }

// startOkWith is startOk with props as the client properties (a field
// table's entries).
func startOkWith(props []byte, password string) []byte {
	resp := "\x00whoever\x00" + password
	p := []byte{0, 10, 0, 11, byte(len(props) >> 24), byte(len(props) >> 16), byte(len(props) >> 8), byte(len(props))}
	p = append(p, props...)
	p = append(p, 5, 'P', 'L', 'A', 'I', 'N')
	p = append(p, byte(len(resp)>>24), byte(len(resp)>>16), byte(len(resp)>>8), byte(len(resp)))
	p = append(p, resp...)
	p = append(p, 5, 'e', 'n', '_', 'U', 'S')
	return validate.AppendAMQPFrame(nil, validate.AMQPFrameMethod, 0, p)
}

// TestAuthACL: the worked example's rules on AMQP against RabbitMQ. Each
// refused method closes its channel with 403 while the connection and its
// other channels go on, and nothing refused reaches the broker.
func TestAuthACL(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	tap := brokertest.NewTapProxy(t, brokertest.RabbitAMQP(t))
	url, logs := startAuthRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: &cred, Auth: authtest.JWTPolicy(t, nil)}})
	run := fmt.Sprint(time.Now().UnixNano())
	topic := "demo.acl-" + run

	reader, _, err := dialToken(t, url, authtest.Token(t, "rita", []string{"reader"}, time.Hour, nil))
	if err != nil {
		t.Fatal(err)
	}
	rch, err := reader.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := rch.QueueDeclare("", false, true, true, false, nil) // server-named: the reader's own
	if err != nil {
		t.Fatal(err)
	}
	if err := rch.QueueBind(q.Name, topic, "amq.topic", false, nil); err != nil {
		t.Fatalf("allowed bind: %v", err)
	}
	deliveries, err := rch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}

	writer, _, err := dialToken(t, url, authtest.Token(t, "will", []string{"writer"}, time.Hour, nil))
	if err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		name    string
		conn    *amqp091.Connection
		do      func(ch *amqp091.Channel) error
		mention string
	}{
		{"reader publishes", reader, func(ch *amqp091.Channel) error {
			return ch.PublishWithContext(context.Background(), "amq.topic", topic, false, false, amqp091.Publishing{Body: []byte("sneaky-reader")})
		}, "publish to " + topic},
		{"writer publishes outside demo", writer, func(ch *amqp091.Channel) error {
			return ch.PublishWithContext(context.Background(), "amq.topic", "secret.x", false, false, amqp091.Publishing{Body: []byte("sneaky-secret")})
		}, "publish to secret.x"},
		{"through another exchange", writer, func(ch *amqp091.Channel) error {
			return ch.PublishWithContext(context.Background(), "amq.fanout", topic, false, false, amqp091.Publishing{Body: []byte("sneaky-fanout")})
		}, "exchange:amq.fanout"},
		{"bind to a broader key", reader, func(ch *amqp091.Channel) error {
			q, err := ch.QueueDeclare("", false, true, true, false, nil)
			if err != nil {
				return err
			}
			return ch.QueueBind(q.Name, "demo.#", "amq.topic", false, nil)
		}, "subscribe to demo.#"},
		{"someone else's queue", reader, func(ch *amqp091.Channel) error {
			_, err := ch.Consume("victim-queue-"+run, "", true, false, false, false, nil)
			return err
		}, "queue:victim-queue"},
		{"dead-lettering elsewhere", writer, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("", false, true, true, false, amqp091.Table{"x-dead-letter-exchange": "amq.fanout"})
			return err
		}, "x-dead-letter-exchange"},
		{"declaring an exchange", writer, func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("mine-"+run, "fanout", false, true, false, false, nil)
		}, "exchange:mine-"},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			ch, err := r.conn.Channel()
			if err != nil {
				t.Fatal(err)
			}
			closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
			r.do(ch) // synchronous methods return the 403; publishes learn it from the close
			select {
			case e := <-closed:
				if e == nil || e.Code != 403 || !strings.Contains(e.Reason, r.mention) {
					t.Fatalf("channel closed with %v, want 403 naming %q", e, r.mention)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the channel was not closed")
			}
		})
	}

	// The connections survived: the writer's allowed publish reaches the
	// reader, and it is the first thing the reader gets.
	wch, err := writer.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := wch.PublishWithContext(context.Background(), "amq.topic", topic, false, false, amqp091.Publishing{Body: []byte("allowed")}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-deliveries:
		if string(d.Body) != "allowed" {
			t.Fatalf("reader got %q first, want the allowed message", d.Body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the allowed message never arrived")
	}
	sent := tap.Sent()
	for _, s := range []string{"sneaky", "secret.x", "victim-queue", "demo.#", "x-dead-letter-exchange", "mine-"} {
		if strings.Contains(sent, s) {
			t.Fatalf("refused %q reached RabbitMQ", s)
		}
	}
	if !strings.Contains(logs.String(), "amqp access denied") || !strings.Contains(logs.String(), `identity="rita (reader)"`) {
		t.Fatalf("denials not logged with the identity:\n%s", logs)
	}
}

// TestAuthUsersAndExpiry: a users file checks the PLAIN login; a token
// that runs out ends the connection with connection.close 320.
func TestAuthUsersAndExpiry(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	addr := brokertest.RabbitAMQP(t)
	t.Run("users file", func(t *testing.T) {
		url, _ := startAuthRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Credential: &cred, Auth: authtest.UsersPolicy(t, map[string][2]string{"will": {"will-pw", "writer"}})}})
		dial := func(user, pass string) error {
			_, err := amqp091.DialConfig("amqp://gateway/", amqp091.Config{
				SASL: []amqp091.Authentication{&amqp091.PlainAuth{Username: user, Password: pass}},
				Dial: func(network, a string) (net.Conn, error) { return dialWS(t, url), nil },
			})
			return err
		}
		if err := dial("will", "will-pw"); err != nil {
			t.Fatalf("right password: %v", err)
		}
		if err := dial("will", "wrong"); err == nil {
			t.Fatal("wrong password accepted")
		}
	})
	t.Run("token expiry", func(t *testing.T) {
		url, logs := startAuthRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Credential: &cred, Auth: authtest.JWTPolicy(t, nil)}})
		conn, raw, err := dialToken(t, url, authtest.Token(t, "rita", []string{"reader"}, 2*time.Second, nil))
		if err != nil {
			t.Fatal(err)
		}
		closed := conn.NotifyClose(make(chan *amqp091.Error, 1))
		select {
		case e := <-closed:
			if e == nil || e.Code != 320 || !strings.Contains(e.Reason, "token expired") {
				t.Fatalf("connection closed with %v, want 320 token expired", e)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the connection outlived its token")
		}
		<-raw.closed
		if code := closeCode(raw.err); code != bridge.ClosePolicy {
			t.Fatalf("WebSocket close %v", raw.err)
		}
		logs.WaitFor(t, "outcome=token_expired") // logged once the server side has closed too
	})
}
