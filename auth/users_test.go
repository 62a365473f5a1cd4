package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Client addresses of the tests' logins.
const (
	clientA = "198.51.100.1"
	clientB = "198.51.100.2"
)

// loadUsers writes a users file of name -> password_hash and loads it.
func loadUsers(t testing.TB, hashes map[string]string, l HashLimits) *Users {
	t.Helper()
	var b strings.Builder
	b.WriteString("users:\n")
	for _, name := range slices.Sorted(maps.Keys(hashes)) { // the same users, the same file
		fmt.Fprintf(&b, "  %s:\n    password_hash: %q\n", name, hashes[name])
	}
	path := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := LoadUsers(path, l)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func bcryptHash(t testing.TB, password string, cost int) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func argon2Hash(password string, m, time uint32, p uint8) string {
	salt := []byte("sixteen-byte-slt")
	key := argon2.IDKey([]byte(password), salt, time, m, p, 32)
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", m, time, p,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// timed runs one check and returns how long it took and its error.
func timed(u *Users, client, name, password string) (time.Duration, error) {
	start := time.Now()
	_, err := u.Check(client, name, password)
	return time.Since(start), err
}

// TestUsersUnknownNamesCostWhatUsersCost: a name nobody has and a known
// name with a wrong password take the same time, for each kind of hash in
// a file that mixes them (bcrypt cost 12, argon2id), so timing does not
// tell which names exist. Medians of interleaved samples, in an order
// that alternates, keep a loaded machine's noise out of the ratio.
func TestUsersUnknownNamesCostWhatUsersCost(t *testing.T) {
	bcryptCost := 12
	if raceEnabled {
		bcryptCost = 8
	}
	u := loadUsers(t, map[string]string{
		"carol": bcryptHash(t, "carol-pw", bcryptCost),
		// compute-bound parameters: a larger m's first use is mostly page faults
		"dave": argon2Hash("dave-pw", 16<<10, 12, 1),
	}, HashLimits{})
	const samples = 5
	for _, c := range []struct{ name, user string }{
		{fmt.Sprintf("bcrypt cost %d", bcryptCost), "carol"},
		{"argon2id m=16MiB t=12", "dave"},
	} {
		t.Run(c.name, func(t *testing.T) {
			unknown := unknownNameLike(t, u, c.user)
			if _, err := u.Check(clientA, c.user, "warm-up"); !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("wrong password: %v", err)
			}
			var known, absent []time.Duration
			for i := range samples {
				pair := []string{c.user, unknown}
				if i%2 == 1 {
					pair[0], pair[1] = pair[1], pair[0]
				}
				for _, name := range pair {
					d, err := timed(u, clientA, name, "wrong-password")
					if !errors.Is(err, ErrUnauthenticated) || err.Error() != "unknown user or wrong password" {
						t.Fatalf("%s: %v", name, err)
					}
					if name == unknown {
						absent = append(absent, d)
					} else {
						known = append(known, d)
					}
				}
			}
			ratio := float64(median(absent)) / float64(median(known))
			t.Logf("unknown %q: median %v; %s with a wrong password: median %v; ratio %.2f",
				unknown, median(absent), c.user, median(known), ratio)
			if ratio < 0.7 || ratio > 1.5 {
				t.Errorf("unknown/known check time ratio %.2f, want within [0.7, 1.5]", ratio)
			}
		})
	}
}

// unknownNameLike finds a name not in u that is checked against a hash of
// the same class as user's.
func unknownNameLike(t *testing.T, u *Users, user string) string {
	t.Helper()
	want := u.byName[user].hash.params()
	for i := range 1000 {
		name := fmt.Sprintf("nobody-%d", i)
		if u.dummyFor(name).params() == want {
			return name
		}
	}
	t.Fatalf("no unknown name maps to %s", want)
	return ""
}

// TestUsersUnknownNamesSpreadLikeUsers: unknown names fall on the file's
// hash classes in proportion to their users, and each name on the same
// class every time, after a restart too (a name whose timing varied would
// be an unknown one); another file, with other salts, chooses otherwise.
func TestUsersUnknownNamesSpreadLikeUsers(t *testing.T) {
	file := func() map[string]string {
		hashes := map[string]string{"dave": argon2Hash("x", 64, 1, 1)}
		for i := range 3 {
			hashes[fmt.Sprint("user", i)] = bcryptHash(t, "x", bcrypt.MinCost)
		}
		return hashes
	}
	hashes := file()
	u := loadUsers(t, hashes, HashLimits{})
	restarted := loadUsers(t, hashes, HashLimits{})
	other := loadUsers(t, file(), HashLimits{})
	const names = 4000
	perClass := map[string]int{}
	differ := 0
	for i := range names {
		name := fmt.Sprint("nobody-", i)
		p := u.dummyFor(name).params()
		if u.dummyFor(name).params() != p || restarted.dummyFor(name).params() != p {
			t.Fatalf("%s: class changed between two checks or after a restart", name)
		}
		if other.dummyFor(name).params() != p {
			differ++
		}
		perClass[p]++
	}
	argon := perClass[u.byName["dave"].hash.params()]
	if argon < names/4-names/20 || argon > names/4+names/20 {
		t.Errorf("%d of %d unknown names checked as argon2id, want about a quarter: %v", argon, names, perClass)
	}
	if differ < names/4 {
		t.Errorf("a file with other salts chose alike for %d of %d names: the key does not come from the file", names-differ, names)
	}
}

// TestUsersLoginLimits: a login beyond an address's share is refused at
// once, and one that cannot get a hash slot within the wait is refused
// then; both say when to retry, and other addresses are unaffected.
func TestUsersLoginLimits(t *testing.T) {
	cases := []struct {
		name  string
		limit HashLimits
		hold  func(u *Users) func() // occupies what the case is about
		from  string
		want  error
		after time.Duration // the refusal takes at least this
	}{
		{"address at its limit", HashLimits{Concurrent: 4, PerClient: 2, Wait: time.Minute},
			func(u *Users) func() { u.busy[clientA] = 2; return func() { delete(u.busy, clientA) } },
			clientA, ErrBusy, 0},
		{"another address meanwhile", HashLimits{Concurrent: 4, PerClient: 2, Wait: time.Minute},
			func(u *Users) func() { u.busy[clientA] = 2; return func() { delete(u.busy, clientA) } },
			clientB, nil, 0},
		{"every slot taken past the wait", HashLimits{Concurrent: 1, PerClient: 2, Wait: 30 * time.Millisecond},
			func(u *Users) func() { u.slots <- struct{}{}; return func() { <-u.slots } },
			clientB, ErrBusy, 30 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := loadUsers(t, map[string]string{"erin": bcryptHash(t, "erin-pw", bcrypt.MinCost)}, c.limit)
			release := c.hold(u)
			d, err := timed(u, c.from, "erin", "erin-pw")
			release()
			if !errors.Is(err, c.want) && !(c.want == nil && err == nil) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.want == nil {
				return
			}
			var ae *Error
			if !errors.As(err, &ae) || ae.RetryAfter <= 0 {
				t.Errorf("refusal %v says not when to retry", err)
			}
			if d < c.after || d > c.after+time.Second {
				t.Errorf("refused after %v, want about %v", d, c.after)
			}
			if _, err := u.Check(c.from, "erin", "erin-pw"); err != nil {
				t.Errorf("once free again: %v", err)
			}
			if len(u.busy) != 0 || len(u.slots) != 0 {
				t.Errorf("places left taken: %v, %d slots", u.busy, len(u.slots))
			}
		})
	}
}

