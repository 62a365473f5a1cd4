// Package authtest mints tokens and builds auth policies for tests: the
// worked example's shape (HS256; role reader may subscribe demo.*, role
// writer may also publish demo.*).
package authtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/keyring"
)

// Secret is the tests' HS256 secret; Audience and Issuer their claims.
const (
	Secret   = "test-secret-of-at-least-thirty-two-bytes"
	Audience = "wsbridge-test"
	Issuer   = "wsbridge-test-issuer"
)

// Claims are a token's claims; Token fills sub, roles, aud, iss and exp
// before applying them, so a test can override or delete (nil) any.
type Claims map[string]any

// Token signs an HS256 token for sub with roles, valid for ttl.
func Token(t testing.TB, sub string, roles []string, ttl time.Duration, extra Claims) string {
	t.Helper()
	c := jwt.MapClaims{"sub": sub, "roles": roles, "aud": Audience, "iss": Issuer,
		"exp": time.Now().Add(ttl).Unix(), "iat": time.Now().Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(Secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TokenWithKey signs with another secret: a wrong signature.
func TokenWithKey(t testing.TB, secret, sub string, roles []string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "roles": roles, "aud": Audience,
		"iss": Issuer, "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TokenAlgNone is an unsigned token (alg "none").
func TokenAlgNone(t testing.TB, sub string, roles []string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": sub, "roles": roles, "aud": Audience,
		"iss": Issuer, "exp": time.Now().Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Rules are the worked example's: reader subscribes demo.*, writer also
// publishes it.
func Rules(t testing.TB) []auth.Rule {
	t.Helper()
	p := func(s string) []auth.Pattern {
		pat, err := auth.ParsePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		return []auth.Pattern{pat}
	}
	return []auth.Rule{
		{Roles: []string{"reader", "writer"}, Subscribe: p("demo.*")},
		{Roles: []string{"writer"}, Publish: p("demo.*")},
	}
}

// Verifier checks the tests' tokens (exp required) with leeway.
func Verifier(t testing.TB, leeway time.Duration) *auth.JWT {
	t.Helper()
	v, err := auth.NewJWT(auth.JWTOptions{Algorithm: "HS256", Secret: []byte(Secret), Audience: Audience, Issuer: Issuer,
		RequireExp: true, Leeway: leeway})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// JWTPolicy is an HS256 policy with the example's rules and no leeway;
// mod adjusts the options before the policy is built.
func JWTPolicy(t testing.TB, mod func(*auth.Options)) *auth.Policy {
	t.Helper()
	o := auth.Options{Mode: auth.ModeJWT, JWT: Verifier(t, 0), Rules: Rules(t),
		Carriers: auth.Carriers{Header: true, Cookie: "wsbridge_token", Query: true, Login: true}}
	if mod != nil {
		mod(&o)
	}
	p, err := auth.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Lookup serves keyring entries from a map, as a keyring would.
func Lookup(entries map[string]keyring.Credential) func(string) (keyring.Credential, error) {
	return func(name string) (keyring.Credential, error) {
		c, ok := entries[name]
		if !ok {
			return keyring.Credential{}, keyring.ErrNoEntry
		}
		return c, nil
	}
}

// Users writes a users file of name -> {password, role} with bcrypt hashes
// and loads it.
func Users(t testing.TB, users map[string][2]string) *auth.Users {
	t.Helper()
	var b strings.Builder
	b.WriteString("users:\n")
	for name, u := range users {
		h, err := auth.HashPassword(u[0])
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "  %s:\n    password_hash: %q\n    roles: [%s]\n", name, h, u[1])
	}
	path := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := auth.LoadUsers(path, auth.HashLimits{})
	if err != nil {
		t.Fatal(err)
	}
	return loaded
}

// UsersPolicy is a users-mode policy with the example's rules.
func UsersPolicy(t testing.TB, users map[string][2]string) *auth.Policy {
	t.Helper()
	p, err := auth.New(auth.Options{Mode: auth.ModeUsers, Users: Users(t, users), Rules: Rules(t)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
