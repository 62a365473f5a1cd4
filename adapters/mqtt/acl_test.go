package mqtt

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/internal/authtest"
	"github.com/wsbridge/wsbridge/validate"
)

// runID makes topics, groups and client ids unique per run: the broker is
// shared with other tests and other people.
func runID() string { return strconv.FormatInt(time.Now().UnixNano(), 36) }

// rule allows role to subscribe to the sub patterns and publish to the pub
// patterns.
func rule(t testing.TB, role string, sub, pub []string) auth.Rule {
	t.Helper()
	r := auth.Rule{Roles: []string{role}}
	for i, list := range [][]string{sub, pub} {
		for _, s := range list {
			p, err := auth.ParsePattern(s)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				r.Subscribe = append(r.Subscribe, p)
			} else {
				r.Publish = append(r.Publish, p)
			}
		}
	}
	return r
}

// rulesPolicy is the tests' JWT policy with these rules instead of the
// worked example's.
func rulesPolicy(t testing.TB, rules ...auth.Rule) *auth.Policy {
	t.Helper()
	return authtest.JWTPolicy(t, func(o *auth.Options) { o.Rules = rules })
}

// login sends a CONNECT through the gateway as sub with role (the token in
// the password), adjusted by mod, and returns the client, its packet
// reader and the CONNACK, whatever it says.
func login(t *testing.T, url string, v byte, sub, role string, mod func(*packets.Packet)) (*rawClient, *packetReader, []byte) {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: v,
		Connect: packets.ConnectParams{Clean: true, Keepalive: 60, ClientIdentifier: sub + "-" + runID(),
			UsernameFlag: true, Username: []byte("whoever"), PasswordFlag: true,
			Password: []byte(authtest.Token(t, sub, []string{role}, time.Hour, nil))}}
	if mod != nil {
		mod(&pk)
	}
	c := dialRaw(t, url)
	c.send(t, enc(t, pk))
	r := &packetReader{c: c}
	ack := r.next(t)
	if len(ack) < 4 || ack[0] != 0x20 {
		t.Fatalf("%s: got %x, want CONNACK", sub, ack)
	}
	return c, r, ack
}

// loginOK is login that must succeed.
func loginOK(t *testing.T, url string, v byte, sub, role string, mod func(*packets.Packet)) (*rawClient, *packetReader) {
	t.Helper()
	c, r, ack := login(t, url, v, sub, role, mod)
	if ack[3] != 0 {
		t.Fatalf("%s (%s): CONNACK %x", sub, role, ack)
	}
	return c, r
}

// subackCodes returns a SUBACK's return or reason codes.
func subackCodes(t *testing.T, v byte, pk []byte) []byte {
	t.Helper()
	if len(pk) < 5 || pk[0] != 0x90 {
		t.Fatalf("got %x, want SUBACK", pk)
	}
	codes := pk[4:]
	if v == 5 {
		n, used, _ := validate.MQTTVarInt(codes)
		codes = codes[used+n:]
	}
	return codes
}

// decodePublish decodes a PUBLISH the gateway sent the client.
func decodePublish(t *testing.T, v byte, b []byte) packets.Packet {
	t.Helper()
	var fh packets.FixedHeader
	if err := fh.Decode(b[0]); err != nil || fh.Type != packets.Publish {
		t.Fatalf("got %x, want PUBLISH", b)
	}
	rl, used, _ := validate.MQTTVarInt(b[1:])
	fh.Remaining = rl
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: v}
	if err := pk.PublishDecode(b[1+used:]); err != nil {
		t.Fatal(err)
	}
	return pk
}

// readUntil reads the gateway's packets until a PUBLISH with payload
// fence, failing on any other PUBLISH: the client must not read anything
// it was not allowed to subscribe to.
func readUntil(t *testing.T, v byte, r *packetReader, fence string) {
	t.Helper()
	for {
		b := r.next(t)
		if b == nil {
			t.Fatalf("gateway closed before %q", fence)
		}
		if b[0]>>4 != packets.Publish {
			continue
		}
		pk := decodePublish(t, v, b)
		if string(pk.Payload) == fence {
			return
		}
		t.Fatalf("client read %q on %s", pk.Payload, pk.TopicName)
	}
}

func publishProps(t *testing.T, v, qos byte, id uint16, topic string, props packets.Properties, payload string) []byte {
	return enc(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, ProtocolVersion: v, PacketID: id,
		TopicName: topic, Properties: props, Payload: []byte(payload)})
}

