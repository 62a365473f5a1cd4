package broker

import (
	"sync/atomic"

	"github.com/wsbridge/wsbridge/keyring"
)

// CredentialHolder holds a backend's broker credential where a reload of
// the keyring (SIGHUP) can replace it. It is here, not in bridge, because
// a backend's Broker and the relay routes' sessions and login checks of
// the same backend share one holder, and broker clients import no part
// of the session framework. Every new broker connection and
// login check reads the one held at that moment; connections already made
// keep the one they logged in with.
type CredentialHolder struct {
	p atomic.Pointer[keyring.Credential]
	// fix is how the operator replaces the credential, for the WARN a
	// refusal draws; "" says it generically.
	fix string
}

// NewCredentialHolder holds c (nil: no credential). fix tells the
// operator how to replace it when the broker refuses it: the keyring
// command with the -config the gateway runs with, and how the gateway
// then reads it ("" for a generic hint).
func NewCredentialHolder(c *keyring.Credential, fix string) *CredentialHolder {
	h := &CredentialHolder{fix: fix}
	h.p.Store(c)
	return h
}

// Load is the credential held now; nil for a nil holder or none.
func (h *CredentialHolder) Load() *keyring.Credential {
	if h == nil {
		return nil
	}
	return h.p.Load()
}

// Store replaces the credential for the logins to come.
func (h *CredentialHolder) Store(c *keyring.Credential) { h.p.Store(c) }

// defaultFix is the WARN's hint when the holder has none of its own.
const defaultFix = "store the broker's password for this user with `wsbridge keyring set %s -username USER -password-stdin -config FILE` " +
	"(the -config the gateway runs with), then reload the gateway (SIGHUP); or fix the user on the broker"
