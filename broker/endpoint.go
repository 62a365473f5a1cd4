package broker

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/wsbridge/wsbridge/keyring"
)

// Endpoint is where a broker is and how the gateway logs in to it, with
// the names the operator's log gives it: what every broker client's
// Options and a Login share.
type Endpoint struct {
	// Address is the broker's host:port (a NATS client also takes a
	// nats:// URL).
	Address string
	// Credential is what the gateway logs in with; nil: it sends none.
	Credential *keyring.Credential
	// CredentialHolder, when set, supersedes Credential: each new
	// connection and login takes the credential it holds then (a keyring
	// reload reaches the next one).
	CredentialHolder *CredentialHolder
	// DialTimeout bounds a dial to the broker; default DefaultDialTimeout.
	DialTimeout time.Duration
	// TLS, when set, reaches the broker over TLS (amqps, stomp+ssl,
	// mqtts, nats with TLS required).
	TLS *tls.Config
	// Log is where the client logs; default slog.Default().
	Log *slog.Logger
	// Backend and CredentialName (Credential's keyring entry) name what
	// to fix in the operator's log when the broker refuses the login.
	Backend, CredentialName string
}

// WithDefaults is e with its defaults filled in: DialTimeout, Log, and a
// CredentialHolder (holding Credential when e gives none), so that a
// client reads the credential from one place.
func (e Endpoint) WithDefaults() Endpoint {
	if e.DialTimeout <= 0 {
		e.DialTimeout = DefaultDialTimeout
	}
	if e.Log == nil {
		e.Log = slog.Default()
	}
	if e.CredentialHolder == nil {
		e.CredentialHolder = NewCredentialHolder(e.Credential, "")
	}
	return e
}