// refusedAck reports whether an acknowledgement carries reason 0x87.
func refusedAck(ack []byte) bool { return len(ack) >= 5 && ack[4] == reasonNotAuthorized }

// TestACLSharedSubscriptions: a shared subscription joins a group and takes
// a share of the messages its other members would get, so a filter's
// topics being readable is not enough: a rule must name the group, as in
// $share/GROUP/demo.* (or $share/*/demo.* for any group).
func TestACLSharedSubscriptions(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	run := runID()
	workers, mine, topic, fence := "w"+run, "s"+run, "demo/"+run, "demo/"+run+"-fence"
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Auth: rulesPolicy(t,
		rule(t, "reader", []string{"demo.*"}, nil),
		rule(t, "sharer", []string{"$share/" + mine + "/demo.*"}, nil),
		rule(t, "any-group", []string{"$share/*/demo.*"}, nil),
		rule(t, "group-wide", []string{"$share/" + mine + "/#"}, nil),
	)}})
	worker := dialMQTT(t, addr, "worker-"+run)
	if codes := worker.subscribe(t, "$share/"+workers+"/"+topic, fence); !bytes.Equal(codes, []byte{1, 1}) {
		t.Fatalf("worker's SUBACK %x", codes)
	}
	pub := dialMQTT(t, addr, "pub-"+run)

	cases := []struct {
		name, role, filter string
		v                  byte
		granted            bool
	}{
		{"reader joins another service's group", "reader", "$share/" + workers + "/" + topic, 5, false},
		{"reader joins another service's group v3.1.1", "reader", "$share/" + workers + "/" + topic, 4, false},
		{"reader joins a group no rule names", "reader", "$share/" + mine + "/" + topic, 5, false},
		{"the group a rule names", "sharer", "$share/" + mine + "/" + topic, 5, true},
		{"the group a rule names v3.1.1", "sharer", "$share/" + mine + "/" + topic, 4, true},
		{"another group than the rule's", "sharer", "$share/" + workers + "/" + topic, 5, false},
		{"the rule's group on other topics", "sharer", "$share/" + mine + "/secret/" + run, 5, false},
		{"a share name with a dot is two segments to the ACL", "sharer", "$share/" + mine + ".demo/" + run, 5, false},
		{"a share name with a dot under a wildcard group", "any-group", "$share/x." + run + "/demo/" + run, 5, false},
		{"any group when the rule says so", "any-group", "$share/x" + run + "/" + topic, 5, true},
		{"the rule's group on anything", "group-wide", "$share/" + mine + "/secret/" + run, 5, true},
		{"a shared $SYS is not under a group's #", "group-wide", "$share/" + mine + "/$SYS/#", 5, false},
		{"no filter after the group", "group-wide", "$share/" + mine, 5, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, r := loginOK(t, url, c.v, "sam", c.role, nil)
			cl.send(t, subscribe(t, c.v, 1, c.filter))
			codes := subackCodes(t, c.v, r.next(t))
			if granted := len(codes) == 1 && codes[0] < 0x80; granted != c.granted {
				t.Fatalf("SUBACK %x for %s, want granted %v", codes, c.filter, c.granted)
			}
			if c.granted {
				return
			}
			// The refused client is still connected: the worker gets
			// every message of its group.
			for i := range 6 {
				pub.publish(t, topic, fmt.Sprint(i), false)
			}
			pub.publish(t, fence, "fence", false)
			if got := worker.until(t, "fence"); len(got) != 6 {
				t.Fatalf("the group's worker got %d of 6 messages", len(got))
			}
		})
	}
}

