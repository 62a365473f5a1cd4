// Package front is wsbridge's HTTP front: the listener and its routes,
// /healthz and /readyz, the process's serving lifecycle, and what every
// route checks before it does its own work: the registry of live client
// connections and its limits (Conns), the handshake rate per client
// address, the client address behind trusted proxies (ClientIP), browser
// origins (Origins), a request's credentials against the route's auth
// policy (Authenticate, RefuseLogin), refusals for load that clients follow by themselves
// (Busy, RetryHint, BusyRefuser), and TLS (CertReloader, ClientTLS).
//
// It links no WebSocket library and no broker client: the session
// framework (bridge) and the SSE streams (sse) are routes it serves, and
// they import it, never the other way round.
package front

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ReadyCheck reports whether one dependency (a backend) is usable.
type ReadyCheck func(ctx context.Context) error

// ServerOptions are the limits and transport every route shares.
type ServerOptions struct {
	// MaxConns bounds WebSocket connections and SSE streams at once;
	// MaxConnsPerIP bounds them per client address (0: no limit).
	MaxConns, MaxConnsPerIP int
	// HandshakeRate is the requests per second one client address may
	// start, with HandshakeBurst at once (0: no limit); beyond it the
	// route refuses with a retry hint its clients follow (BusyRefuser),
	// other paths with 429.
	HandshakeRate  float64
	HandshakeBurst int
	// HandshakeTimeout bounds the TLS handshake and the request headers,
	// so a slow client cannot hold a connection open before it says
	// anything (slowloris); default 10s.
	HandshakeTimeout time.Duration
	// TrustedProxies are believed about X-Forwarded-For and Forwarded.
	TrustedProxies Proxies
	// TLS, when set, serves https:// and wss:// only.
	TLS *tls.Config
	// Reported tells the readiness failures that their check has logged
	// itself (a broker refusing the gateway's credential, logged with its
	// keyring entry), which the pass at startup does not log again; nil:
	// none.
	Reported func(error) bool
}

// DefaultServerOptions are the limits where the config is silent. They
// let a crowd behind one address in: a thousand browsers behind one NAT
// or proxy, each with a WebSocket and an SSE stream, all reconnecting at
// once after a restart, are back within about 15 s (the burst at once,
// the rest at the rate, each refused one returning within RetryMin +
// RetrySpread). What one hostile address gets from them: a burst of 1000
// handshakes, then 100 a second, and never more than MaxConnsPerIP
// connections, a quarter of MaxConns; without a login within
// LoginTimeout a WebSocket is closed, so where auth is on, what it holds
// without credentials is what it can open in that time.
func DefaultServerOptions() ServerOptions {
	return ServerOptions{
		MaxConns:       10000,
		MaxConnsPerIP:  2500,
		HandshakeRate:  100,
		HandshakeBurst: 1000,
	}
}

// Server serves the gateway's routes and tracks the connections they hijack.
type Server struct {
	log   *slog.Logger
	opts  ServerOptions
	mux   *http.ServeMux
	http  *http.Server
	rate  *rateLimiter
	Conns *Conns
	// forwardWarned: an untrusted peer's X-Forwarded-For has been logged.
	forwardWarned atomic.Bool

	mu     sync.Mutex
	checks map[string]ReadyCheck

	// The readiness pass at startup runs once, on bg, until bgCtx ends
	// (Shutdown). checksStarted and bgCtx's cancelling are guarded by mu.
	checksStarted bool
	bg            sync.WaitGroup
	bgCtx         context.Context
	stopBg        context.CancelFunc
}

// NewServer makes a server with the given limits.
func NewServer(log *slog.Logger, o ServerOptions) *Server {
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	s := &Server{
		log:    log,
		opts:   o,
		mux:    http.NewServeMux(),
		rate:   newRateLimiter(o.HandshakeRate, o.HandshakeBurst),
		Conns:  NewConns(o.MaxConns, o.MaxConnsPerIP),
		checks: map[string]ReadyCheck{},
	}
	s.bgCtx, s.stopBg = context.WithCancel(context.Background())
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.http = &http.Server{
		Handler:           s.front(s.mux),
		ReadHeaderTimeout: o.HandshakeTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s
}

// Handle routes path to h.
func (s *Server) Handle(path string, h http.Handler) { s.mux.Handle(path, h) }

// AddReadyCheck makes /readyz depend on check, reported under name.
func (s *Server) AddReadyCheck(name string, check ReadyCheck) {
	s.mu.Lock()
	s.checks[name] = check
	s.mu.Unlock()
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if failed := s.notReady(ctx); len(failed) > 0 {
		msgs := make([]string, len(failed))
		for i, f := range failed {
			msgs[i] = f.name + ": " + f.err.Error()
		}
		Error(w, http.StatusServiceUnavailable, "backends not ready: "+strings.Join(msgs, "; "))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ready")
}

// readyTimeout bounds one readiness pass: the checks run side by side, so
// it bounds the slowest, a broker login among them.
const readyTimeout = 3 * time.Second

// notReady runs every check at once and returns the failures by name.
func (s *Server) notReady(ctx context.Context) []namedErr {
	s.mu.Lock()
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	checks := make([]ReadyCheck, len(names))
	sort.Strings(names)
	for i, n := range names {
		checks[i] = s.checks[n]
	}
	s.mu.Unlock()
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, check := range checks {
		wg.Go(func() { errs[i] = check(ctx) })
	}
	wg.Wait()
	var failed []namedErr
	for i, err := range errs {
		if err != nil {
			failed = append(failed, namedErr{names[i], err})
		}
	}
	return failed
}

type namedErr struct {
	name string
	err  error
}

// startChecks starts the readiness pass at startup, once, unless the
// server is already shutting down.
func (s *Server) startChecks() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.checksStarted || s.bgCtx.Err() != nil {
		return
	}
	s.checksStarted = true
	s.bg.Go(func() { s.checkAtStart(s.bgCtx) })
}

// checkAtStart runs the readiness checks once as the server starts, so a
// broker that refuses the gateway's credential or cannot be reached is in
// the log before the first client finds out. A failure its check has
// logged (ServerOptions.Reported) is not logged again.
func (s *Server) checkAtStart(ctx context.Context) {
	// Longer than a probe waits: nobody is waiting, and a broker may take
	// seconds to refuse a login.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, f := range s.notReady(ctx) {
		if s.opts.Reported == nil || !s.opts.Reported(f.err) {
			s.log.Warn("backend not ready at startup", "backend", f.name, "error", f.err.Error())
		}
	}
}

// Serve accepts connections on ln until Shutdown, over TLS when the
// options say so.
func (s *Server) Serve(ln net.Listener) error {
	s.startChecks()
	if s.opts.TLS != nil {
		ln = tls.NewListener(ln, s.opts.TLS)
	}
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops serving at once: it closes the listener and the connections
// net/http still tracks, without asking the hijacked ones (WebSocket
// sessions) to go away, as Shutdown does.
func (s *Server) Close() error { return s.http.Close() }

// Shutdown asks every live connection (WebSocket sessions, SSE streams) to
// go away and waits for them, then stops the HTTP server, all until ctx
// ends. Streams go first: http.Server.Shutdown would otherwise wait on them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopBg() // under mu: no startChecks can Add to bg after this
	s.mu.Unlock()
	s.Conns.CloseAll(ctx)
	err := s.http.Shutdown(ctx)
	s.bg.Wait()
	return err
}
