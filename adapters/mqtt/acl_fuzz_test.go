package mqtt

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/validate"
)

// The fuzz target's two identities, as policy decisions: "writer" as in
// the worked example plus one share group, and "all" with # for both
// actions.
func fuzzAllow(tb testing.TB) map[string]func(auth.Action, auth.Dest) error {
	pol := rulesPolicy(tb,
		rule(tb, "writer", []string{"demo.*", "$share/workers/demo.*"}, []string{"demo.*"}),
		rule(tb, "all", []string{"#"}, []string{"#"}),
	)
	out := map[string]func(auth.Action, auth.Dest) error{}
	for _, role := range []string{"writer", "all"} {
		id := &auth.Identity{Subject: "fuzz", Roles: []string{role}, Method: "jwt"}
		out[role] = func(act auth.Action, d auth.Dest) error { return pol.Allow(id, act, d) }
	}
	return out
}

// The reference model: what each role may do with concrete topics,
// written from the rules' meaning rather than from auth's matcher.
func refPublish(role, topic string) bool {
	if role == "writer" {
		return inDemo(topic)
	}
	return !strings.HasPrefix(topic, "$")
}

func refRead(role, group, topic string) bool {
	switch {
	case group == "":
		return refPublish(role, topic)
	case role == "writer":
		return group == "workers" && inDemo(topic)
	}
	return false
}

// refShare splits a filter as the broker does: $share/GROUP/FILTER.
func refShare(f string) (group, filter string, ok bool) {
	rest, shared := strings.CutPrefix(f, "$share/")
	if !shared {
		return "", f, true
	}
	group, filter, ok = strings.Cut(rest, "/")
	return group, filter, ok && group != "" && filter != ""
}

// mqttMatch is MQTT's own topic matching, $ rule included.
func mqttMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(t) || (l != "+" && l != t[i]) {
			return false
		}
	}
	return len(f) == len(t)
}

// probes are concrete topics filter can match: wildcards replaced by
// levels with dots, empty levels, $ and several levels.
func probes(filter string) []string {
	plus := []string{"x", "a.b", "", "$y"}
	hash := []string{"", "x", "x/y", "a.b/c"}
	var out []string
	for k := range 4 {
		var b []string
		for j, l := range strings.Split(filter, "/") {
			switch l {
			case "+":
				b = append(b, plus[(k+j)%4])
			case "#":
				if h := hash[(k+j)%4]; h != "" {
					b = append(b, h)
				}
			default:
				b = append(b, l)
			}
		}
		if t := strings.Join(b, "/"); t != "" && mqttMatch(filter, t) {
			out = append(out, t)
		}
	}
	return out
}

// conservative reports whether the ACL may refuse s although the model
// allows it: it reads a '*' or '>' in a topic or filter as a wildcard.
func conservative(s ...string) bool {
	for _, x := range s {
		if strings.ContainsAny(x, "*>") {
			return true
		}
	}
	return false
}

// scanned runs b through validate after a CONNECT of version v, as the
// gateway does; nil when validate refuses.
func scanned(tb testing.TB, v byte, b []byte) (*validate.MQTTScanner, *validate.MQTTPacket) {
	s := validate.NewMQTTScanner(validate.MQTTLimits{})
	c := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: v,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: "f"}}
	var buf bytes.Buffer
	if err := c.ConnectEncode(&buf); err != nil {
		tb.Fatal(err)
	}
	if _, _, err := s.Next(buf.Bytes()); err != nil {
		tb.Fatal(err)
	}
	n, p, err := s.Next(b)
	if err != nil || n != len(b) {
		return nil, nil
	}
	return s, p
}

func encoded(pk packets.Packet) []byte {
	pk.Mods.AllowResponseInfo = true
	var b bytes.Buffer
	switch pk.FixedHeader.Type {
	case packets.Connect:
		pk.ConnectEncode(&b)
	case packets.Publish:
		pk.PublishEncode(&b)
	case packets.Subscribe:
		pk.SubscribeEncode(&b)
	}
	return b.Bytes()
}

// FuzzMQTTACL feeds random CONNECT, PUBLISH (sequences, with topic aliases
// and response topics) and SUBSCRIBE packets through validate and the
// adapter's ACL decisions and checks each decision against the reference
// model: nothing allowed that the model refuses for any topic the packet
// can reach (on the broker's reading: MQTT matching, $ rule, shares,
// aliases as the broker holds them), and nothing refused that the model
// allows for exact names the ACL can read exactly.
func FuzzMQTTACL(f *testing.F) {
	// The seeds, one per way around the ACL, are in
	// testdata/fuzz/FuzzMQTTACL: (v5, role all, kind 0 SUBSCRIBE / 1
	// PUBLISH / 2 CONNECT, three strings, alias, flags).
	allow := fuzzAllow(f)
	f.Fuzz(func(t *testing.T, v5, all bool, kind uint8, s1, s2, s3 string, alias uint16, flags uint8) {
		v, role := byte(4), "writer"
		if v5 {
			v = 5
		}
		if all {
			role = "all"
		}
		a := &acl{allow: allow[role]} // a fresh session: no aliases, no cached topics
		switch kind % 3 {
		case 0:
			fuzzSubscribe(t, a, v, role, s1, s2, flags)
		case 1:
			fuzzPublish(t, a, v, role, s1, s2, s3, alias, flags)
		case 2:
			fuzzConnect(t, a, v, role, s1, s2, s3, flags)
		}
	})
}

