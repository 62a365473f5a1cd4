package mqtt

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/internal/authtest"
	"github.com/wsbridge/wsbridge/keyring"
)

func connectToken(t *testing.T, v byte, id, token string, will string) []byte {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: v,
		Connect: packets.ConnectParams{Clean: true, Keepalive: 60, ClientIdentifier: id,
			UsernameFlag: true, Username: []byte("whoever"), PasswordFlag: token != "", Password: []byte(token)}}
	if will != "" {
		pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload = true, will, []byte("gone")
	}
	return enc(t, pk)
}

func publish(t *testing.T, v, qos byte, id uint16, topic string, alias uint16, payload string) []byte {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, ProtocolVersion: v, PacketID: id,
		TopicName: topic, Payload: []byte(payload)}
	if alias != 0 {
		pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = alias, true
	}
	return enc(t, pk)
}

func subscribe(t *testing.T, v byte, id uint16, filters ...string) []byte {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: v, PacketID: id}
	for _, f := range filters {
		pk.Filters = append(pk.Filters, packets.Subscription{Filter: f, Qos: 1})
	}
	return enc(t, pk)
}

// loggedIn dials the route and sends CONNECT with token as the password,
// expecting success.
func loggedIn(t *testing.T, url string, v byte, sub, role string) *rawClient {
	t.Helper()
	c := dialRaw(t, url)
	c.send(t, connectToken(t, v, fmt.Sprintf("%s-%d", sub, time.Now().UnixNano()), authtest.Token(t, sub, []string{role}, time.Hour, nil), ""))
	if ack := c.next(t); ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("%s: CONNACK %x", sub, ack)
	}
	return c
}

// TestAuthConnect: the token in the MQTT password, refused the MQTT way:
// bad credentials get CONNACK 0x86 (3.1.1: 0x04), an identity without a
// broker credential or a will topic outside its rules 0x87 (0x05).
func TestAuthConnect(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	pol := authtest.JWTPolicy(t, func(o *auth.Options) {
		o.Credential = "user/{sub}"
		o.Lookup = authtest.Lookup(map[string]keyring.Credential{"user/alice": {}, "user/will": {}})
	})
	tap := brokertest.NewTapProxy(t, addr)
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Auth: pol}})
	good := authtest.Token(t, "alice", []string{"writer"}, time.Hour, nil)
	cases := []struct {
		name   string
		v      byte
		token  string
		will   string
		reason byte // the CONNACK's reason (v5) or return code (3.1.1)
	}{
		{"good token v5", 5, good, "", 0},
		{"good token v3.1.1", 4, good, "", 0},
		{"expired v5", 5, authtest.Token(t, "alice", nil, -time.Hour, nil), "", 0x86},
		{"wrong signature v3.1.1", 4, authtest.TokenWithKey(t, "another-secret-that-is-long-enough!!", "alice", nil), "", 0x04},
		{"alg none v5", 5, authtest.TokenAlgNone(t, "alice", []string{"writer"}), "", 0x86},
		{"no password v5", 5, "", "", 0x86},
		{"no keyring entry v5", 5, authtest.Token(t, "bob", []string{"writer"}, time.Hour, nil), "", 0x87},
		{"no keyring entry v3.1.1", 4, authtest.Token(t, "bob", []string{"writer"}, time.Hour, nil), "", 0x05},
		{"will outside the rules v5", 5, authtest.Token(t, "will", []string{"writer"}, time.Hour, nil), "secret/x", 0x87},
		{"will inside the rules v5", 5, authtest.Token(t, "will", []string{"writer"}, time.Hour, nil), "demo/x", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := dialRaw(t, url)
			cl.send(t, connectToken(t, c.v, fmt.Sprintf("auth-%d", time.Now().UnixNano()), c.token, c.will))
			ack := cl.next(t)
			if len(ack) < 4 || ack[0] != 0x20 || ack[3] != c.reason {
				t.Fatalf("CONNACK %x, want reason %#x", ack, c.reason)
			}
			if c.reason != 0 {
				if code := cl.closeCode(t); code != 1008 {
					t.Fatalf("close code %d, want 1008", code)
				}
			}
		})
	}
	if sent := tap.Sent(); strings.Contains(sent, "secret/x") || strings.Contains(sent, "whoever") || strings.Contains(sent, good) {
		t.Fatalf("refused or client-chosen fields reached Mosquitto: %q", sent)
	}
}

