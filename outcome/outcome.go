// Package outcome is the closed vocabulary of why a client's session or
// request ended: the outcome= of every end-of-session log line and every
// refusal, and (coming) the outcome label of the gateway's metrics, so it
// is small and bounded: a new outcome is a new constant here, documented
// in the README's log section, never a string made up where it is logged.
//
// It imports nothing of ours, so that every package that ends sessions or
// refuses requests (the HTTP front, the session framework, the adapters,
// sse) can name outcomes without importing one another.
package outcome

import "log/slog"

// Outcome is why a session ended or a request was refused. It is a
// string, so that logs print it as the word itself (outcome=broker_lost).
type Outcome string

// LogValue makes slog print o as a plain string in every handler.
func (o Outcome) LogValue() slog.Value { return slog.StringValue(string(o)) }

// String returns the word.
func (o Outcome) String() string { return string(o) }

// Level is the level of the line that logs a session ending with o: INFO
// for the ways sessions end every day (the client left, the gateway shut
// down), WARN for the rest, which someone may have to look into.
func (o Outcome) Level() slog.Level {
	switch o {
	case ClientClosed, Disconnected, Shutdown:
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

// Breach reports whether a session ending with o cost the gateway dearly
// by the client's doing: a message too large (read up to the limit first,
// when it came in fragments) or one not completed in time (memory held
// for the whole timeout). The front charges the client's address for it
// (front.BreachCost).
func (o Outcome) Breach() bool { return o == TooLarge || o == MessageTimeout }

// The outcomes. Each says when it happens and whose doing it is: the
// client's, the broker's or the gateway's.
const (
	// ClientClosed (the client's doing): the client closed its WebSocket
	// or TCP connection, completed AMQP connection.close, or left an SSE
	// stream, with nothing else having ended the session first.
	ClientClosed Outcome = "client_closed"
	// Disconnected (the client's doing): the client ended the session with
	// its protocol's own goodbye (STOMP or MQTT DISCONNECT).
	Disconnected Outcome = "disconnected"
	// KeepaliveTimeout (the client's doing): no traffic from the client,
	// not even a pong, for two WebSocket ping intervals.
	KeepaliveTimeout Outcome = "keepalive_timeout"
	// HeartbeatTimeout (the client's doing): a STOMP translate-mode client
	// sent no heart-beat within twice the negotiated interval.
	HeartbeatTimeout Outcome = "heartbeat_timeout"
	// LoginTimeout (the client's doing): the protocol's login (STOMP
	// CONNECT, MQTT CONNECT, AMQP start-ok) did not come within
	// limits.login_timeout of the upgrade.
	LoginTimeout Outcome = "login_timeout"
	// Unauthenticated (the client's doing): its token or login was missing
	// or refused.
	Unauthenticated Outcome = "unauthenticated"
	// Forbidden (the client's doing): it asked for something its identity
	// may not do (a destination outside its ACL, an AMQP update-secret,
	// MQTT re-authentication).
	Forbidden Outcome = "forbidden"
	// TokenExpired (the client's doing): the token the session was
	// admitted with expired while it was open.
	TokenExpired Outcome = "token_expired"
	// Rejected (the client's doing): it sent what its protocol does not
	// allow (a frame or packet the validator refused, a virtual host it
	// may not use).
	Rejected Outcome = "rejected"
	// TooLarge (the client's doing): a WebSocket message or protocol frame
	// over its limit (websocket.max_message_bytes, the protocol's own).
	TooLarge Outcome = "too_large"
	// MessageTimeout (the client's doing): a message or partial frame took
	// longer than websocket.message_timeout to arrive.
	MessageTimeout Outcome = "message_timeout"
	// TextMessage (the client's doing): a text WebSocket message on a
	// route whose protocol is binary (MQTT).
	TextMessage Outcome = "text_message"
	// SlowConsumer (the client's doing): the client fell further behind
	// than its queue allows (STOMP translate mode, SSE) and was dropped.
	SlowConsumer Outcome = "slow_consumer"
	// WriteTimeout (the client's doing): the client did not take a write
	// within websocket.write_timeout.
	WriteTimeout Outcome = "write_timeout"
	// ClientWriteFailed (the client's doing): a write to the client failed
	// because its connection broke.
	ClientWriteFailed Outcome = "client_write_failed"
	// OriginDenied (the client's doing): a WebSocket upgrade from an Origin
	// the route does not allow (HTTP 403).
	OriginDenied Outcome = "origin_denied"
	// HandshakeFailed (the client's doing): the WebSocket upgrade itself
	// failed (not a WebSocket request, a subprotocol the route does not
	// speak).
	HandshakeFailed Outcome = "handshake_failed"

	// BrokerUnavailable (the broker's doing): the gateway could not reach
	// the backend for the session, or the backend did not take a publish
	// or subscription.
	BrokerUnavailable Outcome = "broker_unavailable"
	// BrokerRefused (the broker's doing): the broker refused the gateway's
	// credential for the session.
	BrokerRefused Outcome = "broker_refused"
	// BrokerLost (the broker's doing): the broker connection ended under
	// the session: the broker closed it, a write to it failed, or the
	// upstream subscription feeding a translated session or SSE stream
	// ended.
	BrokerLost Outcome = "broker_lost"
	// BrokerError (the broker's doing): the broker ended the session with
	// its protocol's error (STOMP ERROR).
	BrokerError Outcome = "broker_error"
	// BrokerProtocolError (the broker's doing): the broker sent what its
	// protocol does not allow (a frame over the gateway's frame-max, an
	// invalid packet).
	BrokerProtocolError Outcome = "broker_protocol_error"

	// Shutdown (the gateway's doing): the gateway is shutting down and
	// sent the client away.
	Shutdown Outcome = "shutdown"
	// InternalError (the gateway's doing): a bug while handling the
	// client's bytes (a recovered panic) ended the session.
	InternalError Outcome = "internal_error"
	// OverBudget (the gateway's doing): limits.memory_bytes could not
	// cover what the client sent or was to be sent.
	OverBudget Outcome = "over_budget"
	// OverCapacity (the gateway's doing): a connection or topic limit
	// (limits.max_connections, max_connections_per_ip,
	// sse.max_live_topics) was reached; the client is told when to retry.
	OverCapacity Outcome = "over_capacity"
	// RateLimited (the gateway's doing): the client's address is over its
	// handshake rate (limits.handshakes_per_second); told when to retry.
	RateLimited Outcome = "rate_limited"
	// Busy (the gateway's doing): work the client asked for was refused
	// unchecked, the gateway doing as much of it as it may: its login, too
	// many being checked at once from the address or in all, or its large
	// message, beyond websocket.large_message_bytes_per_second; told to
	// retry.
	Busy Outcome = "busy"
)

// all is every outcome, in the order above.
var all = [...]Outcome{
	ClientClosed, Disconnected, KeepaliveTimeout, HeartbeatTimeout, LoginTimeout,
	Unauthenticated, Forbidden, TokenExpired, Rejected, TooLarge, MessageTimeout,
	TextMessage, SlowConsumer, WriteTimeout, ClientWriteFailed, OriginDenied, HandshakeFailed,
	BrokerUnavailable, BrokerRefused, BrokerLost, BrokerError, BrokerProtocolError,
	Shutdown, InternalError, OverBudget, OverCapacity, RateLimited, Busy,
}

// All returns every outcome: for metrics that set up their labels ahead,
// and for tests.
func All() []Outcome { return append([]Outcome(nil), all[:]...) }
