package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// HashLimits bound the password hashes a users file computes. Each costs
// tens to hundreds of milliseconds of CPU by design: logins must neither
// take the cores the relays need nor let one address make everyone else
// wait behind its hashes.
type HashLimits struct {
	// Concurrent is how many hashes run at once (for one users file).
	Concurrent int
	// PerClient is how many logins from one client address may hash or
	// wait for a slot at once; one more is refused at once (ErrBusy), so a
	// flood from one address holds at most this many places in the queue.
	PerClient int
	// Wait bounds how long a login waits for a slot before it is refused
	// (ErrBusy): past it the gateway is overloaded as a whole, and a quick
	// "retry shortly" serves a client better than a hung login.
	Wait time.Duration
}

// DefaultHashLimits: half the cores may hash (at least one); two logins at
// once per address, so a page that opens two connections is not refused;
// a login waits up to 2s for a slot, about ten bcrypt cost-12 hashes.
func DefaultHashLimits() HashLimits {
	return HashLimits{Concurrent: max(1, runtime.GOMAXPROCS(0)/2), PerClient: 2, Wait: 2 * time.Second}
}

// Users is a users file: names, password hashes (bcrypt or argon2id in
// PHC form) and roles.
//
//	users:
//	  alice:
//	    password_hash: "$2a$10$..."
//	    roles: [writer]
type Users struct {
	byName map[string]account
	// classes are the file's distinct hash algorithms and parameters, in a
	// fixed order, each with how many users have it. An unknown name is
	// checked against a hash of one class, so it costs what a real user's
	// check costs; see dummyFor.
	classes []hashClass
	users   uint64
	key     []byte // picks an unknown name's class; derived from the file

	limits HashLimits
	slots  chan struct{} // one per hash running
	mu     sync.Mutex
	busy   map[string]int // logins hashing or waiting for a slot, per client address
}

type user struct {
	Hash  string   `yaml:"password_hash"`
	Roles []string `yaml:"roles"`
}

type account struct {
	hash  passwordHash
	roles []string
}

type hashClass struct {
	params string       // algorithm and parameters, the class's identity
	dummy  passwordHash // a hash of the class, checked for unknown names
	users  uint64
}

// LoadUsers reads and checks a users file; zero fields of l take
// DefaultHashLimits.
func LoadUsers(path string, l HashLimits) (*Users, error) {
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
	d := DefaultHashLimits()
	if l.Concurrent <= 0 {
		l.Concurrent = d.Concurrent
	}
	if l.PerClient <= 0 {
		l.PerClient = d.PerClient
	}
	if l.Wait <= 0 {
		l.Wait = d.Wait
	}
	// The key is secret to whoever lacks the file (its salts are random)
	// and stays the same across restarts: were it drawn afresh, a name
	// whose timing changed after a restart would be an unknown one.
	key := sha256.Sum256(data)
	u := &Users{byName: make(map[string]account, len(f.Users)), key: key[:], limits: l,
		slots: make(chan struct{}, l.Concurrent), busy: map[string]int{}}
	byParams := map[string]*hashClass{}
	for name, rec := range f.Users {
		if name == "" || !safeValue(name) {
			return nil, fmt.Errorf("users file %s: user name %q: printable, no spaces or '/', at most 128 bytes", path, name)
		}
		h, err := parseHash(rec.Hash)
		if err != nil {
			return nil, fmt.Errorf("users file %s: user %q: %w", path, name, err)
		}
		u.byName[name] = account{hash: h, roles: rec.Roles}
		p := h.params()
		if byParams[p] == nil {
			// A real user's hash serves as the dummy: the same parameters
			// down to the key length, so the same work; Check refuses an
			// unknown name whatever the hash says.
			byParams[p] = &hashClass{params: p, dummy: h}
		}
		byParams[p].users++
		u.users++
	}
	for _, c := range byParams {
		u.classes = append(u.classes, *c)
	}
	sort.Slice(u.classes, func(i, j int) bool { return u.classes[i].params < u.classes[j].params })
	return u, nil
}

// Check verifies a name and password for a login from client (the client's
// address, which bounds the logins it may have in progress). It refuses
// with ErrBusy when that address, or the gateway, has too many at once.
//
// A check costs the same whether or not the name exists: an unknown name
// is hashed with the parameters of a class of the file's own hashes, one
// chosen by a keyed hash of the name in proportion to the users of each
// class. Its timing so looks like some user's, and the same each time it
// is tried. (Checking every unknown name against the costliest class
// would still tell apart the users whose hashes are cheaper.)
func (u *Users) Check(client, name, password string) (*Identity, error) {
	release, err := u.acquire(client)
	if err != nil {
		return nil, err
	}
	defer release()
	dummy := u.dummyFor(name) // for every name: known and unknown ones do the same work
	rec, known := u.byName[name]
	if !known {
		rec.hash = dummy
	}
	if !rec.hash.verify(password) || !known {
		return nil, unauthenticated("unknown user or wrong password")
	}
	return &Identity{Subject: name, Roles: rec.roles, Method: "users"}, nil
}

// dummyFor picks the hash an unknown name is checked against.
func (u *Users) dummyFor(name string) passwordHash {
	m := hmac.New(sha256.New, u.key)
	m.Write([]byte(name))
	n := binary.BigEndian.Uint64(m.Sum(nil)) % u.users
	for _, c := range u.classes {
		if n < c.users {
			return c.dummy
		}
		n -= c.users
	}
	return u.classes[len(u.classes)-1].dummy
}

// acquire takes one of client's login places and then a hash slot, or
// refuses with ErrBusy. The returned function gives both back.
func (u *Users) acquire(client string) (func(), error) {
	u.mu.Lock()
	if u.busy[client] >= u.limits.PerClient {
		u.mu.Unlock()
		return nil, busy(time.Second, "too many logins from this address at once; retry shortly")
	}
	u.busy[client]++
	u.mu.Unlock()
	leave := func() {
		u.mu.Lock()
		if u.busy[client]--; u.busy[client] <= 0 {
			delete(u.busy, client)
		}
		u.mu.Unlock()
	}
	select {
	case u.slots <- struct{}{}:
	default:
		t := time.NewTimer(u.limits.Wait)
		defer t.Stop()
		select {
		case u.slots <- struct{}{}:
		case <-t.C:
			leave()
			return nil, busy(u.limits.Wait, "the gateway is checking too many passwords at once; retry shortly")
		}
	}
	return func() { <-u.slots; leave() }, nil
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
	cost   int
	// argon2id
	salt, key []byte
	time, mem uint32
	threads   uint8
}

func parseHash(s string) (passwordHash, error) {
	switch {
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		cost, err := bcrypt.Cost([]byte(s))
		if err != nil {
			return passwordHash{}, fmt.Errorf("password_hash: %v", err)
		}
		return passwordHash{bcrypt: []byte(s), cost: cost}, nil
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

// params names what a check of h costs: its algorithm and parameters.
func (h passwordHash) params() string {
	if h.bcrypt != nil {
		return fmt.Sprintf("bcrypt cost=%d", h.cost)
	}
	return fmt.Sprintf("argon2id m=%d,t=%d,p=%d,len=%d", h.mem, h.time, h.threads, len(h.key))
}

func (h passwordHash) verify(password string) bool {
	if h.bcrypt != nil {
		return bcrypt.CompareHashAndPassword(h.bcrypt, []byte(password)) == nil
	}
	k := argon2.IDKey([]byte(password), h.salt, h.time, h.mem, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(k, h.key) == 1
}
