package main

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wsbridge/wsbridge/adapters/amqp"
	"github.com/wsbridge/wsbridge/adapters/mqtt"
	"github.com/wsbridge/wsbridge/adapters/stomp"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/amqpbroker"
	"github.com/wsbridge/wsbridge/broker/mqttbroker"
	"github.com/wsbridge/wsbridge/broker/natsbroker"
	"github.com/wsbridge/wsbridge/broker/stompbroker"
	"github.com/wsbridge/wsbridge/validate"
)

// backendKind is one broker the gateway can talk to, selected by a
// backend's protocol. The schema checks backends against these, and
// buildServer builds each backend through its kind; a fifth broker is one
// more entry here (and its client package under broker/).
type backendKind struct {
	name string
	// login tries a credential on the broker: `wsbridge check -login`, and
	// the readiness check of the relay routes to a backend of this kind.
	login broker.LoginFunc
	// newBroker builds the backend's broker.Broker for its terminating
	// routes; the broker's Ready is then the backend's readiness check.
	newBroker func(e backendEnv) (broker.Broker, error)
	// start, when set, runs for each backend of the kind before any broker
	// or route is built (the embedded NATS server).
	start func(e backendEnv) error
	// exchange is the default backends.NAME.exchange; "": the kind has
	// none.
	exchange string
	// embeddable kinds can run their server inside the gateway.
	embeddable bool
}

// backendKinds in the order error messages list them.
var backendKinds = []*backendKind{
	{name: "stomp", login: stompbroker.Login, newBroker: func(e backendEnv) (broker.Broker, error) {
		return stompbroker.New(stompbroker.Options{Endpoint: e.endpoint(), VHost: e.spec.VHost}), nil
	}},
	{name: "amqp", login: amqpbroker.Login, exchange: "amq.topic", newBroker: func(e backendEnv) (broker.Broker, error) {
		return amqpbroker.New(amqpbroker.Options{Endpoint: e.endpoint(), VHost: e.spec.VHost, Exchange: e.spec.Exchange}), nil
	}},
	{name: "nats", login: natsbroker.Login, embeddable: true, start: startEmbedded, newBroker: func(e backendEnv) (broker.Broker, error) {
		o := natsbroker.Options{Endpoint: e.endpoint()}
		o.Address = "nats://" + e.spec.Address
		if s := e.w.embedded[e.name]; s != nil {
			o.Address, o.InProcess = "nats://"+s.Addr(), s.Server()
		}
		return natsbroker.New(o)
	}},
	{name: "mqtt", login: mqttbroker.Login, newBroker: func(e backendEnv) (broker.Broker, error) {
		return mqttbroker.New(mqttbroker.Options{Endpoint: e.endpoint()}), nil
	}},
}

// startEmbedded runs a nats backend's server in process when it says
// embedded: true.
func startEmbedded(e backendEnv) error {
	if !e.spec.Embedded {
		return nil
	}
	host, port, _ := net.SplitHostPort(e.spec.Address)
	p, _ := strconv.Atoi(port)
	eo := natsbroker.EmbeddedOptions{Host: host, Port: p, StoreDir: e.spec.StoreDir, MaxPayload: e.w.cfg.embeddedMaxPayload(), Log: e.log}
	if e.spec.MQTTAddress != "" {
		_, mport, _ := net.SplitHostPort(e.spec.MQTTAddress)
		eo.MQTTPort, _ = strconv.Atoi(mport)
	}
	s, err := natsbroker.StartEmbedded(eo)
	if err != nil {
		return err
	}
	e.w.embedded[e.name] = s
	e.w.g.embedded = append(e.w.g.embedded, s)
	return nil
}

// backendEnv is what a backend kind builds from: the backend's spec and
// what buildServer made for it.
type backendEnv struct {
	w     *wiring
	name  string
	spec  BackendConfig
	creds *broker.CredentialHolder // nil without a credential
	tls   *tls.Config              // nil without backends.NAME.tls
	log   *slog.Logger
}

// endpoint is where the backend's broker is and how its client logs in.
func (e backendEnv) endpoint() broker.Endpoint {
	return broker.Endpoint{Address: e.spec.Address, CredentialHolder: e.creds, TLS: e.tls,
		DialTimeout: time.Duration(e.spec.DialTimeout), Log: e.log, Backend: e.name, CredentialName: e.spec.Credential}
}

// routeKind is one thing a route can serve, selected by its protocol and
// mode. A fourth protocol is its adapter package and one more entry here.
type routeKind struct {
	// key is the protocol, or protocol/mode for a protocol's second mode
	// ("stomp/translate").
	key string
	// accepts are the backend kinds that can serve the route.
	accepts []string
	// relay routes open a broker connection per client, so they can log
	// in with a credential per identity; the others share the backend's
	// broker.Broker.
	relay bool
	// needsCredential: the route cannot serve without a broker credential
	// (the backend's or its auth policy's).
	needsCredential bool
	// web routes serve plain HTTP at PATH/TOPIC, not a WebSocket at PATH.
	web bool
	// vhosts: the route takes routes[].vhosts, the virtual hosts its
	// clients may open.
	vhosts bool
	// build makes the route's handler. What it returns is its readiness
	// check too: a route kind cannot leave /readyz out.
	build func(e routeEnv) (readyHandler, error)
}

// readyHandler is a route's handler and its readiness check.
type readyHandler interface {
	http.Handler
	Ready(ctx context.Context) error
}

