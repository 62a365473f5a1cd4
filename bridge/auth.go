package bridge

import (
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/keyring"
)

// Login settles the session's identity at the protocol's login (STOMP
// CONNECT, MQTT CONNECT, AMQP start-ok) and stops the login deadline; once
// that has passed it fails. An identity proven at the upgrade stands and
// the login fields are ignored. Failures are logged with their reason
// (never the secret) and returned for the protocol's own answer.
func (s *Session) Login(user, password string) (*auth.Identity, error) {
	if !s.loginBegun() {
		return nil, errLoginTimeout
	}
	if s.Identity != nil {
		return s.Identity, nil
	}
	p := s.policy()
	if p == nil {
		s.Identity = auth.Anonymous
		return s.Identity, nil
	}
	id, err := p.FromLogin(s.client, user, password)
	if err != nil {
		s.adm.Log.Info(s.adm.Protocol+" authentication failed", "route", s.adm.Route, "remote", s.Remote,
			"outcome", front.LoginOutcome(err), "reason", err.Error())
		return nil, err
	}
	s.Identity = id
	return id, nil
}

// LoginCloseCode is the WebSocket close code for a failed login: 1013 (try
// again later) when it was refused unchecked, 1008 otherwise.
func LoginCloseCode(err error) uint16 {
	if errors.Is(err, auth.ErrBusy) {
		return CloseTryAgainLater
	}
	return ClosePolicy
}

// BrokerCredential is the credential this session's identity uses on the
// broker: the policy's per-identity entry, or the route's own (its
// CredentialHolder's now, or def where the route has none). An
// identity with no entry is refused, and that is logged. The session
// remembers which entry it was, for BrokerRefused and Redact.
func (s *Session) BrokerCredential(def *keyring.Credential) (*keyring.Credential, error) {
	if s.adm != nil && s.adm.CredentialHolder != nil {
		def = s.adm.CredentialHolder.Load()
	}
	p := s.policy()
	if p == nil || !p.PerIdentityCredential() {
		if def != nil && s.adm != nil {
			s.brokerLogin.Store(&brokerLogin{entry: s.adm.CredentialName, cred: def, identity: s.Identity.String()})
		}
		return def, nil
	}
	c, entry, err := p.Credential(s.Identity)
	if err != nil {
		s.adm.Log.Warn(s.adm.Protocol+" identity has no broker credential", "route", s.adm.Route, "remote", s.Remote,
			"identity", s.Identity.String())
		return nil, err
	}
	s.brokerLogin.Store(&brokerLogin{entry: entry, cred: c, identity: s.Identity.String()})
	return c, nil
}

// brokerLogin is who the gateway logs in to the broker as for a session.
type brokerLogin struct {
	entry string              // the keyring entry
	cred  *keyring.Credential // its username is not for clients, its password for no one
	// identity is the session's, for the broker's reader to log: it may
	// run before the login sets Session.Identity (AMQP dials first).
	identity string
}

// redactPassword removes the password from text, wherever it appears: no
// broker is known to echo one, and none is to reach a log or a client if
// one ever does.
func (l *brokerLogin) redactPassword(text string) string {
	if pw := l.cred.Password.Reveal(); pw != "" {
		return strings.ReplaceAll(text, pw, "[redacted]")
	}
	return text
}

// BrokerRefusedCredential is what a client is told when the broker refuses
// the gateway's login: the broker's own words name the gateway's broker
// user, which is the operator's business (BrokerRefused logs them).
const BrokerRefusedCredential = "the broker refused the gateway's credential"

// BrokerRefused logs at WARN that the broker refused the session's broker
// login, with the backend and keyring entry to fix and the broker's own
// words (said, which may name the broker user; never the password). attrs
// add protocol details.
func (s *Session) BrokerRefused(said string, attrs ...any) {
	s.BrokerWarn(s.adm.Protocol+" broker refused the gateway's credential", said, attrs...)
}