// TestAuthPublishSubscribeV5: refused publishes get PUBACK/PUBREC 0x87 and
// never reach Mosquitto; a SUBSCRIBE with some refused filters gets one
// SUBACK code per filter, with the allowed ones really subscribed; topic
// aliases cannot launder a topic; a refused QoS 0 publish ends the session
// with DISCONNECT 0x87.
func TestAuthPublishSubscribeV5(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Auth: authtest.JWTPolicy(t, nil)}})
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	demo, secret := "demo/"+run, "secret/"+run

	// A direct TCP subscriber on Mosquitto sees what really got through.
	seen := make(chan string, 16)
	direct := pahoClient(t, "tcp://"+addr, "direct-"+run)
	wait(t, direct.Subscribe(demo, 1, func(_ paho.Client, m paho.Message) { seen <- string(m.Payload()) }))
	wait(t, direct.Subscribe(secret, 1, func(_ paho.Client, m paho.Message) { seen <- string(m.Payload()) }))

	reader := loggedIn(t, url, 5, "rita", "reader")
	reader.send(t, publish(t, 5, 1, 7, demo, 0, "refused-reader"))
	if ack := reader.next(t); !bytes.Equal(ack, []byte{0x40, 0x03, 0x00, 0x07, 0x87}) {
		t.Fatalf("reader's QoS 1 publish: %x, want PUBACK 0x87", ack)
	}
	reader.send(t, subscribe(t, 5, 9, demo, "secret/#", "demo/#"))
	if ack := reader.next(t); !bytes.Equal(ack, []byte{0x90, 0x06, 0x00, 0x09, 0x00, 0x01, 0x87, 0x87}) {
		t.Fatalf("mixed SUBSCRIBE: SUBACK %x, want granted, 0x87, 0x87", ack)
	}
	reader.send(t, subscribe(t, 5, 10, "secret/#"))
	if ack := reader.next(t); !bytes.Equal(ack, []byte{0x90, 0x04, 0x00, 0x0a, 0x00, 0x87}) {
		t.Fatalf("refused SUBSCRIBE: SUBACK %x", ack)
	}

	writer := loggedIn(t, url, 5, "will", "writer")
	writer.send(t, publish(t, 5, 2, 3, secret, 0, "refused-qos2"))
	if ack := writer.next(t); !bytes.Equal(ack, []byte{0x50, 0x03, 0x00, 0x03, 0x87}) {
		t.Fatalf("writer's QoS 2 publish outside demo: %x, want PUBREC 0x87", ack)
	}
	writer.send(t, publish(t, 5, 1, 4, demo, 1, "via-topic-and-alias"))
	if ack := writer.next(t); ack[0] != 0x40 || (len(ack) > 4 && ack[4] >= 0x80) {
		t.Fatalf("allowed publish: %x", ack)
	}
	writer.send(t, publish(t, 5, 1, 5, "", 1, "via-alias-only"))
	if ack := writer.next(t); ack[0] != 0x40 || (len(ack) > 4 && ack[4] >= 0x80) {
		t.Fatalf("allowed publish by alias: %x", ack)
	}
	writer.send(t, publish(t, 5, 1, 6, secret, 2, "refused-alias-set"))
	if ack := writer.next(t); !bytes.Equal(ack, []byte{0x40, 0x03, 0x00, 0x06, 0x87}) {
		t.Fatalf("alias set on a refused topic: %x", ack)
	}

	for _, want := range []string{"via-topic-and-alias", "via-alias-only"} {
		select {
		case got := <-seen:
			if got != want {
				t.Fatalf("Mosquitto delivered %q, want %q (refused publishes must not get through)", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q never reached Mosquitto", want)
		}
	}
	// The reader's allowed subscription is real: it gets the writer's message.
	for {
		m := reader.next(t)
		if m[0]>>4 == 3 {
			if !bytes.Contains(m, []byte("via-topic-and-alias")) {
				t.Fatalf("reader got %q", m)
			}
			break
		}
	}

	writer.send(t, publish(t, 5, 0, 0, secret, 0, "refused-qos0"))
	if m := writer.next(t); !bytes.HasPrefix(m, []byte{0xE0}) || m[2] != 0x87 {
		t.Fatalf("refused QoS 0 publish: %x, want DISCONNECT 0x87", m)
	}
	if code := writer.closeCode(t); code != 1008 {
		t.Fatalf("close code %d", code)
	}
	select {
	case got := <-seen:
		t.Fatalf("Mosquitto delivered %q after the refusals", got)
	default:
	}
}

// TestAuthPublishSubscribeV311: 3.1.1 SUBACK says 0x80 for a refused
// filter; a refused publish can only end the session.
func TestAuthPublishSubscribeV311(t *testing.T) {
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: brokertest.Mosquitto(t), Auth: authtest.JWTPolicy(t, nil)}})
	c := loggedIn(t, url, 4, "rita", "reader")
	c.send(t, subscribe(t, 4, 1, "demo/x", "secret/#"))
	if ack := c.next(t); !bytes.Equal(ack, []byte{0x90, 0x04, 0x00, 0x01, 0x01, 0x80}) {
		t.Fatalf("SUBACK %x, want granted QoS 1 and 0x80", ack)
	}
	c.send(t, publish(t, 4, 1, 2, "demo/x", 0, "no"))
	if code := c.closeCode(t); code != 1008 {
		t.Fatalf("close code %d, want 1008", code)
	}
}

