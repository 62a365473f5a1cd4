package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/lxzan/gws"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/broker/natsbroker"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/validate"
)

func startRelay(t testing.TB, o Options) string {
	t.Helper()
	return brokertest.ServeRoute(t, "/mqtt", nil, func(e brokertest.RouteEnv) http.Handler {
		o.Origins, o.Conns, o.Log, o.Route, o.Backend = e.Origins, e.Conns, e.Log, "/mqtt", "mosquitto"
		if reflect.ValueOf(o.WS).IsZero() { // WSOptions holds a func: no ==
			o.WS = e.WS
		}
		return NewRelay(o)
	})
}

func pahoClient(t testing.TB, broker, id string) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(true).
		SetUsername("browser-user").SetPassword("browser-secret").SetConnectTimeout(5 * time.Second).SetAutoReconnect(false)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to %s: %v", broker, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func wait(t testing.TB, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("token: %v", tok.Error())
	}
}

// paho.mqtt.golang (3.1.1) over ws:// through the gateway: QoS 0, 1 and
// 2, retained messages, and a direct TCP subscriber on Mosquitto sees the
// same messages.
func TestRelayPahoOverWebSocket(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr}})
	topic := fmt.Sprintf("wsbridge/test/%d", time.Now().UnixNano())
	direct := pahoClient(t, "tcp://"+addr, "direct-"+topic[len(topic)-6:])
	viaGW := pahoClient(t, url, "gw-"+topic[len(topic)-6:])

	got, directGot := make(chan paho.Message, 16), make(chan paho.Message, 16)
	wait(t, viaGW.Subscribe(topic+"/#", 2, func(_ paho.Client, m paho.Message) { got <- m }))
	wait(t, direct.Subscribe(topic+"/#", 2, func(_ paho.Client, m paho.Message) { directGot <- m }))
	for qos := byte(0); qos <= 2; qos++ {
		wait(t, viaGW.Publish(fmt.Sprintf("%s/q%d", topic, qos), qos, false, fmt.Sprintf("qos %d", qos)))
	}
	for _, ch := range []chan paho.Message{got, directGot} {
		seen := map[string]bool{}
		for range 3 {
			select {
			case m := <-ch:
				seen[string(m.Payload())] = true
			case <-time.After(10 * time.Second):
				t.Fatalf("got %v", seen)
			}
		}
		if len(seen) != 3 {
			t.Fatalf("got %v", seen)
		}
	}
	// Retained: a later subscriber through the gateway gets it.
	wait(t, viaGW.Publish(topic+"/retained", 1, true, "kept"))
	late := pahoClient(t, url, "late-"+topic[len(topic)-6:])
	lateGot := make(chan paho.Message, 1)
	wait(t, late.Subscribe(topic+"/retained", 1, func(_ paho.Client, m paho.Message) { lateGot <- m }))
	select {
	case m := <-lateGot:
		if string(m.Payload()) != "kept" || !m.Retained() {
			t.Fatalf("retained: %q %v", m.Payload(), m.Retained())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no retained message")
	}
	wait(t, viaGW.Publish(topic+"/retained", 1, true, []byte{})) // clear it
}

// rawClient speaks exact bytes over the WebSocket.
type rawClient struct {
	gws.BuiltinEventHandler
	conn   *gws.Conn
	msgs   chan []byte
	closed chan error
}

func (c *rawClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	c.msgs <- bytes.Clone(m.Bytes())
	m.Close()
}
func (c *rawClient) OnClose(_ *gws.Conn, err error) { c.closed <- err }

func dialRaw(t *testing.T, url string) *rawClient {
	t.Helper()
	c := &rawClient{msgs: make(chan []byte, 64), closed: make(chan error, 1)}
	conn, _, err := gws.NewClient(c, &gws.ClientOption{Addr: url, RequestHeader: http.Header{"Sec-Websocket-Protocol": {"mqtt"}}})
	if err != nil {
		t.Fatal(err)
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { conn.NetConn().Close() })
	return c
}

