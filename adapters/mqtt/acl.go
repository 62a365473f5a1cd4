package mqtt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/lxzan/gws"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/outcome"
	"github.com/wsbridge/wsbridge/validate"
)

// MQTT reason codes and 3.1.1 return codes the ACL answers with.
const (
	reasonBadLogin        = 0x86 // bad user name or password
	reasonNotAuthorized   = 0x87
	reasonServerBusy      = 0x89
	reasonBadAuthMethod   = 0x8C
	returnUnavailableV311 = 0x03
	returnBadLoginV311    = 0x04
	returnNotAuthV311     = 0x05
	subackFailureV311     = 0x80
)

// Bounds on the topic aliases the gateway remembers for the ACL: brokers
// allow few (Mosquitto 10, RabbitMQ 16 by default), and each holds a topic.
const (
	maxAliases     = 256
	maxAliasTopics = 64 << 10 // bytes of topic names held for aliases
)

// acl is a session's ACL state. Everything but the SUBACK bookkeeping
// belongs to the read loop. docs/security.md tables what is checked and
// why.
type acl struct {
	open bool // the identity may touch every destination
	// allow is the route's policy for this identity (it logs refusals);
	// set when open is false.
	allow func(auth.Action, auth.Dest) error
	// aliases are the MQTT 5 topic aliases the broker holds for this
	// client: only those of PUBLISHes that were forwarded.
	aliases      map[uint16][]byte
	aliasBytes   int    // their topics' total length
	last         []byte // the last topic a PUBLISH was allowed to
	lastResponse []byte // the last response topic a PUBLISH was allowed to

	mu       sync.Mutex
	pending  map[uint16][]bool // SUBSCRIBE packet id -> which filters were refused
	pendingN atomic.Int32      // len(pending), read without the lock on every broker read
}

// login settles the identity from CONNECT (or the upgrade's token), picks
// the broker credential and, for a restricted identity, applies the ACL to
// the CONNECT. It returns false after answering with a refusing CONNACK.
func (s *session) login() bool {
	pk := &s.in.Connect
	v := pk.ProtocolVersion
	if _, err := s.Login(string(pk.Connect.Username), string(pk.Connect.Password)); err != nil {
		reason, rc := byte(reasonBadLogin), byte(returnBadLoginV311)
		if errors.Is(err, auth.ErrBusy) { // nothing was checked: say so, so the client retries
			reason, rc = reasonServerBusy, returnUnavailableV311
		}
		s.refuseConnect(v, reason, rc, front.LoginOutcome(err), err.Error(), bridge.LoginCloseCode(err))
		return false
	}
	cred, err := s.BrokerCredential(s.relay.opts.Credential)
	if err != nil {
		s.refuseConnect(v, reasonNotAuthorized, returnNotAuthV311, outcome.Forbidden, err.Error(), bridge.ClosePolicy)
		return false
	}
	s.cred = cred
	s.acl.open = s.Unrestricted()
	if !s.acl.open {
		s.acl.allow = s.Allow
		if reason, code, err := s.acl.connect(pk); err != nil {
			s.refuseConnect(v, reason, code, outcome.Forbidden, err.Error(), bridge.ClosePolicy)
			return false
		}
	}
	s.WatchExpiry(func() {
		var answer []byte
		if v == 5 {
			answer = validate.AppendMQTTDisconnect(nil, reasonNotAuthorized, "token expired")
		}
		s.finish(outcome.TokenExpired, answer, "the client's token expired", bridge.ClosePolicy)
	})
	return true
}

func (s *session) refuseConnect(v, reason, returnCode byte, why outcome.Outcome, msg string, code uint16) {
	rc := returnCode
	if v == 5 {
		rc = reason
	}
	s.finish(why, validate.AppendMQTTConnack(nil, v, rc, ""), msg, code)
}

// connect applies the ACL to a restricted identity's CONNECT and makes it
// start a clean session. The will and its response topic are publishes
// the broker makes for the client later. Enhanced authentication would
// let the client pick the broker identity the gateway injects. A session
// the broker kept under this client id holds subscriptions these rules
// never checked (made under other roles, an older token or an older
// gateway), and resuming it would deliver them; the CONNACK then says
// no session was present, as it would after a broker restart.
func (a *acl) connect(pk *packets.Packet) (reason, returnCode byte, err error) {
	if pk.Properties.AuthenticationMethod != "" || len(pk.Properties.AuthenticationData) > 0 {
		return reasonBadAuthMethod, returnNotAuthV311, errAuthMethod
	}
	c := &pk.Connect
	if c.WillFlag {
		if err := a.allow(auth.Publish, auth.Dest{Kind: auth.Topic, Name: c.WillTopic}); err != nil {
			return reasonNotAuthorized, returnNotAuthV311, fmt.Errorf("will topic: %w", err)
		}
		if rt := c.WillProperties.ResponseTopic; rt != "" {
			if err := a.allow(auth.Publish, auth.Dest{Kind: auth.Topic, Name: rt}); err != nil {
				return reasonNotAuthorized, returnNotAuthV311, fmt.Errorf("will response topic: %w", err)
			}
		}
	}
	c.Clean = true
	return 0, 0, nil
}