// TestACLDollarTopics: a pattern that starts with a wildcard does not
// cover $ topics, as an MQTT filter starting with one does not match them
// (MQTT-4.7.2-1): a rule of # gives neither $SYS nor a plugin's $CONTROL.
func TestACLDollarTopics(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	run := runID()
	dollar := "$x" + run
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Auth: rulesPolicy(t,
		rule(t, "all", []string{"#"}, []string{"#"}),
		rule(t, "sys", []string{"$SYS.#"}, nil),
	)}})
	spy := dialMQTT(t, addr, "spy-"+run)
	spy.subscribe(t, dollar+"/#")

	subs := []struct {
		name, role, filter string
		v                  byte
		granted            bool
	}{
		{"# does not cover $SYS/#", "all", "$SYS/#", 5, false},
		{"# does not cover $SYS/broker/version v3.1.1", "all", "$SYS/broker/version", 4, false},
		{"# does not cover another $ topic", "all", dollar + "/#", 5, false},
		{"# covers a filter starting with +, which matches no $ topic", "all", "+/" + run, 5, true},
		{"a rule naming $SYS", "sys", "$SYS/broker/version", 5, true},
	}
	for _, c := range subs {
		t.Run(c.name, func(t *testing.T) {
			cl, r := loginOK(t, url, c.v, "dora", c.role, nil)
			cl.send(t, subscribe(t, c.v, 1, c.filter))
			codes := subackCodes(t, c.v, r.next(t))
			if granted := len(codes) == 1 && codes[0] < 0x80; granted != c.granted {
				t.Fatalf("SUBACK %x for %s, want granted %v", codes, c.filter, c.granted)
			}
		})
	}
	t.Run("publish to a $ topic v5", func(t *testing.T) {
		cl, r := loginOK(t, url, 5, "dora", "all", nil)
		cl.send(t, publish(t, 5, 1, 1, dollar+"/w", 0, "written"))
		if ack := r.next(t); !refusedAck(ack) {
			t.Fatalf("PUBACK %x, want 0x87", ack)
		}
	})
	t.Run("publish to a $ topic v3.1.1", func(t *testing.T) {
		cl, _ := loginOK(t, url, 4, "dora", "all", nil)
		cl.send(t, publish(t, 4, 0, 0, dollar+"/w", 0, "written"))
		if code := cl.closeCode(t); code != bridge.ClosePolicy {
			t.Fatalf("close code %d, want 1008", code)
		}
	})
	spy.publish(t, dollar+"/fence", "fence", false)
	if got := spy.until(t, "fence"); len(got) != 0 {
		t.Fatalf("a $ topic was written: %s %q", got[0].TopicName, got[0].Payload)
	}
}

// TestACLResponseTopics: an MQTT 5 response topic, in a PUBLISH or in the
// will, is where a responder publishes on the client's behalf: it needs
// the right to publish there.
func TestACLResponseTopics(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	run := runID()
	req, reply, will := "demo/"+run+"-req", "demo/"+run+"-reply", "demo/"+run+"-will"
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Auth: authtest.JWTPolicy(t, nil)}})
	spy := dialMQTT(t, addr, "spy-"+run)
	spy.subscribe(t, req, will)

	cl, r := loginOK(t, url, 5, "will", "writer", nil)
	for i, c := range []struct {
		name, resp string
		qos        byte
		allowed    bool
	}{
		{"outside the rules", "secret/" + run, 1, false},
		{"a $ topic", "$x" + run, 1, false},
		{"two levels under demo", "demo/" + run + "/x", 2, false},
		{"inside the rules", reply, 1, true},
	} {
		id := uint16(i + 1)
		cl.send(t, publishProps(t, 5, c.qos, id, req, packets.Properties{ResponseTopic: c.resp, CorrelationData: []byte("c")}, c.name))
		ack := r.next(t)
		if refusedAck(ack) == c.allowed {
			t.Fatalf("%s: acknowledgement %x, want allowed %v", c.name, ack, c.allowed)
		}
	}
	spy.publish(t, req, "fence", false)
	got := spy.until(t, "fence")
	if len(got) != 1 || got[0].Properties.ResponseTopic != reply {
		for _, m := range got {
			t.Errorf("the broker got %q with response topic %q", m.Payload, m.Properties.ResponseTopic)
		}
		t.Fatalf("want only the request with response topic %s", reply)
	}
	cl.send(t, publishProps(t, 5, 0, 0, req, packets.Properties{ResponseTopic: "secret/" + run}, "qos 0"))
	if d := r.next(t); len(d) < 3 || d[0] != 0xE0 || d[2] != reasonNotAuthorized {
		t.Fatalf("refused QoS 0 publish: %x, want DISCONNECT 0x87", d)
	}

	withWill := func(resp string) func(*packets.Packet) {
		return func(pk *packets.Packet) {
			pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload = true, will, []byte("will via "+resp)
			pk.Connect.WillProperties.ResponseTopic = resp
		}
	}
	if _, _, ack := login(t, url, 5, "will", "writer", withWill("secret/"+run)); ack[3] != reasonNotAuthorized {
		t.Fatalf("will with a response topic outside the rules: CONNACK %x, want 0x87", ack)
	}
	wc, _ := loginOK(t, url, 5, "will", "writer", withWill(reply))
	wc.send(t, []byte{0xE0, 0x02, 0x04, 0x00}) // DISCONNECT with will message
	got = spy.until(t, "will via "+reply)
	if len(got) != 0 {
		t.Fatalf("before the allowed will the broker got %s %q", got[0].TopicName, got[0].Payload)
	}
}

