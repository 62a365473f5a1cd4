// Package bridge is wsbridge's WebSocket session framework, what every
// protocol adapter shares: admission of a client to a route (Admission:
// origin, connection limits, login) on top of the HTTP front (package
// front), the upgrade (Upgraders, WSOptions) and its refusal for load with
// close 1013, the connection's reads with their limits and the lingering
// close (wsconn.go, Linger), the protocol-neutral session (Session,
// Handler, Outbox), identity and broker credentials per session (auth.go),
// and the raw TCP connection a relay holds to its broker (Upstream). It
// knows no client protocol's wire format.
//
// It also holds, for now, the broker-neutral Broker API and its clients
// (broker.go, shared.go, nats.go, amqp.go, mqtt.go, stomp.go, embedded.go,
// login.go), which issue 17 moves into packages of their own.
package bridge
