package keyring

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newKey(t *testing.T) (Key, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "master.key")
	k, err := GenerateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return k, path
}

func TestKeyringRoundTrip(t *testing.T) {
	key, keyPath := newKey(t)
	path := filepath.Join(t.TempDir(), "wsbridge.keyring")
	k, err := Create(path, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Set("rabbit", Credential{Username: "gw", Password: NewSecret("s3cr3t-pw")}); err != nil {
		t.Fatal(err)
	}
	if err := k.Set("mqtt", Credential{Username: "dev", Password: NewSecret("other")}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("s3cr3t-pw")) || bytes.Contains(raw, []byte("rabbit")) {
		t.Fatal("keyring file holds plaintext")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("keyring mode %v, want 0600", st.Mode().Perm())
	}
	if st, _ := os.Stat(keyPath); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}

	reloaded, err := LoadKeyFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := Open(path, reloaded)
	if err != nil {
		t.Fatal(err)
	}
	c, err := k2.Get("rabbit")
	if err != nil || c.Username != "gw" || c.Password.Reveal() != "s3cr3t-pw" {
		t.Fatalf("got %v %v", c, err)
	}
	if got := strings.Join(k2.Names(), ","); got != "mqtt,rabbit" {
		t.Fatalf("names %q", got)
	}
	if err := k2.Delete("mqtt"); err != nil {
		t.Fatal(err)
	}
	k3, _ := Open(path, key)
	if _, err := k3.Get("mqtt"); !errors.Is(err, ErrNoEntry) {
		t.Fatalf("deleted entry still there: %v", err)
	}
	if err := k3.Delete("mqtt"); !errors.Is(err, ErrNoEntry) {
		t.Fatalf("delete of a missing entry: %v", err)
	}
	if _, err := Create(path, key); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over an existing keyring: %v", err)
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*"))
	if len(matches) != 0 {
		t.Fatalf("temporary files left behind: %v", matches)
	}
}

func TestKeyringOpenErrors(t *testing.T) {
	key, _ := newKey(t)
	other, _ := newKey(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "k")
	if _, err := Create(path, key); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, other); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := Open(filepath.Join(dir, "missing"), key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("not a keyring"), 0o600)
	if _, err := Open(junk, key); err == nil || !strings.Contains(err.Error(), "not a readable keyring") {
		t.Fatalf("junk file: %v", err)
	}
	if _, err := ParseKey("AGE-SECRET-KEY-1NOTAKEY"); err == nil || strings.Contains(err.Error(), "NOTAKEY") {
		t.Fatalf("bad key error must not echo the key: %v", err)
	}
	empty := filepath.Join(dir, "empty.key")
	os.WriteFile(empty, []byte("# nothing\n"), 0o600)
	if _, err := LoadKeyFile(empty); err == nil {
		t.Fatal("empty key file accepted")
	}
	if _, err := LoadKeyFile(filepath.Join(dir, "nope.key")); !errors.Is(err, ErrNoKey) {
		t.Fatalf("missing key file: %v", err)
	}
}

func TestKeyringRejectsBadInput(t *testing.T) {
	key, _ := newKey(t)
	k, err := Create(filepath.Join(t.TempDir(), "k"), key)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		c    Credential
	}{
		{"", Credential{Username: "u"}},
		{"has space", Credential{Username: "u"}},
		{"ok", Credential{Username: "u\nlogin:root"}},
		{"ok", Credential{Username: "u", Password: NewSecret("p\x00")}},
	}
	for _, tt := range tests {
		if err := k.Set(tt.name, tt.c); err == nil {
			t.Errorf("Set(%q, %q) accepted", tt.name, tt.c.Username)
		}
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	key, _ := newKey(t)
	c := Credential{Username: "gw", Password: NewSecret("hunter2-secret")}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	log.Info("x", "cred", c, "pw", c.Password, "key", key)
	js, _ := json.Marshal(c)
	outputs := []string{
		fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s %q %x", c, c, c, c.Password, c.Password, c.Password),
		fmt.Sprintf("%v %#v %s", key, key, key), logs.String(), string(js),
	}
	keyText := key.id.String()
	for _, out := range outputs {
		if strings.Contains(out, "hunter2") || strings.Contains(out, keyText) || strings.Contains(out, "AGE-SECRET") {
			t.Fatalf("secret printed: %s", out)
		}
	}
}