// TestACLPersistentSession: a restricted identity always starts a clean
// session. A session left at the broker under its client id (by the same
// subject with other roles, an older token or an older gateway) holds
// subscriptions this identity's rules never checked, and resuming it
// would deliver them.
func TestACLPersistentSession(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Auth: authtest.JWTPolicy(t, nil)}})
	spy := dialMQTT(t, addr, "spy-"+runID())
	for _, v := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			run := runID()
			id, secret, fence := "keep-"+run, "secret/"+run, "demo/"+run
			// The session as the broker holds it for rita's client id.
			opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("rita:" + id).SetCleanSession(false).SetAutoReconnect(false)
			old := paho.NewClient(opts)
			wait(t, old.Connect())
			wait(t, old.Subscribe(secret, 1, nil))
			old.Disconnect(100)
			t.Cleanup(func() { // drop the session whatever the gateway did
				c := paho.NewClient(opts.SetCleanSession(true))
				if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
					c.Disconnect(100)
				}
			})
			spy.publish(t, secret, "queued while offline", false)

			cl, r := loginOK(t, url, v, "rita", "reader", func(pk *packets.Packet) {
				pk.Connect.Clean, pk.Connect.ClientIdentifier = false, id
			})
			cl.send(t, subscribe(t, v, 1, fence))
			for { // a resumed session's queued messages would come first
				b := r.next(t)
				if b == nil || b[0]>>4 == packets.Publish {
					t.Fatalf("before the SUBACK: %x", b)
				}
				if b[0] == 0x90 {
					break
				}
			}
			spy.publish(t, secret, "published after the resume", false)
			spy.publish(t, fence, "fence", false)
			readUntil(t, v, r, "fence")
		})
	}
}

// TestACLPersistentSessionPresent: the CONNACK says no session was
// resumed, so a client knows to subscribe again.
func TestACLPersistentSessionPresent(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Auth: authtest.JWTPolicy(t, nil)}})
	id := "present-" + runID()
	for i := range 2 {
		cl, _, ack := login(t, url, 4, "rita", "reader", func(pk *packets.Packet) {
			pk.Connect.Clean, pk.Connect.ClientIdentifier = false, id
		})
		if ack[2]&1 != 0 {
			t.Fatalf("connection %d: CONNACK %x says a session was resumed", i, ack)
		}
		cl.send(t, []byte{0xE0, 0x00})
		cl.closeCode(t)
	}
}

// TestACLWildcardLevels: an MQTT + matches one level, and a level may hold
// dots, which the ACL reads as separators: demo/+ matches demo/a.b, which
// demo.* does not cover. So + is as wide as > to the ACL: demo/+ needs
// demo.> or demo.#.
func TestACLWildcardLevels(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	run := runID()
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Auth: rulesPolicy(t,
		rule(t, "reader", []string{"demo.*"}, nil),
		rule(t, "deep", []string{"demo.>"}, nil),
		rule(t, "middle", []string{"demo.*.x"}, nil),
		rule(t, "ends", []string{"*.x"}, nil),
	)}})
	cases := []struct {
		name, role, filter string
		v                  byte
		granted            bool
	}{
		{"demo/+ under demo.*", "reader", "demo/+", 5, false},
		{"demo/+ under demo.* v3.1.1", "reader", "demo/+", 4, false},
		{"a topic under demo.*", "reader", "demo/" + run, 5, true},
		{"demo/+ under demo.>", "deep", "demo/+", 5, true},
		{"demo/+/x under demo.*.x", "middle", "demo/+/x", 5, false},
		{"demo/y/x under demo.*.x", "middle", "demo/y/x", 5, true},
		{"+/x under *.x", "ends", "+/x", 4, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, r := loginOK(t, url, c.v, "rita", c.role, nil)
			cl.send(t, subscribe(t, c.v, 1, c.filter))
			codes := subackCodes(t, c.v, r.next(t))
			if granted := len(codes) == 1 && codes[0] < 0x80; granted != c.granted {
				t.Fatalf("SUBACK %x for %s, want granted %v", codes, c.filter, c.granted)
			}
		})
	}
	t.Run("what demo/+ would have read", func(t *testing.T) {
		pub := dialMQTT(t, addr, "pub-"+run)
		fence := "demo/" + run + "-fence"
		cl, r := loginOK(t, url, 5, "rita", "reader", nil)
		cl.send(t, subscribe(t, 5, 1, "demo/+", fence))
		subackCodes(t, 5, r.next(t))
		pub.publish(t, "demo/"+run+".secret", "dotted", false)
		pub.publish(t, fence, "fence", false)
		for { // demo/+ also matches other people's demo topics: only ours count
			b := r.next(t)
			if b == nil {
				t.Fatal("gateway closed")
			}
			if b[0]>>4 != packets.Publish {
				continue
			}
			pk := decodePublish(t, 5, b)
			if string(pk.Payload) == "dotted" {
				t.Fatalf("the reader read %s", pk.TopicName)
			}
			if string(pk.Payload) == "fence" {
				break
			}
		}
	})
}

