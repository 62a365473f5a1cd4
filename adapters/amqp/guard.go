package amqp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/validate"
)

// Method ids (class<<16 | method) the guard decides on.
const (
	channelOpen     = 20<<16 | 10
	exchangeDeclare = 40<<16 | 10
	exchangeDelete  = 40<<16 | 20
	exchangeBind    = 40<<16 | 30
	exchangeUnbind  = 40<<16 | 40
	queueDeclare    = 50<<16 | 10
	queueBind       = 50<<16 | 20
	queuePurge      = 50<<16 | 30
	queueDelete     = 50<<16 | 40
	queueUnbind     = 50<<16 | 50
	basicConsume    = 60<<16 | 20
	basicPublish    = 60<<16 | 40
	basicGet        = 60<<16 | 70
)

// directReplyTo is RabbitMQ's pseudo-queue for RPC replies: a channel
// consuming it gets only the replies addressed to that channel.
const directReplyTo = "amq.rabbitmq.reply-to"

// maxHeldPublishes bounds the basic.publish frames a connection may have
// waiting for a content header that has not arrived yet.
const maxHeldPublishes = 64

// hash is the routing key that stands for every key.
var hash = []byte("#")

// guard decides, for an identity with rules, whether a client's method
// or content header may reach the broker. It is deny by default: whatever
// changes where the broker routes, stores or forwards a message is checked
// against the rules or refused when it is not on the lists below
// (docs/security.md explains each decision). It runs in the client loop;
// only queues reads what the broker loop writes.
type guard struct {
	allow    func(auth.Action, auth.Dest) error // the identity's rules; logs nothing
	topicEx  string
	maxDepth int // field-table nesting, as the scanner bounds it

	// The last destinations the rules allowed, so that publishing to the
	// same place again allocates nothing. Rules do not change during a
	// session, so an allowed destination stays allowed.
	pubOK, replyOK, wholeOK bool
	pubEx, pubKey           []byte
	replyTo, wholeEx        []byte

	checked uint32 // channel+1 whose next frame, a content header, is already allowed
	// declared is each channel's most recently declared queue, the one a
	// queue.bind naming queue "" binds: its name, or "" for one the broker
	// named for this connection.
	declared map[uint16]string
	held     []byte // basic.publish frames waiting for their content header
	heldN    int

	queues serverNamed
}

