package stomp

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/outcome"
	"github.com/wsbridge/wsbridge/validate"
)

// login settles who the client is from CONNECT's login and passcode (or
// the token the upgrade carried), picks the broker credential for that
// identity and arms the token's expiry. It returns false when the session
// has been ended with an ERROR.
func (s *session) login(f *validate.STOMPFrame) bool {
	s.version.Store(uint32(s.in.Version))
	user, _ := f.Header("login") // CONNECT headers are not escaped
	pass, _ := f.Header("passcode")
	if _, err := s.Login(string(user), string(pass)); err != nil {
		s.finish(front.LoginOutcome(err), "authentication failed", err.Error(), bridge.LoginCloseCode(err))
		return false
	}
	cred, err := s.BrokerCredential(s.relay.opts.Credential)
	if err != nil {
		s.finish(outcome.Forbidden, "access refused", err.Error(), bridge.ClosePolicy)
		return false
	}
	s.cred = cred
	if !s.Unrestricted() {
		o := &s.relay.opts
		s.acl = &acl{topicExchange: o.TopicExchange, given: &replyQueues{}, allow: s.Allow,
			deny: func(header, msg string) error {
				o.Log.Info("stomp access denied", "route", o.Route, "remote", s.Remote, s.LogIdentity(), "header", header, "reason", msg)
				return &auth.Error{Msg: msg}
			}}
		if s.tr == nil { // relaying to RabbitMQ, which keeps durable subscriptions
			s.acl.subject, s.acl.durable = s.Identity.Subject, map[string]string{}
		}
	}
	s.WatchExpiry(func() {
		s.finish(outcome.TokenExpired, "token expired", "the client's token expired; reconnect with a fresh one", bridge.ClosePolicy)
	})
	return true
}

// acl is a restricted identity's access control on one session; an
// identity that may touch everything has none. It belongs to the read
// loop, except given, which the broker's side fills.
type acl struct {
	topicExchange string
	given         *replyQueues
	// allow is the route's decision for one destination (it logs denials);
	// deny logs and makes a refusal the gateway itself decided.
	allow func(auth.Action, auth.Dest) error
	deny  func(header, msg string) error

	lastSend []byte // the last destination a SEND was allowed to

	// durable are the queues the gateway named for this session's durable
	// subscriptions, by subscription id; nil in translation mode. RabbitMQ
	// names a durable subscription's queue after its routing key and
	// subscription id alone, so every client of the broker user that
	// subscribes durably with the same key and id, on any exchange, would
	// consume from one queue; and a durable UNSUBSCRIBE deletes the queue
	// named by its x-queue-name, or that derived one.
	durable map[string]string
	subject string // the identity's, which the gateway's queue names hold
}

// maxDurable bounds the durable subscriptions one session may hold.
const maxDurable = 256

// authorize applies the route's ACL to a SEND, SUBSCRIBE or UNSUBSCRIBE of
// a client speaking version v: every header that decides where the broker
// routes, stores or forwards a message (docs/security.md lists them) is
// checked, and on SUBSCRIBE any header not known to be harmless is
// refused. The last destination a SEND was allowed to is remembered, so a
// client that keeps sending to one destination pays for mapping it once.
// The frame to forward in f's place is returned when the gateway names
// the queue of a durable subscription (nil: f as it is).
func (a *acl) authorize(f *validate.STOMPFrame, v validate.STOMPVersion) ([]byte, error) {
	if f.Command == validate.CmdUnsubscribe {
		return a.unsubscribe(f, v)
	}
	sub := f.Command == validate.CmdSubscribe
	act, rules := auth.Publish, sendHeaders
	if sub {
		act, rules = auth.Subscribe, subscribeHeaders
	}
	// Destinations first (every copy: brokers differ on which one wins),
	// since whether the queue is the subscription's own decides the rest.
	own, named, durable := true, false, false
	for i := range f.NumHeaders() {
		name, raw := f.HeaderAt(i)
		switch string(name) {
		case "x-queue-name":
			named = true
		case "durable", "persistent":
			durable = durable || isTrue(raw, v)
		}
		if string(name) != "destination" || (!sub && a.lastSend != nil && bytes.Equal(raw, a.lastSend)) {
			continue
		}
		d, mine, err := a.dest(value(raw, v), act)
		if err == nil {
			err = a.allow(act, d)
		}
		if err != nil {
			return nil, err
		}
		own = own && mine
	}
	// A subscription's queue named by x-queue-name is not its own: it may
	// be shared, and RabbitMQ binds it to the subscription's exchange.
	binds := own
	own = own && !named
	for i := range f.NumHeaders() {
		name, raw := f.HeaderAt(i)
		rule, known := rules[string(name)]
		if !known && !sub {
			continue // an application header: it travels with the message
		}
		var err error
		switch rule {
		case hdrAllow, hdrDestination:
		case hdrQueueName:
			// RabbitMQ's x-queue-name names the queue behind a subscription:
			// attaching to someone else's queue is subscribing to it, and
			// binding it to a topic or exchange writes to it.
			q := auth.Dest{Kind: auth.Queue, Name: value(raw, v)}
			if err = a.allow(auth.Subscribe, q); err == nil && binds {
				err = a.allow(auth.Publish, q)
			}
		case hdrReplyTo:
			err = a.replyTo(value(raw, v))
		case hdrDeadLetter:
			err = a.deadLetter(f, v)
		case hdrOwnQueue:
			if !sub || !own {
				err = a.refuseHeader(name, "it shapes a shared queue; only a subscription's own queue may be shaped")
			}
		default:
			err = a.refuseHeader(name, "it is not on the list of headers a restricted identity may send (docs/security.md)")
		}
		if err != nil {
			return nil, err
		}
	}
	if !sub {
		raw, _ := f.Header("destination")
		a.lastSend = append(a.lastSend[:0], raw...)
		return nil, nil
	}
	if durable && own && a.durable != nil {
		return a.nameDurable(f, v)
	}
	return nil, nil
}