// TestUsersLoginFloodFromOneAddress: bad logins sent at once from one
// address do not hold up another address's login. Before the per-address
// limit they queued on the hash slots and one valid login waited for all
// of them; now most are refused at once and the valid one waits behind
// that address's share (limits.password_checks_per_ip) at most. Judged by
// the order in which checks finish, not by wall-clock time, which a loaded
// machine stretches.
func TestUsersLoginFloodFromOneAddress(t *testing.T) {
	cost := 10
	if raceEnabled {
		cost = 6
	}
	const perClient = 2
	u := loadUsers(t, map[string]string{"erin": bcryptHash(t, "erin-pw", cost)},
		HashLimits{Concurrent: 1, PerClient: perClient, Wait: time.Minute})
	single, err := timed(u, clientB, "erin", "erin-pw")
	if err != nil {
		t.Fatal(err)
	}

	// finished counts the flood's checks that hashed (a wrong password,
	// not a refusal) as each returns.
	var finished atomic.Int64
	const flood = 16
	errs := make(chan error, flood)
	var ready, done sync.WaitGroup
	ready.Add(flood)
	done.Add(flood)
	for range flood {
		go func() {
			defer done.Done()
			ready.Done()
			_, err := u.Check(clientA, "erin", "wrong")
			if errors.Is(err, ErrUnauthenticated) {
				finished.Add(1)
			}
			errs <- err
		}()
	}
	ready.Wait()
	before := finished.Load()
	d, err := timed(u, clientB, "erin", "erin-pw")
	waitedFor := finished.Load() - before
	done.Wait()
	close(errs)
	if err != nil {
		t.Fatalf("valid login from another address: %v", err)
	}
	refused := 0
	for err := range errs {
		switch {
		case errors.Is(err, ErrBusy):
			refused++
		case !errors.Is(err, ErrUnauthenticated):
			t.Errorf("bad login: %v", err)
		}
	}
	t.Logf("single login %v; during a flood of %d from one address %v after %d of the flood's checks; %d of the flood refused at once",
		single, flood, d, waitedFor, refused)
	if waitedFor > perClient {
		t.Errorf("the valid login finished after %d of the flood's checks, want at most %d (the address's share)", waitedFor, perClient)
	}
	if refused < flood/2 {
		t.Errorf("%d of %d concurrent logins from one address refused, want most", refused, flood)
	}
}