// method decides a method frame on a channel other than 0, which the
// scanner has accepted. next is what follows the frame in the same
// message: a basic.publish is decided together with its content header
// when that is the next frame; when it is not, the guard holds the
// publish (held reports it) until the header comes to content.
func (g *guard) method(f *validate.AMQPFrame, next []byte) (held bool, err error) {
	a := argReader{p: f.Payload, off: 4}
	switch uint32(f.Class)<<16 | uint32(f.Method) {
	case basicPublish:
		a.skip(2)
		ex, key := a.str(), a.str()
		if err := g.publish(ex, key); err != nil {
			return false, err
		}
		hdr, ok := nextHeader(next, f.Channel)
		if !ok {
			return true, g.hold(f.Raw)
		}
		if err := g.header(ex, hdr); err != nil {
			return false, err
		}
		g.checked = uint32(f.Channel) + 1
	case channelOpen:
		g.queues.reset(f.Channel)
		delete(g.declared, f.Channel)
	case exchangeDeclare:
		a.skip(2)
		name := a.str()
		a.str() // type
		bits, args := a.octet(), a.table()
		if bits&1 != 0 { // passive: the broker ignores everything but the name
			return false, g.probeExchange(name)
		}
		if err := g.allow(auth.Publish, g.route(name, hash)); err != nil {
			return false, err
		}
		return false, g.exchangeArgs(args)
	case exchangeDelete:
		a.skip(2)
		return false, g.allow(auth.Publish, g.route(a.str(), hash))
	case exchangeBind, exchangeUnbind:
		a.skip(2)
		dst, src, key := a.str(), a.str(), a.str()
		a.octet()
		// Whatever reaches the source under the binding goes on to the
		// destination with its own key, to any of the destination's bindings.
		if err := g.allow(auth.Publish, g.route(dst, hash)); err != nil {
			return false, err
		}
		if len(a.table()) > 4 { // a headers exchange matches arguments, not the key
			key = hash
		}
		return false, g.allow(auth.Subscribe, g.binding(src, key))
	case queueDeclare:
		a.skip(2)
		name := a.str()
		bits, args := a.octet(), a.table()
		passive, noWait := bits&1 != 0, bits&16 != 0
		own := len(name) == 0 && !passive // the broker names a new queue for us
		switch {
		case passive && string(name) == directReplyTo:
		case !own:
			if err := g.allow(auth.Subscribe, g.queue(name)); err != nil {
				return false, err
			}
		}
		if !passive { // a passive declare's arguments are ignored by the broker
			if err := g.queueArgs(args, own); err != nil {
				return false, err
			}
		}
		if !noWait && !g.queues.expect(f.Channel, own) {
			return false, fmt.Errorf("more than %d queue.declare awaiting their reply on one channel", maxDeclaresInFlight)
		}
		if g.declared == nil {
			g.declared = map[uint16]string{}
		}
		if own {
			g.declared[f.Channel] = ""
		} else if len(name) > 0 {
			g.declared[f.Channel] = string(name)
		}
	case queueBind:
		a.skip(2)
		q, ex, key := a.str(), a.str(), a.str()
		a.octet()
		return false, g.bind(f.Channel, q, ex, key, a.table())
	case queueUnbind:
		a.skip(2)
		q, ex, key := a.str(), a.str(), a.str()
		return false, g.bind(f.Channel, q, ex, key, a.table())
	case queuePurge, queueDelete, basicGet:
		a.skip(2)
		return false, g.allow(auth.Subscribe, g.queue(a.str()))
	case basicConsume:
		a.skip(2)
		q := a.str()
		a.str() // consumer tag
		a.octet()
		if string(q) != directReplyTo {
			if err := g.allow(auth.Subscribe, g.queue(q)); err != nil {
				return false, err
			}
		}
		return false, g.consumeArgs(a.table())
	}
	return false, nil
}

// content decides a content header frame. The header of a publish the
// lookahead already allowed passes; that of a held publish is decided
// now, and pub is the held frame to forward first.
func (g *guard) content(f *validate.AMQPFrame) (pub []byte, err error) {
	if g.checked == uint32(f.Channel)+1 {
		g.checked = 0
		return nil, nil
	}
	if pub = g.heldFor(f.Channel); pub == nil {
		return nil, errors.New("content header without its basic.publish")
	}
	a := argReader{p: pub[7 : len(pub)-1], off: 6}
	return pub, g.header(a.str(), f.Payload)
}

// publish decides basic.publish to exchange with routing key key.
func (g *guard) publish(ex, key []byte) error {
	if g.pubOK && bytes.Equal(ex, g.pubEx) && bytes.Equal(key, g.pubKey) {
		return nil
	}
	d := g.route(ex, key)
	if err := g.allow(auth.Publish, d); err != nil {
		return err
	}
	if d.Kind != auth.Private {
		g.pubEx, g.pubKey, g.pubOK = append(g.pubEx[:0], ex...), append(g.pubKey[:0], key...), true
	}
	return nil
}

