// Package stomp serves STOMP over WebSocket. Every client frame is checked
// by validate first. In relay mode the CONNECT frame gets the route's
// keyring credential instead of anything the client sent, and the checked
// bytes go to a STOMP broker over TCP; broker frames come back one per
// WebSocket message. In translation mode the gateway terminates STOMP and
// maps it onto a broker.Broker (NATS, AMQP, MQTT).
package stomp

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/outcome"
	"github.com/wsbridge/wsbridge/validate"
)

// Subprotocols are the STOMP WebSocket subprotocols, best first: gws picks
// the first of these that the client offers.
var Subprotocols = []string{"v12.stomp", "v11.stomp", "v10.stomp"}

// Options configure one relay route.
type Options struct {
	bridge.RouteOptions
	// Broker, when set, selects translation mode: STOMP is terminated here
	// and mapped onto it; Address and Credential are then unused.
	Broker broker.Broker
	// HeartBeat is the gateway's own heart-beat offer in translation mode
	// (default 10s); in relay mode the broker negotiates.
	HeartBeat time.Duration
	// TopicExchange is the exchange whose /exchange/<name>/<key>
	// destinations the ACL treats as topics (default amq.topic).
	TopicExchange string
	// VHost is sent as the CONNECT host header (RabbitMQ reads it as the
	// virtual host); the client's host header is replaced.
	VHost string
	// Limits bound client frames.
	Limits validate.STOMPLimits
	// MaxBrokerFrameBytes bounds a frame from the broker (default
	// bridge.DefaultMaxBrokerBytes).
	MaxBrokerFrameBytes int
}

// Relay is the http.Handler for a STOMP route, in relay mode or, with
// Options.Broker, in translation mode.
type Relay struct {
	opts   Options
	engine bridge.Engine[*session, *validate.STOMPFrame]
}

// NewRelay makes a relay handler.
func NewRelay(o Options) *Relay {
	if o.VHost == "" {
		o.VHost = "/"
	}
	if o.HeartBeat <= 0 {
		o.HeartBeat = defaultHeartBeat
	}
	if o.TopicExchange == "" {
		o.TopicExchange = "amq.topic"
	}
	if _, shared := o.Broker.(*broker.Shared); o.Broker != nil && !shared {
		o.Broker = broker.NewShared(o.Broker) // subscribers of one topic share its subscription
	}
	r := &Relay{opts: o}
	r.engine = bridge.Engine[*session, *validate.STOMPFrame]{
		Protocol: "stomp", Units: "frames", Route: &r.opts.RouteOptions, MaxBrokerBytes: o.MaxBrokerFrameBytes,
		Open: (*session).open, Scan: (*session).scan, Partial: (*session).partial, Counts: isFrame,
		Unit: (*session).unit, Reject: (*session).reject, Broker: (*session).fromBroker, End: (*session).end, Closed: (*session).closed,
		Goodbye: outcome.Disconnected,
	}
	r.engine.Init(Subprotocols, o.VHost, func() (*session, *bridge.RelaySession[*session, *validate.STOMPFrame]) {
		s := &session{relay: r}
		return s, &s.RelaySession
	})
	return r
}

// ServeHTTP admits a WebSocket client to the route (origin, login,
// connection limits) and starts its session.
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.engine.ServeHTTP(w, req) }

// A relay route answers a client refused for load in WebSocket terms.
var _ front.BusyRefuser = (*Relay)(nil)

// RefuseBusy implements front.BusyRefuser: a WebSocket client refused for
// load is upgraded and closed with 1013 and a retry hint (see
// bridge.Admission.RefuseBusy).
func (r *Relay) RefuseBusy(w http.ResponseWriter, req *http.Request, b front.Busy) {
	r.engine.RefuseBusy(w, req, b)
}

// Ready reports whether the broker accepts the route's credential
// (broker.LoginCheck: a real login at most every 30 s, a dial every time),
// or in translation mode whether its Broker is ready.
func (r *Relay) Ready(ctx context.Context) error {
	if r.opts.Broker != nil {
		return r.opts.Broker.Ready(ctx)
	}
	return r.engine.Ready(ctx)
}

// clientMessage turns a validation error into an ERROR message header:
// what was wrong, without the package prefix and class suffix.
func clientMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "stomp: ")
	for _, class := range []error{validate.ErrMalformed, validate.ErrTooLarge, validate.ErrPolicy} {
		msg = strings.TrimSuffix(msg, ": "+class.Error())
	}
	return msg
}
