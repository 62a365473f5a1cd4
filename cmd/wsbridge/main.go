// Command wsbridge is a WebSocket gateway for message brokers.
//
//	wsbridge [serve] [-config FILE] [-listen ADDR] [-keyring FILE]
//	wsbridge check -config FILE
//	wsbridge keyring init|set|list|delete ...
//	wsbridge token -config FILE -auth POLICY -sub SUBJECT [-role R]...
//	wsbridge passwd
//	wsbridge healthcheck URL
//	wsbridge version
//	wsbridge help [COMMAND]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsbridge/wsbridge/adapters/amqp"
	"github.com/wsbridge/wsbridge/adapters/mqtt"
	"github.com/wsbridge/wsbridge/adapters/stomp"
	"github.com/wsbridge/wsbridge/admin"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/amqpbroker"
	"github.com/wsbridge/wsbridge/broker/mqttbroker"
	"github.com/wsbridge/wsbridge/broker/natsbroker"
	"github.com/wsbridge/wsbridge/broker/stompbroker"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/sse"
	"github.com/wsbridge/wsbridge/validate"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

var serveCmd = &command{
	name: "serve", args: "[-config FILE] [-listen ADDR] [-keyring FILE]",
	summary: "run the gateway (the default command)",
	detail: `With no -config it serves the embedded default: an in-process NATS server,
STOMP, SSE and HTTP publish on loopback, and a demo page at /.`,
	setup: func(fs *flag.FlagSet) runFunc {
		var cf commonFlags
		cf.register(fs, false)
		listen := fs.String("listen", "", "listen address, `host:port` (overrides the config's listen)")
		return func(ctx context.Context, e *env, _ []string) error {
			return runGateway(ctx, cf, *listen, e.stderr, e.onListen)
		}
	},
}

// serveCommand runs `wsbridge serve args` until ctx ends. onListen, for
// tests, learns the bound address.
func serveCommand(ctx context.Context, args []string, stderr io.Writer, onListen func(net.Addr)) error {
	return serveCmd.exec(ctx, args, &env{stderr: stderr, onListen: onListen})
}

