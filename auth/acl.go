package auth

import (
	"fmt"
	"strings"
)

// Kind is what a destination names on the broker.
type Kind uint8

// Destination kinds. Topic is the common case: a STOMP /topic/x, an MQTT
// topic, an SSE or HTTP-publish topic, or an AMQP routing key on the
// route's topic exchange.
const (
	Topic    Kind = iota
	Queue         // a named queue: STOMP /queue/x and /amq/queue/x, AMQP queues
	Exchange      // an AMQP exchange other than the topic exchange, with a routing key
	Private       // a queue only this connection can use (server-named, temp-queue): always allowed
)

func (k Kind) String() string {
	switch k {
	case Topic:
		return "topic"
	case Queue:
		return "queue"
	case Exchange:
		return "exchange"
	}
	return "private"
}

// Action is what a client wants to do with a destination.
type Action uint8

// Actions.
const (
	Publish Action = iota
	Subscribe
)

func (a Action) String() string {
	if a == Publish {
		return "publish"
	}
	return "subscribe"
}

// Dest is a destination as the ACL sees it. Name may hold wildcards when it
// is a subscription filter: '*' and '+' match one segment, '#' zero or more
// and '>' one or more. Segments are separated by '.' or '/' alike, so one
// rule such as "demo.*" covers the STOMP /topic/demo.x, the MQTT topic
// demo/x and the SSE topic demo.x. A pattern whose first segment is a
// wildcard does not cover a name whose first segment starts with '$'.
type Dest struct {
	Kind     Kind
	Exchange string // Exchange kind only
	Name     string
}

func (d Dest) String() string {
	switch d.Kind {
	case Topic:
		return d.Name
	case Exchange:
		return "exchange:" + d.Exchange + ":" + d.Name
	}
	return d.Kind.String() + ":" + d.Name
}

// Pattern is one allowed destination pattern, as written in a rule:
// "demo.*" (a topic), "queue:jobs.*", "exchange:logs:app.#".
type Pattern struct {
	kind     Kind
	exchange string
	segs     []string
	text     string
}

// ParsePattern reads a rule's pattern.
func ParsePattern(s string) (Pattern, error) {
	p := Pattern{kind: Topic, text: s}
	name := s
	switch {
	case strings.HasPrefix(s, "queue:"):
		p.kind, name = Queue, s[len("queue:"):]
	case strings.HasPrefix(s, "exchange:"):
		rest := s[len("exchange:"):]
		ex, key, ok := strings.Cut(rest, ":")
		if !ok || ex == "" {
			return p, fmt.Errorf("pattern %q: write exchange patterns as exchange:NAME:ROUTING-KEY-PATTERN", s)
		}
		p.kind, p.exchange, name = Exchange, ex, key
	}
	if name == "" {
		return p, fmt.Errorf("pattern %q names nothing", s)
	}
	p.segs = segments(name)
	for i, seg := range p.segs {
		if (seg == "#" || seg == ">") && i != len(p.segs)-1 {
			return p, fmt.Errorf("pattern %q: %s may only be the last segment", s, seg)
		}
	}
	return p, nil
}

func (p Pattern) String() string { return p.text }

// Covers reports whether every destination d can name is matched by p: for
// a plain name, that p matches it; for a filter with wildcards, that p
// matches everything the filter could match.
func (p Pattern) Covers(d Dest) bool {
	if p.kind != d.Kind || (p.kind == Exchange && p.exchange != "*" && p.exchange != d.Exchange) {
		return false
	}
	return covers(p.segs, segments(d.Name))
}

func covers(p, f []string) bool {
	// Names starting with '$' are the broker's own ($SYS, $share, a
	// plugin's $CONTROL): MQTT filters that start with a wildcard do not
	// match them (MQTT-4.7.2-1), and neither does a pattern. A rule reaches
	// them only by spelling out their first segment.
	if len(p) > 0 && len(f) > 0 && wildcard(p[0]) && strings.HasPrefix(f[0], "$") {
		return false
	}
	for {
		if len(p) == 0 {
			return len(f) == 0
		}
		switch p[0] {
		case "#": // zero or more: anything left, including nothing
			return true
		case ">": // one or more
			return len(f) > 0 && f[0] != "#"
		}
		if len(f) == 0 {
			return false
		}
		switch f[0] {
		case "#", ">":
			return false // the filter reaches further than any single segment
		case "*", "+":
			if p[0] != "*" && p[0] != "+" {
				return false
			}
		default:
			if p[0] != "*" && p[0] != "+" && p[0] != f[0] {
				return false
			}
		}
		p, f = p[1:], f[1:]
	}
}

func wildcard(seg string) bool { return seg == "*" || seg == "+" || seg == "#" || seg == ">" }

// segments splits a name at every '.' and '/', keeping empty segments:
// "demo..x" is not "demo.x" to a broker, so not to the ACL either.
func segments(s string) []string {
	segs := make([]string, 0, 4)
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' || s[i] == '/' {
			segs = append(segs, s[start:i])
			start = i + 1
		}
	}
	return append(segs, s[start:])
}

// Rule allows destinations to identities with a role or subject (none of
// either: every authenticated identity).
type Rule struct {
	Roles     []string
	Subjects  []string
	Publish   []Pattern
	Subscribe []Pattern
}

func (r *Rule) appliesTo(id *Identity) bool {
	if len(r.Roles) == 0 && len(r.Subjects) == 0 {
		return true
	}
	for _, s := range r.Subjects {
		if s == id.Subject {
			return true
		}
	}
	for _, want := range r.Roles {
		for _, have := range id.Roles {
			if want == have {
				return true
			}
		}
	}
	return false
}

// Grants are allow-lists carried by a token claim, in the spirit of
// Mercure's authorization details.
type Grants struct {
	Publish   []Pattern
	Subscribe []Pattern
}

func anyCovers(ps []Pattern, d Dest) bool {
	for _, p := range ps {
		if p.Covers(d) {
			return true
		}
	}
	return false
}