var errAuthMethod = errors.New("enhanced authentication is not allowed for a restricted identity: the gateway picks the broker identity")

// publish applies the ACL to a PUBLISH: its topic, following MQTT 5 topic
// aliases as the broker holds them, and its response topic, where a
// responder will publish for the client. A repeated topic is not looked
// up again, so the hot path does not allocate.
func (a *acl) publish(p *validate.MQTTPacket) error {
	topic := p.Topic
	if len(topic) == 0 { // validate: then there is an alias
		topic = a.aliases[p.Alias] // nil when unknown: refused below
	}
	if err := a.allowPublish(&a.last, topic); err != nil {
		return err
	}
	if p.ResponseTopic != nil {
		if err := a.allowPublish(&a.lastResponse, p.ResponseTopic); err != nil {
			return err
		}
	}
	if p.Alias != 0 && len(p.Topic) > 0 {
		return a.setAlias(p.Alias, p.Topic)
	}
	return nil
}

// allowPublish asks the policy about topic unless it equals *last, the
// previous topic allowed in that place, and remembers it when allowed.
func (a *acl) allowPublish(last *[]byte, topic []byte) error {
	if *last != nil && bytes.Equal(topic, *last) {
		return nil
	}
	if err := a.allow(auth.Publish, auth.Dest{Kind: auth.Topic, Name: string(topic)}); err != nil {
		return err
	}
	*last = append((*last)[:0], topic...)
	return nil
}

// setAlias records an alias a forwarded PUBLISH sets. A refused PUBLISH
// never reaches the broker, so its alias must not be recorded either:
// the alias keeps the topic the broker has for it.
func (a *acl) setAlias(alias uint16, topic []byte) error {
	if a.aliases == nil {
		a.aliases = map[uint16][]byte{}
	}
	old, known := a.aliases[alias]
	if !known && len(a.aliases) >= maxAliases || a.aliasBytes-len(old)+len(topic) > maxAliasTopics {
		return errTooManyAliases
	}
	a.aliases[alias] = bytes.Clone(topic) // a fresh copy: a reused one would keep its old capacity
	a.aliasBytes += len(topic) - len(old)
	return nil
}

var errTooManyAliases = fmt.Errorf("more than %d topic aliases or %d bytes of aliased topics", maxAliases, maxAliasTopics)

// refusePublish answers a refused PUBLISH: in MQTT 5 at QoS 1 or 2 with
// PUBACK or PUBREC 0x87, and the session goes on; any other refusal ends
// the session (MQTT 5: DISCONNECT 0x87; 3.1.1 has no way to say why). It
// returns false when the session has ended.
func (s *session) refusePublish(p *validate.MQTTPacket, err error) bool {
	v := byte(s.version.Load())
	qos := p.Flags >> 1 & 3
	switch {
	case err == errTooManyAliases:
		s.finish(outcome.Rejected, validate.AppendMQTTDisconnect(nil, 0x94, "topic alias invalid"), err.Error(), bridge.ClosePolicy)
	case v == 5 && qos > 0:
		ack := validate.MQTTPuback
		if qos == 2 {
			ack = validate.MQTTPubrec
		}
		return s.Write(gws.OpcodeBinary, validate.AppendMQTTAck(nil, ack, p.PacketID, reasonNotAuthorized))
	case v == 5:
		s.finish(outcome.Forbidden, validate.AppendMQTTDisconnect(nil, reasonNotAuthorized, "publish not authorized"), err.Error(), bridge.ClosePolicy)
	default:
		s.finish(outcome.Forbidden, nil, err.Error(), bridge.ClosePolicy)
	}
	return false
}

// subscribeFiltered applies the ACL to each filter of a SUBSCRIBE: a filter
// is allowed only if every topic it can match is. It returns the packet to
// forward, re-encoded from what was checked so the broker cannot read the
// bytes differently, without the refused filters (their codes go back into
// the broker's SUBACK); or, when all are refused, the SUBACK for the client.
func (s *session) subscribeFiltered() (forward, answer []byte, err error) {
	pk := s.in.Decoded
	refused := make([]bool, len(pk.Filters))
	n := 0
	for i, f := range pk.Filters {
		if err := s.acl.filter(f.Filter); err != nil {
			if errors.Is(err, errShare) { // the policy logs its own refusals
				o := &s.relay.opts
				o.Log.Info("mqtt access denied", "route", o.Route, "remote", s.Remote, s.LogIdentity(),
					"action", "subscribe", "destination", f.Filter, "reason", err.Error())
			}
			refused[i] = true
			n++
		}
	}
	if n == len(pk.Filters) {
		return nil, suback(nil, pk.ProtocolVersion, pk.PacketID, refused, nil), nil
	}
	if n > 0 {
		kept := make(packets.Subscriptions, 0, len(pk.Filters)-n)
		for i, f := range pk.Filters {
			if !refused[i] {
				kept = append(kept, f)
			}
		}
		pk.Filters = kept
	}
	var buf bytes.Buffer
	if err := pk.SubscribeEncode(&buf); err != nil {
		return nil, nil, err
	}
	if n > 0 {
		s.acl.mu.Lock()
		if s.acl.pending == nil {
			s.acl.pending = map[uint16][]bool{}
		}
		s.acl.pending[pk.PacketID] = refused
		s.acl.pendingN.Store(int32(len(s.acl.pending)))
		s.acl.mu.Unlock()
	}
	return buf.Bytes(), nil, nil
}