func (c *rawClient) send(t *testing.T, b ...[]byte) {
	t.Helper()
	for _, m := range b {
		if err := c.conn.WriteMessage(gws.OpcodeBinary, m); err != nil {
			t.Fatal(err)
		}
	}
}

func (c *rawClient) next(t *testing.T) []byte {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case err := <-c.closed:
		c.closed <- err // keep it for closeCode
		select {
		case m := <-c.msgs: // the packet came just before the close
			return m
		default:
		}
		t.Fatalf("closed (%v) while waiting for a packet", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no packet within 10s")
	}
	return nil
}

func (c *rawClient) closeCode(t *testing.T) uint16 {
	t.Helper()
	select {
	case err := <-c.closed:
		var ce *gws.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		t.Fatalf("closed without a close frame: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not closed within 10s")
	}
	return 0
}

func enc(t *testing.T, pk packets.Packet) []byte {
	t.Helper()
	var b bytes.Buffer
	var err error
	pk.Mods.AllowResponseInfo = true // or mochi leaves response topics out
	switch pk.FixedHeader.Type {
	case packets.Connect:
		if pk.Connect.ProtocolName == nil {
			pk.Connect.ProtocolName = []byte("MQTT")
		}
		err = pk.ConnectEncode(&b)
	case packets.Publish:
		err = pk.PublishEncode(&b)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&b)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(&b)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func connect(t *testing.T, v byte, id string) []byte {
	return enc(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: v,
		Connect: packets.ConnectParams{Clean: true, Keepalive: 60, ClientIdentifier: id,
			UsernameFlag: true, Username: []byte("browser-user"), PasswordFlag: true, Password: []byte("browser-secret")}})
}

// The broker never sees the client's username and password; with a
// credential configured it sees that instead.
func TestRelayReplacesCredentials(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	for _, cred := range []*keyring.Credential{nil, {Username: "gateway-identity", Password: keyring.NewSecret("gw-pass")}} {
		tap := brokertest.NewTapProxy(t, addr)
		url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Credential: cred}})
		c := dialRaw(t, url)
		c.send(t, connect(t, 4, fmt.Sprintf("creds-%d", time.Now().UnixNano())))
		if ack := c.next(t); !bytes.Equal(ack, []byte{0x20, 0x02, 0x00, 0x00}) {
			t.Fatalf("CONNACK %x", ack)
		}
		c.conn.WriteClose(1000, nil)
		tap.Close()
		sent := tap.Sent()
		if strings.Contains(sent, "browser-user") || strings.Contains(sent, "browser-secret") {
			t.Fatalf("client credentials reached the broker: %q", sent)
		}
		if cred != nil && !strings.Contains(sent, "gateway-identity") {
			t.Fatalf("injected identity missing: %q", sent)
		}
	}
}

