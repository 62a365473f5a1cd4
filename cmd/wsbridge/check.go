package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/wsbridge/wsbridge/broker"
	"github.com/wsbridge/wsbridge/keyring"
)

var checkCmd = &command{
	name: "check", args: "-config FILE [-keyring FILE] [-listen ADDR] [-login]",
	summary: "check that the gateway would start with a config: its files, keyring entries and ports",
	detail: `It takes the steps serve takes before it serves, in the same order, and
reports each on a line of its own as it passes: the config (every key, value
and file it names: TLS certificates, JWT keys, users files); the keyring and
each entry a backend or auth policy names; then the ports (listen,
admin.listen, an embedded server's mqtt_address), each bound and released at
once. A gateway already serving on a port makes check fail, as serve would
beside it: give -listen to check the rest. It connects to no broker unless
-login is given: then it logs in to each broker backend with the gateway's own
credential, as /readyz does, and reports each backend accepted, refused or
unreachable (the broker's own words about a refusal included: they are for
the operator). Embedded NATS backends are not started, so not tried.
The last line on standard output, "serve would start with it", comes only
when every step passed. Exit status 0 then, 1 when not (the problem on
standard error), 2 for a wrong command line.`,
	setup: func(fs *flag.FlagSet) runFunc {
		var cf commonFlags
		cf.register(fs, true)
		listen := fs.String("listen", "", "check as `serve -listen ADDR` would (overrides the config's listen)")
		login := fs.Bool("login", false, "also log in to each backend with its keyring credential")
		return func(ctx context.Context, e *env, _ []string) error {
			if cf.config == "" {
				return &usageError{cmd: "check", err: errors.New("check: -config FILE is required (the embedded default needs no checking)")}
			}
			if *listen != "" {
				if err := checkListen(*listen); err != nil {
					return &usageError{cmd: "check", err: fmt.Errorf("check: -listen: %w", err)}
				}
			}
			return checkConfig(ctx, cf, *listen, *login, e)
		}
	},
}

// checkConfig is `wsbridge check`: the steps serve takes before it
// serves, each reported on stdout as it passes, and the first that fails
// returned.
func checkConfig(ctx context.Context, cf commonFlags, listen string, login bool, e *env) error {
	cfg, err := loadConfig(cf.config)
	if err != nil {
		return err
	}
	cfg = cfg.withListen(listen)
	fmt.Fprintf(e.stdout, "config %s: ok (%s, %s, %s)\n", cf.config, plural(len(cfg.Routes), "route", "routes"),
		plural(len(cfg.Backends), "backend", "backends"), plural(len(cfg.Auth), "auth policy", "auth policies"))
	var kr *keyring.Keyring
	if cfg.needsKeyring() {
		loc := locateKeyring(cfg, cf.keyring)
		if kr, err = openKeyring(cfg, cf.keyring); err != nil {
			return err
		}
		if w := loc.keyFileWarning(); w != "" {
			fmt.Fprintln(e.stderr, "warning:", w)
		}
		needs := cfg.keyringNeeds()
		fmt.Fprintf(e.stdout, "keyring %s: ok: opens with %s and holds every entry the config names", loc.path, loc.keySource())
		if len(needs) > 0 {
			fmt.Fprintf(e.stdout, " (%s)", needsText(needs))
		}
		fmt.Fprintln(e.stdout)
	} else {
		fmt.Fprintf(e.stdout, "keyring: not needed: %s names no keyring entry\n", cf.config)
	}
	for _, p := range cfg.ports() {
		ln, err := openListener(p.addr, p.hint)
		if err != nil {
			if p.key == "listen" {
				return err
			}
			return fmt.Errorf("%s: %w", p.key, err)
		}
		ln.Close()
		fmt.Fprintf(e.stdout, "%s %s: ok: free (bound and released)\n", p.key, p.addr)
	}
	if open := cfg.openRoutes(cfg.Listen); len(open) > 0 {
		fmt.Fprintf(e.stderr, "warning: listen %s: %s (%s): %s\n", cfg.Listen, openRoutesWarning, strings.Join(open, ", "), openRoutesFix)
	}
	if login {
		if err := checkLogins(ctx, cfg, kr, e); err != nil {
			return err
		}
	}
	fmt.Fprintf(e.stdout, "%s: ok: serve would start with it\n", cf.config)
	return nil
}

// port is an address the gateway listens on, by its config key, with how
// to choose another when it is taken.
type port struct{ key, addr, hint string }

// ports are the addresses serve binds, in the order it binds them.
func (cfg *Config) ports() []port {
	ps := []port{{"listen", cfg.Listen, "choose another with -listen HOST:PORT or the config's listen"}}
	if cfg.Admin.Listen != "" {
		ps = append(ps, port{"admin.listen", cfg.Admin.Listen, "choose another with the config's admin.listen"})
	}
	for _, name := range sortedKeys(cfg.Backends) {
		if a := cfg.Backends[name].MQTTAddress; a != "" {
			ps = append(ps, port{"backends." + name + ".mqtt_address", a, "choose another with backends." + name + ".mqtt_address"})
		}
	}
	return ps
}

// plural is n with the word for one or for many: "1 route", "2 routes".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// checkLogins logs in to every backend that is not embedded with the
// gateway's credential, one after another, and fails if any did not
// accept it.
func checkLogins(ctx context.Context, cfg *Config, kr *keyring.Keyring, e *env) error {
	var failed []string
	for _, name := range sortedKeys(cfg.Backends) {
		b := cfg.Backends[name]
		if b.Embedded {
			fmt.Fprintf(e.stdout, "backend %s: embedded, nothing to log in to\n", name)
			continue
		}
		tls, err := cfg.backendTLS(b)
		if err != nil {
			return fmt.Errorf("backend %q: %w", name, err)
		}
		l := broker.Login{Endpoint: broker.Endpoint{Address: b.Address, TLS: tls, DialTimeout: time.Duration(b.DialTimeout),
			Backend: name, CredentialName: b.Credential}, Protocol: b.Protocol, VHost: b.VHost, Attempt: backendKindOf(b.Protocol).login}
		if b.Credential != "" && kr != nil {
			c, err := kr.Get(b.Credential)
			if err != nil {
				return fmt.Errorf("backend %q: %w in %s", name, err, kr.Path())
			}
			l.Credential = &c
		}
		err = l.Try(ctx)
		var refused *broker.LoginError
		switch {
		case err == nil && l.Credential == nil:
			fmt.Fprintf(e.stdout, "backend %s (%s %s): reachable, no credential to try\n", name, b.Protocol, b.Address)
		case err == nil:
			fmt.Fprintf(e.stdout, "backend %s (%s %s): login with keyring entry %q accepted\n", name, b.Protocol, b.Address, b.Credential)
		case errors.As(err, &refused):
			fmt.Fprintf(e.stderr, "backend %s (%s %s): login with keyring entry %q refused: %s\n  fix the password: wsbridge keyring set %s -username USER -config %s\n",
				name, b.Protocol, b.Address, b.Credential, refused.Said, b.Credential, cfg.file)
			failed = append(failed, name)
		default:
			fmt.Fprintf(e.stderr, "backend %s (%s %s): %v\n", name, b.Protocol, b.Address, err)
			failed = append(failed, name)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("check: %s did not accept the gateway's login: %s", plural(len(failed), "backend", "backends"), strings.Join(failed, ", "))
	}
	return nil
}
