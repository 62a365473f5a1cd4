package amqp

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/validate"
)

// The fuzz target's rules, and the reference model of them below: plain
// code over names, not auth.Pattern, so that a slip in either shows.
var (
	fuzzPublish   = []string{"demo.*", "queue:q.pub", "exchange:ex:k.*", "exchange:wide:#"}
	fuzzSubscribe = []string{"demo.*", "*", "queue:q.*", "exchange:ex:k.*", "exchange:wide:#"}
)

// Names the generator picks from; any other byte makes a name of its own.
var fuzzNames = []string{
	"", "demo.x", "demo.*", "demo.#", "demo.+", "demo.>", "demo", "demo.x.y", "demo/x", "secret.x", "#", "*",
	"q.a", "q.pub", "q/pub", "q.#", "q", "amq.gen-mine", "amq.gen-other", directReplyTo, directReplyTo + ".abc",
	"amq.topic", "amq.fanout", "amq.headers", "amq.match", "amq.direct", "ex", "wide", "k.a", "k.#", "k.*",
	"x-dead-letter-exchange", "x-dead-letter-routing-key", "x-message-ttl", "x-max-length", "x-queue-type",
	"alternate-exchange", "x-priority", "x-stream-offset", "x-whatever", "CC", "BCC", "cc", "x-match",
}

// fuzzField is a field-table entry (or array value, without a name).
type fuzzField struct {
	name  string
	typ   byte
	str   string      // 'S' and 'x'
	elems []fuzzField // 'A'
}

// fuzzCall is one method the generator built, in the form the model reads.
type fuzzCall struct {
	method uint32
	strs   []string // the method's short strings, in order
	bits   byte
	args   []fuzzField
	// basic.publish's content header
	props      byte // which properties are present: see header
	replyTo    string
	headers    []fuzzField
	otherProps string
}

// fuzzSpecs: each method's arguments ('S' short string, 'b' bits, 't'
// table, 's' reserved short, 'l' long).
var fuzzSpecs = []struct {
	id   uint32
	spec string
}{
	{basicPublish, "sSSb"}, {queueDeclare, "sSbt"}, {queueBind, "sSSSbt"}, {queueUnbind, "sSSSt"},
	{queuePurge, "sSb"}, {queueDelete, "sSb"}, {basicGet, "sSb"}, {basicConsume, "sSSbt"},
	{exchangeDeclare, "sSSbt"}, {exchangeDelete, "sSb"}, {exchangeBind, "sSSSbt"}, {exchangeUnbind, "sSSSbt"},
	{60<<16 | 10, "lsb"}, {20<<16 | 20, "b"}, {90<<16 | 10, ""},
}

type fuzzGen struct{ b []byte }

func (z *fuzzGen) byte() byte {
	if len(z.b) == 0 {
		return 0
	}
	c := z.b[0]
	z.b = z.b[1:]
	return c
}

func (z *fuzzGen) name() string {
	b := z.byte()
	if int(b) < len(fuzzNames) {
		return fuzzNames[b]
	}
	n := min(int(b)%12, len(z.b))
	s := string(z.b[:n])
	z.b = z.b[n:]
	return s
}

func (z *fuzzGen) value(depth int) fuzzField {
	switch z.byte() % 7 {
	case 0:
		return fuzzField{typ: 'I', str: "\x00\x00\x00\x07"}
	case 1:
		return fuzzField{typ: 'x', str: z.name()}
	case 2:
		if depth > 2 {
			return fuzzField{typ: 'V'}
		}
		f := fuzzField{typ: 'A'}
		for n := z.byte() % 4; n > 0; n-- {
			f.elems = append(f.elems, z.value(depth+1))
		}
		return f
	case 3:
		return fuzzField{typ: 't', str: "\x01"}
	case 4:
		return fuzzField{typ: 'F', str: "\x00\x00\x00\x00"}
	}
	return fuzzField{typ: 'S', str: z.name()}
}

func (z *fuzzGen) table() []fuzzField {
	var t []fuzzField
	for n := z.byte() % 5; n > 0; n-- {
		name := z.name()
		f := z.value(0)
		f.name = name
		t = append(t, f)
	}
	return t
}

