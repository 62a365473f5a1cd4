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
	"strings"
	"syscall"
	"time"

	"github.com/wsbridge/wsbridge/admin"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/memory"
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
	cfg = cfg.withListen(listen)
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

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
