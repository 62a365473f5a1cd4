package amqp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/lxzan/gws"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/validate"
)

// AMQP reply codes the gateway's auth answers with.
const (
	replyAccessRefused    = 403
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
			s.closeConnection("unauthenticated", "login needs SASL PLAIN", bridge.ClosePolicy, replyAccessRefused,
				"ACCESS_REFUSED - log in with SASL PLAIN (username and password, or a token as the password)")
			return false
		}
	}
	if _, err := s.Login(user, pass); err != nil {
		s.closeConnection(bridge.LoginOutcome(err), err.Error(), bridge.LoginCloseCode(err), replyAccessRefused,
			"ACCESS_REFUSED - authentication failed: "+err.Error())
		return false
	}
	cred, err := s.BrokerCredential(s.relay.opts.Credential)
	if err != nil {
		s.closeConnection("forbidden", err.Error(), bridge.ClosePolicy, replyAccessRefused, "ACCESS_REFUSED - "+err.Error())
		return false
	}
	s.cred = cred
	s.acl.open = s.Unrestricted()
	s.WatchExpiry(func() {
		s.closeConnection("token_expired", "the client's token expired", bridge.ClosePolicy, replyConnectionForced,
			"CONNECTION_FORCED - token expired; reconnect with a fresh one")
	})
	return true
}

// check applies the ACL to a method frame. It returns the destinations
// the method touches that the identity may not, as an error for
// channel.close, or nil.
func (s *session) check(f *validate.AMQPFrame) error {
	p := f.Payload
	str := func(i int) string { // the i-th short string after the reserved short
		off := 6
		for ; i > 0; i-- {
			off += 1 + int(p[off])
		}
		return string(p[off+1 : off+1+int(p[off])])
	}
	topicEx := s.relay.opts.TopicExchange
	queue := func(name string) auth.Dest {
		if name == "" || strings.HasPrefix(name, "amq.gen-") {
			// the channel's last server-named queue, or one: exclusive to
			// this connection whatever the ACL says
			return auth.Dest{Kind: auth.Private, Name: name}
		}
		return auth.Dest{Kind: auth.Queue, Name: name}
	}
	route := func(exchange, key string) auth.Dest {
		switch exchange {
		case "":
			return auth.Dest{Kind: auth.Queue, Name: key}
		case topicEx:
			return auth.Dest{Kind: auth.Topic, Name: key}
		}
		return auth.Dest{Kind: auth.Exchange, Exchange: exchange, Name: key}
	}
	wholeExchange := func(name string) auth.Dest { return auth.Dest{Kind: auth.Exchange, Exchange: name, Name: "#"} }
	switch uint32(f.Class)<<16 | uint32(f.Method) {
	case 60<<16 | 40: // basic.publish
		return s.Allow(auth.Publish, route(str(0), str(1)))
	case 50<<16 | 10: // queue.declare
		name := str(0)
		if bytes.Contains(p[6+1+len(name):], []byte("x-dead-letter-exchange")) {
			o := &s.relay.opts
			o.Log.Info("amqp access denied", "route", o.Route, "remote", s.Remote, "identity", s.Identity.String(),
				"action", "queue.declare", "destination", "queue:"+name, "reason", "x-dead-letter-exchange")
			return &auth.Error{Msg: "queue arguments that route messages elsewhere (x-dead-letter-exchange) are not allowed"}
		}
		return s.Allow(auth.Subscribe, queue(name))
	case 50<<16 | 20: // queue.bind
		if err := s.Allow(auth.Subscribe, queue(str(0))); err != nil {
			return err
		}
		return s.Allow(auth.Subscribe, route(str(1), str(2)))
	case 50<<16 | 30, 50<<16 | 40, 60<<16 | 20, 60<<16 | 70: // queue.purge, queue.delete, basic.consume, basic.get
		return s.Allow(auth.Subscribe, queue(str(0)))
	case 40<<16 | 10: // exchange.declare
		name := str(0)
		bitsAt := 6 + 1 + len(name) + 1 + len(str(1))
		if p[bitsAt]&1 != 0 { // passive: only asks whether it exists
			return nil
		}
		return s.Allow(auth.Publish, wholeExchange(name))
	case 40<<16 | 20: // exchange.delete
		return s.Allow(auth.Publish, wholeExchange(str(0)))
	case 40<<16 | 30, 40<<16 | 40: // exchange.bind, exchange.unbind
		if err := s.Allow(auth.Publish, wholeExchange(str(0))); err != nil {
			return err
		}
		return s.Allow(auth.Subscribe, route(str(1), str(2)))
	}
	return nil
}

// refuse closes the channel of a refused method on both sides. It returns
// false when the session has ended.
func (s *session) refuse(f *validate.AMQPFrame, err error) bool {
	ch := f.Channel
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
	if !s.forward(channelClose(ch, 200, "closed by the gateway", 0, 0)) {
		return false
	}
	return s.Write(gws.OpcodeBinary, channelClose(ch, replyAccessRefused, fmt.Sprintf("ACCESS_REFUSED - %s", err), f.Class, f.Method))
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

// channelClose encodes channel.close.
func channelClose(ch uint16, code int, text string, class, method uint16) []byte {
	if len(text) > 255 {
		text = text[:255]
	}
	p := []byte{0, 20, 0, 40, byte(code >> 8), byte(code), byte(len(text))}
	p = append(p, text...)
	p = binary.BigEndian.AppendUint16(p, class)
	p = binary.BigEndian.AppendUint16(p, method)
	return frame(validate.AMQPFrameMethod, ch, p)
}
