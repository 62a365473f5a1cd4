package main

import (
	"bufio"
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

// tokenCommand runs `wsbridge token`: it mints a JWT that the named auth
// policy accepts, signed with its HS256 secret or with -key (RS256/ES256).
func tokenCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var cf commonFlags
	cf.register(fs)
	policy := fs.String("auth", "", "the auth policy (under auth: in the config) the token is for")
	sub := fs.String("sub", "", "the subject: who the token speaks for")
	var roles, pub, subs stringList
	fs.Var(&roles, "role", "a role (repeatable)")
	fs.Var(&pub, "publish", "a destination pattern granted in the token for publishing (repeatable)")
	fs.Var(&subs, "subscribe", "a destination pattern granted in the token for subscribing (repeatable)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	keyFile := fs.String("key", "", "PEM private key for RS256/ES256 policies")
	kid := fs.String("kid", "", "key id for the token header (JWKS)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token: unexpected argument %q", fs.Arg(0))
	}
	if *policy == "" || *sub == "" {
		return errors.New("token: -auth POLICY and -sub SUBJECT are required")
	}
	if *ttl <= 0 {
		return errors.New("token: -ttl must be positive")
	}
	cfg, err := loadConfig(cf.config)
	if err != nil {
		return err
	}
	a, ok := cfg.Auth[*policy]
	if !ok || a.Mode != "jwt" {
		return fmt.Errorf("token: the config has no jwt auth policy %q", *policy)
	}
	now := time.Now()
	claims := jwt.MapClaims{"sub": *sub, "iat": now.Unix(), "exp": now.Add(*ttl).Unix()}
	if len(roles) > 0 {
		rc := a.JWT.RolesClaim
		if rc == "" {
			rc = "roles"
		}
		claims[rc] = []string(roles)
	}
	if len(pub)+len(subs) > 0 {
		for _, p := range append(append([]string(nil), pub...), subs...) {
			if _, err := auth.ParsePattern(p); err != nil {
				return fmt.Errorf("token: %w", err)
			}
		}
		gc := a.JWT.GrantsClaim
		if gc == "" {
			gc = "wsbridge"
		}
		claims[gc] = map[string][]string{"publish": pub, "subscribe": subs}
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
		if key, err = cfg.jwtSecret(*policy); err != nil {
			return fmt.Errorf("token: %w", err)
		}
		method = jwt.SigningMethodHS256
	case "RS256", "ES256":
		if *keyFile == "" {
			return fmt.Errorf("token: auth %q uses %s: give its private key with -key FILE", *policy, a.JWT.Algorithm)
		}
		if key, err = privateKey(*keyFile, a.JWT.Algorithm); err != nil {
			return fmt.Errorf("token: %w", err)
		}
		method = jwt.GetSigningMethod(a.JWT.Algorithm)
	}
	t := jwt.NewWithClaims(method, claims)
	if *kid != "" {
		t.Header["kid"] = *kid
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

// passwdCommand runs `wsbridge passwd`: a bcrypt hash of the password on
// standard input, for a users file.
func passwdCommand(stdin io.Reader, stdout io.Writer) error {
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return errors.New("passwd: give the password on standard input")
	}
	h, err := auth.HashPassword(pw)
	if err != nil {
		return fmt.Errorf("passwd: %w", err)
	}
	out, _ := json.Marshal(h) // quoted, ready for YAML
	fmt.Fprintf(stdout, "password_hash: %s\n", out)
	return nil
}
