package mqtt

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/lxzan/gws"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/internal/authtest"
)

// inDemo is the differential test's reference for the rule demo.*: a
// topic of exactly two segments, the first "demo", '.' and '/' both
// separating. It is written apart from auth's matcher on purpose.
func inDemo(topic string) bool {
	first, rest, ok := strings.Cut(topic, "/")
	if !ok {
		first, rest, ok = strings.Cut(topic, ".")
	}
	return ok && first == "demo" && !strings.ContainsAny(rest, "./")
}

// aclForm is one MQTT form a restricted client can try: its CONNECT, the
// packets it sends once connected, and what must reach the broker.
type aclForm struct {
	name     string
	versions []byte
	connect  func(pk *packets.Packet, v byte)
	before   func(t *testing.T, clientID string) // runs before the client connects
	refused  bool                                // CONNACK must refuse
	send     func(t *testing.T, v byte) [][]byte
	will     string   // payload of a will that must reach the spy on close
	lands    []string // payloads that must reach the spy
}

// TestACLDifferential drives every MQTT form in docs/security.md's table,
// in MQTT 3.1.1 and 5, through the gateway as a restricted identity whose
// one rule is demo.* (publish and subscribe), and checks on the broker
// itself that nothing outside demo/* was written (a spy on # and on the $
// topics tried) and on the client that nothing outside demo/* was read
// (secrets published, retained and live, after each form), and that a
// share group the client tried to join kept all its messages.
func TestACLDifferential(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	run := runID()
	mark, secretMark := "R"+run+" ", "S"+run+" "
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Auth: authtest.JWTPolicy(t, nil)}})

	fence, jobs, group := "demo/"+run+"-fence", "demo/"+run+"-jobs", "g"+run
	dollar := "$x" + run
	secrets := []string{"secret/" + run, "demo/" + run + "/deep", "demo/" + run + ".dot", run + "/x", dollar + "/y"}

	// The spy sees every write: # covers all but $ topics, and the $
	// topics the forms try are named.
	spy := dialMQTTKeep(t, addr, "spy-"+run, func(pk packets.Packet) bool {
		return strings.HasPrefix(string(pk.Payload), mark) || string(pk.Payload) == "end "+run
	})
	if codes := spy.subscribe(t, "#", dollar+"/#"); !bytes.Equal(codes, []byte{1, 1}) {
		t.Fatalf("spy SUBACK %x", codes)
	}
	worker := dialMQTT(t, addr, "worker-"+run)
	if codes := worker.subscribe(t, "$share/"+group+"/"+jobs, fence); !bytes.Equal(codes, []byte{1, 1}) {
		t.Fatalf("worker SUBACK %x", codes)
	}
	pub := dialMQTT(t, addr, "secrets-"+run)
	for _, s := range secrets {
		pub.publish(t, s, secretMark+"retained", true)
	}
	t.Cleanup(func() {
		for _, s := range append(secrets, "demo/"+run+"-will", "demo/"+run+"-kept") {
			pub.write(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, ProtocolVersion: 5, TopicName: s})
		}
	})

	w := func(what string) string { return mark + what }
	pubV := func(t *testing.T, v, qos byte, id uint16, topic string, alias uint16, what string) []byte {
		return publish(t, v, qos, id, topic, alias, w(what))
	}
	sub := func(t *testing.T, v byte, filter string) [][]byte { return [][]byte{subscribe(t, v, 2, filter)} }
	both, five := []byte{4, 5}, []byte{5}
	long := strings.Repeat("x", 60000)
	withWill := func(topic, what string, retain bool, props packets.Properties) func(*packets.Packet, byte) {
		return func(pk *packets.Packet, v byte) {
			c := &pk.Connect
			c.WillFlag, c.WillTopic, c.WillPayload, c.WillRetain, c.WillQos = true, topic, []byte(w(what)), retain, 1
			if v == 5 {
				c.WillProperties = props
			}
		}
	}
	forms := []aclForm{
		// CONNECT
		{name: "will outside the rules", versions: both, connect: withWill("secret/"+run, "will-secret", false, packets.Properties{}), refused: true},
		{name: "will on a $ topic", versions: both, connect: withWill(dollar+"/will", "will-dollar", false, packets.Properties{}), refused: true},
		{name: "retained QoS 1 will inside", versions: both, connect: withWill("demo/"+run+"-will", "will-kept", true, packets.Properties{}), will: w("will-kept")},
		{name: "will response topic outside", versions: five, refused: true,
			connect: withWill("demo/"+run+"-will", "will-resp-secret", false, packets.Properties{ResponseTopic: "secret/" + run})},
		{name: "will response topic inside, with will properties", versions: five, will: w("will-resp-demo"),
			connect: withWill("demo/"+run+"-will", "will-resp-demo", false, packets.Properties{ResponseTopic: "demo/" + run + "-reply",
				CorrelationData: []byte("c"), ContentType: "text/plain", MessageExpiryInterval: 60, PayloadFormat: 1, PayloadFormatFlag: true,
				User: []packets.UserProperty{{Key: "k", Val: "v"}}})},
		{name: "resume a session subscribed to secrets", versions: both,
			connect: func(pk *packets.Packet, v byte) { pk.Connect.Clean = false },
			before: func(t *testing.T, clientID string) {
				opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("will:" + clientID).SetCleanSession(false).SetAutoReconnect(false)
				old := paho.NewClient(opts)
				wait(t, old.Connect())
				wait(t, old.Subscribe("secret/"+run, 1, nil))
				old.Disconnect(100)
				t.Cleanup(func() {
					c := paho.NewClient(opts.SetCleanSession(true))
					if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
						c.Disconnect(100)
					}
				})
			}},
		{name: "enhanced authentication", versions: five, refused: true,
			connect: func(pk *packets.Packet, v byte) { pk.Properties.AuthenticationMethod = "SCRAM-SHA-1" }},
		{name: "request response and problem information, user properties", versions: five,
			connect: func(pk *packets.Packet, v byte) {
				pk.Properties.RequestResponseInfo, pk.Properties.RequestProblemInfo, pk.Properties.RequestProblemInfoFlag = 1, 1, true
				pk.Properties.User = []packets.UserProperty{{Key: "role", Val: "admin"}}
			}},
		{name: "session expiry, receive maximum, topic alias maximum", versions: five,
			connect: func(pk *packets.Packet, v byte) {
				pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 60, true
				pk.Properties.ReceiveMaximum, pk.Properties.TopicAliasMaximum = 5, 10
			}},
		// PUBLISH
		{name: "QoS 0 to a secret topic", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{pubV(t, v, 0, 0, "secret/"+run, 0, "qos0")}
		}},
		{name: "QoS 1 to a secret topic", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{pubV(t, v, 1, 1, "secret/"+run, 0, "qos1")}
		}},
		{name: "QoS 2 to a secret topic", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{pubV(t, v, 2, 1, "secret/"+run, 0, "qos2"), {0x62, 0x02, 0x00, 0x01}} // and its PUBREL
		}},
		{name: "retained to a secret topic", versions: both, send: func(t *testing.T, v byte) [][]byte {
			b := pubV(t, v, 1, 1, "secret/"+run, 0, "retained")
			b[0] |= 1
			return [][]byte{b}
		}},
		{name: "DUP to a secret topic", versions: both, send: func(t *testing.T, v byte) [][]byte {
			b := pubV(t, v, 1, 1, "secret/"+run, 0, "dup")
			b[0] |= 8
			return [][]byte{b}
		}},
		{name: "two levels under demo", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{pubV(t, v, 1, 1, "demo/"+run+"/deep", 0, "deep")}
		}},
		{name: "a dot in the level under demo", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{pubV(t, v, 1, 1, "demo/"+run+".dot", 0, "dot")}
		}},
		{name: "a $ topic", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{pubV(t, v, 1, 1, dollar+"/y", 0, "dollar")}
		}},
		{name: "$share as a topic name", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{pubV(t, v, 1, 1, "$share/"+run+"/demo/x", 0, "share-topic")}
		}},
		{name: "inside the rules, retained, then deleted", versions: both, lands: []string{w("kept")}, send: func(t *testing.T, v byte) [][]byte {
			b := pubV(t, v, 1, 1, "demo/"+run+"-kept", 0, "kept")
			b[0] |= 1
			del := publish(t, v, 1, 2, "demo/"+run+"-kept", 0, "")
			del[0] |= 1
			return [][]byte{b, del}
		}},
		{name: "topic aliases", versions: five, lands: []string{w("alias-set"), w("alias-only")}, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{
				pubV(t, v, 1, 1, "demo/"+run+"-a", 1, "alias-set"),
				pubV(t, v, 1, 2, "secret/"+run, 1, "alias-reset-secret"),
				pubV(t, v, 1, 3, "", 1, "alias-only"),
				pubV(t, v, 1, 4, "", 5, "alias-unknown"),
				pubV(t, v, 1, 5, "secret/"+run, 6, "alias-secret"),
				pubV(t, v, 1, 6, "", 6, "alias-secret-only"),
			}
		}},
		{name: "topic alias set on a secret topic at QoS 0", versions: five, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{pubV(t, v, 0, 0, "secret/"+run, 1, "alias-qos0"), pubV(t, v, 0, 0, "", 1, "alias-qos0-only")}
		}},
		{name: "response topics", versions: five, lands: []string{w("resp-demo")}, send: func(t *testing.T, v byte) [][]byte {
			req := "demo/" + run + "-req"
			return [][]byte{
				publishProps(t, v, 1, 1, req, packets.Properties{ResponseTopic: "secret/" + run}, w("resp-secret")),
				publishProps(t, v, 1, 2, req, packets.Properties{ResponseTopic: dollar + "/r"}, w("resp-dollar")),
				publishProps(t, v, 1, 3, req, packets.Properties{ResponseTopic: "demo/" + run + "/r"}, w("resp-deep")),
				publishProps(t, v, 1, 4, req, packets.Properties{ResponseTopic: "demo/" + run + "-r", CorrelationData: []byte("c"),
					ContentType: "x", MessageExpiryInterval: 60, User: []packets.UserProperty{{Key: "k", Val: "v"}}}, w("resp-demo")),
				publishProps(t, v, 0, 0, req, packets.Properties{ResponseTopic: "secret/" + run}, w("resp-secret-qos0")),
			}
		}},
		{name: "NUL in the topic", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{pubV(t, v, 1, 1, "demo/"+run+"\x00secret", 0, "nul")}
		}},
		{name: "wildcard in the topic", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{pubV(t, v, 1, 1, "demo/+", 0, "wildcard")}
		}},
		{name: "empty topic without alias", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{pubV(t, v, 1, 1, "", 0, "empty")}
		}},
		{name: "very long topic inside", versions: both, lands: []string{w("long")}, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{pubV(t, v, 1, 1, "demo/"+run+long, 0, "long")}
		}},
		{name: "very long topic outside", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{pubV(t, v, 1, 1, "secret/"+run+"/"+long, 0, "long-secret")}
		}},
		// SUBSCRIBE and UNSUBSCRIBE: what they let through shows on the
		// client when the secrets are published after each form.
		{name: "subscribe secret/#", versions: both, send: func(t *testing.T, v byte) [][]byte { return sub(t, v, "secret/#") }},
		{name: "subscribe #", versions: both, send: func(t *testing.T, v byte) [][]byte { return sub(t, v, "#") }},
		{name: "subscribe +/x", versions: both, send: func(t *testing.T, v byte) [][]byte { return sub(t, v, "+/x") }},
		{name: "subscribe demo/#", versions: both, send: func(t *testing.T, v byte) [][]byte { return sub(t, v, "demo/#") }},
		{name: "subscribe demo/+", versions: both, send: func(t *testing.T, v byte) [][]byte { return sub(t, v, "demo/+") }},
		{name: "subscribe $SYS/#", versions: both, send: func(t *testing.T, v byte) [][]byte { return sub(t, v, "$SYS/#") }},
		{name: "subscribe a $ topic", versions: both, send: func(t *testing.T, v byte) [][]byte { return sub(t, v, dollar+"/#") }},
		{name: "join another service's share group", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return sub(t, v, "$share/"+group+"/"+jobs)
		}},
		{name: "shared subscription to secrets", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return sub(t, v, "$share/"+group+"/secret/#")
		}},
		{name: "share name with a dot", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return sub(t, v, "$share/"+group+".demo/"+run)
		}},
		{name: "subscription options, identifier and user properties inside", versions: five, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{enc(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: v, PacketID: 3,
				Properties: packets.Properties{SubscriptionIdentifier: []int{7}, User: []packets.UserProperty{{Key: "k", Val: "v"}}},
				Filters:    packets.Subscriptions{{Filter: "demo/" + run + "-opts", Qos: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2}}})}
		}},
		{name: "mixed SUBSCRIBE", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{subscribe(t, v, 4, "demo/"+run+"-a", "secret/#", "$SYS/#", "demo/"+run+"-b")}
		}},
		{name: "UNSUBSCRIBE", versions: both, send: func(t *testing.T, v byte) [][]byte {
			return [][]byte{enc(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, ProtocolVersion: v, PacketID: 5,
				Filters: packets.Subscriptions{{Filter: "secret/#"}, {Filter: "$share/" + group + "/" + jobs}, {Filter: "demo/" + run + "-a"}}})}
		}},
		{name: "AUTH", versions: five, send: func(t *testing.T, v byte) [][]byte { return [][]byte{{0xF0, 0x02, 0x19, 0x00}} }},
	}

	var lands []string
	for fi, f := range forms {
		for _, v := range f.versions {
			t.Run(fmt.Sprintf("%s v%d", f.name, v), func(t *testing.T) {
				clientID := fmt.Sprintf("diff-%s-%d-%d", run, fi, v)
				if f.before != nil {
					f.before(t, clientID)
				}
				cl, r, ack := login(t, url, v, "will", "writer", func(pk *packets.Packet) {
					if f.connect != nil {
						f.connect(pk, v)
					}
					pk.Connect.ClientIdentifier = clientID
				})
				if refused := ack[3] != 0; refused != f.refused {
					t.Fatalf("CONNACK %x, want refused %v", ack, f.refused)
				}
				if f.refused {
					return
				}
				reads := clientReads{v: v, r: r, aliases: map[uint16]string{}}
				cl.send(t, subscribe(t, v, 1, fence))
				if f.send != nil {
					// One WebSocket message: the gateway may end the session
					// at any of the packets, and a later write would race it.
					cl.send(t, bytes.Join(f.send(t, v), nil))
				}
				alive := reads.until(t, func(b []byte, _ *packets.Packet) bool { return b[0] == 0x90 && b[3] == 1 }) // the fence's SUBACK
				// PINGREQ: once its PINGRESP is back the broker has acted on
				// all that came before. A write can fail when the gateway has
				// just ended the session over one of the form's packets.
				if alive && cl.conn.WriteMessage(gws.OpcodeBinary, []byte{0xC0, 0x00}) == nil {
					alive = reads.until(t, func(b []byte, _ *packets.Packet) bool { return b[0] == 0xD0 })
				}
				for i, s := range secrets {
					pub.publish(t, s, fmt.Sprint(secretMark, f.name, " ", i), false)
				}
				for i := range 3 {
					pub.publish(t, jobs, fmt.Sprint(secretMark, "job ", i), false)
				}
				pub.publish(t, fence, "fence", false)
				if alive {
					reads.until(t, func(_ []byte, pk *packets.Packet) bool { return pk != nil && string(pk.Payload) == "fence" })
				}
				if got := worker.until(t, "fence"); len(got) != 3 {
					t.Fatalf("the share group's worker got %d of 3 jobs", len(got))
				}
				if f.will != "" {
					if v == 5 {
						cl.send(t, []byte{0xE0, 0x02, 0x04, 0x00}) // DISCONNECT with will message
					} else {
						cl.conn.NetConn().Close() // the gateway closes the broker connection: the will goes
					}
					checkWrites(t, run, spy.until(t, f.will))
				}
				lands = append(lands, f.lands...)
			})
		}
	}

	spy.publish(t, "demo/"+run+"-end", "end "+run, false)
	seen := spy.until(t, "end "+run)
	checkWrites(t, run, seen)
	got := map[string]bool{}
	for _, m := range seen {
		got[string(m.Payload)] = true
	}
	for _, want := range lands {
		if !got[want] {
			t.Errorf("allowed write %q never reached the broker", want)
		}
	}
}