func (z *fuzzGen) call() fuzzCall {
	m := fuzzSpecs[int(z.byte())%len(fuzzSpecs)]
	c := fuzzCall{method: m.id}
	for _, a := range m.spec {
		switch a {
		case 'S':
			c.strs = append(c.strs, z.name())
		case 'b':
			c.bits = z.byte()
		case 't':
			c.args = z.table()
		}
	}
	if m.id == basicPublish {
		c.props = z.byte()
		if c.props&1 != 0 {
			c.replyTo = z.name()
		}
		if c.props&2 != 0 {
			c.headers = z.table()
		}
		c.otherProps = z.name()
	}
	return c
}

func encodeValue(b []byte, f fuzzField) []byte {
	b = append(b, f.typ)
	switch f.typ {
	case 'S', 'x':
		b = binary.BigEndian.AppendUint32(b, uint32(len(f.str)))
		return append(b, f.str...)
	case 'A':
		var vals []byte
		for _, e := range f.elems {
			vals = encodeValue(vals, e)
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(vals)))
		return append(b, vals...)
	}
	return append(b, f.str...)
}

func encodeTable(b []byte, t []fuzzField) []byte {
	var body []byte
	for _, f := range t {
		body = append(append(body, byte(len(f.name))), f.name...)
		body = encodeValue(body, f)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

func fuzzFrame(typ byte, ch uint16, p []byte) []byte {
	b := []byte{typ, byte(ch >> 8), byte(ch), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[3:], uint32(len(p)))
	return append(append(b, p...), 0xCE)
}

// frames encodes c on channel 1: the method, and for a publish its
// content header (body size 0: no body follows).
func (c fuzzCall) frames() (method, header []byte) {
	p := binary.BigEndian.AppendUint32(nil, c.method)
	strs := c.strs
	for _, a := range fuzzSpecs[slices.IndexFunc(fuzzSpecs, func(s struct {
		id   uint32
		spec string
	}) bool {
		return s.id == c.method
	})].spec {
		switch a {
		case 's':
			p = append(p, 0, 0)
		case 'l':
			p = append(p, 0, 0, 0, 0)
		case 'S':
			p = append(append(p, byte(len(strs[0]))), strs[0]...)
			strs = strs[1:]
		case 'b':
			p = append(p, c.bits)
		case 't':
			p = encodeTable(p, c.args)
		}
	}
	method = fuzzFrame(validate.AMQPFrameMethod, 1, p)
	if c.method != basicPublish {
		return method, nil
	}
	// content-type (when props&4), headers, correlation-id (props&8),
	// reply-to, message-id (props&16): reply-to's place moves with them.
	h := []byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	var flags uint16
	var list []byte
	short := func(s string) { list = append(append(list, byte(len(s))), s...) }
	if c.props&4 != 0 {
		flags |= 1 << 15
		short(c.otherProps)
	}
	if c.props&2 != 0 {
		flags |= 1 << 13
		list = encodeTable(list, c.headers)
	}
	if c.props&8 != 0 {
		flags |= 1 << 10
		short(c.otherProps)
	}
	if c.props&1 != 0 {
		flags |= 1 << 9
		short(c.replyTo)
	}
	if c.props&16 != 0 {
		flags |= 1 << 7
		short(c.otherProps)
	}
	h = binary.BigEndian.AppendUint16(h, flags)
	return method, fuzzFrame(validate.AMQPFrameHeader, 1, append(h, list...))
}

// The reference model.

type modelDest struct{ kind, ex, name string }

// oneBelow: the name is first.X where X is one segment, a plain name or a
// one-segment wildcard (what "first.*" covers).
func oneBelow(name, first string) bool {
	s := strings.Split(strings.ReplaceAll(name, "/", "."), ".")
	return len(s) == 2 && s[0] == first && s[1] != "#" && s[1] != ">"
}

func modelRoute(ex, key string) modelDest {
	switch ex {
	case "":
		if key == "amq.gen-mine" {
			return modelDest{kind: "private"}
		}
		return modelDest{kind: "queue", name: key}
	case "amq.topic":
		return modelDest{kind: "topic", name: key}
	case "amq.fanout", "amq.headers", "amq.match":
		key = "#"
	}
	return modelDest{kind: "exchange", ex: ex, name: key}
}

// modelBinding is what a binding key on ex reads: a '*' word is '>' (a
// word may hold '/').
func modelBinding(ex, key string) modelDest {
	d := modelRoute(ex, key)
	if ex != "" {
		w := strings.Split(d.name, ".")
		for i := range w {
			if w[i] == "*" {
				w[i] = ">"
			}
		}
		d.name = strings.Join(w, ".")
	}
	return d
}

func modelQueue(name string) modelDest {
	if name == "" || name == "amq.gen-mine" {
		return modelDest{kind: "private"}
	}
	return modelDest{kind: "queue", name: name}
}

func modelAllow(publish bool, d modelDest) bool {
	switch d.kind {
	case "private":
		return true
	case "topic":
		if s := strings.Split(strings.ReplaceAll(d.name, "/", "."), "."); !publish && len(s) == 1 && s[0] != "#" && s[0] != ">" &&
			!strings.HasPrefix(s[0], "$") {
			return true // "*": any one segment, the empty one too, but no $ name
		}
		return oneBelow(d.name, "demo")
	case "queue":
		if publish {
			return strings.ReplaceAll(d.name, "/", ".") == "q.pub"
		}
		return oneBelow(d.name, "q")
	}
	// A wildcard-first pattern (wide's "#") covers no $ name: auth's $ rule.
	return d.ex == "wide" && !strings.HasPrefix(d.name, "$") || d.ex == "ex" && oneBelow(d.name, "k")
}

var (
	modelStorage = []string{"x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-overflow",
		"x-max-priority", "x-queue-type", "x-queue-mode", "x-queue-version", "x-queue-master-locator",
		"x-queue-leader-locator", "x-single-active-consumer", "x-max-age", "x-delivery-limit",
		"x-dead-letter-strategy", "x-max-in-memory-length", "x-max-in-memory-bytes",
		"x-stream-max-segment-size-bytes", "x-initial-cluster-size", "x-quorum-initial-group-size"}
	modelConsumer = []string{"x-priority", "x-cancel-on-ha-failover", "x-stream-offset"}
)

func noDuplicates(t []fuzzField) bool {
	seen := map[string]bool{}
	for _, f := range t {
		if seen[f.name] {
			return false
		}
		seen[f.name] = true
	}
	return true
}

func modelQueueArgs(args []fuzzField, own bool) bool {
	if !noDuplicates(args) {
		return false
	}
	var dlx, dlrk *fuzzField
	for i, f := range args {
		switch {
		case f.name == "x-dead-letter-exchange":
			dlx = &args[i]
		case f.name == "x-dead-letter-routing-key":
			dlrk = &args[i]
		case slices.Contains(modelStorage, f.name):
			if !own {
				return false
			}
		default:
			return false
		}
	}
	if dlx != nil && dlx.typ != 'S' || dlrk != nil && dlrk.typ != 'S' {
		return false
	}
	switch {
	case dlx == nil:
		return dlrk == nil
	case dlrk == nil:
		return modelAllow(true, modelRoute(dlx.str, "#"))
	}
	return modelAllow(true, modelRoute(dlx.str, dlrk.str))
}

func modelHeader(c fuzzCall, ex string) bool {
	if c.props&1 != 0 && c.replyTo != "" && c.replyTo != directReplyTo && c.replyTo != "amq.gen-mine" &&
		!modelAllow(true, modelDest{kind: "queue", name: c.replyTo}) {
		return false
	}
	others := false
	for _, h := range c.headers {
		if h.name != "CC" && h.name != "BCC" {
			others = true
			continue
		}
		if h.typ != 'A' {
			return false
		}
		for _, e := range h.elems {
			if e.typ != 'S' || !modelAllow(true, modelRoute(ex, e.str)) {
				return false
			}
		}
	}
	return !others || ex == "" || ex == "amq.topic" || modelAllow(true, modelRoute(ex, "#"))
}

// modelChannel is what the model remembers of the calls' channel: its most
// recently declared queue, which a queue.bind to queue "" binds ("" for
// one the broker named for it).
type modelChannel struct{ declared string }

// model says whether the table in docs/security.md allows c, the next call
// on the channel.
func (m *modelChannel) model(c fuzzCall) bool {
	ok := model(c, m.declared)
	if ok && c.method == queueDeclare {
		if passive := c.bits&1 != 0; c.strs[0] == "" && !passive {
			m.declared = ""
		} else if c.strs[0] != "" {
			m.declared = c.strs[0]
		}
	}
	return ok
}

// model says whether the table allows c on a channel whose most recently
// declared queue is declared.
func model(c fuzzCall, declared string) bool {
	s := c.strs
	switch c.method {
	case basicPublish:
		return modelAllow(true, modelRoute(s[0], s[1])) && modelHeader(c, s[0])
	case queueDeclare:
		passive := c.bits&1 != 0
		own := s[0] == "" && !passive
		switch {
		case passive:
			return s[0] == directReplyTo || modelAllow(false, modelQueue(s[0]))
		case !own && !modelAllow(false, modelQueue(s[0])):
			return false
		}
		return modelQueueArgs(c.args, own)
	case queueBind, queueUnbind:
		q, ex, key := s[0], s[1], s[2]
		d := modelQueue(q)
		if q == "" && declared != "" {
			d = modelQueue(declared)
		}
		if d.kind != "private" && !(modelAllow(false, d) && modelAllow(true, d)) {
			return false
		}
		if q == "" && key == "" || len(c.args) > 0 {
			key = "#"
		}
		return modelAllow(false, modelBinding(ex, key))
	case queuePurge, queueDelete, basicGet:
		return modelAllow(false, modelQueue(s[0]))
	case basicConsume:
		if s[0] != directReplyTo && !modelAllow(false, modelQueue(s[0])) || !noDuplicates(c.args) {
			return false
		}
		for _, f := range c.args {
			if !slices.Contains(modelConsumer, f.name) {
				return false
			}
		}
		return true
	case exchangeDeclare:
		whole := modelRoute(s[0], "#")
		if c.bits&1 != 0 {
			return s[0] == "" || s[0] == "amq.topic" || modelAllow(false, whole) || modelAllow(true, whole)
		}
		if !modelAllow(true, whole) || !noDuplicates(c.args) {
			return false
		}
		for _, f := range c.args {
			if f.name != "alternate-exchange" || f.typ != 'S' || !modelAllow(true, modelRoute(f.str, "#")) {
				return false
			}
		}
		return true
	case exchangeDelete:
		return modelAllow(true, modelRoute(s[0], "#"))
	case exchangeBind, exchangeUnbind:
		dst, src, key := s[0], s[1], s[2]
		if len(c.args) > 0 {
			key = "#"
		}
		return modelAllow(true, modelRoute(dst, "#")) && modelAllow(false, modelBinding(src, key))
	}
	return true
}

// fuzzGuard is a guard with the fuzz rules that holds amq.gen-mine as its
// connection's own queue (learnt from a declare-ok, as in a session) and
// has seen amq.gen-other answer a passive declare (so not its own).
func fuzzGuard(t testing.TB) *guard {
	t.Helper()
	parse := func(ss []string) []auth.Pattern {
		var ps []auth.Pattern
		for _, s := range ss {
			p, err := auth.ParsePattern(s)
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
		return ps
	}
	policy, err := auth.New(auth.Options{Rules: []auth.Rule{{Publish: parse(fuzzPublish), Subscribe: parse(fuzzSubscribe)}}})
	if err != nil {
		t.Fatal(err)
	}
	id := &auth.Identity{Subject: "fuzz"}
	g := &guard{allow: func(a auth.Action, d auth.Dest) error { return policy.Allow(id, a, d) }, topicEx: "amq.topic", maxDepth: 8}
	declareOk := func(name string) []byte {
		p := append([]byte{0, 50, 0, 11, byte(len(name))}, name...)
		return fuzzFrame(validate.AMQPFrameMethod, 1, append(p, 0, 0, 0, 0, 0, 0, 0, 0))
	}
	g.queues.expect(1, true)
	g.queues.brokerFrame(declareOk("amq.gen-mine"))
	g.queues.expect(1, false)
	g.queues.brokerFrame(declareOk("amq.gen-other"))
	return g
}

// fuzzScanner is a scanner past the handshake with channel 1 open.
func fuzzScanner(t testing.TB) *validate.AMQPScanner {
	t.Helper()
	s := validate.NewAMQPScanner(validate.AMQPLimits{})
	str := func(v string) []byte { return append([]byte{byte(len(v))}, v...) }
	in := []byte(validate.AMQPProtocolHeader)
	in = append(in, fuzzFrame(1, 0, slices.Concat([]byte{0, 10, 0, 11, 0, 0, 0, 0}, str("PLAIN"), []byte{0, 0, 0, 0}, str("en")))...)
	in = append(in, fuzzFrame(1, 0, []byte{0, 10, 0, 31, 0, 10, 0, 2, 0, 0, 0, 0})...)
	in = append(in, fuzzFrame(1, 0, slices.Concat([]byte{0, 10, 0, 40}, str("/"), str(""), []byte{0}))...)
	in = append(in, fuzzFrame(1, 1, slices.Concat([]byte{0, 20, 0, 10}, str("")))...)
	for len(in) > 0 {
		n, _, err := s.Next(in)
		if err != nil || n == 0 {
			t.Fatalf("handshake: %v", err)
		}
		in = in[n:]
	}
	return s
}

// scanned runs one frame through the scanner, as the session does before
// the guard sees it, and returns a copy of what the scanner made of it.
func scanned(s *validate.AMQPScanner, b []byte) (validate.AMQPFrame, bool) {
	n, f, err := s.Next(b)
	if err != nil || n != len(b) || f == nil {
		return validate.AMQPFrame{}, false
	}
	return *f, true
}

// FuzzAMQPACL builds sequences of methods, arguments and properties from
// its input, has the scanner accept them as a session would, and checks
// the guard's decision on each against the model, both with the content
// header right behind its basic.publish and with the publish held until
// the header came in a later message. Input that starts with 0xFF is
// instead raw frames after the handshake, where only a panic fails.
// Seeds live in testdata/fuzz/FuzzAMQPACL.
func FuzzAMQPACL(f *testing.F) {
	f.Add([]byte{0, 1, 1, 0, 0})
	f.Add([]byte{0, 23, 8, 0, 3, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 0 && in[0] == 0xFF {
			fuzzRaw(t, in[1:])
			return
		}
		z := &fuzzGen{b: in}
		ahead, held := fuzzGuard(t), fuzzGuard(t)
		sa, sh := fuzzScanner(t), fuzzScanner(t)
		var ch modelChannel
		for n := 1 + int(z.byte())%4; n > 0; n-- {
			c := z.call()
			mb, hb := c.frames()
			want := ch.model(c)
			if got := decide(t, ahead, sa, mb, hb, true); got != want {
				t.Fatalf("%s: the guard says %v (a publish with its header behind it), the model %v", describe(c), got, want)
			}
			if got := decide(t, held, sh, mb, hb, false); got != want {
				t.Fatalf("%s: the guard says %v (a publish held for its header), the model %v", describe(c), got, want)
			}
		}
	})
}

// decide feeds a method (and header) through scanner and guard as the
// session's OnMessage does and reports whether they were allowed.
func decide(t *testing.T, g *guard, s *validate.AMQPScanner, mb, hb []byte, ahead bool) bool {
	t.Helper()
	f, ok := scanned(s, mb)
	if !ok {
		t.Fatalf("the scanner refused a generated frame % x", mb)
	}
	next := []byte(nil)
	if ahead {
		next = hb
	}
	held, err := g.method(&f, next)
	if hb == nil {
		return err == nil
	}
	hf, ok := scanned(s, hb)
	if !ok {
		t.Fatalf("the scanner refused a generated header % x", hb)
	}
	switch {
	case err != nil:
		return false // the channel closes; the header is dropped
	case held == ahead:
		t.Fatalf("held %v with the header %s", held, map[bool]string{true: "behind it", false: "apart"}[ahead])
	}
	pub, err := g.content(&hf)
	if ahead && pub != nil {
		t.Fatal("a publish decided with its header was held too")
	}
	if !ahead && err == nil && string(pub) != string(mb) {
		t.Fatalf("released % x, want the held publish % x", pub, mb)
	}
	g.release(1)
	if g.heldN != 0 || len(g.held) != 0 {
		t.Fatalf("%d frames still held", g.heldN)
	}
	return err == nil
}

// fuzzRaw feeds arbitrary frames through scanner and guard as OnMessage
// would: nothing may panic.
func fuzzRaw(t *testing.T, in []byte) {
	g, s := fuzzGuard(t), fuzzScanner(t)
	for len(in) > 0 {
		n, f, err := s.Next(in)
		if err != nil || n == 0 {
			return
		}
		if f.Channel != 0 {
			switch f.Type {
			case validate.AMQPFrameMethod:
				g.method(f, in[n:])
			case validate.AMQPFrameHeader:
				g.content(f)
				g.release(f.Channel)
			}
		}
		in = in[n:]
	}
}

func describe(c fuzzCall) string {
	name := (&validate.AMQPFrame{Class: uint16(c.method >> 16), Method: uint16(c.method)}).MethodName()
	return fmt.Sprintf("%s %q bits %08b args %+v props %05b reply-to %q headers %+v", name, c.strs, c.bits, c.args, c.props&31, c.replyTo, c.headers)
}
