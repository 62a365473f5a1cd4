package auth

import (
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
	records, err := parseUsersFile(path, data)
	if err != nil {
		return nil, err
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
	u := &Users{byName: make(map[string]account, len(records)), key: key[:], limits: l,
		slots: make(chan struct{}, l.Concurrent), busy: map[string]int{}}
	byParams := map[string]*hashClass{}
	for _, rec := range records {
		h, _ := parseHash(rec.hash) // parseUsersFile checked it
		u.byName[rec.name] = account{hash: h, roles: rec.roles}
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

// userRecord is one user as the file has it.
type userRecord struct {
	name, hash string
	roles      []string
}

// parseUsersFile reads the shape of a users file,
//
//	users:
//	  NAME:
//	    password_hash: "..."
//	    roles: [ROLE, ...]
//
// and reports every departure from it as file:line: key.path: reason, as
// the gateway's config does, never as a Go type, and never quoting a
// value (a password pasted where its hash belongs stays unprinted).
func parseUsersFile(path string, data []byte) ([]userRecord, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if rest, ok := strings.CutPrefix(msg, "line "); ok {
			return nil, fmt.Errorf("%s:%s", path, rest) // "12: did not find expected key"
		}
		return nil, fmt.Errorf("%s: %s", path, msg)
	}
	var errs []error
	fail := func(n *yaml.Node, key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s: %s", path, n.Line, key, fmt.Sprintf(format, args...)))
	}
	const shape = "a users file maps users: to each user name's password_hash and roles"
	root := resolve(&doc)
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		root = resolve(doc.Content[0])
	}
	var users *yaml.Node
	switch {
	case root.Kind == 0 || len(doc.Content) == 0:
		return nil, fmt.Errorf("%s: no users: %s", path, shape)
	case root.Kind != yaml.MappingNode:
		fail(root, "(top)", "expected a mapping, got %s: %s", kindName(root), shape)
	default:
		for i := 0; i+1 < len(root.Content); i += 2 {
			k, v := root.Content[i], resolve(root.Content[i+1])
			if k.Value != "users" {
				fail(k, k.Value, "unknown key: %s", shape)
				continue
			}
			users = v
		}
	}
	if users == nil {
		if len(errs) == 0 {
			return nil, fmt.Errorf("%s: no users: %s", path, shape)
		}
		return nil, errors.Join(errs...)
	}
	if users.Kind != yaml.MappingNode {
		fail(users, "users", "expected a mapping of user names, got %s: %s", kindName(users), shape)
		return nil, errors.Join(errs...)
	}
	if len(users.Content) == 0 {
		fail(users, "users", "no users")
	}
	var records []userRecord
	seen := map[string]int{}
	for i := 0; i+1 < len(users.Content); i += 2 {
		k, v := users.Content[i], resolve(users.Content[i+1])
		name := k.Value
		key := "users." + name
		switch {
		case !safeValue(name):
			fail(k, "users", "user name %q: printable, no spaces, '/', '{' or '}', at most 128 bytes", name)
			continue
		case seen[name] > 0:
			fail(k, key, "defined again (first on line %d)", seen[name])
			continue
		}
		seen[name] = k.Line
		if v.Kind != yaml.MappingNode {
			fail(v, key, "expected a mapping with password_hash and roles, got %s", kindName(v))
			continue
		}
		rec := userRecord{name: name}
		hashLine := 0
		for j := 0; j+1 < len(v.Content); j += 2 {
			fk, fv := v.Content[j], resolve(v.Content[j+1])
			switch fk.Value {
			case "password_hash":
				hashLine = fk.Line
				if fv.Kind != yaml.ScalarNode || fv.Tag == "!!null" {
					fail(fv, key+".password_hash", "expected a string, got %s", kindName(fv))
					continue
				}
				if _, err := parseHash(fv.Value); err != nil {
					fail(fv, key+".password_hash", "%s", strings.TrimPrefix(err.Error(), "password_hash: "))
					continue
				}
				rec.hash = fv.Value
			case "roles":
				if fv.Kind != yaml.SequenceNode {
					fail(fv, key+".roles", "expected a list such as [reader, writer], got %s", kindName(fv))
					continue
				}
				for r, item := range fv.Content {
					item = resolve(item)
					if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
						fail(item, fmt.Sprintf("%s.roles.%d", key, r), "expected a role name, got %s", kindName(item))
						continue
					}
					rec.roles = append(rec.roles, item.Value)
				}
			default:
				fail(fk, key+"."+fk.Value, "unknown key (a user has password_hash and roles)")
			}
		}
		if hashLine == 0 {
			fail(k, key, "no password_hash (`wsbridge passwd` makes one)")
		}
		if rec.hash != "" {
			records = append(records, rec)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return records, nil
}

// resolve follows an alias (*name) to what it stands for.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// kindName names what a node holds, for "expected ..., got ...".
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "nothing"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "true or false"
		}
		return "a string"
	}
	return "nothing"
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
