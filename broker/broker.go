// Package broker is the gateway's broker-neutral publish/subscribe API:
// the Broker and Subscription interfaces its terminating routes (sse, the
// STOMP translate mode) consume, Message, the error classes callers
// branch on (ErrUnavailable, ErrUnreachable, ErrTooLarge, ErrLoginRefused),
// Shared (one upstream subscription per topic), Endpoint (where a broker
// is and how the gateway logs in to it, which every client's Options
// embeds), and the login check that readiness and the clients share
// (Login, LoginCheck, CredentialHolder).
//
// It imports no broker client library. Each client lives in a package of
// its own beside it (natsbroker with the embedded NATS server, amqpbroker,
// mqttbroker, stompbroker) and only cmd/wsbridge, which wires them,
// imports those; brokertest holds the contract every implementation's
// tests run. A new broker (Kafka, Redis Streams) is one new package that
// implements Broker, offers a LoginFunc and passes brokertest.Run.
package broker

import (
	"context"
	"errors"
)

// ErrUnavailable means the broker cannot be reached now; callers answer
// 503 and let the client retry.
var ErrUnavailable = errors.New("broker unavailable")

// ErrUnreachable is the ErrUnavailable of a broker the gateway could not
// connect to: the dial, TLS or the protocol's handshake failed (a refused
// login is ErrLoginRefused instead). errors.Is(err, ErrUnavailable) holds
// for it too; callers that report a cause tell it from a connection lost
// under an operation.
var ErrUnreachable error = unreachable{}

type unreachable struct{}

func (unreachable) Error() string        { return "broker unreachable" }
func (unreachable) Is(target error) bool { return target == ErrUnavailable }

// ErrTooLarge means the broker refuses a message of that size (NATS's
// max_payload): retrying does not help, so callers answer 413 or their
// protocol's too-large error, never 503.
var ErrTooLarge = errors.New("message too large for the broker")

// Message is one broker message in broker-neutral form.
type Message struct {
	Topic       string
	Data        []byte
	ContentType string
}

// Broker is the broker-neutral publish/subscribe API that the SSE hub and
// translating adapters use. Topics are validate.Topic names ("prices.eur");
// each implementation maps them onto its broker's naming.
type Broker interface {
	// Publish sends m and returns once the broker has taken it (confirmed,
	// where the protocol can confirm).
	Publish(ctx context.Context, m Message) error
	// Subscribe delivers the topic's messages to fn in order, one call at a
	// time. fn must not block: it runs on the broker client's goroutine.
	Subscribe(ctx context.Context, topic string, fn func(Message)) (Subscription, error)
	// Ready reports whether the broker is reachable.
	Ready(ctx context.Context) error
	// Close releases the broker connection and ends every subscription.
	Close() error
}

// Subscription is one live upstream subscription.
type Subscription interface {
	// Done is closed when the subscription ends without Unsubscribe, as when
	// the broker connection is lost.
	Done() <-chan struct{}
	Unsubscribe() error
}

// QueueSubscriber is a Broker with queue groups (consumer groups): each
// message of a topic goes to one member of a group. It is optional; a
// broker that has them (NATS does; Redis Streams and Kafka would) offers
// them by implementing it, and STOMP translate mode's queue-group
// subscriptions work on its backends.
type QueueSubscriber interface {
	QueueSubscribe(ctx context.Context, topic, group string, fn func(Message)) (Subscription, error)
}
