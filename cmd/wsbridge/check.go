package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
)

var checkCmd = &command{
	name: "check", args: "-config FILE [-keyring FILE]",
	summary: "validate a config, the files it names and the keyring entries it needs",
	detail: `It loads the config as serve would (every key, value and file it names:
TLS certificates, JWT keys, users files), then opens the keyring and looks up
each entry a backend or auth policy names. It connects to no broker.
Exit status 0 when the gateway would start with it, 1 when not (each problem
on standard error), 2 for a wrong command line.`,
	setup: func(fs *flag.FlagSet) runFunc {
		var cf commonFlags
		cf.register(fs)
		// A -login flag, trying each backend's credential against its
		// broker, belongs here beside the others; see checkConfig.
		return func(_ context.Context, e *env, _ []string) error {
			if cf.config == "" {
				return &usageError{cmd: "check", err: errors.New("check: -config FILE is required (the embedded default needs no checking)")}
			}
			return checkConfig(cf, e)
		}
	},
}

// checkConfig is `wsbridge check`: the steps serve takes before it
// listens, each reported.
func checkConfig(cf commonFlags, e *env) error {
	cfg, err := loadConfig(cf.config)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: config ok (%d routes, %d backends, %d auth policies)\n", cf.config, len(cfg.Routes), len(cfg.Backends), len(cfg.Auth))
	if !cfg.needsKeyring() {
		fmt.Fprintf(e.stdout, "%s names no keyring entry: no keyring needed\n", cf.config)
		return nil
	}
	loc := locateKeyring(cfg, cf.keyring)
	if _, err := openKeyring(cfg, cf.keyring); err != nil {
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
	// The broker-credential check (-login: log in to each backend with its
	// entry) runs here, after the keyring opened.
	return nil
}