// header decides the properties of a message published to exchange ex:
// reply-to names where a responder will publish on the client's behalf;
// the CC and BCC headers route copies under more keys (RabbitMQ's
// sender-selected distribution); a headers exchange routes by the rest.
func (g *guard) header(ex, payload []byte) error {
	pr, err := validate.ParseAMQPProperties(payload, g.maxDepth)
	if err != nil {
		return err
	}
	if rt, ok := pr.String(validate.AMQPReplyTo); ok && len(rt) > 0 {
		if err := g.replyToAllowed(rt); err != nil {
			return fmt.Errorf("reply-to: %w", err)
		}
	}
	h, ok := pr.Headers()
	if !ok || h.Len() == 0 {
		return nil
	}
	others := false
	for name, v, ok := h.Next(); ok; name, v, ok = h.Next() {
		if string(name) != "CC" && string(name) != "BCC" {
			others = true
			continue
		}
		keys, ok := v.Array()
		if !ok {
			return fmt.Errorf("header %s must be an array of routing keys", name)
		}
		for _, k, ok := keys.Next(); ok; _, k, ok = keys.Next() {
			key, ok := k.String()
			if !ok {
				return fmt.Errorf("header %s must hold long strings only", name)
			}
			if err := g.allow(auth.Publish, g.route(ex, key)); err != nil {
				return fmt.Errorf("header %s: %w", name, err)
			}
		}
		if keys.Err() != nil {
			return keys.Err()
		}
	}
	if h.Err() != nil {
		return h.Err()
	}
	if !others || len(ex) == 0 || string(ex) == g.topicEx {
		return nil // the default and topic exchanges route by key alone
	}
	if g.wholeOK && bytes.Equal(ex, g.wholeEx) {
		return nil
	}
	if err := g.allow(auth.Publish, g.route(ex, hash)); err != nil {
		return fmt.Errorf("headers (a headers exchange routes by them, not the key): %w", err)
	}
	g.wholeEx, g.wholeOK = append(g.wholeEx[:0], ex...), true
	return nil
}

func (g *guard) replyToAllowed(rt []byte) error {
	if string(rt) == directReplyTo || g.queues.has(rt) || (g.replyOK && bytes.Equal(rt, g.replyTo)) {
		return nil
	}
	if err := g.allow(auth.Publish, auth.Dest{Kind: auth.Queue, Name: string(rt)}); err != nil {
		return err
	}
	g.replyTo, g.replyOK = append(g.replyTo[:0], rt...), true
	return nil
}

// bind decides queue.bind and queue.unbind on channel ch: one may remove
// only the bindings one may make.
func (g *guard) bind(ch uint16, q, ex, key, args []byte) error {
	d := g.queue(q)
	if last := g.declared[ch]; len(q) == 0 && last != "" {
		// Queue "" is the channel's last declared: a named one may be one
		// the identity may read but not feed.
		d = g.queue([]byte(last))
	}
	if d.Kind != auth.Private {
		// A binding feeds the queue (a write) as much as it subscribes it.
		if err := g.allow(auth.Subscribe, d); err != nil {
			return err
		}
		if err := g.allow(auth.Publish, d); err != nil {
			return err
		}
	}
	switch {
	case len(q) == 0 && len(key) == 0:
		key = hash // the broker binds with the last declared queue's name as the key
	case len(args) > 4:
		key = hash // a headers exchange matches arguments, not the key
	}
	return g.allow(auth.Subscribe, g.binding(ex, key))
}

// binding is what a binding of key to exchange ex reads, as the rules name
// it. A topic exchange's '*' matches one word, and a word may hold '/',
// which the rules read as a separator: demo.* matches demo.x/y, which the
// rule demo.* does not cover. So a '*' word is as wide as '>' to the ACL,
// as MQTT's '+' is; '#' (zero or more words) already reads alike.
func (g *guard) binding(ex, key []byte) auth.Dest {
	d := g.route(ex, key)
	if len(ex) == 0 || !bytes.Contains(key, []byte("*")) {
		return d
	}
	words := strings.Split(d.Name, ".")
	for i, w := range words {
		if w == "*" {
			words[i] = ">"
		}
	}
	d.Name = strings.Join(words, ".")
	return d
}

// probeExchange decides a passive exchange.declare, which only asks
// whether the exchange exists: one may ask about exchanges one may use.
func (g *guard) probeExchange(name []byte) error {
	if len(name) == 0 || string(name) == g.topicEx {
		return nil
	}
	whole := g.route(name, hash)
	if g.allow(auth.Subscribe, whole) == nil {
		return nil
	}
	return g.allow(auth.Publish, whole)
}

