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
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// loadUsers writes a users file of name -> password_hash and loads it.
func loadUsers(t testing.TB, hashes map[string]string) *Users {
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
	u, err := LoadUsers(path)
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
func timed(u *Users, name, password string) (time.Duration, error) {
	start := time.Now()
	_, err := u.Check(name, password)
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
	})
	const samples = 5
	for _, c := range []struct{ name, user string }{
		{fmt.Sprintf("bcrypt cost %d", bcryptCost), "carol"},
		{"argon2id m=16MiB t=12", "dave"},
	} {
		t.Run(c.name, func(t *testing.T) {
			unknown := unknownNameLike(t, u, c.user)
			if _, err := u.Check(c.user, "warm-up"); !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("wrong password: %v", err)
			}
			var known, absent []time.Duration
			for i := range samples {
				pair := []string{c.user, unknown}
				if i%2 == 1 {
					pair[0], pair[1] = pair[1], pair[0]
				}
				for _, name := range pair {
					d, err := timed(u, name, "wrong-password")
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
	u := loadUsers(t, hashes)
	restarted := loadUsers(t, hashes)
	other := loadUsers(t, file())
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
