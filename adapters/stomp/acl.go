package stomp

import (
	"bytes"
	"strings"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
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
		s.finish(bridge.LoginOutcome(err), "authentication failed", err.Error(), bridge.LoginCloseCode(err))
		return false
	}
	cred, err := s.BrokerCredential(s.relay.opts.Credential)
	if err != nil {
		s.finish("forbidden", "access refused", err.Error(), bridge.ClosePolicy)
		return false
	}
	s.cred = cred
	s.open = s.Unrestricted()
	s.WatchExpiry(func() {
		s.finish("token_expired", "token expired", "the client's token expired; reconnect with a fresh one", bridge.ClosePolicy)
	})
	return true
}

// authorize applies the route's ACL to a SEND or SUBSCRIBE. The last
// destination a SEND was allowed to is remembered, so a client that keeps
// sending to one destination pays for the check once.
func (s *session) authorize(f *validate.STOMPFrame) error {
	if s.open {
		return nil
	}
	act := auth.Publish
	if f.Command == validate.CmdSubscribe {
		act = auth.Subscribe
	}
	raw, _ := f.Header("destination")
	if act == auth.Publish && s.lastSend != nil && bytes.Equal(raw, s.lastSend) {
		return nil
	}
	if err := s.Allow(act, destOf(unescape(raw, s.in.Version), s.relay.opts.TopicExchange)); err != nil {
		return err
	}
	if act == auth.Subscribe {
		// RabbitMQ's x-queue-name names the queue behind a subscription:
		// attaching to someone else's queue is subscribing to it.
		if q, ok := f.Header("x-queue-name"); ok {
			return s.Allow(auth.Subscribe, auth.Dest{Kind: auth.Queue, Name: unescape(q, s.in.Version)})
		}
		return nil
	}
	s.lastSend = append(s.lastSend[:0], raw...)
	return nil
}

// refuse ends the session over a refused frame: ERROR "access refused"
// with the reason (and the frame's receipt, if it asked for one), 1008.
func (s *session) refuse(f *validate.STOMPFrame, err error) {
	receipt, _ := f.Header("receipt")
	answer := errorFrame(validate.STOMPVersion(s.version.Load()), "access refused", err.Error(), receipt)
	s.Finish("forbidden", err.Error(), bridge.ClosePolicy, gws.OpcodeText, answer)
}

// destOf maps a STOMP destination onto what the ACL names: /topic/x and
// /exchange/<topic exchange>/x are topics, /queue/x and /amq/queue/x
// queues, /exchange/e/k an exchange with a routing key, and
// /temp-queue/ and /reply-queue/ destinations private to the connection.
func destOf(dest, topicExchange string) auth.Dest {
	cut := func(prefix string) (string, bool) { return strings.CutPrefix(dest, prefix) }
	if n, ok := cut("/topic/"); ok {
		return auth.Dest{Kind: auth.Topic, Name: n}
	}
	if n, ok := cut("/queue/"); ok {
		return auth.Dest{Kind: auth.Queue, Name: n}
	}
	if n, ok := cut("/amq/queue/"); ok {
		return auth.Dest{Kind: auth.Queue, Name: n}
	}
	if n, ok := cut("/exchange/"); ok {
		ex, key, _ := strings.Cut(n, "/")
		if ex == topicExchange {
			return auth.Dest{Kind: auth.Topic, Name: key}
		}
		return auth.Dest{Kind: auth.Exchange, Exchange: ex, Name: key}
	}
	if _, ok := cut("/temp-queue/"); ok {
		return auth.Dest{Kind: auth.Private, Name: dest}
	}
	if _, ok := cut("/reply-queue/"); ok {
		return auth.Dest{Kind: auth.Private, Name: dest}
	}
	// Anything else the broker refuses anyway; as a topic it matches only
	// a pattern written for that very name.
	return auth.Dest{Kind: auth.Topic, Name: dest}
}