// runGateway runs the gateway until ctx ends.
func runGateway(ctx context.Context, cf commonFlags, listen string, stderr io.Writer, onListen func(net.Addr)) error {
	if listen != "" {
		if err := checkListen(listen); err != nil {
			return &usageError{cmd: "serve", err: fmt.Errorf("-listen: %w", err)}
		}
	}
	cfg, err := loadConfig(cf.config)
	if err != nil {
		return err
	}
	if listen != "" {
		cfg.Listen = listen
	}
	log := newLogger(cfg.Log, stderr)
	var kr *keyring.Keyring
	if cfg.needsKeyring() {
		if kr, err = openKeyring(cfg, cf.keyring); err != nil {
			return err
		}
		loc := locateKeyring(cfg, cf.keyring)
		if w := loc.keyFileWarning(); w != "" {
			log.Warn(w, "key_file", loc.keyFile)
		}
	}
	// The ports first: one that is taken stops startup before anything
	// (the embedded NATS server) has started.
	ln, err := openListener(cfg.Listen, "choose another with -listen HOST:PORT or the config's listen")
	if err != nil {
		return err
	}
	defer ln.Close() // Serve closes it too; this covers an error before it
	var adminLn net.Listener
	if cfg.Admin.Listen != "" {
		if adminLn, err = openListener(cfg.Admin.Listen, "choose another with the config's admin.listen"); err != nil {
			return fmt.Errorf("admin.listen: %w", err)
		}
		defer adminLn.Close()
	}
	gw, err := buildServer(cfg, kr, cf.keyring, log)
	if err != nil {
		return err
	}
	defer gw.close()
	srv := gw.srv
	defer memory.FollowLimit(gw.budget, srv.Conns.Len, time.Second)()
	if adminLn != nil {
		defer serveAdmin(adminLn, srv.Conns, log)()
	}
	source := cf.config
	if source == "" {
		source = "embedded default"
		log.Info("no -config given: serving the embedded default config (development: localhost origins allowed)")
	}
	scheme := "http"
	if gw.certs != nil {
		scheme = "https"
	}
	attrs := []any{"addr", ln.Addr().String(), "scheme", scheme, "config", source, "routes", len(cfg.Routes)}
	if cf.config == "" && listen == "" {
		attrs = append(attrs, "note", "embedded default: loopback only; pass -listen :8080 to expose it")
	}
	log.Info("wsbridge listening", attrs...)
	if open := cfg.openRoutes(ln.Addr().String()); len(open) > 0 {
		log.Warn(openRoutesWarning, "addr", ln.Addr().String(), "routes", strings.Join(open, ","), "fix", openRoutesFix)
	}
	cfg.logRoutes(log, ln.Addr(), gw.certs != nil)
	if onListen != nil {
		onListen(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
wait:
	for {
		select {
		case err = <-errc:
			return err
		case <-hup:
			gw.reload(cfg, cf.keyring, log)
		case <-ctx.Done():
			break wait
		}
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-errc
	return err
}

// openListener opens a TCP listener; a port another process holds says so,
// with hint (how to choose another).
func openListener(addr, hint string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("listen on %s: the port is taken (%w) by another process (another wsbridge?): stop it, or %s", addr, syscall.EADDRINUSE, hint)
	case errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("listen on %s: %w (ports below 1024 need privileges): %s", addr, syscall.EACCES, hint)
	case err != nil:
		return nil, fmt.Errorf("listen: %w", err)
	}
	return ln, nil
}

// serveAdmin serves the admin listener (profiles and stats) beside the
// public one; the returned function closes it.
func serveAdmin(ln net.Listener, conns *front.Conns, log *slog.Logger) func() {
	hs := &http.Server{Handler: admin.Handler(admin.Options{Conns: conns}), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	log.Info("admin listener (profiles, stats)", "addr", ln.Addr().String(),
		"pprof", "http://"+ln.Addr().String()+"/debug/pprof/", "stats", "http://"+ln.Addr().String()+"/debug/stats")
	return func() { hs.Close(); <-done }
}

func newLogger(c LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// gateway is the wired server and what must be closed after it.
type gateway struct {
	srv      *front.Server
	certs    *front.CertReloader // nil without TLS
	hubs     []*sse.Hub
	brokers  []broker.Broker
	embedded []*natsbroker.Embedded
	budget   *memory.Budget // limits.memory_bytes, shared by every route
	// creds hold each backend's credential by backend name; SIGHUP puts
	// the reloaded keyring's in them.
	creds map[string]*broker.CredentialHolder
}

// reload is SIGHUP: the TLS certificate and the keyring are read again:
// per-identity credentials and each backend's, for the broker connections
// and login checks made from then on; live connections keep going with
// theirs. A failure keeps what is in use and is logged.
func (g *gateway) reload(cfg *Config, keyringFlag string, log *slog.Logger) {
	if g.certs != nil {
		if err := g.certs.Reload(); err != nil {
			log.Error("SIGHUP: certificate not reloaded; the old one stays in use", "error", err.Error())
		} else {
			log.Info("SIGHUP: certificate reloaded", "cert_file", cfg.TLS.CertFile)
		}
	}
	if cfg.keyring.Load() != nil {
		kr, err := openKeyring(cfg, keyringFlag)
		if err != nil {
			log.Error("SIGHUP: keyring not reloaded; the old one stays in use", "error", err.Error())
			return
		}
		cfg.keyring.Store(kr)
		var changed []string
		for _, name := range sortedKeys(g.creds) {
			c, err := kr.Get(cfg.Backends[name].Credential)
			if old := g.creds[name].Load(); err != nil || old != nil && sameCredential(*old, c) {
				continue // openKeyring made sure each is there
			}
			g.creds[name].Store(&c)
			changed = append(changed, name)
		}
		news, note := strings.Join(changed, ","), "new broker connections and readiness checks of these backends log in with the new credential; open ones keep theirs"
		switch {
		case locateKeyring(cfg, keyringFlag).serviceCopy():
			news, note = "none", "this keyring is the copy systemd made when the service started ($CREDENTIALS_DIRECTORY): "+
				"after changing the keyring it copies, restart the service"
		case len(changed) == 0:
			news, note = "none", "no backend's keyring entry changed"
		}
		log.Info("SIGHUP: keyring reloaded", "entries", len(kr.Names()), "keyring", kr.Path(), "backends_with_new_credential", news, "note", note)
	}
}

// sameCredential reports whether a and b log in alike.
func sameCredential(a, b keyring.Credential) bool {
	return a.Username == b.Username && a.Password.Reveal() == b.Password.Reveal()
}

// close ends SSE topics, broker connections and embedded servers once the
// server is down.
func (g *gateway) close() {
	for _, h := range g.hubs {
		h.Close()
	}
	for _, b := range g.brokers {
		b.Close()
	}
	for _, e := range g.embedded {
		e.Shutdown()
	}
}

// buildServer wires routes to adapters and backends; keyringFlag is
// -keyring, for the commands the logs suggest.
func buildServer(cfg *Config, kr *keyring.Keyring, keyringFlag string, log *slog.Logger) (*gateway, error) {
	cfg.keyring.Store(kr)
	so := front.ServerOptions{
		MaxConns: cfg.Limits.MaxConnections, MaxConnsPerIP: cfg.Limits.MaxConnectionsPerIP,
		HandshakeRate: cfg.Limits.HandshakesPerSecond, HandshakeBurst: cfg.Limits.HandshakeBurst,
		HandshakeTimeout: time.Duration(cfg.WebSocket.HandshakeTimeout), TrustedProxies: cfg.proxies,
		// A refused login is logged by its LoginCheck, with the keyring entry.
		Reported: func(err error) bool { return errors.Is(err, broker.ErrLoginRefused) },
	}
	var certs *front.CertReloader
	if cfg.TLS.CertFile != "" {
		var err error
		if certs, err = front.NewCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
			return nil, err
		}
		so.TLS = certs.ServerConfig()
	}
	g := &gateway{srv: front.NewServer(log, so), certs: certs, budget: memory.NewBudget(int64(cfg.Limits.MemoryBytes)),
		creds: map[string]*broker.CredentialHolder{}}
	srv := g.srv
	ws := bridge.WSOptions{
		MaxMessageBytes:  cfg.WebSocket.MaxMessageBytes,
		ReadBufferBytes:  cfg.WebSocket.ReadBufferBytes,
		SendBufferBytes:  *cfg.WebSocket.SendBufferBytes,
		PingInterval:     time.Duration(cfg.WebSocket.PingInterval),
		WriteTimeout:     time.Duration(cfg.WebSocket.WriteTimeout),
		HandshakeTimeout: time.Duration(cfg.WebSocket.HandshakeTimeout),
		LoginTimeout:     time.Duration(*cfg.Limits.LoginTimeout),
		MessageTimeout:   time.Duration(cfg.WebSocket.MessageTimeout),
		Budget:           g.budget,
		Linger:           bridge.NewLinger(cfg.WebSocket.LingerBytesPerSecond),
		Compression:      cfg.WebSocket.Compression,
		Penalize:         g.srv.Penalize,
	}
	creds := g.creds
	for name, b := range cfg.Backends {
		if b.Credential == "" {
			continue
		}
		c, err := kr.Get(b.Credential)
		if err != nil {
			g.close()
			return nil, fmt.Errorf("backend %q: %w in %s", name, err, kr.Path())
		}
		creds[name] = broker.NewCredentialHolder(&c, credentialFix(cfg, keyringFlag, b.Credential))
	}
	// Embedded servers start first: an MQTT route may name one's MQTT
	// listener through a separate mqtt backend.
	embedded := map[string]*natsbroker.Embedded{}
	for _, name := range sortedKeys(cfg.Backends) {
		b := cfg.Backends[name]
		if !b.Embedded {
			continue
		}
		host, port, _ := net.SplitHostPort(b.Address)
		p, _ := strconv.Atoi(port)
		eo := natsbroker.EmbeddedOptions{Host: host, Port: p, StoreDir: b.StoreDir, MaxPayload: cfg.embeddedMaxPayload(), Log: log}
		if b.MQTTAddress != "" {
			_, mport, _ := net.SplitHostPort(b.MQTTAddress)
			eo.MQTTPort, _ = strconv.Atoi(mport)
		}
		e, err := natsbroker.StartEmbedded(eo)
		if err != nil {
			g.close()
			return nil, fmt.Errorf("backend %q: %w", name, err)
		}
		embedded[name] = e
		g.embedded = append(g.embedded, e)
	}
	brokers := map[string]broker.Broker{}
	brokerFor := func(name string) (broker.Broker, error) {
		if b, ok := brokers[name]; ok {
			return b, nil
		}
		b := cfg.Backends[name]
		var bk broker.Broker
		switch b.Protocol {
		case "amqp":
			bk = amqpbroker.New(amqpbroker.Options{Address: b.Address, VHost: b.VHost, CredentialHolder: creds[name], TLS: b.tls,
				Exchange: b.Exchange, DialTimeout: time.Duration(b.DialTimeout), Log: log, Backend: name, CredentialName: b.Credential})
		case "nats":
			o := natsbroker.Options{URL: "nats://" + b.Address, CredentialHolder: creds[name], TLS: b.tls,
				DialTimeout: time.Duration(b.DialTimeout), Log: log, Backend: name, CredentialName: b.Credential}
			if e := embedded[name]; e != nil {
				o.URL, o.InProcess = "nats://"+e.Addr(), e.Server()
			}
			n, err := natsbroker.New(o)
			if err != nil {
				return nil, fmt.Errorf("backend %q: %w", name, err)
			}
			bk = n
		case "mqtt":
			bk = mqttbroker.New(mqttbroker.Options{Address: b.Address, CredentialHolder: creds[name], TLS: b.tls,
				DialTimeout: time.Duration(b.DialTimeout), Log: log, Backend: name, CredentialName: b.Credential})
		case "stomp":
			bk = stompbroker.New(stompbroker.Options{Address: b.Address, VHost: b.VHost, CredentialHolder: creds[name], TLS: b.tls,
				DialTimeout: time.Duration(b.DialTimeout), Log: log, Backend: name, CredentialName: b.Credential})
		}
		g.brokers = append(g.brokers, bk)
		srv.AddReadyCheck(name, bk.Ready) // replaces a relay's check of the same backend
		// Every terminating route of the backend shares its subscriptions.
		shared := broker.NewShared(bk)
		brokers[name] = shared
		return shared, nil
	}
	hubs := map[string]*sse.Hub{}
	hubFor := func(name string) (*sse.Hub, error) {
		if h, ok := hubs[name]; ok {
			return h, nil
		}
		broker, err := brokerFor(name)
		if err != nil {
			return nil, err
		}
		so := cfg.SSE.Options()
		so.WriteTimeout, so.BodyTimeout, so.Budget = ws.WriteTimeout, ws.MessageTimeout, ws.Budget
		so.Origins, so.Conns, so.Log, so.Backend = cfg.origins, srv.Conns, log, name
		h := sse.NewHub(broker, so)
		hubs[name] = h
		g.hubs = append(g.hubs, h)
		return h, nil
	}
	sl := cfg.Limits.STOMP
	for _, r := range cfg.Routes {
		b := cfg.Backends[r.Backend]
		path := strings.TrimSuffix(r.Path, "/")
		ro := bridge.RouteOptions{Route: r.Path, Backend: r.Backend, Address: b.Address, CredentialHolder: creds[r.Backend],
			CredentialName: b.Credential, Login: logins[r.Protocol], Auth: cfg.policies[r.Auth], TLS: b.tls, DialTimeout: time.Duration(b.DialTimeout),
			WS: ws, Origins: cfg.origins, Conns: srv.Conns, Log: log}
		switch r.Protocol {
		case "stomp":
			var bk broker.Broker
			if r.Mode == "translate" {
				var err error
				if bk, err = brokerFor(r.Backend); err != nil {
					g.close()
					return nil, err
				}
			}
			relay := stomp.NewRelay(stomp.Options{RouteOptions: ro, Broker: bk, VHost: b.VHost,
				Limits:              validate.STOMPLimits{MaxFrameBytes: sl.MaxFrameBytes, MaxHeaders: sl.MaxHeaders, MaxHeaderLineBytes: sl.MaxHeaderLineBytes},
				MaxBrokerFrameBytes: sl.MaxBrokerFrameBytes})
			srv.Handle(r.Path, relay)
			if bk == nil {
				srv.AddReadyCheck(r.Backend, relay.Ready)
			}
		case "mqtt":
			relay := mqtt.NewRelay(mqtt.Options{RouteOptions: ro,
				Limits:               validate.MQTTLimits{MaxPacketBytes: cfg.Limits.MQTT.MaxPacketBytes},
				MaxBrokerPacketBytes: cfg.Limits.MQTT.MaxBrokerPacketBytes})
			srv.Handle(r.Path, relay)
			srv.AddReadyCheck(r.Backend, relay.Ready)
		case "amqp":
			al := cfg.Limits.AMQP
			relay := amqp.NewRelay(amqp.Options{RouteOptions: ro, TopicExchange: b.Exchange, VHosts: r.VHosts,
				Limits: validate.AMQPLimits{MaxFrameBytes: al.MaxFrameBytes, MaxChannels: al.MaxChannels, MaxTableDepth: al.MaxTableDepth}})
			srv.Handle(r.Path, relay)
			srv.AddReadyCheck(r.Backend, relay.Ready)
		case "sse", "publish":
			h, err := hubFor(r.Backend)
			if err != nil {
				g.close()
				return nil, err
			}
			handler := h.StreamHandler(path, cfg.policies[r.Auth])
			if r.Protocol == "publish" {
				handler = h.PublishHandler(path, cfg.policies[r.Auth])
			}
			srv.Handle(path, handler)
			srv.Handle(path+"/", handler)
		}
	}
	if cfg.Demo {
		srv.Handle("GET /{$}", demoHandler())
	}
	return g, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
