// Package bridge is wsbridge's protocol-neutral core: the HTTP server and
// its routes, the registry of live client connections, readiness checks and
// the process lifecycle. It knows no client protocol's wire format.
package bridge

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
	s.mu.Lock()
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	s.mu.Unlock()
	sort.Strings(names)
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	var failed []string
	for _, n := range names {
		s.mu.Lock()
		check := s.checks[n]
		s.mu.Unlock()
		if err := check(ctx); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", n, err))
		}
	}
	if len(failed) > 0 {
		Error(w, http.StatusServiceUnavailable, "backends unreachable: "+strings.Join(failed, "; "))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ready")
}

// DialCheck is a ReadyCheck that opens and closes a TCP connection to addr.
func DialCheck(addr string) ReadyCheck {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("%s unreachable", addr)
		}
		return c.Close()
	}
}

// Serve accepts connections on ln until Shutdown, over TLS when the
// options say so.
func (s *Server) Serve(ln net.Listener) error {
	if s.opts.TLS != nil {
		ln = tls.NewListener(ln, s.opts.TLS)
	}
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown asks every live connection (WebSocket sessions, SSE streams) to
// go away and waits for them, then stops the HTTP server, all until ctx
// ends. Streams go first: http.Server.Shutdown would otherwise wait on them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Conns.CloseAll(ctx)
	return s.http.Shutdown(ctx)
}
