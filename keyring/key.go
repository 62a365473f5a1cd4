package keyring

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"filippo.io/age"
)

// Key is the master key that encrypts a keyring: an age X25519 identity.
// Like Secret, it never prints itself.
type Key struct{ id *age.X25519Identity }

// ErrNoKey means no master key was configured.
var ErrNoKey = errors.New("keyring: no master key configured")

// ParseKey reads a key in age's "AGE-SECRET-KEY-1..." form. The error never
// repeats the input.
func ParseKey(s string) (Key, error) {
	id, err := age.ParseX25519Identity(strings.TrimSpace(s))
	if err != nil {
		return Key{}, errors.New("keyring: master key is not an age X25519 identity (AGE-SECRET-KEY-1...)")
	}
	return Key{id}, nil
}

// LoadKeyFile reads a key file: the key on one line, optionally after
// comment lines starting with '#', as age-keygen writes it.
func LoadKeyFile(path string) (Key, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Key{}, fmt.Errorf("%w: key file %s does not exist", ErrNoKey, path)
	}
	if err != nil {
		return Key{}, fmt.Errorf("keyring: reading key file %s: %w", path, bare(err))
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := ParseKey(line)
		if err != nil {
			return Key{}, fmt.Errorf("keyring: key file %s: %s", path, strings.TrimPrefix(err.Error(), "keyring: "))
		}
		return k, nil
	}
	return Key{}, fmt.Errorf("keyring: key file %s holds no key", path)
}

// GenerateKeyFile makes a new key and writes it to path with mode 0600. It
// never overwrites an existing file.
func GenerateKeyFile(path string) (Key, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return Key{}, fmt.Errorf("keyring: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Key{}, fmt.Errorf("keyring: writing key file %s: %w", path, bare(err))
	}
	_, err = fmt.Fprintf(f, "# wsbridge keyring master key; keep this file secret.\n%s\n", id.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return Key{}, fmt.Errorf("keyring: writing key file %s: %w", path, bare(err))
	}
	return Key{id}, nil
}

// IsZero reports whether no key is held.
func (k Key) IsZero() bool { return k.id == nil }

func (Key) String() string                { return redacted }
func (Key) GoString() string              { return redacted }
func (Key) LogValue() slog.Value          { return slog.StringValue(redacted) }
func (Key) Format(f fmt.State, verb rune) { io.WriteString(f, redacted) }
