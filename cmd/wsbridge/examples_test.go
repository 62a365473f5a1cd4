package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The example configs are safe to start as they are: one whose routes
// have no auth policy listens on loopback, unless it says why not (the
// compose config, which docker-compose.yml publishes on loopback only); one
// with a JWT secret in the file says it is an example and listens on
// loopback; and comments that store a keyring entry first make the
// keyring (keyring init), or say the keyring exists already.
func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("../../testdata/*.yaml")
	if err != nil || len(files) < 5 {
		t.Fatalf("examples: %v %v", files, err)
	}
	// Files that listen beyond loopback with open routes, and why.
	exposed := map[string]string{"compose.yaml": "inside the container; docker-compose.yml publishes it on loopback"}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := parseConfig(f, data)
			if err != nil {
				t.Fatal(err)
			}
			open := cfg.openRoutes(cfg.Listen)
			if why, ok := exposed[filepath.Base(f)]; ok {
				if len(open) == 0 {
					t.Errorf("listed as exposed (%s) but is not: drop it from the list", why)
				}
			} else if len(open) > 0 {
				t.Errorf("listen %q with routes %v open to anyone: listen on 127.0.0.1 or give them auth", cfg.Listen, open)
			}
			for name, a := range cfg.Auth {
				if a.JWT.Secret == "" {
					continue
				}
				if !strings.Contains(string(data), "EXAMPLE SECRET") {
					t.Errorf("auth %s has a secret in the file and no EXAMPLE SECRET comment", name)
				}
				if !loopback(cfg.Listen) {
					t.Errorf("auth %s has a published secret and listens on %q", name, cfg.Listen)
				}
			}
			set := regexp.MustCompile(`(?m)^#.*wsbridge keyring set `).FindIndex(data)
			init := regexp.MustCompile(`(?m)^#.*wsbridge keyring init`).FindIndex(data)
			if set != nil && (init == nil || init[0] > set[0]) {
				t.Errorf("its comments store a keyring entry without making the keyring first (wsbridge keyring init)")
			}
		})
	}
}

// A gateway that listens beyond loopback with routes that have no auth
// policy warns at startup, naming those routes and the key to set; on
// loopback, or with every route under a policy, it does not.
func TestServeWarnsOfOpenRoutes(t *testing.T) {
	dir := t.TempDir()
	const backends = "backends: {n: {protocol: nats, embedded: true, address: 127.0.0.1:0}}\n"
	open := filepath.Join(dir, "open.yaml")
	os.WriteFile(open, []byte(backends+"routes:\n  - {path: /sse, protocol: sse, backend: n}\n  - {path: /publish, protocol: publish, backend: n}\n"), 0o600)
	guarded := filepath.Join(dir, "guarded.yaml")
	os.WriteFile(guarded, []byte(backends+"auth:\n  p:\n    mode: jwt\n    jwt: {algorithm: HS256, secret: 0123456789abcdef0123456789abcdef}\n"+
		"routes:\n  - {path: /sse, protocol: sse, backend: n, auth: p}\n  - {path: /publish, protocol: publish, backend: n, auth: p}\n"), 0o600)
	for _, tc := range []struct {
		name, config, listen string
		warn                 bool
	}{
		{"every interface, open routes", open, ":0", true},
		{"loopback, open routes", open, "127.0.0.1:0", false},
		{"every interface, every route guarded", guarded, ":0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := startServe(t, "-config", tc.config, "-listen", tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			logs := g.logs.String()
			warned := strings.Contains(logs, "level=WARN msg=\"routes without an auth policy on an address other machines may reach")
			if warned != tc.warn {
				t.Fatalf("warned %v, want %v:\n%s", warned, tc.warn, logs)
			}
			if tc.warn && (!strings.Contains(logs, "routes=/sse,/publish") || !strings.Contains(logs, "routes[].auth")) {
				t.Fatalf("the warning does not name the routes and the key to set:\n%s", logs)
			}
		})
	}
}
