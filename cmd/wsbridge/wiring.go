package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/broker/natsbroker"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/sse"
)

// gateway is the wired server, the live state built from the config, and
// what must be closed after it.
type gateway struct {
	srv      *front.Server
	certs    *front.CertReloader // nil without TLS
	hubs     []*sse.Hub
	brokers  []broker.Broker
	embedded []*natsbroker.Embedded
	budget   *memory.Budget // limits.memory_bytes, shared by every route
	// keyring is the one in force; SIGHUP swaps it. nil: the config
	// names no keyring entry.
	keyring atomic.Pointer[keyring.Keyring]
	// creds hold each backend's credential by backend name; SIGHUP puts
	// the reloaded keyring's in them.
	creds map[string]*broker.CredentialHolder
}

// lookupCredential reads the keyring in force, for the auth policies that
// pick a credential per identity.
func (g *gateway) lookupCredential(name string) (keyring.Credential, error) {
	kr := g.keyring.Load()
	if kr == nil {
		return keyring.Credential{}, keyring.ErrNoEntry
	}
	return kr.Get(name)
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
	if g.keyring.Load() != nil {
		kr, err := openKeyring(cfg, keyringFlag)
		if err != nil {
			log.Error("SIGHUP: keyring not reloaded; the old one stays in use", "error", err.Error())
			return
		}
		g.keyring.Store(kr)
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

// wiring is buildServer at work: what the routes of one backend share,
// built on first use.
type wiring struct {
	cfg      *Config
	g        *gateway
	log      *slog.Logger
	ws       bridge.WSOptions
	origins  *front.Origins
	tls      map[string]*tls.Config          // by backend name; nil without backends.NAME.tls
	embedded map[string]*natsbroker.Embedded // by backend name
	brokers  map[string]broker.Broker        // by backend name, each a broker.Shared
	hubs     map[string]*sse.Hub             // by backend name
}

// buildServer builds the gateway from a checked config: the keyring in
// force, the auth policies, each backend through its kind and each route
// through its kind, with the route's readiness check. keyringFlag is
// -keyring, for the commands the logs suggest.
func buildServer(cfg *Config, kr *keyring.Keyring, keyringFlag string, log *slog.Logger) (*gateway, error) {
	proxies, _ := front.ParseProxies(cfg.TrustedProxies) // checked by parseConfig
	origins, _ := front.NewOrigins(cfg.AllowedOrigins)
	so := front.ServerOptions{
		MaxConns: cfg.Limits.MaxConnections, MaxConnsPerIP: cfg.Limits.MaxConnectionsPerIP,
		HandshakeRate: cfg.Limits.HandshakesPerSecond, HandshakeBurst: cfg.Limits.HandshakeBurst,
		HandshakeTimeout: time.Duration(cfg.WebSocket.HandshakeTimeout), TrustedProxies: proxies,
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
	g.keyring.Store(kr)
	w := &wiring{cfg: cfg, g: g, log: log, origins: origins, tls: map[string]*tls.Config{}, embedded: map[string]*natsbroker.Embedded{},
		brokers: map[string]broker.Broker{}, hubs: map[string]*sse.Hub{}}
	w.ws = bridge.WSOptions{
		MaxMessageBytes:  cfg.WebSocket.MaxMessageBytes,
		ReadBufferBytes:  cfg.WebSocket.ReadBufferBytes,
		SendBufferBytes:  *cfg.WebSocket.SendBufferBytes,
		PingInterval:     time.Duration(cfg.WebSocket.PingInterval),
		WriteTimeout:     time.Duration(cfg.WebSocket.WriteTimeout),
		HandshakeTimeout: time.Duration(cfg.WebSocket.HandshakeTimeout),
		LoginTimeout:     time.Duration(*cfg.Limits.LoginTimeout),
		MessageTimeout:   time.Duration(cfg.WebSocket.MessageTimeout),
		Budget:           g.budget,
		Intake:           bridge.NewIntake(cfg.WebSocket.LargeMessageBytesPerSecond, cfg.WebSocket.MaxMessageBytes),
		Linger:           bridge.NewLinger(cfg.WebSocket.LingerBytesPerSecond),
		Compression:      cfg.WebSocket.Compression,
		Penalize:         g.srv.Penalize,
	}
	if err := w.build(kr, keyringFlag); err != nil {
		g.close()
		return nil, err
	}
	return g, nil
}

// build makes the credentials, policies, backends and routes.
func (w *wiring) build(kr *keyring.Keyring, keyringFlag string) error {
	cfg, g := w.cfg, w.g
	for name, b := range cfg.Backends {
		var err error
		if w.tls[name], err = cfg.backendTLS(b); err != nil {
			return fmt.Errorf("backend %q: %w", name, err)
		}
		if b.Credential == "" {
			continue
		}
		c, err := kr.Get(b.Credential)
		if err != nil {
			return fmt.Errorf("backend %q: %w in %s", name, err, kr.Path())
		}
		g.creds[name] = broker.NewCredentialHolder(&c, credentialFix(cfg, keyringFlag, b.Credential))
	}
	policies, err := buildPolicies(cfg, g.lookupCredential)
	if err != nil {
		return err
	}
	// Backends start first (an embedded server): an MQTT route may name
	// one's MQTT listener through a separate mqtt backend.
	for _, name := range sortedKeys(cfg.Backends) {
		k := backendKindOf(cfg.Backends[name].Protocol)
		if k.start == nil {
			continue
		}
		if err := k.start(w.backendEnv(name)); err != nil {
			return fmt.Errorf("backend %q: %w", name, err)
		}
	}
	brokerChecked := map[string]bool{}
	for _, r := range cfg.Routes {
		b := cfg.Backends[r.Backend]
		ro := bridge.RouteOptions{Route: r.Path, Backend: r.Backend, Address: b.Address, CredentialHolder: g.creds[r.Backend],
			CredentialName: b.Credential, Login: backendKindOf(b.Protocol).login, Auth: policies[r.Auth], TLS: w.tls[r.Backend],
			DialTimeout: time.Duration(b.DialTimeout), WS: w.ws, Origins: w.origins, Conns: g.srv.Conns, Log: w.log}
		k := routeKindOf(routeKey(r))
		h, err := k.build(routeEnv{w: w, route: r, spec: b, opts: ro, policy: policies[r.Auth]})
		if err != nil {
			return err
		}
		// The server gets a terminating route's own handler, so that what
		// it is besides (a front.BusyRefuser) shows through.
		handler := http.Handler(h)
		br, shared := h.(brokerRoute)
		if shared {
			handler = br.Handler
		}
		if k.web {
			g.srv.Handle(routePath(r), handler)
			g.srv.Handle(routePath(r)+"/", handler)
		} else {
			g.srv.Handle(r.Path, handler)
		}
		// One check per backend, a later route's replacing an earlier one's;
		// a backend's broker, which its terminating routes share, is
		// registered once, by the first of them.
		if !shared || !brokerChecked[r.Backend] {
			g.srv.AddReadyCheck(r.Backend, h.Ready)
			brokerChecked[r.Backend] = brokerChecked[r.Backend] || shared
		}
	}
	if cfg.Demo {
		g.srv.Handle("GET /{$}", demoHandler())
	}
	return nil
}

// backendEnv is what backend name's kind builds from.
func (w *wiring) backendEnv(name string) backendEnv {
	return backendEnv{w: w, name: name, spec: w.cfg.Backends[name], creds: w.g.creds[name], tls: w.tls[name], log: w.log}
}

// broker is backend name's broker.Broker, built by its kind on first use
// and shared by every terminating route of the backend.
func (w *wiring) broker(name string) (broker.Broker, error) {
	if b, ok := w.brokers[name]; ok {
		return b, nil
	}
	e := w.backendEnv(name)
	bk, err := backendKindOf(e.spec.Protocol).newBroker(e)
	if err != nil {
		return nil, fmt.Errorf("backend %q: %w", name, err)
	}
	w.g.brokers = append(w.g.brokers, bk)
	shared := broker.NewShared(bk)
	w.brokers[name] = shared
	return shared, nil
}

// hub is backend name's SSE hub, over its broker, built on first use.
func (w *wiring) hub(name string) (*sse.Hub, broker.Broker, error) {
	bk, err := w.broker(name)
	if err != nil {
		return nil, nil, err
	}
	if h, ok := w.hubs[name]; ok {
		return h, bk, nil
	}
	so := w.cfg.SSE.Options()
	so.WriteTimeout, so.BodyTimeout, so.Budget = w.ws.WriteTimeout, w.ws.MessageTimeout, w.ws.Budget
	so.Origins, so.Conns, so.Log, so.Backend = w.origins, w.g.srv.Conns, w.log, name
	h := sse.NewHub(bk, so)
	w.hubs[name] = h
	w.g.hubs = append(w.g.hubs, h)
	return h, bk, nil
}

// buildPolicies makes the config's auth policies, by name; lookup finds
// the broker credentials they pick per identity.
func buildPolicies(cfg *Config, lookup func(string) (keyring.Credential, error)) (map[string]*auth.Policy, error) {
	c := checker{file: cfg.label()}
	policies := map[string]*auth.Policy{}
	for _, name := range sortedKeys(cfg.Auth) {
		policies[name] = cfg.policy(&c, name, lookup)
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return policies, nil
}

// backendTLS is the client TLS config that reaches backend b; nil when b
// does not use TLS.
func (cfg *Config) backendTLS(b BackendConfig) (*tls.Config, error) {
	t := b.TLS
	if !t.Enabled && t == (BackendTLSConfig{}) {
		return nil, nil
	}
	host, _, _ := net.SplitHostPort(b.Address)
	ct := front.ClientTLS{ServerName: t.ServerName}
	for _, f := range []struct {
		in  string
		out *string
	}{{t.CAFile, &ct.CAFile}, {t.CertFile, &ct.CertFile}, {t.KeyFile, &ct.KeyFile}} {
		if f.in != "" {
			*f.out = cfg.path(f.in)
		}
	}
	return ct.Config(host)
}

// logRoutes tells the operator where each route is served, as URLs on
// the address the gateway listens at, https:// and wss:// when it serves
// TLS, with what to try first for the demo and SSE and publish routes.
func (cfg *Config) logRoutes(log *slog.Logger, addr net.Addr, tls bool) {
	web, ws := "http://", "ws://"
	if tls {
		web, ws = "https://", "wss://"
	}
	base := displayAddr(addr)
	var sse, publish string
	for _, r := range cfg.Routes {
		path := routePath(r)
		attrs := []any{"protocol", r.Protocol, "backend", r.Backend}
		if r.Mode != "" {
			attrs = append(attrs, "mode", r.Mode)
		}
		if r.Auth != "" {
			attrs = append(attrs, "auth", r.Auth)
		}
		url := ws + base + path
		if routeKindOf(routeKey(r)).web {
			url = web + base + path + "/TOPIC"
		}
		// The demo hints name the first of each.
		switch {
		case r.Protocol == "sse" && sse == "":
			sse = web + base + path
		case r.Protocol == "publish" && publish == "":
			publish = web + base + path
		}
		log.Info("route", append([]any{"url", url}, attrs...)...)
	}
	if cfg.Demo {
		hint := "open the demo page: " + web + base + "/"
		if sse != "" {
			hint += "   follow it from a terminal: curl -N " + sse + "/demo"
		}
		if publish != "" {
			hint += "   publish: curl -d hi " + publish + "/demo"
		}
		log.Info(hint)
	}
}