// Queue arguments the guard knows. Dead-letter arguments forward messages
// elsewhere and are checked as a publish there. The rest shape how the
// queue stores its messages (length, lifetime, type); on a shared queue
// they would change what every other user of it gets, so they are allowed
// only on the connection's own server-named queue.
var queueArgs = [...]string{
	"x-dead-letter-exchange", "x-dead-letter-routing-key",
	"x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-overflow",
	"x-max-priority", "x-queue-type", "x-queue-mode", "x-queue-version", "x-queue-master-locator",
	"x-queue-leader-locator", "x-single-active-consumer", "x-max-age", "x-delivery-limit",
	"x-dead-letter-strategy", "x-max-in-memory-length", "x-max-in-memory-bytes",
	"x-stream-max-segment-size-bytes", "x-initial-cluster-size", "x-quorum-initial-group-size",
}

// queueArgs decides queue.declare arguments; own says the broker names
// the queue for this connection.
func (g *guard) queueArgs(args []byte, own bool) error {
	var dlx, dlrk []byte
	var seen uint32
	t := validate.NewAMQPFields(args)
	for name, v, ok := t.Next(); ok; name, v, ok = t.Next() {
		i := indexOf(queueArgs[:], name)
		if i < 0 {
			return fmt.Errorf("queue argument %q is not one the gateway knows", name)
		}
		if seen&(1<<i) != 0 {
			return fmt.Errorf("queue argument %q given twice", name)
		}
		seen |= 1 << i
		switch i {
		case 0, 1:
			s, ok := v.String()
			if !ok {
				return fmt.Errorf("queue argument %q must be a long string", name)
			}
			if i == 0 {
				dlx = s
			} else {
				dlrk = s
			}
		default:
			if !own {
				return fmt.Errorf("queue argument %q is allowed only on the connection's own server-named queue", name)
			}
		}
	}
	if t.Err() != nil {
		return t.Err()
	}
	switch {
	case seen&1 == 0 && seen&2 != 0:
		return errors.New("x-dead-letter-routing-key without x-dead-letter-exchange")
	case seen&1 == 0:
		return nil
	}
	key := dlrk
	if seen&2 == 0 {
		key = hash // dead-lettered messages keep whatever key they had
	}
	if err := g.allow(auth.Publish, g.route(dlx, key)); err != nil {
		return fmt.Errorf("x-dead-letter-exchange: %w", err)
	}
	return nil
}

// exchangeArgs decides exchange.declare arguments: alternate-exchange
// receives whatever the exchange cannot route, under any key.
func (g *guard) exchangeArgs(args []byte) error {
	seen := false
	t := validate.NewAMQPFields(args)
	for name, v, ok := t.Next(); ok; name, v, ok = t.Next() {
		if string(name) != "alternate-exchange" {
			return fmt.Errorf("exchange argument %q is not one the gateway knows", name)
		}
		if seen {
			return errors.New("exchange argument \"alternate-exchange\" given twice")
		}
		seen = true
		ae, ok := v.String()
		if !ok {
			return errors.New("exchange argument \"alternate-exchange\" must be a long string")
		}
		if err := g.allow(auth.Publish, g.route(ae, hash)); err != nil {
			return fmt.Errorf("alternate-exchange: %w", err)
		}
	}
	return t.Err()
}

// Consumer arguments that only order or position a consumer on a queue it
// may read anyway.
var consumeArgs = [...]string{"x-priority", "x-cancel-on-ha-failover", "x-stream-offset"}

func (g *guard) consumeArgs(args []byte) error {
	var seen uint32
	t := validate.NewAMQPFields(args)
	for name, _, ok := t.Next(); ok; name, _, ok = t.Next() {
		i := indexOf(consumeArgs[:], name)
		if i < 0 {
			return fmt.Errorf("consumer argument %q is not one the gateway knows", name)
		}
		if seen&(1<<i) != 0 {
			return fmt.Errorf("consumer argument %q given twice", name)
		}
		seen |= 1 << i
	}
	return t.Err()
}