// TestRelayBrokerRefusesTheGatewaysCredential: a Mosquitto of the test's
// own refuses a wrong keyring password with a CONNACK refusal. The client
// gets the code (it names no one) and, in MQTT 5, no properties; the
// operator's log gets the refusal at WARN with the backend and keyring
// entry, never the password. The right password still connects.
func TestRelayBrokerRefusesTheGatewaysCredential(t *testing.T) {
	const user = "gw_user"
	password := fmt.Sprintf("right-password-%d", time.Now().UnixNano())
	wrong := fmt.Sprintf("wrong-password-%d", time.Now().UnixNano())
	addr := brokertest.MosquittoWithPasswords(t, map[string]string{user: password})
	cases := []struct {
		name     string
		v        byte
		password string
		refused  []byte // the codes a refusal may carry; nil: accepted
	}{
		{"3.1.1 wrong password", 4, wrong, []byte{0x04, 0x05}},
		{"5 wrong password", 5, wrong, []byte{0x86, 0x87}},
		{"5 right password", 5, password, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			logs := &brokertest.Logs{}
			cred := keyring.Credential{Username: user, Password: keyring.NewSecret(c.password)}
			url := brokertest.ServeRoute(t, "/mqtt", slog.New(slog.NewTextHandler(logs, nil)), func(e brokertest.RouteEnv) http.Handler {
				return NewRelay(Options{RouteOptions: bridge.RouteOptions{Route: "/mqtt", Backend: "mosquitto", Address: addr,
					Credential: &cred, CredentialName: "mosquitto-gateway", Origins: e.Origins, Conns: e.Conns, Log: e.Log, WS: e.WS}})
			})
			cl := dialRaw(t, url)
			cl.send(t, connect(t, c.v, fmt.Sprintf("refusal-%d", time.Now().UnixNano())))
			ack := cl.next(t)
			if bytes.Contains(ack, []byte(user)) {
				t.Fatalf("the client learnt the gateway's broker user: %q", ack)
			}
			if c.refused == nil {
				if len(ack) < 4 || ack[0] != 0x20 || ack[3] != 0 {
					t.Fatalf("CONNACK %x, want accepted", ack)
				}
				cl.conn.WriteClose(1000, nil)
				if strings.Contains(logs.String(), "refused") {
					t.Fatalf("an accepted login logged as refused:\n%s", logs)
				}
				return
			}
			want := []byte{0x20, 0x02, 0x00, ack[min(3, len(ack)-1)]}
			if c.v == 5 {
				want = []byte{0x20, 0x03, 0x00, ack[min(3, len(ack)-1)], 0x00} // no properties
			}
			if !bytes.Equal(ack, want) || !bytes.Contains(c.refused, ack[3:4]) {
				t.Fatalf("CONNACK %x, want a refusal with one of %x and nothing else", ack, c.refused)
			}
			logs.WaitFor(t, "broker refused the gateway's credential")
			var line string
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "broker refused the gateway's credential") {
					line = l
				}
			}
			for _, w := range []string{"level=WARN", "backend=mosquitto", "keyring_entry=mosquitto-gateway", fmt.Sprintf("connack_code=%d", ack[3])} {
				if !strings.Contains(line, w) {
					t.Errorf("log line lacks %q: %s", w, line)
				}
			}
			logs.WaitFor(t, "mqtt connection closed")
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "mqtt connection closed") && (!strings.Contains(l, "level=WARN") || !strings.Contains(l, "outcome=broker_refused")) {
					t.Errorf("close line: %s", l)
				}
			}
			if strings.Contains(logs.String(), c.password) {
				t.Fatalf("the password reached the logs:\n%s", logs)
			}
		})
	}
}

// A broker's MQTT 5 CONNACK refusal reaches the client without its
// properties, whose reason string may name the gateway's broker user; a
// success keeps them (they carry what the client must honour).
func TestClientConnackDropsRefusalProperties(t *testing.T) {
	reason := "user gw_user is not authorized"
	props := append([]byte{0x1F, 0, byte(len(reason))}, reason...)
	refusal := append([]byte{0x20, byte(3 + len(props)), 0x00, 0x87, byte(len(props))}, props...)
	accepted := []byte{0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x0A} // receive maximum 10
	puback := []byte{0x40, 0x02, 0x00, 0x01}
	cases := []struct {
		name    string
		v5      bool
		in, out []byte
		code    byte
		reason  string
	}{
		{"5 refusal with a reason string", true, refusal, []byte{0x20, 0x03, 0x00, 0x87, 0x00}, 0x87, reason},
		{"5 refusal, packets after it", true, append(slices.Clone(refusal), puback...),
			append([]byte{0x20, 0x03, 0x00, 0x87, 0x00}, puback...), 0x87, reason},
		{"5 accepted with properties", true, accepted, accepted, 0, ""},
		{"3.1.1 refusal", false, []byte{0x20, 0x02, 0x00, 0x05}, []byte{0x20, 0x02, 0x00, 0x05}, 0x05, ""},
		{"3.1.1 accepted", false, []byte{0x20, 0x02, 0x01, 0x00}, []byte{0x20, 0x02, 0x01, 0x00}, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code, why := clientConnack(c.in, c.v5)
			if !bytes.Equal(out, c.out) || code != c.code || why != c.reason {
				t.Fatalf("got %x, 0x%02x, %q; want %x, 0x%02x, %q", out, code, why, c.out, c.code, c.reason)
			}
		})
	}
}

