package auth

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Users is a users file: names, password hashes (bcrypt or argon2id in
// PHC form) and roles.
//
//	users:
//	  alice:
//	    password_hash: "$2a$10$..."
//	    roles: [writer]
type Users struct {
	byName map[string]user
	dummy  user // checked for unknown names, so timing does not tell which names exist
	// slots bounds the password hashes computed at once: each costs tens
	// of milliseconds of CPU by design, and a flood of logins must not take
	// the cores the relays need.
	slots chan struct{}
}

type user struct {
	Hash  string   `yaml:"password_hash"`
	Roles []string `yaml:"roles"`
}

// LoadUsers reads and checks a users file.
func LoadUsers(path string) (*Users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	var f struct {
		Users map[string]user `yaml:"users"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	if len(f.Users) == 0 {
		return nil, fmt.Errorf("users file %s: no users", path)
	}
	for name, u := range f.Users {
		if name == "" || !safeValue(name) {
			return nil, fmt.Errorf("users file %s: user name %q: printable, no spaces or '/', at most 128 bytes", path, name)
		}
		if _, err := parseHash(u.Hash); err != nil {
			return nil, fmt.Errorf("users file %s: user %q: %w", path, name, err)
		}
	}
	dummy, _ := HashPassword("not a password of anyone's")
	return &Users{byName: f.Users, dummy: user{Hash: dummy}, slots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2))}, nil
}

// Check verifies a name and password.
func (u *Users) Check(name, password string) (*Identity, error) {
	rec, known := u.byName[name]
	if !known {
		rec = u.dummy
	}
	h, _ := parseHash(rec.Hash)
	if u.slots != nil {
		u.slots <- struct{}{}
		defer func() { <-u.slots }()
	}
	if !h.verify(password) || !known {
		return nil, unauthenticated("unknown user or wrong password")
	}
	return &Identity{Subject: name, Roles: rec.Roles, Method: "users"}, nil
}

// HashPassword makes a bcrypt hash for a users file.
func HashPassword(password string) (string, error) {
	if len(password) > 72 {
		return "", errors.New("bcrypt takes passwords of at most 72 bytes")
	}
	b, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	return string(b), err
}

type passwordHash struct {
	bcrypt []byte
	// argon2id
	salt, key []byte
	time, mem uint32
	threads   uint8
}

func parseHash(s string) (passwordHash, error) {
	switch {
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		if _, err := bcrypt.Cost([]byte(s)); err != nil {
			return passwordHash{}, fmt.Errorf("password_hash: %v", err)
		}
		return passwordHash{bcrypt: []byte(s)}, nil
	case strings.HasPrefix(s, "$argon2id$"):
		var h passwordHash
		parts := strings.Split(s, "$")
		// "", "argon2id", "v=19", "m=...,t=...,p=...", salt, key
		if len(parts) != 6 || parts[2] != "v=19" {
			return h, errors.New("password_hash: argon2id hashes look like $argon2id$v=19$m=65536,t=3,p=2$SALT$KEY")
		}
		var p uint32
		if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &h.mem, &h.time, &p); err != nil || h.mem < 8 || h.mem > 4<<20 || h.time < 1 || h.time > 100 || p < 1 || p > 255 {
			return h, errors.New("password_hash: argon2id parameters must be m=<KiB up to 4 GiB>,t=<1-100>,p=<1-255>")
		}
		h.threads = uint8(p)
		var err1, err2 error
		h.salt, err1 = base64.RawStdEncoding.DecodeString(parts[4])
		h.key, err2 = base64.RawStdEncoding.DecodeString(parts[5])
		if err1 != nil || err2 != nil || len(h.key) < 16 || len(h.salt) < 8 {
			return h, errors.New("password_hash: argon2id salt or key is not unpadded base64 of a sensible length")
		}
		return h, nil
	}
	return passwordHash{}, errors.New("password_hash: not a bcrypt ($2a$/$2b$/$2y$) or argon2id ($argon2id$) hash; `wsbridge passwd` makes one")
}

func (h passwordHash) verify(password string) bool {
	if h.bcrypt != nil {
		return bcrypt.CompareHashAndPassword(h.bcrypt, []byte(password)) == nil
	}
	k := argon2.IDKey([]byte(password), h.salt, h.time, h.mem, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(k, h.key) == 1
}
