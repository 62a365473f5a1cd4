package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/keyring"
)

var checkCmd = &command{
	name: "check", args: "-config FILE [-keyring FILE] [-login]",
	summary: "validate a config, the files it names and the keyring entries it needs",
	detail: `It loads the config as serve would (every key, value and file it names:
TLS certificates, JWT keys, users files), then opens the keyring and looks up
each entry a backend or auth policy names. It connects to no broker unless
-login is given: then it logs in to each broker backend with the gateway's own
credential, as /readyz does, and reports each backend accepted, refused or
unreachable (the broker's own words about a refusal included: they are for
the operator). Embedded NATS backends are not started, so not tried.
Exit status 0 when the gateway would start with it, 1 when not (each problem
on standard error), 2 for a wrong command line.`,
	setup: func(fs *flag.FlagSet) runFunc {
		var cf commonFlags
		cf.register(fs, true)
		login := fs.Bool("login", false, "also log in to each backend with its keyring credential")
		return func(ctx context.Context, e *env, _ []string) error {
			if cf.config == "" {
				return &usageError{cmd: "check", err: errors.New("check: -config FILE is required (the embedded default needs no checking)")}
			}
			return checkConfig(ctx, cf, *login, e)
		}
	},
}

// checkConfig is `wsbridge check`: the steps serve takes before it
// listens, each reported.
func checkConfig(ctx context.Context, cf commonFlags, login bool, e *env) error {
	cfg, err := loadConfig(cf.config)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: config ok (%d routes, %d backends, %d auth policies)\n", cf.config, len(cfg.Routes), len(cfg.Backends), len(cfg.Auth))
	if !cfg.needsKeyring() {
		fmt.Fprintf(e.stdout, "%s names no keyring entry: no keyring needed\n", cf.config)
		if login {
			return checkLogins(ctx, cfg, nil, e)
		}
		return nil
	}
	loc := locateKeyring(cfg, cf.keyring)
	kr, err := openKeyring(cfg, cf.keyring)
	if err != nil {
		return err
	}
	if w := loc.keyFileWarning(); w != "" {
		fmt.Fprintln(e.stderr, "warning:", w)
	}
	needs := cfg.keyringNeeds()
	fmt.Fprintf(e.stdout, "keyring %s: opens with %s and holds every entry the config names", loc.path, loc.keySource())
	if len(needs) > 0 {
		fmt.Fprintf(e.stdout, " (%s)", needsText(needs))
	}
	fmt.Fprintln(e.stdout)
	if login {
		return checkLogins(ctx, cfg, kr, e)
	}
	return nil
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
		l := bridge.BackendLogin{Backend: name, Protocol: b.Protocol, Address: b.Address, VHost: b.VHost,
			CredentialName: b.Credential, TLS: b.tls, DialTimeout: time.Duration(b.DialTimeout)}
		if b.Credential != "" && kr != nil {
			c, err := kr.Get(b.Credential)
			if err != nil {
				return fmt.Errorf("backend %q: %w in %s", name, err, kr.Path())
			}
			l.Credential = &c
		}
		err := l.Try(ctx)
		var refused *bridge.LoginError
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
		return fmt.Errorf("check: %d backend(s) did not accept the gateway's login: %s", len(failed), strings.Join(failed, ", "))
	}
	return nil
}