// nameDurable gives a durable subscription to a topic or exchange a queue
// of the identity's own, named after its subject, destination and id, and
// returns the SUBSCRIBE with that x-queue-name (RabbitMQ takes the first
// of a header). The same identity finds the same queue again.
func (a *acl) nameDurable(f *validate.STOMPFrame, v validate.STOMPVersion) ([]byte, error) {
	destRaw, _ := f.Header("destination")
	idRaw, hasID := f.Header("id")
	dest := value(destRaw, v)
	if ep, err := parseDestination(dest); err != nil || (ep.kind != epTopic && ep.kind != epExchange) || !hasID {
		return nil, nil // RabbitMQ names no queue after the id (or refuses the frame)
	}
	id := unescape(idRaw, v)
	if _, ok := a.durable[id]; !ok && len(a.durable) >= maxDurable {
		return nil, a.deny("durable", fmt.Sprintf("more than %d durable subscriptions on one connection", maxDurable))
	}
	sum := sha256.Sum256([]byte(a.subject + "\x00" + dest + "\x00" + id))
	q := "wsbridge-durable-" + hex.EncodeToString(sum[:16])
	a.durable[id] = q
	return prependHeader(f.Raw, "x-queue-name:"+q), nil
}

// unsubscribe decides an UNSUBSCRIBE. RabbitMQ deletes a queue when it
// carries durable:true: the one x-queue-name names, else the one it would
// derive from the subscription's key and the id. The first is deleting
// that queue (subscribe to it, as AMQP's queue.delete); the second is
// allowed only for a durable subscription whose queue the gateway named,
// and then names that queue.
func (a *acl) unsubscribe(f *validate.STOMPFrame, v validate.STOMPVersion) ([]byte, error) {
	if a.durable == nil {
		return nil, nil
	}
	durable, named := false, false
	for i := range f.NumHeaders() {
		name, raw := f.HeaderAt(i)
		switch string(name) {
		case "x-queue-name":
			named = true
			if err := a.allow(auth.Subscribe, auth.Dest{Kind: auth.Queue, Name: value(raw, v)}); err != nil {
				return nil, err
			}
		case "durable", "persistent":
			durable = durable || isTrue(raw, v)
		}
	}
	idRaw, hasID := f.Header("id")
	id := unescape(idRaw, v)
	q, ours := a.durable[id]
	if durable && !named && !(hasID && ours) {
		return nil, a.deny("durable", "a durable UNSUBSCRIBE deletes the queue RabbitMQ derives from the destination and id, which may be another client's; only a durable subscription made on this connection may be ended that way")
	}
	delete(a.durable, id)
	if durable && !named {
		return prependHeader(f.Raw, "x-queue-name:"+q), nil
	}
	return nil, nil
}

