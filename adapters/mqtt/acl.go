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
	"github.com/wsbridge/wsbridge/validate"
)

// MQTT reason codes and 3.1.1 return codes the ACL answers with.
const (
	reasonBadLogin        = 0x86 // bad user name or password
	reasonNotAuthorized   = 0x87
	reasonServerBusy      = 0x89
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

// acl is a session's ACL state.
type acl struct {
	open       bool              // the identity may touch every destination (read loop)
	aliases    map[uint16]string // MQTT 5 topic aliases the client set (read loop)
	aliasBytes int               // their topics' total length
	last       []byte            // the last topic a PUBLISH was allowed to (read loop)

	mu       sync.Mutex
	pending  map[uint16][]bool // SUBSCRIBE packet id -> which filters were refused
	pendingN atomic.Int32      // len(pending), read without the lock on every broker read
}

// login settles the identity from CONNECT (or the upgrade's token), picks
// the broker credential and checks the will topic. It returns false after
// answering with a refusing CONNACK.
func (s *session) login() bool {
	pk := &s.in.Connect
	v := pk.ProtocolVersion
	if _, err := s.Login(string(pk.Connect.Username), string(pk.Connect.Password)); err != nil {
		reason, rc := byte(reasonBadLogin), byte(returnBadLoginV311)
		if errors.Is(err, auth.ErrBusy) { // nothing was checked: say so, so the client retries
			reason, rc = reasonServerBusy, returnUnavailableV311
		}
		s.refuseConnect(v, reason, rc, bridge.LoginOutcome(err), err.Error(), bridge.LoginCloseCode(err))
		return false
	}
	cred, err := s.BrokerCredential(s.relay.opts.Credential)
	if err != nil {
		s.refuseConnect(v, reasonNotAuthorized, returnNotAuthV311, "forbidden", err.Error(), bridge.ClosePolicy)
		return false
	}
	s.cred = cred
	s.acl.open = s.Unrestricted()
	if pk.Connect.WillFlag && !s.acl.open {
		if err := s.Allow(auth.Publish, auth.Dest{Kind: auth.Topic, Name: pk.Connect.WillTopic}); err != nil {
			s.refuseConnect(v, reasonNotAuthorized, returnNotAuthV311, "forbidden", "will topic: "+err.Error(), bridge.ClosePolicy)
			return false
		}
	}
	s.WatchExpiry(func() {
		var answer []byte
		if v == 5 {
			answer = disconnectWithReason(reasonNotAuthorized, "token expired")
		}
		s.finish("token_expired", answer, "the client's token expired", bridge.ClosePolicy)
	})
	return true
}

func (s *session) refuseConnect(v, reason, returnCode byte, outcome, msg string, code uint16) {
	answer := []byte{0x20, 0x02, 0x00, returnCode}
	if v == 5 {
		answer = []byte{0x20, 0x03, 0x00, reason, 0x00}
	}
	s.finish(outcome, answer, msg, code)
}

// disconnectWithReason is an MQTT 5 DISCONNECT with a reason string.
func disconnectWithReason(reason byte, text string) []byte {
	props := 3 + len(text)
	b := []byte{0xE0, byte(2 + props), reason, byte(props), 0x1F, byte(len(text) >> 8), byte(len(text))}
	return append(b, text...)
}

// publishAllowed applies the ACL to a PUBLISH, following MQTT 5 topic
// aliases.
func (s *session) publishAllowed(p *validate.MQTTPacket) error {
	a := &s.acl
	topic := p.Topic
	if p.Alias != 0 {
		if len(topic) > 0 {
			if a.aliases == nil {
				a.aliases = map[uint16]string{}
			}
			old, known := a.aliases[p.Alias]
			if !known && len(a.aliases) >= maxAliases || a.aliasBytes-len(old)+len(topic) > maxAliasTopics {
				return errTooManyAliases
			}
			a.aliases[p.Alias] = string(topic)
			a.aliasBytes += len(topic) - len(old)
		} else {
			topic = []byte(a.aliases[p.Alias])
		}
	}
	if a.last != nil && bytes.Equal(topic, a.last) {
		return nil
	}
	err := s.Allow(auth.Publish, auth.Dest{Kind: auth.Topic, Name: string(topic)})
	if err == nil {
		a.last = append(a.last[:0], topic...)
	}
	return err
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
		s.finish("rejected", disconnectWithReason(0x94, "topic alias invalid"), err.Error(), bridge.ClosePolicy)
	case v == 5 && qos > 0:
		ack := byte(0x40) // PUBACK
		if qos == 2 {
			ack = 0x50 // PUBREC
		}
		return s.Write(gws.OpcodeBinary, []byte{ack, 0x03, byte(p.PacketID >> 8), byte(p.PacketID), reasonNotAuthorized})
	case v == 5:
		s.finish("forbidden", disconnectWithReason(reasonNotAuthorized, "publish not authorized"), err.Error(), bridge.ClosePolicy)
	default:
		s.finish("forbidden", nil, err.Error(), bridge.ClosePolicy)
	}
	return false
}