func TestRelayRejectsMalformedPackets(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	pub := func(v byte, topic string) []byte {
		return enc(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: v, TopicName: topic, Payload: []byte("bad-payload")})
	}
	badVersion := connect(t, 5, "x")
	badVersion[8] = 9
	tests := []struct {
		name    string
		v       byte // 0: no CONNECT first
		packets [][]byte
		answer  []byte // nil: no MQTT answer possible
		code    uint16
	}{
		// A level we do not know gets the 3.1.1-format refusal, as Mosquitto answers.
		{"unsupported protocol level", 0, [][]byte{badVersion}, []byte{0x20, 0x02, 0x00, 0x01}, bridge.ClosePolicy},
		{"publish before connect", 0, [][]byte{pub(4, "a")}, nil, bridge.ClosePolicy},
		{"v5 wildcard topic name", 5, [][]byte{pub(5, "a/+")}, []byte{0xE0, 0x02, 0x90, 0x00}, bridge.CloseProtocolError},
		{"v311 wildcard topic name", 4, [][]byte{pub(4, "a/#")}, nil, bridge.CloseProtocolError},
		{"v5 packet too large", 5, [][]byte{enc(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: 5, TopicName: "a", Payload: bytes.Repeat([]byte("x"), 2000)})},
			validate.AppendMQTTDisconnect(nil, 0x95, "packet of 2007 bytes exceeds the 1024-byte limit (limits.mqtt.max_packet_bytes)"), bridge.CloseTooLarge},
		{"v5 qos 3", 5, [][]byte{{0x36, 0x04, 0, 1, 'a', 0}}, []byte{0xE0, 0x02, 0x81, 0x00}, bridge.CloseProtocolError},
		// Crashed mochi-mqtt's SubscribeDecode (found by FuzzMQTTScanner).
		{"v5 subscribe that panicked the decoder", 5, [][]byte{{0x82, 0x05, '0', '0', 0, 0, 0}}, []byte{0xE0, 0x02, 0x81, 0x00}, bridge.CloseProtocolError},
		{"v311 second connect", 4, [][]byte{connect(t, 4, "again")}, nil, bridge.ClosePolicy},
		{"v5 bad packet split across messages", 5, [][]byte{{0x30}, {0x08, 0, 3, 'a'}, {'/', '#', 0x00, 'b', 'a'}}, []byte{0xE0, 0x02, 0x90, 0x00}, bridge.CloseProtocolError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tap := brokertest.NewTapProxy(t, addr)
			url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr()}, Limits: validate.MQTTLimits{MaxPacketBytes: 1024}})
			c := dialRaw(t, url)
			if tt.v != 0 {
				c.send(t, connect(t, tt.v, fmt.Sprintf("mal-%d", time.Now().UnixNano())))
				if ack := c.next(t); ack[0] != 0x20 {
					t.Fatalf("CONNACK %x", ack)
				}
			}
			c.send(t, tt.packets...)
			if tt.answer != nil {
				if got := c.next(t); !bytes.Equal(got, tt.answer) {
					t.Fatalf("answer %x, want %x", got, tt.answer)
				}
			}
			if code := c.closeCode(t); code != tt.code {
				t.Fatalf("close code %d, want %d", code, tt.code)
			}
			tap.Close()
			if strings.Contains(tap.Sent(), "bad-payload") || strings.Contains(tap.Sent(), "a/#") || strings.Contains(tap.Sent(), "a/+") {
				t.Fatalf("offending packet reached the broker: %q", tap.Sent())
			}
		})
	}
}

