package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsbridge/wsbridge/keyring"
)

// clearKeyringEnv makes the config alone locate the keyring and its key.
func clearKeyringEnv(t *testing.T) {
	t.Helper()
	for _, v := range []string{"WSBRIDGE_KEYRING", "WSBRIDGE_KEYRING_KEY", "WSBRIDGE_KEYRING_KEY_FILE"} {
		t.Setenv(v, "")
	}
}

// writeKeyringConfig writes a config in a directory of its own whose
// backend "b" needs keyring entry "rabbit", with keyring.path given
// relative to that directory. The broker is never reached: these configs
// fail or are checked before any dial.
func writeKeyringConfig(t *testing.T) (dir, cfg string) {
	t.Helper()
	dir = t.TempDir()
	cfg = filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte("keyring: {path: k}\nbackends:\n  b: {protocol: stomp, address: 127.0.0.1:1, credential: rabbit}\n"+
		"routes:\n  - {path: /s, protocol: stomp, backend: b}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

// Each way the keyring can be missing stops serve and check with a message
// naming the keyring file, where its path came from, the backend and entry
// that need it, and the commands that fix it.
func TestKeyringErrorsNameFilesAndCommands(t *testing.T) {
	clearKeyringEnv(t)
	dir, cfg := writeKeyringConfig(t)
	kr, key := filepath.Join(dir, "k"), filepath.Join(dir, "k.key")
	from := "(keyring.path in " + cfg + ", relative to its directory)"
	need := `backend "b" needs entry "rabbit"`
	initCmd := "wsbridge keyring init -config " + cfg
	setCmd := "wsbridge keyring set rabbit -username USER -config " + cfg
	other := filepath.Join(dir, "other.key")
	tests := []struct {
		name  string
		setup func()
		want  []string
	}{
		{"neither keyring nor key", func() {},
			[]string{"no keyring: neither keyring " + kr + " " + from, "nor its master key file " + key + " (the keyring path + .key)", need, initCmd, setCmd}},
		{"no keyring", func() { keyring.GenerateKeyFile(key) },
			[]string{"keyring " + kr + " " + from + " does not exist", need, initCmd, setCmd}},
		{"wrong key", func() {
			k, _ := keyring.GenerateKeyFile(other)
			keyring.Create(kr, k)
		}, []string{"keyring " + kr + " " + from + ": the master key from key file " + key + " (the keyring path + .key) does not open it"}},
		{"no key", func() { os.Remove(key) },
			[]string{"keyring " + kr + " " + from + ": no master key: key file " + key + " (the keyring path + .key) does not exist", need,
				"restore that file, or set WSBRIDGE_KEYRING_KEY_FILE or WSBRIDGE_KEYRING_KEY"}},
		{"missing entry", func() { os.Rename(other, key) },
			[]string{"keyring " + kr + " " + from + " lacks what the config names: " + need, setCmd}},
	}
	for _, tt := range tests {
		tt.setup()
		for _, args := range [][]string{{"-config", cfg, "-listen", "127.0.0.1:0"}, {"check", "-config", cfg, "-listen", "127.0.0.1:0"}} {
			_, errOut, code := wsbridge(t, "", args...)
			if code != 1 {
				t.Fatalf("%s: %v: exit %d, want 1: %s", tt.name, args, code, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("%s: %v: stderr lacks %q:\n%s", tt.name, args, w, errOut)
				}
			}
		}
	}
}

// A relative keyring.path is found beside the config, whatever the
// working directory, as TLS and auth files are: the commands the errors
// suggest make a keyring that serve and check then find.
func TestKeyringPathIsRelativeToTheConfig(t *testing.T) {
	clearKeyringEnv(t)
	dir, cfg := writeKeyringConfig(t)
	out, errOut, code := wsbridge(t, "", "keyring", "init", "-config", cfg)
	if code != 0 || !strings.Contains(out, "created empty keyring "+filepath.Join(dir, "k")+"\n") ||
		!strings.Contains(out, filepath.Join(dir, "k.key")) {
		t.Fatalf("init: exit %d %q %q", code, out, errOut)
	}
	if _, err := os.Stat("k"); err == nil {
		os.Remove("k")
		os.Remove("k.key")
		t.Fatal("keyring init wrote the keyring in the working directory")
	}
	if _, errOut, code := wsbridge(t, "s3cret\n", "keyring", "set", "rabbit", "-username", "gw", "-password-stdin", "-config", cfg); code != 0 {
		t.Fatalf("set: exit %d %q", code, errOut)
	}
	out, errOut, code = wsbridge(t, "", "check", "-config", cfg, "-listen", "127.0.0.1:0")
	if code != 0 || errOut != "" || !strings.Contains(out, "keyring "+filepath.Join(dir, "k")+": ok: opens with key file "+filepath.Join(dir, "k.key")) ||
		!strings.Contains(out, `holds every entry the config names (backend "b" needs entry "rabbit")`) {
		t.Fatalf("check: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// The embedded default has no directory: its keyring is the working
	// directory's, and -keyring and WSBRIDGE_KEYRING are the working
	// directory's too.
	for _, tc := range []struct {
		cfg       *Config
		flag, env string
		want      string
	}{
		{&Config{dir: "."}, "", "", "wsbridge.keyring"},
		{&Config{dir: dir, file: cfg}, "", "", filepath.Join(dir, "wsbridge.keyring")},
		{&Config{dir: dir, file: cfg, Keyring: KeyringConfig{Path: "/etc/k"}}, "", "", "/etc/k"},
		{&Config{dir: dir, file: cfg, Keyring: KeyringConfig{Path: "k"}}, "x/f", "", "x/f"},
		{&Config{dir: dir, file: cfg, Keyring: KeyringConfig{Path: "k"}}, "", "y/e", "y/e"},
	} {
		t.Setenv("WSBRIDGE_KEYRING", tc.env)
		if got := locateKeyring(tc.cfg, tc.flag).path; got != tc.want {
			t.Errorf("%+v flag %q env %q: %s, want %s", tc.cfg.Keyring, tc.flag, tc.env, got, tc.want)
		}
	}
}

// A master key file that group or others may read draws a warning naming
// it and the chmod that fixes it, at startup and from check; a 0600 one
// draws none.
func TestKeyFileModeWarning(t *testing.T) {
	clearKeyringEnv(t)
	_, cfg := writeKeyringConfig(t)
	if _, errOut, code := wsbridge(t, "", "keyring", "init", "-config", cfg); code != 0 {
		t.Fatal(errOut)
	}
	if _, errOut, code := wsbridge(t, "pw\n", "keyring", "set", "rabbit", "-username", "gw", "-password-stdin", "-config", cfg); code != 0 {
		t.Fatal(errOut)
	}
	key := filepath.Join(filepath.Dir(cfg), "k.key")
	warning := "keyring master key file " + key + " is open to group or others (mode 0644)"
	fix := "run chmod 600 " + key

	for _, mode := range []os.FileMode{0o644, 0o600} {
		if err := os.Chmod(key, mode); err != nil {
			t.Fatal(err)
		}
		g := serve(t, "-config", cfg)
		logs := g.logs.String()
		g.stop()
		_, errOut, code := wsbridge(t, "", "check", "-config", cfg, "-listen", "127.0.0.1:0")
		if code != 0 {
			t.Fatalf("check: exit %d: %s", code, errOut)
		}
		warned := strings.Contains(logs, "level=WARN msg=\""+warning) && strings.Contains(logs, fix)
		checkWarned := strings.Contains(errOut, "warning: "+warning) && strings.Contains(errOut, fix)
		if want := mode == 0o644; warned != want || checkWarned != want {
			t.Fatalf("mode %04o: serve warned %v, check warned %v, want %v:\n%s\n%s", mode, warned, checkWarned, want, logs, errOut)
		}
	}
}

// check exits 0 for a config the gateway would start with and 1, naming
// file and line, for one it would not.
func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users.yaml")
	os.WriteFile(users, []byte("users:\n  alice:\n    password: hunter2\n"), 0o600)
	badUsers := filepath.Join(dir, "bad-users.yaml")
	os.WriteFile(badUsers, []byte("auth:\n  p: {mode: users, users_file: users.yaml}\n"+
		"backends:\n  n: {protocol: nats, embedded: true}\nroutes:\n  - {path: /sse, protocol: sse, backend: n, auth: p}\n"), 0o600)
	badKey := filepath.Join(dir, "bad-key.yaml")
	os.WriteFile(badKey, []byte("backends:\n  n: {protocol: nats, embedded: true}\nroutes:\n  - {path: /sse, protocol: sse, backend: n}\nlimts: {}\n"), 0o600)
	tests := []struct {
		config string
		code   int
		want   []string
	}{
		{"../../testdata/users.yaml", 0, []string{"config ../../testdata/users.yaml: ok (3 routes, 1 backend, 1 auth policy)\n",
			"keyring: not needed: ../../testdata/users.yaml names no keyring entry\n", "listen 127.0.0.1:0: ok: free",
			"../../testdata/users.yaml: ok: serve would start with it\n"}},
		{"../../testdata/nats.yaml", 0, []string{"config ../../testdata/nats.yaml: ok (", "serve would start with it"}},
		{badKey, 1, []string{badKey + `:5: unknown key "limts"`}},
		{badUsers, 1, []string{badUsers + ":2: auth.p.users_file: " + users + ":3: users.alice.password: unknown key",
			badUsers + ":2: auth.p.users_file: " + users + ":2: users.alice: no password_hash"}},
		{filepath.Join(dir, "missing.yaml"), 1, []string{"missing.yaml: no such file"}},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.config), func(t *testing.T) {
			out, errOut, code := wsbridge(t, "", "check", "-config", tt.config, "-listen", "127.0.0.1:0")
			if code != tt.code {
				t.Fatalf("exit %d, want %d: %s%s", code, tt.code, out, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out+errOut, w) {
					t.Errorf("output lacks %q:\n%s%s", w, out, errOut)
				}
			}
		})
	}
}