func fuzzSubscribe(t *testing.T, a *acl, v byte, role, f1, f2 string, flags uint8) {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: v, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: f1, Qos: flags % 3}, {Filter: f2, NoLocal: flags&4 != 0, RetainHandling: flags >> 3 % 3}}}
	s, _ := scanned(t, v, encoded(pk))
	if s == nil {
		return // validate refuses the packet: nothing reaches the broker
	}
	for _, sub := range s.Decoded.Filters {
		f := sub.Filter
		allowed := a.filter(f) == nil
		group, inner, ok := refShare(f)
		if !ok {
			if allowed {
				t.Fatalf("%s: malformed shared subscription %q allowed", role, f)
			}
			continue
		}
		if allowed {
			for _, topic := range probes(inner) {
				if !refRead(role, group, topic) {
					t.Fatalf("%s: filter %q allowed, but it reads %q (group %q)", role, f, topic, group)
				}
			}
		}
		if !strings.ContainsAny(inner, "+#") && !conservative(f) && refRead(role, group, inner) && !allowed {
			t.Fatalf("%s: exact filter %q refused, the model allows it", role, f)
		}
	}
}

func fuzzPublish(t *testing.T, a *acl, v byte, role, t1, t2, resp string, alias uint16, flags uint8) {
	type step struct {
		topic string
		alias uint16
		resp  string
	}
	a1, a2 := alias%4, alias>>2%4
	steps := []step{{t1, a1, ""}, {t2, a1, resp}, {"", a1, ""}, {"", a2, resp}}
	broker := map[uint16]string{} // the aliases as the broker holds them
	for i, st := range steps {
		if v != 5 && (st.alias != 0 || st.resp != "") {
			continue
		}
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: (flags + byte(i)) % 3}, ProtocolVersion: v,
			PacketID: uint16(i + 1), TopicName: st.topic, Payload: []byte("p")}
		if st.alias != 0 {
			pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = st.alias, true
		}
		if flags&1 != 0 {
			pk.Properties.ResponseTopic = st.resp
		}
		_, p := scanned(t, v, encoded(pk))
		if p == nil {
			return // validate ends the session
		}
		err := a.publish(p)
		if errors.Is(err, errTooManyAliases) {
			return
		}
		resolved, known := string(p.Topic), true
		if resolved == "" {
			resolved, known = broker[p.Alias]
		}
		resp := string(p.ResponseTopic)
		ref := known && refPublish(role, resolved) && (resp == "" || refPublish(role, resp))
		switch {
		case err == nil && known && !ref:
			t.Fatalf("%s: step %d publish to %q (alias %d, response topic %q) allowed", role, i, resolved, p.Alias, resp)
		case err != nil && ref && !conservative(resolved, resp):
			t.Fatalf("%s: step %d publish to %q (alias %d, response topic %q) refused: %v", role, i, resolved, p.Alias, resp, err)
		}
		if err == nil && p.Alias != 0 && len(p.Topic) > 0 {
			broker[p.Alias] = string(p.Topic) // forwarded: the broker now holds it
		}
	}
}

func fuzzConnect(t *testing.T, a *acl, v byte, role, will, method, resp string, flags uint8) {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: v,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: flags&8 != 0, ClientIdentifier: "f"}}
	if flags&1 != 0 {
		c := &pk.Connect
		c.WillFlag, c.WillTopic, c.WillPayload, c.WillRetain, c.WillQos = true, will, []byte("w"), flags&16 != 0, flags>>5%3
		if flags&2 != 0 {
			c.WillProperties.ResponseTopic = resp
		}
	}
	if flags&4 != 0 {
		pk.Properties.AuthenticationMethod = method
	}
	s := validate.NewMQTTScanner(validate.MQTTLimits{})
	b := encoded(pk)
	if n, _, err := s.Next(b); err != nil || n != len(b) {
		return
	}
	cp := &s.Connect
	reason, _, err := a.connect(cp)
	c := cp.Connect
	ref := cp.Properties.AuthenticationMethod == "" &&
		(!c.WillFlag || refPublish(role, c.WillTopic) && (c.WillProperties.ResponseTopic == "" || refPublish(role, c.WillProperties.ResponseTopic)))
	switch {
	case err == nil && !ref:
		t.Fatalf("%s: CONNECT with will %q, will response topic %q, auth method %q allowed", role, c.WillTopic, c.WillProperties.ResponseTopic, cp.Properties.AuthenticationMethod)
	case err != nil && ref && !conservative(c.WillTopic, c.WillProperties.ResponseTopic):
		t.Fatalf("%s: CONNECT with will %q, will response topic %q refused: %v", role, c.WillTopic, c.WillProperties.ResponseTopic, err)
	case err == nil && !c.Clean:
		t.Fatal("an allowed CONNECT of a restricted identity resumes a session")
	case err != nil && cp.Properties.AuthenticationMethod != "" && reason != reasonBadAuthMethod:
		t.Fatalf("enhanced authentication refused with %#x", reason)
	}
}

// TestACLPublishNoAllocs: a restricted session's PUBLISH to the topic, the
// alias and the response topic it used last allocates nothing.
func TestACLPublishNoAllocs(t *testing.T) {
	a := &acl{allow: fuzzAllow(t)["writer"]}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5, PacketID: 1,
		TopicName: "demo/x", Payload: []byte("p"), Properties: packets.Properties{TopicAlias: 1, TopicAliasFlag: true, ResponseTopic: "demo/reply"}}
	_, first := scanned(t, 5, encoded(pk))
	if err := a.publish(first); err != nil {
		t.Fatal(err)
	}
	pk.TopicName = ""
	_, p := scanned(t, 5, encoded(pk))
	if allocs := testing.AllocsPerRun(100, func() {
		if err := a.publish(p); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Fatalf("%v allocations per PUBLISH", allocs)
	}
}
