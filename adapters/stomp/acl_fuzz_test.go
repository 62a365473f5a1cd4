package stomp

import (
	"slices"
	"strings"
	"testing"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/internal/authtest"
	"github.com/wsbridge/wsbridge/validate"
)

// FuzzSTOMPACL feeds random SEND and SUBSCRIBE frames through the
// validator and the session's ACL, for an identity that may publish and
// subscribe demo.* (topics and queues), and checks every decision against
// refAllows: a plain model of how RabbitMQ reads the frame and of what the
// rule allows.
func FuzzSTOMPACL(f *testing.F) {
	for _, s := range []struct {
		sub        bool
		dest, hdrs string
	}{
		{false, "/topic/demo.x", ""},
		{true, "/topic/demo.x", "x-message-ttl:10\nid:1\n"},
		{false, "/reply-queue/orders", ""},
		{false, "/reply-queue/given", ""},
		{true, "/reply-queue/demo.x", "id:1\n"},
		{false, "orders", ""},
		{false, " /queue/demo.x", ""},
		{true, "/topic/demo.x", "x-dead-letter-exchange:amq.topic\nx-dead-letter-routing-key:secret.y\n"},
		{true, "/queue/demo.x", "x-dead-letter-exchange:\nx-dead-letter-routing-key:demo.y\nx-max-length:1\n"},
		{false, "/topic/demo.x", "reply-to:/temp-queue/r\n"},
		{false, "/topic/demo.x", "reply-to:/queue/secret\n"},
		{false, "/exchange/amq.topic/demo.x", "destination:/amq/queue/secret\n"},
		{true, "/exchange/amq.direct/demo.x", "x-queue-name:demo.q\n"},
		{false, "/queue/demo%2Fx", ""},
		{true, "/temp-queue/t", "exclusive:true\nselector:a\n"},
	} {
		f.Add(s.sub, s.dest, s.hdrs)
	}
	pol := authtest.JWTPolicy(f, func(o *auth.Options) {
		var pats []auth.Pattern
		for _, s := range []string{"demo.*", "queue:demo.*"} {
			p, err := auth.ParsePattern(s)
			if err != nil {
				f.Fatal(err)
			}
			pats = append(pats, p)
		}
		o.Rules = []auth.Rule{{Publish: pats, Subscribe: pats}}
	})
	id := &auth.Identity{Subject: "fuzz", Roles: []string{"writer"}, Method: "jwt"}
	f.Fuzz(func(t *testing.T, sub bool, dest, hdrs string) {
		cmd := "SEND"
		if sub {
			cmd = "SUBSCRIBE"
		}
		frame := "CONNECT\naccept-version:1.2\n\n\x00" + cmd + "\ndestination:" + dest + "\n" + hdrs + "\n\x00"
		sc := validate.NewSTOMPScanner(validate.STOMPLimits{}, false)
		n, _, err := sc.Next([]byte(frame))
		if err != nil || n == 0 {
			t.Skip()
		}
		_, fr, err := sc.Next([]byte(frame[n:]))
		if err != nil || fr == nil || (fr.Command != validate.CmdSend && fr.Command != validate.CmdSubscribe) {
			return // the validator refuses it: nothing reaches the ACL
		}
		a := &acl{topicExchange: "amq.topic", given: &replyQueues{},
			allow: func(act auth.Action, d auth.Dest) error { return pol.Allow(id, act, d) },
			deny:  func(_, msg string) error { return &auth.Error{Msg: msg} }}
		a.given.add("/reply-queue/given")
		var headers [][2]string
		for i := range fr.NumHeaders() {
			name, val := fr.HeaderAt(i)
			headers = append(headers, [2]string{string(name), unescape(val, sc.Version)})
		}
		_, err = a.authorize(fr, sc.Version)
		got := err == nil
		if want := refAllows(sub, headers); got != want {
			t.Fatalf("%s with headers %q: the ACL says allowed=%v, the model %v", cmd, headers, got, want)
		}
	})
}