// subscribeFiltered applies the ACL to each filter of a SUBSCRIBE: a filter
// is allowed only if every topic it can match is. When some are refused it
// returns the packet to forward instead, rewritten without them (their
// codes go back into the broker's SUBACK), or, when all are, the SUBACK
// for the client; both nil: forward the packet as it is.
func (s *session) subscribeFiltered() (rewritten, answer []byte, err error) {
	pk := s.in.Decoded
	refused := make([]bool, len(pk.Filters))
	n := 0
	for i, f := range pk.Filters {
		if s.Allow(auth.Subscribe, auth.Dest{Kind: auth.Topic, Name: unshared(f.Filter)}) != nil {
			refused[i] = true
			n++
		}
	}
	switch {
	case n == 0:
		return nil, nil, nil
	case n == len(pk.Filters):
		return nil, suback(pk.ProtocolVersion, pk.PacketID, refused, nil), nil
	}
	kept := make(packets.Subscriptions, 0, len(pk.Filters)-n)
	for i, f := range pk.Filters {
		if !refused[i] {
			kept = append(kept, f)
		}
	}
	pk.Filters = kept
	var buf bytes.Buffer
	if err := pk.SubscribeEncode(&buf); err != nil {
		return nil, nil, err
	}
	s.acl.mu.Lock()
	if s.acl.pending == nil {
		s.acl.pending = map[uint16][]bool{}
	}
	s.acl.pending[pk.PacketID] = refused
	s.acl.pendingN.Store(int32(len(s.acl.pending)))
	s.acl.mu.Unlock()
	return buf.Bytes(), nil, nil
}

// unshared strips a shared subscription's $share/<group>/ prefix: the
// ACL is about the topics, not the group.
func unshared(f string) string {
	if rest, ok := strings.CutPrefix(f, "$share/"); ok {
		if _, filter, ok := strings.Cut(rest, "/"); ok {
			return filter
		}
	}
	return f
}

// suback encodes a SUBACK for len(refused) filters: refused ones get
// 0x87 (3.1.1: 0x80), the others take the broker's codes in order.
func suback(v byte, id uint16, refused []bool, granted []byte) []byte {
	fail := byte(subackFailureV311)
	if v == 5 {
		fail = reasonNotAuthorized
	}
	body := binary.BigEndian.AppendUint16(nil, id)
	if v == 5 {
		body = append(body, 0) // no properties
	}
	for _, r := range refused {
		switch {
		case r:
			body = append(body, fail)
		case len(granted) > 0:
			body = append(body, granted[0])
			granted = granted[1:]
		default:
			body = append(body, fail) // the broker answered for fewer filters than it was sent
		}
	}
	return append(appendFixedHeader(nil, 0x90, len(body)), body...)
}

func appendFixedHeader(b []byte, first byte, remaining int) []byte {
	b = append(b, first)
	for {
		c := byte(remaining & 0x7f)
		remaining >>= 7
		if remaining > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if remaining == 0 {
			return b
		}
	}
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
		if b[off] == 0x90 && rl >= 2 {
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
				out = append(out, suback(v, id, refused, codes)...)
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