// TestAuthExpiryV5: DISCONNECT 0x87 "token expired" once the token runs out.
func TestAuthExpiryV5(t *testing.T) {
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: brokertest.Mosquitto(t), Auth: authtest.JWTPolicy(t, nil)}})
	c := dialRaw(t, url)
	c.send(t, connectToken(t, 5, fmt.Sprintf("exp-%d", time.Now().UnixNano()), authtest.Token(t, "rita", []string{"reader"}, 2*time.Second, nil), ""))
	if ack := c.next(t); ack[3] != 0 {
		t.Fatalf("CONNACK %x", ack)
	}
	m := c.next(t)
	if m[0] != 0xE0 || m[2] != 0x87 || !bytes.Contains(m, []byte("token expired")) {
		t.Fatalf("got %x, want DISCONNECT 0x87 token expired", m)
	}
	if code := c.closeCode(t); code != 1008 {
		t.Fatalf("close code %d", code)
	}
}

// TestAuthUsersFile: MQTT username and password against a users file.
func TestAuthUsersFile(t *testing.T) {
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: brokertest.Mosquitto(t), Auth: authtest.UsersPolicy(t, map[string][2]string{"will": {"will-pw", "writer"}})}})
	for _, c := range []struct {
		user, pass string
		reason     byte
	}{{"will", "will-pw", 0}, {"will", "wrong", 0x86}, {"nobody", "will-pw", 0x86}} {
		cl := dialRaw(t, url)
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
			Connect: packets.ConnectParams{Clean: true, Keepalive: 60, ClientIdentifier: fmt.Sprintf("users-%d", time.Now().UnixNano()),
				UsernameFlag: true, Username: []byte(c.user), PasswordFlag: true, Password: []byte(c.pass)}}
		cl.send(t, enc(t, pk))
		if ack := cl.next(t); ack[0] != 0x20 || ack[3] != c.reason {
			t.Fatalf("%s/%s: CONNACK %x, want reason %#x", c.user, c.pass, ack, c.reason)
		}
	}
}