// route is where a routing key on an exchange leads, as the rules name
// it: on the default exchange the key is a queue's name. The standard
// fanout and headers exchanges ignore the key, so it stands for any key.
// (Which other exchanges do, the gateway cannot see: docs/security.md.)
func (g *guard) route(ex, key []byte) auth.Dest {
	switch {
	case len(ex) == 0:
		if g.queues.has(key) {
			return auth.Dest{Kind: auth.Private} // always allowed: no name to spell
		}
		return auth.Dest{Kind: auth.Queue, Name: string(key)}
	case string(ex) == g.topicEx:
		return auth.Dest{Kind: auth.Topic, Name: string(key)}
	case string(ex) == "amq.fanout" || string(ex) == "amq.headers" || string(ex) == "amq.match":
		key = hash
	}
	return auth.Dest{Kind: auth.Exchange, Exchange: string(ex), Name: string(key)}
}

// queue is a queue a method names. The empty name is the channel's most
// recently declared queue, whose own name was checked when it was declared.
func (g *guard) queue(name []byte) auth.Dest {
	if len(name) == 0 || g.queues.has(name) {
		return auth.Dest{Kind: auth.Private}
	}
	return auth.Dest{Kind: auth.Queue, Name: string(name)}
}

// hold keeps a basic.publish frame until its content header comes.
func (g *guard) hold(raw []byte) error {
	if g.heldN >= maxHeldPublishes {
		return fmt.Errorf("more than %d basic.publish waiting for their content header", maxHeldPublishes)
	}
	g.held = append(g.held, raw...)
	g.heldN++
	return nil
}

// heldFor returns the held basic.publish frame of channel ch, or nil.
func (g *guard) heldFor(ch uint16) []byte {
	if off, end := g.heldAt(ch); end > 0 {
		return g.held[off:end]
	}
	return nil
}

// release drops the held frame of channel ch once it went on or was refused.
func (g *guard) release(ch uint16) {
	if off, end := g.heldAt(ch); end > 0 {
		g.held = append(g.held[:off], g.held[end:]...)
		g.heldN--
	}
	if g.heldN == 0 && cap(g.held) > 4<<10 {
		g.held = nil // a burst of held frames does not pin its memory
	}
}

func (g *guard) heldAt(ch uint16) (off, end int) {
	for off < len(g.held) {
		end = off + 8 + int(binary.BigEndian.Uint32(g.held[off+3:]))
		if binary.BigEndian.Uint16(g.held[off+1:]) == ch {
			return off, end
		}
		off = end
	}
	return 0, 0
}

// nextHeader returns the payload of next's first frame when it is a whole
// content header on channel ch.
func nextHeader(next []byte, ch uint16) ([]byte, bool) {
	if len(next) < 8 || next[0] != validate.AMQPFrameHeader || binary.BigEndian.Uint16(next[1:]) != ch {
		return nil, false
	}
	size := int(binary.BigEndian.Uint32(next[3:]))
	if size > len(next)-8 {
		return nil, false
	}
	return next[7 : 7+size], true
}

func indexOf(list []string, name []byte) int {
	for i, s := range list {
		if s == string(name) {
			return i
		}
	}
	return -1
}

// argReader reads the arguments of a frame the scanner has accepted, so
// every length in it is known to fit.
type argReader struct {
	p   []byte
	off int
}

func (a *argReader) skip(n int) { a.off += n }

func (a *argReader) octet() byte {
	a.off++
	return a.p[a.off-1]
}

func (a *argReader) str() []byte {
	n := int(a.p[a.off])
	a.off += 1 + n
	return a.p[a.off-n : a.off]
}

// table returns a field table's encoding, its size included.
func (a *argReader) table() []byte {
	start := a.off
	a.off += 4 + int(binary.BigEndian.Uint32(a.p[a.off:]))
	return a.p[start:a.off]
}
