package main

import (
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/amqpbroker"
	"github.com/wsbridge/wsbridge/broker/mqttbroker"
	"github.com/wsbridge/wsbridge/broker/natsbroker"
	"github.com/wsbridge/wsbridge/broker/stompbroker"
)

// logins are the broker clients' logins by protocol: what a relay route's
// readiness check and `wsbridge check -login` try with the gateway's
// credential. Adapters get theirs through RouteOptions.Login, so that
// they link no broker client library.
var logins = map[string]broker.LoginFunc{
	"amqp":  amqpbroker.Login,
	"mqtt":  mqttbroker.Login,
	"nats":  natsbroker.Login,
	"stomp": stompbroker.Login,
}
