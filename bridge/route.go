package bridge

import (
	"crypto/tls"
	"log/slog"
	"net"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/keyring"
)

// RouteOptions are what every WebSocket relay route shares, whatever its
// protocol: where it is served, which broker it reaches and how, and who
// may use it. Each adapter's Options embed them.
type RouteOptions struct {
	Route   string // the path, for logs
	Backend string // the backend's name, for logs
	Address string // the broker's host:port
	// Credential goes to the broker in place of whatever the client sent;
	// nil sends none. Auth may choose a per-identity credential instead.
	Credential *keyring.Credential
	// CredentialHolder, when set, supersedes Credential: each session and
	// login check takes the credential it holds then (a keyring reload
	// reaches the next session).
	CredentialHolder *broker.CredentialHolder
	// CredentialName is Credential's keyring entry, for the operator's log
	// when the broker refuses it.
	CredentialName string
	// Login is the broker client's login for the route's protocol
	// (stompbroker.Login, ...), which the readiness check tries with the
	// credential. The caller picks it, so that adapters link no broker
	// client library; without one, a route with a credential is not ready.
	Login broker.LoginFunc
	// Auth is the route's authentication and ACL; nil admits everyone.
	Auth *auth.Policy
	// TLS, when set, reaches the broker over TLS.
	TLS         *tls.Config
	DialTimeout time.Duration // default broker.DefaultDialTimeout
	WS          WSOptions
	Origins     *front.Origins
	Conns       *front.Conns
	Log         *slog.Logger
}

// Admission is the route's admission of clients of protocol, whose
// sessions newSession makes.
func (o *RouteOptions) Admission(protocol string, subprotocols []string, newSession func() gws.SessionStorage) Admission {
	return Admission{Protocol: protocol, Route: o.Route, Backend: o.Backend, CredentialName: o.CredentialName,
		CredentialHolder: o.CredentialHolder,
		Origins:          o.Origins, Conns: o.Conns, Log: o.Log, Auth: o.Auth,
		Upgraders: NewUpgraders(Handler{}, o.WS, subprotocols, newSession)}
}

// LoginCheck is the route's readiness check: the broker, speaking
// protocol, accepts the route's credential (on vhost, where the protocol
// has one). Without a credential it only dials.
func (o *RouteOptions) LoginCheck(protocol, vhost string) *broker.LoginCheck {
	return broker.NewLoginCheck(broker.Login{Endpoint: broker.Endpoint{Address: o.Address, Credential: o.Credential,
		CredentialHolder: o.CredentialHolder, DialTimeout: o.DialTimeout, TLS: o.TLS, Log: o.Log, Backend: o.Backend,
		CredentialName: o.CredentialName}, Protocol: protocol, VHost: vhost, Attempt: o.Login})
}

// Dial connects one session to the broker.
func (o *RouteOptions) Dial(d *net.Dialer) (*Upstream, error) {
	u, err := DialUpstream(d, o.Address, o.TLS, o.WS.WriteTimeout)
	if err == nil {
		u.Budget = o.WS.Budget
	}
	return u, err
}