// isTrue reports whether a header value may read as true to RabbitMQ,
// which takes "true" and "True" (and, in STOMP 1.0, leading spaces).
func isTrue(raw []byte, v validate.STOMPVersion) bool {
	return strings.EqualFold(strings.TrimSpace(unescape(raw, v)), "true")
}

// prependHeader returns frame with the header line h first among its headers.
func prependHeader(frame []byte, h string) []byte {
	i := bytes.IndexByte(frame, '\n') + 1
	b := make([]byte, 0, len(frame)+len(h)+1)
	b = append(append(append(b, frame[:i]...), h...), '\n')
	return append(b, frame[i:]...)
}

// dest maps a destination onto the ACL's terms, and reports whether it is
// a subscription with a queue of its own (topics, exchanges, temp queues).
func (a *acl) dest(dest string, act auth.Action) (d auth.Dest, own bool, err error) {
	ep, err := parseDestination(dest)
	if err != nil {
		return d, false, a.deny("destination", err.Error())
	}
	if ep.kind == epReplyQueue && act == auth.Publish && a.given.has(dest) {
		return auth.Dest{Kind: auth.Private, Name: dest}, false, nil
	}
	d = ep.aclDest(a.topicExchange)
	if act == auth.Subscribe && (ep.kind == epTopic || ep.kind == epExchange) {
		d.Name = bindingName(d.Name)
	}
	own = ep.kind == epTopic || ep.kind == epExchange || ep.kind == epTempQueue
	return d, own, nil
}

// bindingName is the name the ACL judges for a RabbitMQ binding key. A
// topic exchange's '*' matches one word, and a word may hold '/', which the
// ACL reads as a separator: demo.* matches demo.x/y, which the rule demo.*
// does not cover. So a '*' word is as wide as '>' to the ACL, as MQTT's
// '+' is; '#' (zero or more words) already reads alike.
func bindingName(key string) string {
	if !strings.Contains(key, "*") {
		return key
	}
	words := strings.Split(key, ".")
	for i, w := range words {
		if w == "*" {
			words[i] = ">"
		}
	}
	return strings.Join(words, ".")
}

// replyTo checks a SEND's reply-to: whoever answers the message publishes
// to it on this client's behalf, so it must be a temp queue of the client's
// own or a destination the client may publish to itself.
func (a *acl) replyTo(dest string) error {
	d, _, err := a.dest(dest, auth.Publish)
	if err != nil {
		return err
	}
	return a.allow(auth.Publish, d)
}

// deadLetter checks a frame's dead-letter headers: messages the queue
// rejects or expires are published to that exchange and key, so the
// identity must be allowed to publish there. Without a key, RabbitMQ keeps
// each message's own routing key: any key.
func (a *acl) deadLetter(f *validate.STOMPFrame, v validate.STOMPVersion) error {
	exRaw, hasEx := f.Header("x-dead-letter-exchange")
	keyRaw, hasKey := f.Header("x-dead-letter-routing-key")
	if !hasEx {
		// A key alone takes effect with an exchange set by a broker policy,
		// which the gateway cannot see.
		return a.refuseHeader([]byte("x-dead-letter-routing-key"), "it needs x-dead-letter-exchange beside it")
	}
	ex, key := value(exRaw, v), "#"
	if hasKey {
		key = value(keyRaw, v)
	}
	var d auth.Dest
	switch {
	case ex == "" && !hasKey:
		return a.refuseHeader([]byte("x-dead-letter-exchange"), "dead letters to the default exchange need x-dead-letter-routing-key")
	case ex == "":
		d = auth.Dest{Kind: auth.Queue, Name: key}
	default:
		d = endpoint{kind: epExchange, exchange: ex, name: key}.aclDest(a.topicExchange)
	}
	if err := a.allow(auth.Publish, d); err != nil {
		return &auth.Error{Msg: "dead letters would go to " + d.String() + ": " + err.Error()}
	}
	return nil
}

// value is a header's value as RabbitMQ reads it: unescaped, without
// leading spaces.
func value(raw []byte, v validate.STOMPVersion) string {
	return strings.TrimLeft(unescape(raw, v), " ")
}

func (a *acl) refuseHeader(name []byte, why string) error {
	return a.deny(string(name), "header "+string(name)+" is not allowed: "+why)
}