// filter applies the ACL to one SUBSCRIBE topic filter.
func (a *acl) filter(f string) error {
	name, err := filterName(f)
	if err != nil {
		return err
	}
	return a.allow(auth.Subscribe, auth.Dest{Kind: auth.Topic, Name: name})
}

// errShare classes the refusals of shared subscriptions the ACL cannot
// judge by their name.
var errShare = errors.New("shared subscription")

// filterName is the name the ACL judges for an MQTT topic filter.
//
// An MQTT + matches one level, and a level may hold dots, which the ACL
// reads as separators: demo/+ matches demo/a.b, which demo.* does not
// cover. So + is as wide as > (one or more segments) to the ACL.
//
// A shared subscription, $share/GROUP/FILTER, takes a share of what every
// other member of GROUP gets, so the group matters as much as the topics:
// the name keeps the $share/GROUP/ prefix and a rule must name the group
// ($share/workers/demo.*, or $share/*/demo.* for any group; $share is a $
// name, so no wildcard-first pattern covers it). A group with a dot would
// read as two segments and could pass for part of the topic; a shared $
// filter would hide its $ behind the group. Both are refused.
func filterName(f string) (string, error) {
	prefix := ""
	if rest, ok := strings.CutPrefix(f, "$share/"); ok {
		group, inner, ok := strings.Cut(rest, "/")
		switch {
		case !ok || group == "" || inner == "":
			return "", fmt.Errorf("%w %q: want $share/GROUP/FILTER", errShare, f)
		case strings.Contains(group, "."):
			return "", fmt.Errorf("%w %q: a share name with '.' is not allowed under an ACL", errShare, f)
		case strings.HasPrefix(inner, "$"):
			return "", fmt.Errorf("%w %q: shared subscriptions to $ topics are not allowed under an ACL", errShare, f)
		}
		prefix, f = f[:len(f)-len(inner)], inner
	} else if first, _, _ := strings.Cut(strings.ReplaceAll(f, ".", "/"), "/"); first == "$share" {
		// $share.g.demo.x is an ordinary $ topic to the broker but reads
		// to the ACL like the share $share/g/demo.x: refused, not guessed.
		return "", fmt.Errorf("%w %q: a filter named like a shared subscription is not allowed under an ACL", errShare, f)
	}
	if !strings.Contains(f, "+") {
		return prefix + f, nil
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if l == "+" {
			levels[i] = ">"
		}
	}
	return prefix + strings.Join(levels, "/"), nil
}

// suback appends to b a SUBACK for len(refused) filters: refused ones get
// 0x87 (3.1.1: 0x80), the others take the broker's codes in order.
func suback(b []byte, v byte, id uint16, refused []bool, granted []byte) []byte {
	fail := byte(subackFailureV311)
	if v == 5 {
		fail = reasonNotAuthorized
	}
	codes := make([]byte, len(refused))
	for i, r := range refused {
		switch {
		case r:
			codes[i] = fail
		case len(granted) > 0:
			codes[i] = granted[0]
			granted = granted[1:]
		default:
			codes[i] = fail // the broker answered for fewer filters than it was sent
		}
	}
	return validate.AppendMQTTSuback(b, v, id, codes)
}

// mergeSubacks rewrites the broker's SUBACKs for SUBSCRIBEs the gateway
// trimmed, putting the refused filters' codes back in place, so the client
// gets one code per filter it sent. b holds whole packets only.
func (s *session) mergeSubacks(b []byte) []byte {
	if s.acl.pendingN.Load() == 0 {
		return b
	}
	s.acl.mu.Lock()
	defer s.acl.mu.Unlock()
	if len(s.acl.pending) == 0 {
		return b
	}
	v := byte(s.version.Load())
	var out []byte
	copied := 0
	for off := 0; off < len(b); {
		rl, used, _ := validate.MQTTVarInt(b[off+1:])
		end := off + 1 + used + rl
		if b[off] == validate.MQTTSuback<<4 && rl >= 2 {
			body := b[off+1+used : end]
			id := binary.BigEndian.Uint16(body)
			if refused, ok := s.acl.pending[id]; ok {
				delete(s.acl.pending, id)
				s.acl.pendingN.Store(int32(len(s.acl.pending)))
				codes := body[2:]
				if v == 5 && len(codes) > 0 { // skip the broker's properties
					pl, pu, _ := validate.MQTTVarInt(codes)
					if pu+pl <= len(codes) {
						codes = codes[pu+pl:]
					}
				}
				out = append(out, b[copied:off]...)
				out = suback(out, v, id, refused, codes)
				copied = end
			}
		}
		off = end
	}
	if out == nil {
		return b
	}
	return append(out, b[copied:]...)
}
