// Package keyring is wsbridge's encrypted store of broker credentials. Only
// the gateway holds it; clients never see what it contains.
//
// At rest the keyring is a JSON document encrypted with age
// (filippo.io/age) to an X25519 master key, written atomically (temporary
// file, fsync, rename) with mode 0600.
package keyring

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"filippo.io/age"
)

// Errors a caller branches on.
var (
	ErrNotFound = errors.New("keyring: no such file")
	ErrWrongKey = errors.New("keyring: the master key does not open this keyring")
	ErrNoEntry  = errors.New("keyring: no such entry")
	ErrExists   = errors.New("keyring: already exists")
)

const redacted = "[REDACTED]"

// Secret is a string that never prints itself: not through fmt verbs, not in
// slog, not in JSON. Reveal returns the value for the one place that needs it.
type Secret struct{ s string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{s} }

// Reveal returns the secret value.
func (s Secret) Reveal() string { return s.s }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.s == "" }

func (Secret) String() string                { return redacted }
func (Secret) GoString() string              { return redacted }
func (Secret) LogValue() slog.Value          { return slog.StringValue(redacted) }
func (Secret) MarshalJSON() ([]byte, error)  { return []byte(`"` + redacted + `"`), nil }
func (Secret) MarshalText() ([]byte, error)  { return []byte(redacted), nil }
func (Secret) Format(f fmt.State, verb rune) { io.WriteString(f, redacted) }

// Credential is one broker identity.
type Credential struct {
	Username string
	Password Secret
}

// Keyring is an opened keyring file. It is not safe for concurrent
// mutation; concurrent Get calls are fine.
type Keyring struct {
	path    string
	key     Key
	entries map[string]Credential
}

// fileEntry is the on-disk (inside the encryption) form of a Credential.
type fileEntry struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type fileBody struct {
	Version int                  `json:"version"`
	Entries map[string]fileEntry `json:"entries"`
}

// Create makes a new, empty keyring at path. It fails with ErrExists rather
// than overwrite one.
func Create(path string, key Key) (*Keyring, error) {
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrExists, path)
	}
	k := &Keyring{path: path, key: key, entries: map[string]Credential{}}
	return k, k.save()
}

// Open decrypts the keyring at path with key.
func Open(path string, key Key) (*Keyring, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (create it with `wsbridge keyring init`)", ErrNotFound, path)
	}
	if err != nil {
		return nil, fmt.Errorf("keyring: reading %s: %w", path, bare(err))
	}
	defer f.Close()
	r, err := age.Decrypt(f, key.id)
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, fmt.Errorf("%w: %s", ErrWrongKey, path)
		}
		return nil, fmt.Errorf("keyring: %s is not a readable keyring: %w", path, err)
	}
	var body fileBody
	dec := json.NewDecoder(io.LimitReader(r, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return nil, fmt.Errorf("keyring: %s: damaged contents: %w", path, err)
	}
	if body.Version != 1 {
		return nil, fmt.Errorf("keyring: %s: unsupported version %d", path, body.Version)
	}
	k := &Keyring{path: path, key: key, entries: make(map[string]Credential, len(body.Entries))}
	for name, e := range body.Entries {
		k.entries[name] = Credential{Username: e.Username, Password: NewSecret(e.Password)}
	}
	return k, nil
}

// Path is where the keyring lives.
func (k *Keyring) Path() string { return k.path }

// Get returns the credential stored under name.
func (k *Keyring) Get(name string) (Credential, error) {
	c, ok := k.entries[name]
	if !ok {
		return Credential{}, fmt.Errorf("%w: %q", ErrNoEntry, name)
	}
	return c, nil
}

// Names lists the entries in order.
func (k *Keyring) Names() []string {
	names := make([]string, 0, len(k.entries))
	for n := range k.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Set stores c under name and writes the keyring.
func (k *Keyring) Set(name string, c Credential) error {
	if err := checkName(name); err != nil {
		return err
	}
	if strings.ContainsAny(c.Username, "\x00\r\n") || strings.ContainsAny(c.Password.Reveal(), "\x00\r\n") {
		return errors.New("keyring: username and password may not contain NUL, CR or LF (no broker protocol can carry them)")
	}
	k.entries[name] = c
	return k.save()
}

// Delete removes name and writes the keyring.
func (k *Keyring) Delete(name string) error {
	if _, ok := k.entries[name]; !ok {
		return fmt.Errorf("%w: %q", ErrNoEntry, name)
	}
	delete(k.entries, name)
	return k.save()
}

func checkName(name string) error {
	if name == "" || len(name) > 128 {
		return errors.New("keyring: an entry name has 1 to 128 characters")
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-/", r)) {
			return fmt.Errorf("keyring: entry name %q: use letters, digits and . _ - /", name)
		}
	}
	return nil
}

// save encrypts the entries to a temporary file beside the keyring and
// renames it into place, so a crash leaves either the old or the new file.
func (k *Keyring) save() error {
	body := fileBody{Version: 1, Entries: make(map[string]fileEntry, len(k.entries))}
	for n, c := range k.entries {
		body.Entries[n] = fileEntry{Username: c.Username, Password: c.Password.Reveal()}
	}
	plain, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	var enc bytes.Buffer
	w, err := age.Encrypt(&enc, k.key.id.Recipient())
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	if _, err := w.Write(plain); err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	return writeAtomic(k.path, enc.Bytes())
}

func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("keyring: writing %s: %w", path, bare(err))
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring: writing %s: %w", path, bare(err))
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring: writing %s: %w", path, bare(err))
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring: writing %s: %w", path, bare(err))
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keyring: writing %s: %w", path, bare(err))
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("keyring: writing %s: %w", path, bare(err))
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the rename durable where the filesystem allows
		d.Close()
	}
	return nil
}

// bare is err without the *fs.PathError around it: the messages name the
// file the user knows (the keyring, not its temporary twin) once, and
// errors.Is still finds fs.ErrPermission in the errno.
func bare(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
