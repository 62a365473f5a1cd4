package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/wsbridge/wsbridge/keyring"
	"golang.org/x/crypto/argon2"
)

func TestPatternCovers(t *testing.T) {
	topic := func(n string) Dest { return Dest{Kind: Topic, Name: n} }
	cases := []struct {
		pattern string
		dest    Dest
		want    bool
	}{
		{"demo.*", topic("demo.x"), true},
		{"demo.*", topic("demo/x"), true}, // MQTT spelling of the same topic
		{"demo.*", topic("demo.x.y"), false},
		{"demo.*", topic("demo"), false},
		{"demo.*", topic("demo..x"), false},
		{"demo.*", topic("other.x"), false},
		{"demo.*", topic("demo.+"), true}, // an MQTT filter within the pattern
		{"demo.*", topic("demo.*"), true},
		{"demo.*", topic("demo/#"), false}, // the filter reaches deeper than the pattern
		{"demo.*", topic("#"), false},
		{"demo.#", topic("demo/#"), true},
		{"demo.#", topic("demo"), true},
		{"demo.#", topic("demo.a.b.c"), true},
		{"demo.>", topic("demo"), false},
		{"demo.>", topic("demo.a.b"), true},
		{"demo.>", topic("demo.#"), false}, // # may match zero segments, > may not
		{"demo.>", topic("demo.*.#"), true},
		{"demo.x", topic("demo.x"), true},
		{"demo.x", topic("demo.y"), false},
		{"*.x", topic("+/x"), true},
		// $ names are covered only by patterns that spell out their first
		// segment, as MQTT's wildcards do not match them (MQTT-4.7.2-1).
		{"#", topic("$SYS/#"), false},
		{"#", topic("$SYS/broker/version"), false},
		{">", topic("$CONTROL/dynamic-security/v1"), false},
		{"*.#", topic("$share/g/demo/x"), false},
		{"+.x", topic("$x/x"), false},
		{"#", topic("#"), true}, // an MQTT # does not match $ topics either
		{"#", topic("+/x"), true},
		{"#", topic("a/$b"), true}, // only the first segment is the broker's
		{"$SYS.#", topic("$SYS/broker/version"), true},
		{"$share.workers.demo.*", topic("$share/workers/demo/x"), true},
		{"$share.*.demo.*", topic("$share/any/demo/x"), true},
		{"$share.workers.demo.*", topic("$share/others/demo/x"), false},
		{"demo.*", Dest{Kind: Queue, Name: "demo.x"}, false},
		{"queue:jobs", Dest{Kind: Queue, Name: "jobs"}, true},
		{"queue:jobs", topic("jobs"), false},
		{"queue:jobs.*", Dest{Kind: Queue, Name: "jobs.a"}, true},
		{"exchange:logs:app.#", Dest{Kind: Exchange, Exchange: "logs", Name: "app.err"}, true},
		{"exchange:logs:app.#", Dest{Kind: Exchange, Exchange: "other", Name: "app.err"}, false},
		{"exchange:*:#", Dest{Kind: Exchange, Exchange: "other", Name: "x"}, true},
	}
	for _, c := range cases {
		t.Run(c.pattern+"_"+c.dest.String(), func(t *testing.T) {
			p, err := ParsePattern(c.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Covers(c.dest); got != c.want {
				t.Errorf("Covers = %v, want %v", got, c.want)
			}
		})
	}
	for _, bad := range []string{"", "demo.#.x", "exchange:logs", "exchange::x", "queue:"} {
		if _, err := ParsePattern(bad); err == nil {
			t.Errorf("ParsePattern(%q) accepted", bad)
		}
	}
}

func mustPatterns(t *testing.T, ss ...string) []Pattern {
	t.Helper()
	var ps []Pattern
	for _, s := range ss {
		p, err := ParsePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func TestAllowByRoleSubjectAndGrants(t *testing.T) {
	p, err := New(Options{Mode: ModeUsers, Users: &Users{}, Rules: []Rule{
		{Roles: []string{"reader", "writer"}, Subscribe: mustPatterns(t, "demo.*")},
		{Roles: []string{"writer"}, Publish: mustPatterns(t, "demo.*")},
		{Subjects: []string{"carol"}, Publish: mustPatterns(t, "carol.#")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	reader := &Identity{Subject: "rita", Roles: []string{"reader"}}
	writer := &Identity{Subject: "will", Roles: []string{"writer"}}
	carol := &Identity{Subject: "carol"}
	granted := &Identity{Subject: "gina", Grants: &Grants{Publish: mustPatterns(t, "gina.x")}}
	d := func(n string) Dest { return Dest{Kind: Topic, Name: n} }
	cases := []struct {
		id   *Identity
		act  Action
		dest Dest
		want bool
	}{
		{reader, Subscribe, d("demo.a"), true},
		{reader, Publish, d("demo.a"), false},
		{writer, Publish, d("demo.a"), true},
		{writer, Subscribe, d("demo/+"), true},
		{writer, Subscribe, d("demo/#"), false},
		{carol, Publish, d("carol.a.b"), true},
		{carol, Subscribe, d("demo.a"), false},
		{granted, Publish, d("gina.x"), true},
		{granted, Publish, d("demo.a"), false},
		{reader, Subscribe, Dest{Kind: Private, Name: "amq.gen-1"}, true},
	}
	for _, c := range cases {
		err := p.Allow(c.id, c.act, c.dest)
		if (err == nil) != c.want {
			t.Errorf("%s %s %s: err=%v, want allowed=%v", c.id, c.act, c.dest, err, c.want)
		}
		if err != nil && !errors.Is(err, ErrForbidden) {
			t.Errorf("denial is not ErrForbidden: %v", err)
		}
	}

	// Anonymous clients are held to rules that name no role or subject.
	public, _ := New(Options{Mode: ModeNone, Rules: []Rule{{Subscribe: mustPatterns(t, "public.*")}}})
	if err := public.Allow(Anonymous, Subscribe, d("public.news")); err != nil {
		t.Errorf("anonymous, public topic: %v", err)
	}
	if err := public.Allow(Anonymous, Subscribe, d("secret.news")); err == nil {
		t.Error("anonymous client allowed outside the public rule")
	}

	// No rules and no grants: the route is open to every identity.
	open, _ := New(Options{Mode: ModeNone})
	if err := open.Allow(Anonymous, Publish, d("anything")); err != nil {
		t.Errorf("open route: %v", err)
	}
	// But a token with grants is held to them even there.
	if err := open.Allow(granted, Publish, d("demo.a")); err == nil {
		t.Error("grants in a token were ignored on a route without rules")
	}
}

func TestCredentialTemplates(t *testing.T) {
	entries := map[string]string{"user/alice": "a", "role/writer": "w", "fixed": "f"}
	lookup := func(name string) (keyring.Credential, error) {
		if pw, ok := entries[name]; ok {
			return keyring.Credential{Username: name, Password: keyring.NewSecret(pw)}, nil
		}
		return keyring.Credential{}, keyring.ErrNoEntry
	}
	cases := []struct {
		template string
		id       *Identity
		want     string // "" = refused
	}{
		{"user/{sub}", &Identity{Subject: "alice"}, "user/alice"},
		{"user/{sub}", &Identity{Subject: "bob"}, ""},
		{"user/{sub}", &Identity{Subject: "../alice"}, ""},
		{"user/{sub}", &Identity{Subject: "x/../alice"}, ""},
		{"role/{role}", &Identity{Subject: "z", Roles: []string{"nobody", "writer"}}, "role/writer"},
		{"role/{role}", &Identity{Subject: "z", Roles: []string{"reader"}}, ""},
		{"role/{role}", &Identity{Subject: "z"}, ""},
		{"fixed", &Identity{Subject: "z"}, "fixed"},
	}
	for _, c := range cases {
		p, err := New(Options{Mode: ModeUsers, Users: &Users{}, Credential: c.template, Lookup: lookup})
		if err != nil {
			t.Fatal(err)
		}
		cred, entry, err := p.Credential(c.id)
		switch {
		case c.want == "" && (err == nil || !errors.Is(err, ErrForbidden)):
			t.Errorf("%s for %s: got %v, %v; want refused", c.template, c.id, cred, err)
		case c.want != "" && (err != nil || cred.Username != c.want || entry != c.want):
			t.Errorf("%s for %s: got %v (entry %q), %v; want %s", c.template, c.id, cred, entry, err, c.want)
		}
	}
	for _, bad := range []string{"user/{name}", "user/{sub", "{role}/{role}"} {
		if _, err := New(Options{Mode: ModeUsers, Users: &Users{}, Credential: bad, Lookup: lookup}); err == nil {
			t.Errorf("template %q accepted", bad)
		}
	}
	if _, err := New(Options{Mode: ModeNone, Credential: "user/{sub}", Lookup: lookup}); err == nil {
		t.Error("a {sub} template on an anonymous route was accepted")
	}
}

var hsSecret = []byte("0123456789abcdef0123456789abcdef")

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWTVerify(t *testing.T) {
	now := time.Now()
	base := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "alice", "roles": []string{"writer"}, "aud": "wsbridge", "iss": "test",
			"exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := base()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	v, err := NewJWT(JWTOptions{Algorithm: "HS256", Secret: hsSecret, Audience: "wsbridge", Issuer: "test", RequireExp: true})
	if err != nil {
		t.Fatal(err)
	}
	good := sign(t, jwt.SigningMethodHS256, hsSecret, base(), "")
	id, err := v.Verify(good)
	if err != nil || id.Subject != "alice" || len(id.Roles) != 1 || id.Roles[0] != "writer" || id.Expires.IsZero() {
		t.Fatalf("good token: %+v, %v", id, err)
	}
	none := func(c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	parts := strings.Split(good, ".")
	cases := []struct {
		name, token, want string
	}{
		{"wrong signature", sign(t, jwt.SigningMethodHS256, []byte("another secret of thirty-two bytes!"), base(), ""), "signature is invalid"},
		{"tampered payload", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"root","exp":9999999999,"aud":"wsbridge","iss":"test"}`)) + "." + parts[2], "signature is invalid"},
		{"expired", sign(t, jwt.SigningMethodHS256, hsSecret, with("exp", now.Add(-time.Minute).Unix()), ""), "expired"},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, hsSecret, with("nbf", now.Add(time.Hour).Unix()), ""), "not valid yet"},
		{"wrong audience", sign(t, jwt.SigningMethodHS256, hsSecret, with("aud", "someone-else"), ""), "audience"},
		{"no audience", sign(t, jwt.SigningMethodHS256, hsSecret, with("aud", nil), ""), "no aud claim"},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, hsSecret, with("iss", "mallory"), ""), "issuer"},
		{"no exp", sign(t, jwt.SigningMethodHS256, hsSecret, with("exp", nil), ""), "no exp"},
		{"no sub", sign(t, jwt.SigningMethodHS256, hsSecret, with("sub", nil), ""), "no sub"},
		{"alg none", none(base()), "not signed with HS256"},
		{"alg RS256 on an HS256 route", sign(t, jwt.SigningMethodRS256, rsaKey, base(), ""), "not signed with HS256"},
		{"garbage", "not.a.token", "malformed"},
		{"newline in sub", sign(t, jwt.SigningMethodHS256, hsSecret, with("sub", "alice\nlogin:admin"), ""), "control characters"},
		{"roles not strings", sign(t, jwt.SigningMethodHS256, hsSecret, with("roles", []int{1}), ""), "roles"},
		{"bad grants", sign(t, jwt.SigningMethodHS256, hsSecret, with("wsbridge", map[string]any{"publish": []string{"a.#.b"}}), ""), "wsbridge"},
		{"too long", strings.Repeat("a", 9000), "longer than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, err := v.Verify(c.token)
			if err == nil {
				t.Fatalf("accepted: %+v", id)
			}
			if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want ErrUnauthenticated mentioning %q", err, c.want)
			}
			if strings.Contains(err.Error(), c.token) {
				t.Fatal("the error message echoes the token")
			}
		})
	}

	t.Run("grants claim", func(t *testing.T) {
		tok := sign(t, jwt.SigningMethodHS256, hsSecret, with("wsbridge", map[string]any{"publish": []string{"gina.*"}, "subscribe": "demo.#"}), "")
		id, err := v.Verify(tok)
		if err != nil || id.Grants == nil || len(id.Grants.Publish) != 1 || len(id.Grants.Subscribe) != 1 {
			t.Fatalf("%+v, %v", id, err)
		}
	})
	t.Run("leeway", func(t *testing.T) {
		lv, _ := NewJWT(JWTOptions{Algorithm: "HS256", Secret: hsSecret, Leeway: time.Minute})
		if _, err := lv.Verify(sign(t, jwt.SigningMethodHS256, hsSecret, with("exp", now.Add(-30*time.Second).Unix()), "")); err != nil {
			t.Fatalf("30 s past exp with 1 min leeway: %v", err)
		}
	})
}

func TestJWTPublicKeys(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	claims := jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(time.Hour).Unix()}
	pemOf := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	b64 := func(i *big.Int) string { return base64.RawURLEncoding.EncodeToString(i.Bytes()) }
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "r1", "use": "sig", "n": b64(rsaKey.N), "e": b64(big.NewInt(int64(rsaKey.E)))},
		{"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64(ecKey.X), "y": b64(ecKey.Y)},
	}})

	rs, err := NewJWT(JWTOptions{Algorithm: "RS256", PublicKeyPEM: pemOf(&rsaKey.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := rs.Verify(sign(t, jwt.SigningMethodRS256, rsaKey, claims, "")); err != nil || id.Subject != "bob" {
		t.Errorf("RS256 with PEM: %v", err)
	}
	// An HS256 token signed with the public key as the secret: the classic
	// algorithm-confusion attack.
	if _, err := rs.Verify(sign(t, jwt.SigningMethodHS256, pemOf(&rsaKey.PublicKey), claims, "")); err == nil {
		t.Error("RS256 verifier accepted an HS256 token keyed with the public key")
	}

	es, err := NewJWT(JWTOptions{Algorithm: "ES256", PublicKeyPEM: pemOf(&ecKey.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := es.Verify(sign(t, jwt.SigningMethodES256, ecKey, claims, "")); err != nil {
		t.Errorf("ES256 with PEM: %v", err)
	}
	if _, err := es.Verify(sign(t, jwt.SigningMethodES256, otherEC, claims, "")); err == nil {
		t.Error("ES256 accepted another key's signature")
	}

	esSet, err := NewJWT(JWTOptions{Algorithm: "ES256", JWKS: jwks})
	if err == nil {
		t.Fatal("a JWKS with an RSA key was accepted for ES256")
	}
	rsSet, err := NewJWT(JWTOptions{Algorithm: "RS256", JWKS: mustJSON(t, map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "r1", "n": b64(rsaKey.N), "e": b64(big.NewInt(int64(rsaKey.E)))}}})})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rsSet.Verify(sign(t, jwt.SigningMethodRS256, rsaKey, claims, "r1")); err != nil {
		t.Errorf("RS256 with JWKS kid r1: %v", err)
	}
	if _, err := rsSet.Verify(sign(t, jwt.SigningMethodRS256, rsaKey, claims, "r2")); err == nil || !strings.Contains(err.Error(), `no key with id "r2"`) {
		t.Errorf("unknown kid: %v", err)
	}
	esSet, err = NewJWT(JWTOptions{Algorithm: "ES256", JWKS: mustJSON(t, map[string]any{"keys": []map[string]string{
		{"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64(ecKey.X), "y": b64(ecKey.Y)}}})})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := esSet.Verify(sign(t, jwt.SigningMethodES256, ecKey, claims, "e1")); err != nil {
		t.Errorf("ES256 with JWKS: %v", err)
	}

	for name, o := range map[string]JWTOptions{
		"short secret":      {Algorithm: "HS256", Secret: []byte("short")},
		"no key":            {Algorithm: "RS256"},
		"ec key for RS256":  {Algorithm: "RS256", PublicKeyPEM: pemOf(&ecKey.PublicKey)},
		"secret for ES256":  {Algorithm: "ES256", Secret: hsSecret},
		"unknown algorithm": {Algorithm: "none", Secret: hsSecret},
		"off-curve point": {Algorithm: "ES256", JWKS: mustJSON(t, map[string]any{"keys": []map[string]string{
			{"kty": "EC", "crv": "P-256", "x": b64(big.NewInt(1)), "y": b64(big.NewInt(2))}}})},
	} {
		if _, err := NewJWT(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUsersFile(t *testing.T) {
	bc, err := HashPassword("alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	salt := []byte("saltsaltsalt")
	key := argon2.IDKey([]byte("bob-pw"), salt, 1, 64, 1, 32)
	ar := fmt.Sprintf("$argon2id$v=19$m=64,t=1,p=1$%s$%s", base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
	path := filepath.Join(t.TempDir(), "users.yaml")
	os.WriteFile(path, []byte(fmt.Sprintf("users:\n  alice:\n    password_hash: %q\n    roles: [writer]\n  bob:\n    password_hash: %q\n", bc, ar)), 0o600)
	u, err := LoadUsers(path, HashLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := u.Check("198.51.100.1", "alice", "alice-pw"); err != nil || id.Subject != "alice" || id.Roles[0] != "writer" {
		t.Errorf("alice (bcrypt): %+v %v", id, err)
	}
	if _, err := u.Check("198.51.100.1", "bob", "bob-pw"); err != nil {
		t.Errorf("bob (argon2id): %v", err)
	}
	for _, c := range [][2]string{{"alice", "wrong"}, {"bob", "alice-pw"}, {"mallory", "alice-pw"}, {"", ""}} {
		_, err := u.Check("198.51.100.1", c[0], c[1])
		if err == nil || !errors.Is(err, ErrUnauthenticated) || err.Error() != "unknown user or wrong password" {
			t.Errorf("%q/%q: %v", c[0], c[1], err)
		}
	}
	for name, body := range map[string]string{
		"plain password": "users:\n  a:\n    password_hash: hunter2\n",
		"unknown key":    "users:\n  a:\n    password: x\n",
		"empty":          "users: {}\n",
		"bad name":       fmt.Sprintf("users:\n  \"a/b\":\n    password_hash: %q\n", bc),
	} {
		p := filepath.Join(t.TempDir(), "u.yaml")
		os.WriteFile(p, []byte(body), 0o600)
		if _, err := LoadUsers(p, HashLimits{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFromRequestCarriers(t *testing.T) {
	v, _ := NewJWT(JWTOptions{Algorithm: "HS256", Secret: hsSecret})
	tok := sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"sub": "alice"}, "")
	all := Carriers{Header: true, Cookie: "wsb", Query: true, Login: true}
	req := func(mut func(*http.Request)) *http.Request {
		r := httptest.NewRequest("GET", "/stomp", nil)
		mut(r)
		return r
	}
	header := req(func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) })
	cookie := req(func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "wsb", Value: tok}) })
	query := httptest.NewRequest("GET", "/stomp?access_token="+tok, nil)
	bare := req(func(*http.Request) {})
	cases := []struct {
		name     string
		carriers Carriers
		r        *http.Request
		want     string // subject, "" = no identity yet, "!" = error
	}{
		{"header", all, header, "alice"},
		{"cookie", all, cookie, "alice"},
		{"query", all, query, "alice"},
		{"nothing, login may follow", all, bare, ""},
		{"header not accepted", Carriers{Query: true}, header, ""},
		{"cookie not accepted", Carriers{Header: true}, cookie, ""},
		{"query not accepted", Carriers{Header: true}, query, ""},
		{"basic scheme", all, req(func(r *http.Request) { r.SetBasicAuth("a", "b") }), "!"},
		{"bad token", all, req(func(r *http.Request) { r.Header.Set("Authorization", "Bearer x.y.z") }), "!"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := New(Options{Mode: ModeJWT, JWT: v, Carriers: c.carriers})
			if err != nil {
				t.Fatal(err)
			}
			id, err := p.FromRequest(c.r, "198.51.100.1")
			switch {
			case c.want == "!" && err == nil:
				t.Fatalf("accepted: %+v", id)
			case c.want == "" && (err != nil || id != nil):
				t.Fatalf("got %+v, %v; want nothing yet", id, err)
			case c.want != "" && c.want != "!" && (err != nil || id.Subject != c.want):
				t.Fatalf("got %+v, %v", id, err)
			}
		})
	}
	p, _ := New(Options{Mode: ModeJWT, JWT: v, Carriers: Carriers{Login: true}})
	if id, err := p.FromLogin("198.51.100.1", "ignored", tok); err != nil || id.Subject != "alice" {
		t.Errorf("token in the login's password: %+v %v", id, err)
	}
	if _, err := p.FromLogin("198.51.100.1", "alice", ""); err == nil {
		t.Error("empty password accepted as a token")
	}
	noLogin, _ := New(Options{Mode: ModeJWT, JWT: v, Carriers: Carriers{Header: true}})
	if _, err := noLogin.FromLogin("198.51.100.1", "", tok); err == nil {
		t.Error("a token in the login was accepted where only the header is a carrier")
	}
}

// BenchmarkVerifyHS256 is the per-connection cost of a token check.
func BenchmarkVerifyHS256(b *testing.B) {
	v, _ := NewJWT(JWTOptions{Algorithm: "HS256", Secret: hsSecret, Audience: "wsbridge", RequireExp: true})
	tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "roles": []string{"writer"},
		"aud": "wsbridge", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(hsSecret)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
}

// BenchmarkAllow is an ACL check of a destination: what a client
// pays on its first SEND to a destination (later ones hit the cache).
func BenchmarkAllow(b *testing.B) {
	pats := func(ss ...string) []Pattern {
		var out []Pattern
		for _, s := range ss {
			p, _ := ParsePattern(s)
			out = append(out, p)
		}
		return out
	}
	p, _ := New(Options{Mode: ModeNone, Rules: []Rule{{Publish: pats("demo.*", "queue:jobs", "other.#")}}})
	d := Dest{Kind: Topic, Name: "other.a.b.c"}
	b.ReportAllocs()
	for b.Loop() {
		if p.Allow(Anonymous, Publish, d) != nil {
			b.Fatal("denied")
		}
	}
}

// TestEndsAtMatchesAdmission: a connection ends at exp + leeway + grace,
// the moment the verifier starts refusing the same token (plus grace), so
// a token is never admitted only to be ended at once.
func TestEndsAtMatchesAdmission(t *testing.T) {
	exp := time.Unix(time.Now().Unix(), 0) // exp has whole seconds
	tok := sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"sub": "alice", "exp": exp.Unix()}, "")
	cases := []struct {
		name          string
		leeway, grace time.Duration
	}{
		{"no leeway, no grace", 0, 0},
		{"leeway", 30 * time.Second, 0},
		{"leeway and grace", 30 * time.Second, 10 * time.Second},
		{"grace only", 0, 10 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			policy := func(now time.Time) *Policy {
				v, err := NewJWT(JWTOptions{Algorithm: "HS256", Secret: hsSecret, Leeway: c.leeway, Now: func() time.Time { return now }})
				if err != nil {
					t.Fatal(err)
				}
				p, err := New(Options{Mode: ModeJWT, JWT: v, Carriers: Carriers{Login: true}, ExpiryGrace: c.grace})
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			refusedFrom := exp.Add(c.leeway)
			p := policy(refusedFrom.Add(-time.Millisecond))
			id, err := p.FromLogin("", "", tok)
			if err != nil {
				t.Fatalf("just before exp + leeway: %v", err)
			}
			if got, want := p.EndsAt(id), refusedFrom.Add(c.grace); !got.Equal(want) {
				t.Fatalf("EndsAt %s, want exp + leeway + grace = %s", got, want)
			}
			if _, err := policy(refusedFrom).FromLogin("", "", tok); !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("at exp + leeway: %v, want refused", err)
			}
		})
	}
	t.Run("identities that do not expire", func(t *testing.T) {
		anon, err := New(Options{Mode: ModeNone})
		if err != nil {
			t.Fatal(err)
		}
		var none *Policy
		for _, end := range []time.Time{anon.EndsAt(Anonymous), none.EndsAt(Anonymous), anon.EndsAt(nil)} {
			if !end.IsZero() {
				t.Fatalf("EndsAt %s, want zero (never)", end)
			}
		}
	})
}