// Packets split across messages and packed into one both arrive; MQTT 5
// properties pass through.
func TestRelaySplitPackedAndV5Properties(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr}})
	topic := fmt.Sprintf("wsbridge/split/%d", time.Now().UnixNano())
	c := dialRaw(t, url)
	conn := connect(t, 5, fmt.Sprintf("split-%d", time.Now().UnixNano()))
	c.send(t, conn[:3], conn[3:10], conn[10:])
	if ack := c.next(t); ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK %x", ack)
	}
	c.send(t, enc(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 5, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: topic, Qos: 1}}}))
	if ack := c.next(t); ack[0] != 0x90 {
		t.Fatalf("SUBACK %x", ack)
	}
	var packed []byte
	for i := range 5 {
		packed = append(packed, enc(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: 5, TopicName: topic,
			Payload: []byte(fmt.Sprint(i)), Properties: packets.Properties{User: []packets.UserProperty{{Key: "k", Val: fmt.Sprint(i)}}, MessageExpiryInterval: 60}})...)
	}
	c.send(t, packed)
	var stream []byte
	for n := 0; n < 5; {
		stream = append(stream, c.next(t)...)
		_, count, err := completePackets(stream, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		n = count
	}
	for i := range 5 {
		if !bytes.Contains(stream, []byte{1, 'k', 0, 1, byte('0' + i)}) {
			t.Fatalf("user property %d lost: %x", i, stream)
		}
	}
}

func TestRelayBrokerUnreachable(t *testing.T) {
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: brokertest.DeadAddr(t), DialTimeout: time.Second}})
	for _, v := range []byte{4, 5} {
		c := dialRaw(t, url)
		c.send(t, connect(t, v, "x"))
		want := []byte{0x20, 0x02, 0x00, 0x03}
		if v == 5 {
			want = []byte{0x20, 0x03, 0x00, 0x88, 0x00}
		}
		if got := c.next(t); !bytes.Equal(got, want) {
			t.Fatalf("v%d: CONNACK %x, want %x", v, got, want)
		}
		if code := c.closeCode(t); code != bridge.CloseInternal {
			t.Fatalf("v%d: close %d", v, code)
		}
	}
}

// The embedded NATS server's MQTT listener is another backend a route can
// name: paho through the gateway to it, and the message is on NATS too.
func TestRelayToEmbeddedNATSMQTT(t *testing.T) {
	e, err := natsbroker.StartEmbedded(natsbroker.EmbeddedOptions{Port: -1, StoreDir: t.TempDir(), MQTTPort: -1, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	n, err := natsbroker.New(natsbroker.Options{Endpoint: broker.Endpoint{Address: "nats://" + e.Addr()}, InProcess: e.Server()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	onNATS := make(chan broker.Message, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.Subscribe(ctx, "sensors.room1", func(m broker.Message) { onNATS <- m }); err != nil {
		t.Fatal(err)
	}
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: e.MQTTAddr()}})
	c := pahoClient(t, url, "via-gateway")
	got := make(chan paho.Message, 1)
	wait(t, c.Subscribe("sensors/room1", 1, func(_ paho.Client, m paho.Message) { got <- m }))
	wait(t, c.Publish("sensors/room1", 1, false, "21.5"))
	select {
	case m := <-got:
		if string(m.Payload()) != "21.5" {
			t.Fatalf("got %q", m.Payload())
		}
	case <-ctx.Done():
		t.Fatal("no MQTT message back")
	}
	select {
	case m := <-onNATS:
		if string(m.Data) != "21.5" {
			t.Fatalf("NATS got %q", m.Data)
		}
	case <-ctx.Done():
		t.Fatal("NATS subscriber got nothing")
	}
}

// RabbitMQ's MQTT plugin is another backend: it requires a login, which
// the gateway injects from the keyring, and RabbitMQ records that user.
func TestRelayToRabbitMQMQTT(t *testing.T) {
	cred := brokertest.RabbitCredential(t)
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: brokertest.RabbitMQTT(t), Credential: &cred}})
	id := fmt.Sprintf("rabbit-%d", time.Now().UnixNano())
	c := pahoClient(t, url, id) // sends browser-user/browser-secret
	topic := fmt.Sprintf("wsbridge/rabbit/%d", time.Now().UnixNano())
	got := make(chan paho.Message, 1)
	wait(t, c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { got <- m }))
	wait(t, c.Publish(topic, 1, false, "via rabbitmq"))
	select {
	case m := <-got:
		if string(m.Payload()) != "via rabbitmq" {
			t.Fatalf("got %q", m.Payload())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message back from RabbitMQ's MQTT plugin")
	}
	out, err := exec.Command("rabbitmqctl", "list_mqtt_connections", "client_id", "user", "-q", "-s").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl: %v %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == id {
			if f[1] != cred.Username {
				t.Fatalf("RabbitMQ says the MQTT user is %q, want the keyring's %q", f[1], cred.Username)
			}
			return
		}
	}
	t.Fatalf("client %s not in list_mqtt_connections:\n%s", id, out)
}