// TestAuthClientIDsPerIdentity: two identities using the same client id
// do not take over each other's session at the broker.
func TestAuthClientIDsPerIdentity(t *testing.T) {
	tap := brokertest.NewTapProxy(t, brokertest.Mosquitto(t))
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Auth: authtest.JWTPolicy(t, nil)}})
	id := fmt.Sprintf("shared-%d", time.Now().UnixNano())
	login := func(sub string) *rawClient {
		c := dialRaw(t, url)
		c.send(t, connectToken(t, 4, id, authtest.Token(t, sub, []string{"reader"}, time.Hour, nil), ""))
		if ack := c.next(t); ack[3] != 0 {
			t.Fatalf("%s: CONNACK %x", sub, ack)
		}
		return c
	}
	alice := login("alice")
	login("bob")
	alice.send(t, []byte{0xC0, 0x00}) // PINGREQ: a taken-over session would be closed instead
	if m := alice.next(t); !bytes.Equal(m, []byte{0xD0, 0x00}) {
		t.Fatalf("alice after bob connected with the same client id: %x", m)
	}
	if sent := tap.Sent(); !strings.Contains(sent, "alice:"+id) || !strings.Contains(sent, "bob:"+id) {
		t.Fatal("client ids did not reach the broker namespaced by identity")
	}
}

// TestAuthClientIDsOfColonSubjects: "urn:a" with client id "b:x" and
// "urn:a:b" with client id "x" are two identities and two sessions; a
// prefix "SUBJECT:" alone would make both "urn:a:b:x", and the second
// would take the first's session over.
func TestAuthClientIDsOfColonSubjects(t *testing.T) {
	tap := brokertest.NewTapProxy(t, brokertest.Mosquitto(t))
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Auth: authtest.JWTPolicy(t, nil)}})
	id := fmt.Sprintf("x%d", time.Now().UnixNano())
	login := func(sub, clientID string) *rawClient {
		c := dialRaw(t, url)
		c.send(t, connectToken(t, 4, clientID, authtest.Token(t, sub, []string{"reader"}, time.Hour, nil), ""))
		if ack := c.next(t); ack[3] != 0 {
			t.Fatalf("%s: CONNACK %x", sub, ack)
		}
		return c
	}
	first := login("urn:a", "b:"+id)
	login("urn:a:b", id)
	first.send(t, []byte{0xC0, 0x00}) // PINGREQ: a taken-over session would be closed instead
	if m := first.next(t); !bytes.Equal(m, []byte{0xD0, 0x00}) {
		t.Fatalf("urn:a after urn:a:b connected: %x", m)
	}
}

// TestAuthAliasBound: the aliases the gateway remembers for the ACL are
// bounded; beyond that the client gets DISCONNECT 0x94. Ten aliases stay
// within Mosquitto's own maximum, so the refusal can only be the
// gateway's: their topics outgrow maxAliasTopics.
func TestAuthAliasBound(t *testing.T) {
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: brokertest.Mosquitto(t), Auth: authtest.JWTPolicy(t, nil)}})
	c := loggedIn(t, url, 5, "will", "writer")
	size := maxAliasTopics/9 - 100 // nine fit, the tenth does not
	var batch []byte
	for i := 1; i <= 10; i++ {
		topic := fmt.Sprintf("demo/%d%s", i, strings.Repeat("x", size))
		batch = append(batch, publish(t, 5, 0, 0, topic, uint16(i), "x")...)
	}
	c.send(t, batch)
	for {
		m := c.next(t)
		if m[0] == 0xE0 {
			if m[2] != 0x94 || !bytes.Contains(m, []byte("topic alias invalid")) {
				t.Fatalf("DISCONNECT %x, want the gateway's 0x94", m)
			}
			break
		}
	}
	if code := c.closeCode(t); code != 1008 { // the broker's own refusal would close 1011
		t.Fatalf("close code %d, want 1008 from the gateway", code)
	}
}