// TestACLEnhancedAuth: MQTT 5 enhanced authentication (an authentication
// method in CONNECT, AUTH packets) would let the client pick the broker
// identity the gateway injects: a restricted identity gets CONNACK 0x8C
// and never reaches the broker; AUTH ends the session.
func TestACLEnhancedAuth(t *testing.T) {
	tap := brokertest.NewTapProxy(t, brokertest.Mosquitto(t))
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: tap.Addr(), Auth: authtest.JWTPolicy(t, nil)}})
	method := "SCRAM-SHA-256-" + runID()
	cl, _, ack := login(t, url, 5, "rita", "reader", func(pk *packets.Packet) {
		pk.Properties.AuthenticationMethod, pk.Properties.AuthenticationData = method, []byte("client-first")
	})
	if ack[3] != reasonBadAuthMethod {
		t.Fatalf("CONNACK %x, want 0x8C", ack)
	}
	if code := cl.closeCode(t); code != bridge.ClosePolicy {
		t.Fatalf("close code %d, want 1008", code)
	}
	cl, r := loginOK(t, url, 5, "rita", "reader", nil)
	cl.send(t, []byte{0xF0, 0x02, 0x19, 0x00}) // AUTH: re-authenticate
	if d := r.next(t); len(d) < 3 || d[0] != 0xE0 || d[2] != reasonNotAuthorized {
		t.Fatalf("AUTH: got %x, want the gateway's DISCONNECT 0x87", d)
	}
	if code := cl.closeCode(t); code != bridge.ClosePolicy {
		t.Fatalf("close code %d, want 1008", code)
	}
	tap.Close()
	if strings.Contains(tap.Sent(), method) {
		t.Fatal("the authentication method reached the broker")
	}
}

// TestACLTopicAliasAfterRefusal: a refused PUBLISH that set a topic alias
// never reached the broker, so the alias still means what the broker last
// saw; the gateway follows the broker, neither more nor less.
func TestACLTopicAliasAfterRefusal(t *testing.T) {
	addr := brokertest.Mosquitto(t)
	run := runID()
	topic := "demo/" + run
	url := startRelay(t, Options{RouteOptions: bridge.RouteOptions{Address: addr, Auth: authtest.JWTPolicy(t, nil)}})
	spy := dialMQTT(t, addr, "spy-"+run)
	spy.subscribe(t, topic, "secret/"+run)
	cl, r := loginOK(t, url, 5, "will", "writer", nil)
	steps := []struct {
		topic   string
		alias   uint16
		allowed bool
	}{
		{topic, 1, true},
		{"secret/" + run, 1, false},
		{"", 1, true}, // alias 1 is still topic at the broker
		{"", 2, false},
	}
	for i, s := range steps {
		cl.send(t, publish(t, 5, 1, uint16(i+1), s.topic, s.alias, fmt.Sprint("step ", i)))
		if ack := r.next(t); refusedAck(ack) == s.allowed {
			t.Fatalf("step %d (%q, alias %d): %x, want allowed %v", i, s.topic, s.alias, ack, s.allowed)
		}
	}
	spy.publish(t, topic, "fence", false)
	got := spy.until(t, "fence")
	if len(got) != 2 || got[0].TopicName != topic || got[1].TopicName != topic {
		t.Fatalf("the broker got %d messages, want steps 0 and 2 on %s", len(got), topic)
	}
}