// A client's clean goodbye, DISCONNECT, is the end it asked for: Mosquitto
// closes the connection on it, and the gateway closes the WebSocket with
// 1000 and logs INFO outcome=disconnected, not WARN broker_lost with
// 1011. Whether the client then waits for the close (raw) or closes first
// (paho).
func TestRelayCleanDisconnect(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	closedLine := func(t *testing.T, logs *brokertest.Logs) string {
		t.Helper()
		logs.WaitFor(t, "mqtt connection closed")
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "mqtt connection closed") {
				return l
			}
		}
		return ""
	}
	serveLogged := func(t *testing.T) (string, *brokertest.Logs) {
		logs := &brokertest.Logs{}
		url := brokertest.ServeRoute(t, "/mqtt", slog.New(slog.NewTextHandler(logs, nil)), func(e brokertest.RouteEnv) http.Handler {
			return NewRelay(Options{RouteOptions: bridge.RouteOptions{Route: "/mqtt", Backend: "mosquitto", Address: addr,
				Origins: e.Origins, Conns: e.Conns, Log: e.Log, WS: e.WS}})
		})
		return url, logs
	}
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("level %d, the client waits for the close", v), func(t *testing.T) {
			url, logs := serveLogged(t)
			c := dialRaw(t, url)
			c.send(t, connect(t, v, fmt.Sprintf("bye-%d-%d", v, time.Now().UnixNano())))
			if ack := c.next(t); len(ack) < 4 || ack[0] != 0x20 || ack[3] != 0 {
				t.Fatalf("CONNACK %x", ack)
			}
			c.send(t, []byte{0xE0, 0x00})
			if code := c.closeCode(t); code != bridge.CloseNormal {
				t.Fatalf("close %d, want %d", code, bridge.CloseNormal)
			}
			if l := closedLine(t, logs); !strings.Contains(l, "level=INFO") || !strings.Contains(l, "outcome=disconnected") {
				t.Fatalf("a clean DISCONNECT logged as %s", l)
			}
		})
	}
	t.Run("paho disconnects and closes", func(t *testing.T) {
		url, logs := serveLogged(t)
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("bye-paho-%d", time.Now().UnixNano())).
			SetConnectTimeout(5 * time.Second).SetAutoReconnect(false))
		wait(t, c.Connect())
		c.Disconnect(250)
		if l := closedLine(t, logs); !strings.Contains(l, "level=INFO") || !strings.Contains(l, "outcome=disconnected") {
			t.Fatalf("a clean DISCONNECT logged as %s", l)
		}
	})
}

// A PUBLISH spread over several WebSocket messages takes its declared
// length from the memory budget at its first piece, before its buffer is
// made: one declaring more than the budget can spare is refused with 1013
// there, rather than growing by doubling as the pieces come, with garbage
// the budget never saw.
func TestRelayPartialPacketTakesItsDeclaredLength(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	ws := bridge.DefaultWSOptions()
	ws.Budget = memory.NewBudget(256 << 10)
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, WS: ws}})
	c := dialRaw(t, url)
	c.send(t, connect(t, 4, fmt.Sprintf("partial-%d", time.Now().UnixNano())))
	if ack := c.next(t); ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK %x", ack)
	}
	pub := enc(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: 4,
		TopicName: fmt.Sprintf("wsbridge/partial/%d", time.Now().UnixNano()), Payload: make([]byte, 512<<10)})
	c.send(t, pub[:32<<10])
	if code := c.closeCode(t); code != bridge.CloseTryAgainLater {
		t.Fatalf("close %d, want %d (over the budget)", code, bridge.CloseTryAgainLater)
	}
	if used := ws.Budget.Used(); used != 0 {
		t.Fatalf("%d bytes of the budget held after the session ended", used)
	}
}