// refuse ends the session over a refused frame: ERROR "access refused"
// with the reason (and the frame's receipt, if it asked for one), 1008.
func (s *session) refuse(f *validate.STOMPFrame, err error) {
	receipt, _ := f.Header("receipt")
	answer := validate.AppendSTOMPError(nil, validate.STOMPVersion(s.version.Load()), "access refused", err.Error(), receipt)
	s.Finish(outcome.Forbidden, err.Error(), bridge.ClosePolicy, gws.OpcodeText, answer)
}

// What the ACL does with a header of a restricted identity's SEND or
// SUBSCRIBE.
type headerRule uint8

const (
	hdrRefuse      headerRule = iota // refused: it changes routing or storage in a way no rule can express
	hdrAllow                         // no effect on where messages go
	hdrDestination                   // checked as the frame's destination
	hdrQueueName                     // x-queue-name: subscribing to the named queue
	hdrReplyTo                       // checked as a destination the client publishes to
	hdrDeadLetter                    // allowed when the client may publish where dead letters go
	hdrOwnQueue                      // shapes the queue being declared: only a subscription's own
)

// RabbitMQ's queue arguments and declare flags, which it reads from SEND
// and SUBSCRIBE headers when it declares the queue behind a destination.
var queueHeaders = map[string]headerRule{
	"x-dead-letter-exchange":          hdrDeadLetter,
	"x-dead-letter-routing-key":       hdrDeadLetter,
	"x-dead-letter-strategy":          hdrOwnQueue,
	"x-expires":                       hdrOwnQueue,
	"x-message-ttl":                   hdrOwnQueue,
	"x-max-length":                    hdrOwnQueue,
	"x-max-length-bytes":              hdrOwnQueue,
	"x-max-age":                       hdrOwnQueue,
	"x-max-priority":                  hdrOwnQueue,
	"x-overflow":                      hdrOwnQueue,
	"x-queue-type":                    hdrOwnQueue,
	"x-queue-mode":                    hdrOwnQueue,
	"x-queue-version":                 hdrOwnQueue,
	"x-queue-master-locator":          hdrOwnQueue,
	"x-queue-leader-locator":          hdrOwnQueue,
	"x-single-active-consumer":        hdrOwnQueue,
	"x-delivery-limit":                hdrOwnQueue,
	"x-initial-cluster-size":          hdrOwnQueue,
	"x-quorum-initial-group-size":     hdrOwnQueue,
	"x-stream-max-segment-size-bytes": hdrOwnQueue,
	"x-stream-filter-size-bytes":      hdrOwnQueue,
	"exclusive":                       hdrOwnQueue,
	"auto-delete":                     hdrOwnQueue,
	"durable":                         hdrAllow, // RabbitMQ declares /queue/ durable anyway
	"persistent":                      hdrAllow, // on SEND the delivery mode, on SUBSCRIBE durable
}

// subscribeHeaders is everything a restricted SUBSCRIBE may carry; any
// other header is refused.
var subscribeHeaders = withQueueHeaders(map[string]headerRule{
	"destination":               hdrDestination,
	"id":                        hdrAllow,
	"ack":                       hdrAllow,
	"receipt":                   hdrAllow,
	"prefetch-count":            hdrAllow,
	"content-length":            hdrAllow,
	"content-type":              hdrAllow,
	"x-queue-name":              hdrQueueName,
	"x-priority":                hdrAllow, // consumer priority
	"x-stream-offset":           hdrAllow,
	"x-stream-filter":           hdrAllow,
	"x-stream-match-unfiltered": hdrAllow,
})

// sendHeaders are the SEND headers with a rule; the rest are application
// headers, which travel with the message and route nothing (on a headers
// exchange they do, which is why an exchange rule names the exchange).
var sendHeaders = withQueueHeaders(map[string]headerRule{
	"destination": hdrDestination,
	"reply-to":    hdrReplyTo,
})

func withQueueHeaders(m map[string]headerRule) map[string]headerRule {
	for k, v := range queueHeaders {
		m[k] = v
	}
	return m
}

// endpointKind is a destination form RabbitMQ's STOMP plugin knows.
type endpointKind uint8

const (
	epQueue      endpointKind = iota // /queue/x, and a bare name x
	epAMQQueue                       // /amq/queue/x: an existing queue
	epTopic                          // /topic/x: amq.topic with key x
	epExchange                       // /exchange/e[/k]
	epTempQueue                      // /temp-queue/x: the connection's own
	epReplyQueue                     // /reply-queue/x: another connection's temp queue, by name
)

type endpoint struct {
	kind           endpointKind
	exchange, name string
}

