package amqp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/lxzan/gws"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/outcome"
	"github.com/wsbridge/wsbridge/validate"
)

// AMQP reply codes the gateway's auth answers with.
const (
	replyAccessRefused    = 403
	replyNotAllowed       = 530
	replyConnectionForced = 320
)

// acl is a session's ACL state. A refused method closes its channel on
// both sides: the client gets channel.close 403, the broker a
// channel.close of our own; until each answers with close-ok, that side's
// frames on the channel are dropped (AMQP asks a closing peer to discard
// them anyway), so neither ever sees the other's half of the exchange.
type acl struct {
	open          bool            // the identity may touch every destination (read loop)
	clientClosing map[uint16]bool // channels awaiting the client's close-ok (read loop)
	guard                         // the decisions when it may not

	mu            sync.Mutex
	brokerClosing map[uint16]bool // channels awaiting the broker's close-ok
	brokerN       atomic.Int32    // len(brokerClosing), read on every broker read
}

// plainCredentials reads a SASL PLAIN response: authzid NUL authcid NUL
// password.
func plainCredentials(resp []byte) (user, password string, ok bool) {
	parts := bytes.SplitN(resp, []byte{0}, 3)
	if len(parts) != 3 {
		return "", "", false
	}
	return string(parts[1]), string(parts[2]), true
}

// login settles the identity from connection.start-ok's PLAIN response (or
// the upgrade's token) and picks the broker credential. It returns false
// after answering with connection.close 403.
func (s *session) login(mechanism, response []byte) bool {
	var user, pass string
	if s.Identity == nil && s.relay.opts.Auth != nil && s.relay.opts.Auth.Mode() != auth.ModeNone {
		var ok bool
		if string(mechanism) == "PLAIN" {
			user, pass, ok = plainCredentials(response)
		}
		if !ok {
			s.closeConnection(outcome.Unauthenticated, "login needs SASL PLAIN", bridge.ClosePolicy, replyAccessRefused,
				"ACCESS_REFUSED - log in with SASL PLAIN (username and password, or a token as the password)")
			return false
		}
	}
	if _, err := s.Login(user, pass); err != nil {
		s.closeConnection(front.LoginOutcome(err), err.Error(), bridge.LoginCloseCode(err), replyAccessRefused,
			"ACCESS_REFUSED - authentication failed: "+err.Error())
		return false
	}
	cred, err := s.BrokerCredential(s.relay.opts.Credential)
	if err != nil {
		s.closeConnection(outcome.Forbidden, err.Error(), bridge.ClosePolicy, replyAccessRefused, "ACCESS_REFUSED - "+err.Error())
		return false
	}
	s.cred = cred
	s.acl.open = s.Unrestricted()
	if !s.acl.open {
		o := &s.relay.opts
		policy, id := o.Auth, s.Identity
		s.acl.guard = guard{
			allow:    func(act auth.Action, d auth.Dest) error { return policy.Allow(id, act, d) },
			topicEx:  o.TopicExchange,
			maxDepth: s.in.Limits.MaxTableDepth,
		}
	}
	s.WatchExpiry(func() {
		s.closeConnection(outcome.TokenExpired, "the client's token expired", bridge.ClosePolicy, replyConnectionForced,
			"CONNECTION_FORCED - token expired; reconnect with a fresh one")
	})
	return true
}

// refuse closes the channel of a refused method (class, method) on both
// sides, and logs why. It returns false when the session has ended.
func (s *session) refuse(ch, class, method uint16, err error) bool {
	o := &s.relay.opts
	o.Log.Info("amqp access denied", "route", o.Route, "remote", s.Remote, "identity", s.Identity.String(),
		"channel", ch, "method", (&validate.AMQPFrame{Class: class, Method: method}).MethodName(), "reason", err.Error())
	if s.acl.clientClosing == nil {
		s.acl.clientClosing = map[uint16]bool{}
	}
	s.acl.clientClosing[ch] = true
	s.acl.mu.Lock()
	if s.acl.brokerClosing == nil {
		s.acl.brokerClosing = map[uint16]bool{}
	}
	s.acl.brokerClosing[ch] = true
	s.acl.brokerN.Store(int32(len(s.acl.brokerClosing)))
	s.acl.mu.Unlock()
	if !s.Forward(validate.AppendAMQPChannelClose(nil, ch, 200, "closed by the gateway", 0, 0)) {
		return false
	}
	return s.Write(gws.OpcodeBinary, validate.AppendAMQPChannelClose(nil, ch, replyAccessRefused, fmt.Sprintf("ACCESS_REFUSED - %s", err), class, method))
}

// dropClient reports whether a client frame belongs to a channel the
// gateway closed and is to be dropped; the client's close-ok ends that.
func (s *session) dropClient(f *validate.AMQPFrame) bool {
	if !s.acl.clientClosing[f.Channel] {
		return false
	}
	if f.Type == validate.AMQPFrameMethod && f.Class == 20 && f.Method == 41 {
		delete(s.acl.clientClosing, f.Channel)
	}
	return true
}

// dropBroker removes from b (whole frames) those on channels the gateway
// closed, up to and including the broker's close-ok for each.
func (s *session) dropBroker(b []byte) []byte {
	if s.acl.brokerN.Load() == 0 {
		return b
	}
	s.acl.mu.Lock()
	defer s.acl.mu.Unlock()
	var out []byte
	kept := 0 // b[:kept] is already in out, or needs no copy
	for off := 0; off+7 <= len(b); {
		ch := binary.BigEndian.Uint16(b[off+1:])
		end := off + 8 + int(binary.BigEndian.Uint32(b[off+3:]))
		if s.acl.brokerClosing[ch] {
			if out == nil {
				out = make([]byte, 0, len(b))
			}
			out = append(out, b[kept:off]...)
			kept = end
			if b[off] == validate.AMQPFrameMethod && end-off >= 12 &&
				binary.BigEndian.Uint16(b[off+7:]) == 20 && binary.BigEndian.Uint16(b[off+9:]) == 41 {
				delete(s.acl.brokerClosing, ch)
				s.acl.brokerN.Store(int32(len(s.acl.brokerClosing)))
			}
		}
		off = end
	}
	if out == nil {
		return b
	}
	return append(out, b[kept:]...)
}
