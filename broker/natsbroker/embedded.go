package natsbroker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedOptions configure the in-process NATS server, wsbridge's
// zero-setup default broker.
type EmbeddedOptions struct {
	// Host must be a loopback address; the default is 127.0.0.1.
	Host string
	// Port is tried first (default 4222); when it is taken a free port is
	// used and logged.
	Port int
	// StoreDir enables JetStream with storage there; empty leaves it off.
	StoreDir string
	// MQTTPort, when set, opens NATS's MQTT listener on Host (it needs
	// JetStream, so StoreDir too). -1 picks a free port.
	MQTTPort int
	// MaxPayload is the largest message (body and headers) the server
	// takes; 0 leaves NATS's default of 1 MiB, which a 1 MiB body with
	// a Content-Type header already exceeds. The gateway passes the
	// largest message its routes may publish, with room for headers.
	MaxPayload int32
	Log        *slog.Logger
}

// Embedded is a NATS server running inside the gateway process.
type Embedded struct {
	s        *server.Server
	mqttAddr string
}

// StartEmbedded starts the server and waits until it accepts clients.
func StartEmbedded(o EmbeddedOptions) (*Embedded, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if ip := net.ParseIP(o.Host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("embedded nats: host %q is not a loopback address; the embedded server never listens beyond this machine", o.Host)
	}
	if o.Port == 0 {
		o.Port = 4222
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	port := o.Port
	if ln, err := net.Listen("tcp", net.JoinHostPort(o.Host, strconv.Itoa(port))); err != nil {
		port = server.RANDOM_PORT
	} else {
		ln.Close()
	}
	opts := &server.Options{
		ServerName: "wsbridge-embedded",
		Host:       o.Host,
		Port:       port,
		NoLog:      true,
		NoSigs:     true,
		JetStream:  o.StoreDir != "",
		StoreDir:   o.StoreDir,
		MaxPayload: o.MaxPayload,
	}
	if o.MQTTPort != 0 {
		if o.StoreDir == "" {
			return nil, errors.New("embedded nats: the MQTT listener needs JetStream: set store_dir")
		}
		if o.MQTTPort < 0 { // the server cannot tell us a port it picked, so pick it here
			ln, err := net.Listen("tcp", net.JoinHostPort(o.Host, "0"))
			if err != nil {
				return nil, fmt.Errorf("embedded nats: %w", err)
			}
			o.MQTTPort = ln.Addr().(*net.TCPAddr).Port
			ln.Close()
		}
		opts.MQTT.Host, opts.MQTT.Port = o.Host, o.MQTTPort
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats: not ready within 10s")
	}
	e := &Embedded{s: s}
	if o.MQTTPort != 0 {
		e.mqttAddr = net.JoinHostPort(o.Host, strconv.Itoa(o.MQTTPort))
	}
	if port != o.Port {
		o.Log.Info("embedded nats: port taken, using a free one", "wanted", o.Port, "addr", e.Addr())
	}
	o.Log.Info("embedded nats started", "addr", e.Addr(), "jetstream", opts.JetStream, "mqtt", e.MQTTAddr(),
		"max_payload", opts.MaxPayload)
	return e, nil
}

// Addr is where the server listens.
func (e *Embedded) Addr() string { return e.s.Addr().String() }

// MQTTAddr is where the MQTT listener is, or "" without one.
func (e *Embedded) MQTTAddr() string { return e.mqttAddr }

// Server is the in-process connection provider for Options.InProcess.
func (e *Embedded) Server() *server.Server { return e.s }

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.s.Shutdown()
	e.s.WaitForShutdown()
}