// A users file of the wrong shape is reported as file:line: key.path:
// reason, as the gateway's config is, each problem at once; never as a Go
// type, and never quoting a value that may be a password.
func TestUsersFileErrorsNameLineAndKey(t *testing.T) {
	h := bcryptHash(t, "pw", bcrypt.MinCost)
	tests := []struct {
		name, body string
		want       []string
	}{
		{"users key missing", fmt.Sprintf("alice:\n  password_hash: %q\n", h),
			[]string{"u.yaml:1: alice: unknown key: a users file maps users: to each user name's password_hash and roles"}},
		{"hash in place of the user", fmt.Sprintf("users:\n  alice: %q\n", h),
			[]string{"u.yaml:2: users.alice: expected a mapping with password_hash and roles, got a string"}},
		{"a list of users", "users:\n  - alice\n",
			[]string{"u.yaml:2: users: expected a mapping of user names, got a list"}},
		{"roles not a list", fmt.Sprintf("users:\n  alice:\n    password_hash: %q\n    roles: writer\n", h),
			[]string{"u.yaml:4: users.alice.roles: expected a list such as [reader, writer], got a string"}},
		{"password in place of its hash", "users:\n  alice:\n    password_hash: hunter2\n",
			[]string{"u.yaml:3: users.alice.password_hash: not a bcrypt ($2a$/$2b$/$2y$) or argon2id ($argon2id$) hash; `wsbridge passwd` makes one"}},
		{"every problem at once", fmt.Sprintf("users:\n  alice:\n    password: hunter2\n  bob:\n    password_hash: %q\n    role: [x]\n", h),
			[]string{"u.yaml:3: users.alice.password: unknown key (a user has password_hash and roles)",
				"u.yaml:2: users.alice: no password_hash (`wsbridge passwd` makes one)",
				"u.yaml:6: users.bob.role: unknown key"}},
		{"a user twice", fmt.Sprintf("users:\n  a: {password_hash: %q}\n  a: {password_hash: %q}\n", h, h),
			[]string{"u.yaml:3: users.a: defined again (first on line 2)"}},
		{"empty users", "users: {}\n", []string{"u.yaml:1: users: no users"}},
		{"empty file", "", []string{"u.yaml: no users"}},
		{"bad yaml", "users:\n  alice: [\n", []string{"u.yaml:2: did not find expected node content"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "u.yaml")
			if err := os.WriteFile(p, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadUsers(p, HashLimits{})
			if err == nil {
				t.Fatal("accepted")
			}
			msg := strings.ReplaceAll(err.Error(), p, "u.yaml")
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error\n%s\nlacks\n%s", msg, w)
				}
			}
			for _, never := range []string{"struct", "auth.", "hunter2"} {
				if strings.Contains(msg, never) {
					t.Errorf("error %q contains %q", msg, never)
				}
			}
		})
	}
}