// brokerRoute is a terminating route's handler with the backend's broker,
// whose Ready is the route's. buildServer serves the Handler itself.
type brokerRoute struct {
	http.Handler
	broker broker.Broker
}

// Ready reports whether the route's broker is.
func (r brokerRoute) Ready(ctx context.Context) error { return r.broker.Ready(ctx) }

// routeEnv is what a route kind builds from.
type routeEnv struct {
	w      *wiring
	route  RouteConfig
	spec   BackendConfig // the route's backend
	opts   bridge.RouteOptions
	policy *auth.Policy // nil: anonymous clients
}

// everyBackend is what the routes over a broker.Broker accept: every
// backend kind that builds one, so a fifth broker serves them as soon as
// it is registered.
var everyBackend = brokerKinds()

// brokerKinds are the backend kinds that build a broker.Broker, but the
// ones named in except.
func brokerKinds(except ...string) []string {
	var names []string
	for _, k := range backendKinds {
		if k.newBroker != nil && !slices.Contains(except, k.name) {
			names = append(names, k.name)
		}
	}
	return names
}

// routeKinds in the order error messages list their protocols.
var routeKinds = []*routeKind{
	{key: "stomp", accepts: []string{"stomp"}, relay: true, build: func(e routeEnv) (readyHandler, error) {
		return newSTOMP(e, nil), nil
	}},
	// A stomp backend is relayed to, never translated onto.
	{key: "stomp/translate", accepts: brokerKinds("stomp"), build: func(e routeEnv) (readyHandler, error) {
		bk, err := e.w.broker(e.route.Backend)
		if err != nil {
			return nil, err
		}
		return brokerRoute{newSTOMP(e, bk), bk}, nil
	}},
	{key: "mqtt", accepts: []string{"mqtt"}, relay: true, build: func(e routeEnv) (readyHandler, error) {
		ml := e.w.cfg.Limits.MQTT
		return mqtt.NewRelay(mqtt.Options{RouteOptions: e.opts, Limits: validate.MQTTLimits{MaxPacketBytes: ml.MaxPacketBytes},
			MaxBrokerPacketBytes: ml.MaxBrokerPacketBytes}), nil
	}},
	{key: "amqp", accepts: []string{"amqp"}, relay: true, needsCredential: true, vhosts: true, build: func(e routeEnv) (readyHandler, error) {
		al := e.w.cfg.Limits.AMQP
		return amqp.NewRelay(amqp.Options{RouteOptions: e.opts, TopicExchange: e.spec.Exchange, VHosts: e.route.VHosts,
			Limits: validate.AMQPLimits{MaxFrameBytes: al.MaxFrameBytes, MaxChannels: al.MaxChannels, MaxTableDepth: al.MaxTableDepth}}), nil
	}},
	{key: "sse", accepts: everyBackend, web: true, build: func(e routeEnv) (readyHandler, error) {
		h, bk, err := e.w.hub(e.route.Backend)
		if err != nil {
			return nil, err
		}
		return brokerRoute{h.StreamHandler(routePath(e.route), e.policy), bk}, nil
	}},
	{key: "publish", accepts: everyBackend, web: true, build: func(e routeEnv) (readyHandler, error) {
		h, bk, err := e.w.hub(e.route.Backend)
		if err != nil {
			return nil, err
		}
		return brokerRoute{h.PublishHandler(routePath(e.route), e.policy), bk}, nil
	}},
}

// newSTOMP is a STOMP route: a relay, or with bk a translation onto it.
func newSTOMP(e routeEnv, bk broker.Broker) *stomp.Relay {
	sl := e.w.cfg.Limits.STOMP
	return stomp.NewRelay(stomp.Options{RouteOptions: e.opts, Broker: bk, VHost: e.spec.VHost,
		Limits:              validate.STOMPLimits{MaxFrameBytes: sl.MaxFrameBytes, MaxHeaders: sl.MaxHeaders, MaxHeaderLineBytes: sl.MaxHeaderLineBytes},
		MaxBrokerFrameBytes: sl.MaxBrokerFrameBytes})
}

// routePath is a route's path without its trailing slash: web routes serve
// it and what is under it.
func routePath(r RouteConfig) string { return strings.TrimSuffix(r.Path, "/") }

// backendKindOf is the kind a backend's protocol names; nil for none.
func backendKindOf(protocol string) *backendKind {
	for _, k := range backendKinds {
		if k.name == protocol {
			return k
		}
	}
	return nil
}

// routeKindOf is the kind a route key names; nil for none.
func routeKindOf(key string) *routeKind {
	for _, k := range routeKinds {
		if k.key == key {
			return k
		}
	}
	return nil
}

// routeKey is the route kind a route asks for: its protocol, or
// protocol/mode for a mode other than relay.
func routeKey(r RouteConfig) string {
	if r.Mode != "" && r.Mode != "relay" && routeKindOf(r.Protocol+"/"+r.Mode) != nil {
		return r.Protocol + "/" + r.Mode
	}
	return r.Protocol
}

// backendKindNames are the names of the backend kinds keep selects, in
// registration order.
func backendKindNames(keep func(*backendKind) bool) []string {
	var names []string
	for _, k := range backendKinds {
		if keep(k) {
			names = append(names, k.name)
		}
	}
	return names
}

// routeProtocols are the route protocols, in registration order.
func routeProtocols() []string {
	var names []string
	for _, k := range routeKinds {
		p, _, _ := strings.Cut(k.key, "/")
		if !slices.Contains(names, p) {
			names = append(names, p)
		}
	}
	return names
}