// BrokerWarn logs msg at WARN about what the broker said to the session's
// broker login (the password removed), with the backend and keyring entry.
func (s *Session) BrokerWarn(msg, said string, attrs ...any) {
	entry, identity := "", "unauthenticated"
	if l := s.brokerLogin.Load(); l != nil {
		entry, identity, said = l.entry, l.identity, l.redactPassword(said)
	}
	s.adm.Log.Warn(msg, append([]any{"route", s.adm.Route, "remote", s.Remote, "backend", s.adm.Backend,
		"keyring_entry", entry, "identity", identity, "broker_said", said}, attrs...)...)
}

// Redact replaces the session's broker username in text, where it stands
// as a word of its own, and its password anywhere, with [redacted]; ok
// reports whether it did. Safe from any goroutine (the broker's reader
// calls it).
func (s *Session) Redact(text string) (string, bool) {
	l := s.brokerLogin.Load()
	if l == nil {
		return text, false
	}
	scrubbed := l.redactPassword(text)
	out, ok := redactWord(scrubbed, l.cred.Username)
	return out, ok || scrubbed != text
}

// redactWord replaces word in text wherever it is not part of a longer
// name (a user "gw" leaves "gwen" and "gw.x" alone, not "user gw.").
func redactWord(text, word string) (string, bool) {
	if word == "" || !strings.Contains(text, word) {
		return text, false
	}
	alnum := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
	}
	joiner := func(c byte) bool { return c == '.' || c == '-' || c == '@' }
	var b strings.Builder
	done := false
	for {
		i := strings.Index(text, word)
		if i < 0 {
			break
		}
		end := i + len(word)
		before := i > 0 && (alnum(text[i-1]) || i > 1 && joiner(text[i-1]) && alnum(text[i-2]))
		after := end < len(text) && (alnum(text[end]) || end+1 < len(text) && joiner(text[end]) && alnum(text[end+1]))
		if before || after {
			b.WriteString(text[:end])
		} else {
			b.WriteString(text[:i])
			b.WriteString("[redacted]")
			done = true
		}
		text = text[end:]
	}
	b.WriteString(text)
	return b.String(), done
}

// ClientIDPrefix is what a client identifier of the identity with subject
// sub starts with on the broker: "SUBJECT:". A ':' (and so '%') in the
// subject is escaped, so that the first ':' ends it: otherwise "urn:a"
// with client id "b:x" and "urn:a:b" with "x" would share "urn:a:b:x".
func ClientIDPrefix(sub string) string {
	if strings.ContainsAny(sub, ":%") {
		sub = strings.NewReplacer("%", "%25", ":", "%3A").Replace(sub)
	}
	return sub + ":"
}

// Unrestricted reports whether the session's identity may touch every
// destination, so an adapter can skip mapping destinations at all.
func (s *Session) Unrestricted() bool { return s.policy().Unrestricted(s.Identity) }

// Allow applies the route's ACL to one destination; a denial is logged
// with the identity and destination and returned for the protocol's answer.
func (s *Session) Allow(act auth.Action, d auth.Dest) error {
	p := s.policy()
	if p == nil {
		return nil
	}
	err := p.Allow(s.Identity, act, d)
	if err != nil {
		s.adm.Log.Info(s.adm.Protocol+" access denied", "route", s.adm.Route, "remote", s.Remote,
			"identity", s.Identity.String(), "action", act.String(), "destination", d.String())
	}
	return err
}

// WatchExpiry arms expired to run once the identity's token has run out,
// at auth.Policy.EndsAt (the same rule as SSE streams). The adapter
// answers with its protocol's error.
func (s *Session) WatchExpiry(expired func()) {
	at := s.policy().EndsAt(s.Identity)
	if at.IsZero() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expiry == nil && !s.closing.Load() {
		s.expiry = time.AfterFunc(time.Until(at), expired)
	}
}

func (s *Session) policy() *auth.Policy {
	if s.adm == nil {
		return nil
	}
	return s.adm.Auth
}

// stopTimers disarms the expiry timer and the login deadline.
func (s *Session) stopTimers() {
	s.mu.Lock()
	if s.expiry != nil {
		s.expiry.Stop()
	}
	if s.loginTimer != nil {
		s.loginTimer.Stop()
	}
	s.mu.Unlock()
}

// LogIdentity is the identity for a session's log lines.
func (s *Session) LogIdentity() slog.Attr {
	return slog.String("identity", s.Identity.String())
}