// refAllows is the model: a destination is read as RabbitMQ's
// parse_endpoint reads it, and the rule demo.* allows a name of exactly
// two words, the first "demo", the second no multi-word wildcard.
func refAllows(sub bool, headers [][2]string) bool {
	within := func(name string) bool {
		first, second, ok := strings.Cut(strings.ReplaceAll(name, "/", "."), ".")
		return ok && first == "demo" && !strings.Contains(second, ".") && second != "#" && second != ">"
	}
	type ep struct {
		kind, ex, name string
	}
	parse := func(d string) (ep, bool) {
		un := func(s string) string { return strings.ReplaceAll(s, "%2F", "/") }
		parts := strings.Split(d, "/")
		switch {
		case d == "":
			return ep{}, false
		case len(parts) == 1:
			return ep{"queue", "", un(d)}, true
		case parts[0] != "":
			return ep{}, false
		case parts[1] == "reply-queue" && len(parts) > 2:
			name := strings.Join(parts[2:], "/")
			return ep{"reply", "", un(name)}, name != ""
		case parts[1] == "exchange":
			rest := parts[2:]
			if len(rest) == 0 || len(rest) > 2 || rest[0] == "" {
				return ep{}, false
			}
			if len(rest) == 1 {
				return ep{"exchange", un(rest[0]), ""}, true
			}
			return ep{"exchange", un(rest[0]), un(rest[1])}, true
		case parts[1] == "amq" && len(parts) > 2 && parts[2] == "queue":
			return ep{"queue", "", un(strings.Join(parts[3:], "/"))}, len(parts) == 4 && parts[3] != ""
		case parts[1] == "queue" || parts[1] == "topic" || parts[1] == "temp-queue":
			return ep{parts[1], "", un(strings.Join(parts[2:], "/"))}, len(parts) == 3 && parts[2] != ""
		}
		return ep{}, false
	}
	val := func(s string) string { return strings.TrimLeft(s, " ") }
	// A '*' word of a binding key matches a word holding '/' too.
	wordWildcard := func(key string) bool { return slices.Contains(strings.Split(key, "."), "*") }
	allowed := func(d string, publish bool) (ok, own bool) {
		e, valid := parse(val(d))
		if !valid {
			return false, false
		}
		switch e.kind {
		case "temp-queue":
			return true, true
		case "topic":
			return within(e.name) && (publish || !wordWildcard(e.name)), true
		case "exchange":
			return e.ex == "amq.topic" && within(e.name) && (publish || !wordWildcard(e.name)), true
		case "reply":
			return (publish && val(d) == "/reply-queue/given") || within(e.name), false
		}
		return within(e.name), false
	}
	own := true
	get := func(name string) (string, bool) {
		for _, h := range headers {
			if h[0] == name {
				return h[1], true
			}
		}
		return "", false
	}
	for _, h := range headers {
		if h[0] == "destination" {
			ok, mine := allowed(h[1], !sub)
			if !ok {
				return false
			}
			own = own && mine
		}
	}
	if _, named := get("x-queue-name"); named {
		own = false // a named queue may be shared: it is not the subscription's own
	}
	harmless := map[string]bool{"destination": true, "durable": true, "persistent": true}
	if sub {
		for _, n := range []string{"id", "ack", "receipt", "prefetch-count", "content-length", "content-type",
			"x-priority", "x-stream-offset", "x-stream-filter", "x-stream-match-unfiltered"} {
			harmless[n] = true
		}
	}
	shaping := map[string]bool{}
	for _, n := range []string{"x-dead-letter-strategy", "x-expires", "x-message-ttl", "x-max-length", "x-max-length-bytes",
		"x-max-age", "x-max-priority", "x-overflow", "x-queue-type", "x-queue-mode", "x-queue-version",
		"x-queue-master-locator", "x-queue-leader-locator", "x-single-active-consumer", "x-delivery-limit",
		"x-initial-cluster-size", "x-quorum-initial-group-size", "x-stream-max-segment-size-bytes",
		"x-stream-filter-size-bytes", "exclusive", "auto-delete"} {
		shaping[n] = true
	}
	for _, h := range headers {
		name := h[0]
		switch {
		case harmless[name]:
		case shaping[name]:
			if !sub || !own {
				return false
			}
		case name == "x-dead-letter-exchange" || name == "x-dead-letter-routing-key":
			ex, hasEx := get("x-dead-letter-exchange")
			key, hasKey := get("x-dead-letter-routing-key")
			ex, key = val(ex), val(key)
			switch {
			case !hasEx:
				return false
			case ex == "":
				if !hasKey || !within(key) {
					return false
				}
			case ex != "amq.topic" || !hasKey || !within(key):
				return false
			}
		case name == "x-queue-name" && sub:
			if !within(val(h[1])) {
				return false
			}
		case name == "reply-to" && !sub:
			if ok, _ := allowed(h[1], true); !ok {
				return false
			}
		case sub:
			return false
		}
	}
	return true
}