// parseDestination reads a destination as RabbitMQ's STOMP plugin does
// (rabbit_routing_util:parse_endpoint): a name without '/' is a queue, %2F in a name is '/', and reply-queue names
// may hold '/'. What RabbitMQ would refuse is refused here too, so the ACL
// never reasons about a destination the broker reads differently.
func parseDestination(dest string) (endpoint, error) {
	bad := func() (endpoint, error) {
		return endpoint{}, fmt.Errorf("destination %q is not one RabbitMQ accepts: use /topic/, /queue/, /amq/queue/, /exchange/, /temp-queue/ or /reply-queue/", dest)
	}
	if dest == "" {
		return bad()
	}
	if !strings.Contains(dest, "/") {
		return endpoint{kind: epQueue, name: unescapeSlash(dest)}, nil
	}
	if name, ok := strings.CutPrefix(dest, "/reply-queue/"); ok && name != "" {
		return endpoint{kind: epReplyQueue, name: unescapeSlash(name)}, nil
	}
	if rest, ok := strings.CutPrefix(dest, "/exchange/"); ok {
		ex, key, hasKey := strings.Cut(rest, "/")
		if ex == "" || strings.Contains(key, "/") {
			return bad()
		}
		if !hasKey {
			key = ""
		}
		return endpoint{kind: epExchange, exchange: unescapeSlash(ex), name: unescapeSlash(key)}, nil
	}
	for _, p := range [...]struct {
		prefix string
		kind   endpointKind
	}{{"/queue/", epQueue}, {"/topic/", epTopic}, {"/temp-queue/", epTempQueue}, {"/amq/queue/", epAMQQueue}} {
		if name, ok := strings.CutPrefix(dest, p.prefix); ok {
			if name == "" || strings.Contains(name, "/") {
				return bad()
			}
			return endpoint{kind: p.kind, name: unescapeSlash(name)}, nil
		}
	}
	return bad()
}

func unescapeSlash(s string) string {
	if !strings.Contains(s, "%2F") {
		return s
	}
	return strings.ReplaceAll(s, "%2F", "/")
}

// aclDest is what the ACL names: a topic is a key on the route's topic
// exchange (/topic/ always means amq.topic to RabbitMQ), a queue by its
// name, any other exchange with its key, and a temp queue private.
func (e endpoint) aclDest(topicExchange string) auth.Dest {
	switch e.kind {
	case epTopic:
		if topicExchange == "amq.topic" {
			return auth.Dest{Kind: auth.Topic, Name: e.name}
		}
		return auth.Dest{Kind: auth.Exchange, Exchange: "amq.topic", Name: e.name}
	case epExchange:
		if e.exchange == topicExchange {
			return auth.Dest{Kind: auth.Topic, Name: e.name}
		}
		return auth.Dest{Kind: auth.Exchange, Exchange: e.exchange, Name: e.name}
	case epTempQueue:
		return auth.Dest{Kind: auth.Private, Name: "/temp-queue/" + e.name}
	}
	return auth.Dest{Kind: auth.Queue, Name: e.name}
}

// Bounds on the reply queues a session remembers: a responder may answer
// the last maxReplyQueues requests it received. AMQP queue names are at
// most 255 bytes, so this holds at most 64 KiB per session.
const (
	maxReplyQueues    = 256
	maxReplyQueueName = 255 + len("/reply-queue/")
)

// replyQueues are the /reply-queue/ destinations this session was given
// in the reply-to header of a message the broker delivered to it: those,
// and no other connection's temp queues, it may answer to.
type replyQueues struct {
	mu    sync.Mutex
	names [maxReplyQueues]string
	next  int
}

func (r *replyQueues) add(dest string) {
	if len(dest) > maxReplyQueueName || r.has(dest) {
		return
	}
	r.mu.Lock()
	r.names[r.next] = dest
	r.next = (r.next + 1) % maxReplyQueues
	r.mu.Unlock()
}

func (r *replyQueues) has(dest string) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.names {
		if n == dest {
			return true
		}
	}
	return false
}

// noteReplyTo remembers the /reply-queue/ reply-to of a MESSAGE the
// broker delivered, escaped as version v.
func (r *replyQueues) noteReplyTo(f *validate.STOMPFrame, v validate.STOMPVersion) {
	raw, ok := f.Header("reply-to")
	if !ok || !bytes.HasPrefix(raw, []byte("/reply-queue/")) {
		return
	}
	r.add(value(raw, v))
}
