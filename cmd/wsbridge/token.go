package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/wsbridge/wsbridge/auth"
)

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

var tokenCmd = &command{
	name: "token", args: "-config FILE -auth POLICY -sub SUBJECT [-role R]... [-ttl 1h] [-publish P]... [-subscribe P]... [-key PRIVATE.pem] [-kid ID]",
	summary: "mint a JWT that a jwt auth policy of the config accepts",
	detail: `It signs with the policy's HS256 secret, or with -key for RS256/ES256:
  wsbridge token -config testdata/jwt.yaml -auth demo -sub rita -role reader`,
	setup: func(fs *flag.FlagSet) runFunc {
		var o tokenOptions
		fs.StringVar(&o.config, "config", "", "the YAML config `FILE` whose auth policy the token is for (required)")
		fs.StringVar(&o.policy, "auth", "", "the `POLICY` (a name under auth: in the config) the token is for (required)")
		fs.StringVar(&o.sub, "sub", "", "the `SUBJECT`: who the token speaks for (required)")
		fs.Var(&o.roles, "role", "a `ROLE` (repeatable)")
		fs.Var(&o.pub, "publish", "a destination `PATTERN` granted in the token for publishing (repeatable)")
		fs.Var(&o.subs, "subscribe", "a destination `PATTERN` granted in the token for subscribing (repeatable)")
		fs.DurationVar(&o.ttl, "ttl", time.Hour, "how long the token is valid")
		fs.StringVar(&o.keyFile, "key", "", "PEM private key `FILE` for RS256/ES256 policies")
		fs.StringVar(&o.kid, "kid", "", "key `ID` for the token header (JWKS)")
		return func(_ context.Context, e *env, _ []string) error { return mintToken(o, e.stdout) }
	},
}

// tokenOptions are token's flags.
type tokenOptions struct {
	config, policy, sub string
	roles, pub, subs    stringList
	ttl                 time.Duration
	keyFile, kid        string
}

// mintToken mints a JWT that the named auth policy accepts, signed with
// its HS256 secret or with -key (RS256/ES256).
func mintToken(o tokenOptions, stdout io.Writer) error {
	if o.config == "" {
		return &usageError{cmd: "token", err: errors.New("token: -config FILE is required: the token is signed with the key of an auth policy (mode: jwt) in that config, e.g. -config testdata/jwt.yaml -auth demo")}
	}
	if o.policy == "" || o.sub == "" {
		return &usageError{cmd: "token", err: errors.New("token: -auth POLICY and -sub SUBJECT are required")}
	}
	if o.ttl <= 0 {
		return &usageError{cmd: "token", err: errors.New("token: -ttl must be positive")}
	}
	cfg, err := loadConfig(o.config)
	if err != nil {
		return err
	}
	a, ok := cfg.Auth[o.policy]
	if !ok || a.Mode != "jwt" {
		var have []string
		for _, name := range sortedKeys(cfg.Auth) {
			if cfg.Auth[name].Mode == "jwt" {
				have = append(have, name)
			}
		}
		list := "it has none"
		if len(have) > 0 {
			list = "it has " + strings.Join(have, ", ")
		}
		return fmt.Errorf("token: %s has no jwt auth policy %q (%s)", o.config, o.policy, list)
	}
	now := time.Now()
	claims := jwt.MapClaims{"sub": o.sub, "iat": now.Unix(), "exp": now.Add(o.ttl).Unix()}
	if len(o.roles) > 0 {
		rc := a.JWT.RolesClaim
		if rc == "" {
			rc = "roles"
		}
		claims[rc] = []string(o.roles)
	}
	if len(o.pub)+len(o.subs) > 0 {
		for _, p := range append(append([]string(nil), o.pub...), o.subs...) {
			if _, err := auth.ParsePattern(p); err != nil {
				return fmt.Errorf("token: %w", err)
			}
		}
		gc := a.JWT.GrantsClaim
		if gc == "" {
			gc = "wsbridge"
		}
		claims[gc] = map[string][]string{"publish": o.pub, "subscribe": o.subs}
	}
	if a.JWT.Audience != "" {
		claims["aud"] = a.JWT.Audience
	}
	if a.JWT.Issuer != "" {
		claims["iss"] = a.JWT.Issuer
	}
	var method jwt.SigningMethod
	var key any
	switch a.JWT.Algorithm {
	case "HS256":
		if key, err = cfg.jwtSecret(o.policy); err != nil {
			return fmt.Errorf("token: %w", err)
		}
		method = jwt.SigningMethodHS256
	case "RS256", "ES256":
		if o.keyFile == "" {
			return fmt.Errorf("token: auth %q uses %s: give its private key with -key FILE", o.policy, a.JWT.Algorithm)
		}
		if key, err = privateKey(o.keyFile, a.JWT.Algorithm); err != nil {
			return fmt.Errorf("token: %w", err)
		}
		method = jwt.GetSigningMethod(a.JWT.Algorithm)
	}
	t := jwt.NewWithClaims(method, claims)
	if o.kid != "" {
		t.Header["kid"] = o.kid
	}
	s, err := t.SignedString(key)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	fmt.Fprintln(stdout, s)
	return nil
}

func privateKey(path, alg string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s is not PEM", path)
	}
	var k any
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s: PEM block %q is not a private key", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		if alg == "RS256" {
			return k, nil
		}
	case *ecdsa.PrivateKey:
		if alg == "ES256" {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%s is not a %s key", path, alg)
}

var passwdCmd = &command{
	name: "passwd", args: "",
	summary: "print a bcrypt password_hash for a users file",
	detail: `At a terminal the password is prompted for, twice, with echo off; otherwise
it is read as one line from standard input:
  wsbridge passwd <<< "$PASSWORD"
The output is a line to paste under a user in a users file (see testdata/users.yaml).`,
	setup: func(*flag.FlagSet) runFunc {
		return func(_ context.Context, e *env, _ []string) error {
			pw, err := readPassword(e.stdin, e.stderr, "Password", true)
			if err != nil {
				return fmt.Errorf("passwd: %w", err)
			}
			h, err := auth.HashPassword(pw)
			if err != nil {
				return fmt.Errorf("passwd: %w", err)
			}
			out, _ := json.Marshal(h) // quoted, ready for YAML
			fmt.Fprintf(e.stdout, "password_hash: %s\n", out)
			return nil
		}
	},
}