// checkWrites fails for any message the restricted client wrote (its
// payload carries R<run>) outside demo/*, or whose response topic is.
func checkWrites(t *testing.T, run string, seen []packets.Packet) {
	t.Helper()
	for _, m := range seen {
		if !strings.HasPrefix(string(m.Payload), "R"+run) {
			continue
		}
		if !inDemo(m.TopicName) {
			t.Errorf("the restricted client wrote %q to %.80s", m.Payload, m.TopicName)
		}
		if rt := m.Properties.ResponseTopic; rt != "" && !inDemo(rt) {
			t.Errorf("the restricted client wrote %q with response topic %s", m.Payload, rt)
		}
	}
}

// clientReads checks what the gateway sends the restricted client: every
// PUBLISH must be on a demo/* topic (following the broker's topic aliases).
type clientReads struct {
	v       byte
	r       *packetReader
	aliases map[uint16]string
}

// until reads until stop says so (it gets each packet and, for a PUBLISH,
// its decoding); false when the gateway closed first.
func (c *clientReads) until(t *testing.T, stop func([]byte, *packets.Packet) bool) bool {
	t.Helper()
	for {
		b := c.r.next(t)
		if b == nil {
			return false
		}
		var pk *packets.Packet
		if b[0]>>4 == packets.Publish {
			p := decodePublish(t, c.v, b)
			pk = &p
			topic := p.TopicName
			if a := p.Properties.TopicAlias; a != 0 {
				if topic == "" {
					topic = c.aliases[a]
				} else {
					c.aliases[a] = topic
				}
			}
			if !inDemo(topic) {
				t.Fatalf("the restricted client read %q on %s", p.Payload, topic)
			}
		}
		if stop(b, pk) {
			return true
		}
	}
}
