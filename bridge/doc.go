// Package bridge is wsbridge's WebSocket session framework, what every
// protocol adapter shares: admission of a client to a route (Admission:
// origin, connection limits, login) on top of the HTTP front (package
// front), the upgrade (Upgraders, WSOptions) and its refusal for load with
// close 1013, the connection's reads with their limits and the lingering
// close (wsconn.go, Linger), the protocol-neutral session (Session,
// Handler, Outbox), identity and broker credentials per session (auth.go),
// the raw TCP connection a relay holds to its broker (Upstream), and the
// relay engine (relay.go: Engine, RelaySession), which owns the scan loop,
// forwarding, the dial, the upstream loop, the client write path and the
// close log line while a protocol supplies a scanner and named hooks. It
// knows no client protocol's wire format: a protocol's scanner and
// encoders live in validate, its hooks in its adapter.
//
// It links no broker client library. It imports package broker (neutral,
// SDK-free) for what a route shares with its backend's Broker:
// CredentialHolder (one per backend, which a keyring reload replaces for
// the broker and the relay sessions alike), and LoginCheck with the
// LoginFunc that RouteOptions.Login carries (a relay route's readiness,
// whose login the wiring picks from the client packages), and the one
// default dial timeout (DefaultDialTimeout).
package bridge
