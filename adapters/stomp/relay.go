// Package stomp serves STOMP over WebSocket. Every client frame is checked
// by validate first. In relay mode the CONNECT frame gets the route's
// keyring credential instead of anything the client sent, and the checked
// bytes go to a STOMP broker over TCP; broker frames come back one per
// WebSocket message. In translation mode the gateway terminates STOMP and
// maps it onto a bridge.Broker (NATS, AMQP, MQTT).
package stomp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/validate"
)

// Subprotocols are the STOMP WebSocket subprotocols, best first: gws picks
// the first of these that the client offers.
var Subprotocols = []string{"v12.stomp", "v11.stomp", "v10.stomp"}

// Options configure one relay route.
type Options struct {
	Route   string // the path, for logs
	Backend string // the backend's name, for logs
	Address string // host:port of the broker's STOMP listener (relay mode)
	// Broker, when set, selects translation mode: STOMP is terminated here
	// and mapped onto it; Address and Credential are then unused.
	Broker bridge.Broker
	// HeartBeat is the gateway's own heart-beat offer in translation mode
	// (default 10s); in relay mode the broker negotiates.
	HeartBeat time.Duration
	// Credential replaces the client's login and passcode; nil sends none.
	// Auth may choose a per-identity credential instead.
	Credential *keyring.Credential
	// Auth is the route's authentication and ACL; nil admits everyone.
	Auth *auth.Policy
	// TopicExchange is the exchange whose /exchange/<name>/<key>
	// destinations the ACL treats as topics (default amq.topic).
	TopicExchange string
	// VHost is sent as the CONNECT host header (RabbitMQ reads it as the
	// virtual host); the client's host header is replaced.
	VHost string
	// TLS, when set, reaches the broker over TLS.
	TLS         *tls.Config
	DialTimeout time.Duration
	// Limits bound client frames.
	Limits validate.STOMPLimits
	// MaxBrokerFrameBytes bounds a frame from the broker.
	MaxBrokerFrameBytes int
	WS                  bridge.WSOptions
	Origins             *bridge.Origins
	Conns               *bridge.Conns
	Log                 *slog.Logger
}

// Relay is the http.Handler for a STOMP relay route.
type Relay struct {
	opts             Options
	bridge.Admission // serves HTTP: admits clients and starts their sessions
	dialer           net.Dialer
}

// NewRelay makes a relay handler.
func NewRelay(o Options) *Relay {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.MaxBrokerFrameBytes <= 0 {
		o.MaxBrokerFrameBytes = 16 << 20
	}
	if o.VHost == "" {
		o.VHost = "/"
	}
	if o.HeartBeat <= 0 {
		o.HeartBeat = defaultHeartBeat
	}
	if o.TopicExchange == "" {
		o.TopicExchange = "amq.topic"
	}
	r := &Relay{opts: o, dialer: net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}}
	r.Admission = bridge.Admission{Protocol: "stomp", Route: o.Route, Origins: o.Origins, Conns: o.Conns, Log: o.Log, Auth: o.Auth,
		Upgraders: bridge.NewUpgraders(bridge.Handler{}, o.WS, Subprotocols, func() gws.SessionStorage { return &session{relay: r} })}
	return r
}

// Ready reports whether the broker is reachable.
func (r *Relay) Ready(ctx context.Context) error {
	if r.opts.Broker != nil {
		return r.opts.Broker.Ready(ctx)
	}
	return bridge.DialCheck(r.opts.Address)(ctx)
}

// errorFrame renders a STOMP ERROR frame whose message header carries msg,
// escaped for the session's version, with a receipt-id when the frame that
// caused it asked for a receipt (receipt is as the client sent it, already
// escaped).
func errorFrame(v validate.STOMPVersion, msg, detail string, receipt []byte) []byte {
	if v >= validate.STOMP11 {
		msg = headerEscaper.Replace(msg)
	} else {
		msg = strings.NewReplacer("\n", " ", "\r", " ").Replace(msg)
	}
	b := fmt.Appendf(nil, "ERROR\nmessage:%s\n", msg)
	if receipt != nil {
		b = fmt.Appendf(b, "receipt-id:%s\n", receipt)
	}
	return fmt.Appendf(b, "content-type:text/plain\ncontent-length:%d\n\n%s\x00", len(detail), detail)
}

var headerEscaper = strings.NewReplacer("\\", "\\\\", "\n", "\\n", "\r", "\\r", ":", "\\c")

// clientMessage turns a validation error into an ERROR message header:
// what was wrong, without the package prefix and class suffix.
func clientMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "stomp: ")
	for _, class := range []error{validate.ErrMalformed, validate.ErrTooLarge, validate.ErrPolicy} {
		msg = strings.TrimSuffix(msg, ": "+class.Error())
	}
	return msg
}

// closeCode maps a validation failure to the WebSocket close code.
func closeCode(err error) uint16 {
	switch {
	case errors.Is(err, validate.ErrTooLarge):
		return bridge.CloseTooLarge
	case errors.Is(err, validate.ErrPolicy):
		return bridge.ClosePolicy
	default:
		return bridge.CloseProtocolError
	}
}
