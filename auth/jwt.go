package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWTOptions configure a JWT verifier. Exactly one key source fits the
// algorithm: Secret for HS256, PublicKeyPEM or JWKS for RS256 and ES256.
type JWTOptions struct {
	Algorithm    string // HS256, RS256 or ES256
	Secret       []byte
	PublicKeyPEM []byte
	JWKS         []byte
	// Audience and Issuer, when set, must match the token's aud and iss.
	Audience, Issuer string
	// Leeway allows for clock skew in exp and nbf.
	Leeway time.Duration
	// RequireExp refuses tokens without an exp claim.
	RequireExp bool
	// RolesClaim names the claim with the roles (a string or a list);
	// default "roles".
	RolesClaim string
	// GrantsClaim names the claim with allow-lists
	// ({"publish": [...], "subscribe": [...]}); default "wsbridge".
	GrantsClaim string
	// Now is the clock, for tests; default time.Now.
	Now func() time.Time
}

// JWT verifies tokens.
type JWT struct {
	o      JWTOptions
	parser *jwt.Parser
	keys   map[string]crypto.PublicKey // by kid; "" for a single PEM key
	secret []byte
}

// MinHS256SecretBytes: a shorter HMAC secret could be guessed offline from
// any one token.
const MinHS256SecretBytes = 32

// NewJWT checks the options and loads the key.
func NewJWT(o JWTOptions) (*JWT, error) {
	if o.RolesClaim == "" {
		o.RolesClaim = "roles"
	}
	if o.GrantsClaim == "" {
		o.GrantsClaim = "wsbridge"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	j := &JWT{o: o}
	switch o.Algorithm {
	case "HS256":
		if len(o.Secret) < MinHS256SecretBytes {
			return nil, fmt.Errorf("jwt: an HS256 secret needs at least %d bytes", MinHS256SecretBytes)
		}
		if o.PublicKeyPEM != nil || o.JWKS != nil {
			return nil, errors.New("jwt: HS256 takes a secret, not a public key")
		}
		j.secret = o.Secret
	case "RS256", "ES256":
		if o.Secret != nil {
			return nil, fmt.Errorf("jwt: %s takes a public key or JWKS, not a secret", o.Algorithm)
		}
		var err error
		switch {
		case o.PublicKeyPEM != nil && o.JWKS != nil:
			return nil, errors.New("jwt: give a public key or a JWKS, not both")
		case o.PublicKeyPEM != nil:
			var k crypto.PublicKey
			k, err = parsePublicKeyPEM(o.PublicKeyPEM)
			j.keys = map[string]crypto.PublicKey{"": k}
		case o.JWKS != nil:
			j.keys, err = parseJWKS(o.JWKS)
		default:
			return nil, fmt.Errorf("jwt: %s needs a public key or a JWKS", o.Algorithm)
		}
		if err != nil {
			return nil, err
		}
		for kid, k := range j.keys {
			if !keyFits(o.Algorithm, k) {
				return nil, fmt.Errorf("jwt: key %q is not a %s key", kid, o.Algorithm)
			}
		}
	default:
		return nil, fmt.Errorf("jwt: algorithm %q is not one of HS256, RS256, ES256", o.Algorithm)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{o.Algorithm}), // also what shuts out alg "none"
		jwt.WithLeeway(o.Leeway),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(o.Now),
	}
	if o.Audience != "" {
		opts = append(opts, jwt.WithAudience(o.Audience))
	}
	if o.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(o.Issuer))
	}
	if o.RequireExp {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	j.parser = jwt.NewParser(opts...)
	return j, nil
}

func keyFits(alg string, k crypto.PublicKey) bool {
	switch k := k.(type) {
	case *rsa.PublicKey:
		return alg == "RS256" && k.N.BitLen() >= 2048
	case *ecdsa.PublicKey:
		return alg == "ES256" && k.Curve == elliptic.P256()
	}
	return false
}

// maxTokenBytes bounds what is parsed at all.
const maxTokenBytes = 8 << 10

// Verify checks a token's signature and claims and returns its identity.
// Error messages say what was wrong without echoing the token.
func (j *JWT) Verify(token string) (*Identity, error) {
	if len(token) > maxTokenBytes {
		return nil, unauthenticated("token longer than %d bytes", maxTokenBytes)
	}
	claims := jwt.MapClaims{}
	_, err := j.parser.ParseWithClaims(token, claims, j.key)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, unauthenticated("token expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return nil, unauthenticated("token not valid yet")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return nil, unauthenticated("token audience does not include %q", j.o.Audience)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return nil, unauthenticated("token issuer is not %q", j.o.Issuer)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return nil, unauthenticated("token has no %s claim", missingClaim(err))
	case errors.Is(err, jwt.ErrTokenSignatureInvalid) && strings.Contains(err.Error(), "signing method"):
		return nil, unauthenticated("token is not signed with %s", j.o.Algorithm)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, unauthenticated("token signature is invalid")
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, unauthenticated("token is malformed")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return nil, unauthenticated("token cannot be verified: %s", unverifiable(err))
	default:
		return nil, unauthenticated("token is invalid")
	}
	id := &Identity{Method: "jwt"}
	if id.Subject, err = claims.GetSubject(); err != nil || id.Subject == "" {
		return nil, unauthenticated("token has no sub claim")
	}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		id.Expires = exp.Time
	}
	if id.Roles, err = stringList(claims[j.o.RolesClaim]); err != nil {
		return nil, unauthenticated("token claim %q: %v", j.o.RolesClaim, err)
	}
	// The subject travels on into broker client ids and logs: no control
	// characters that could end a header or a line.
	for _, v := range append([]string{id.Subject}, id.Roles...) {
		if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return nil, unauthenticated("token sub or roles hold control characters")
		}
	}
	if g, ok := claims[j.o.GrantsClaim]; ok {
		if id.Grants, err = parseGrants(g); err != nil {
			return nil, unauthenticated("token claim %q: %v", j.o.GrantsClaim, err)
		}
	}
	return id, nil
}

// missingClaim names the required claim a token lacked; golang-jwt says
// only in its message ("aud claim is required").
func missingClaim(err error) string {
	for _, c := range []string{"exp", "aud", "iss", "nbf", "iat", "sub"} {
		if strings.Contains(err.Error(), c+" claim") {
			return c
		}
	}
	return "required"
}

// unverifiable names why no key fitted: an algorithm or key id the
// verifier does not have.
func unverifiable(err error) string {
	var ke *keyError
	if errors.As(err, &ke) {
		return ke.msg
	}
	return "signing method not accepted"
}

type keyError struct{ msg string }

func (e *keyError) Error() string { return e.msg }

func (j *JWT) key(t *jwt.Token) (any, error) {
	if j.secret != nil {
		return j.secret, nil
	}
	kid, _ := t.Header["kid"].(string)
	if k, ok := j.keys[kid]; ok {
		return k, nil
	}
	if len(j.keys) == 1 && kid == "" {
		for _, k := range j.keys {
			return k, nil
		}
	}
	return nil, &keyError{fmt.Sprintf("no key with id %q", kid)}
}

func stringList(v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, errors.New("not a list of strings")
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, errors.New("not a string or list of strings")
}

func parseGrants(v any) (*Grants, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New(`not an object like {"publish": [...], "subscribe": [...]}`)
	}
	g := &Grants{}
	for key, dst := range map[string]*[]Pattern{"publish": &g.Publish, "subscribe": &g.Subscribe} {
		list, err := stringList(m[key])
		if err != nil {
			return nil, fmt.Errorf("%s: %v", key, err)
		}
		for _, s := range list {
			p, err := ParsePattern(s)
			if err != nil {
				return nil, err
			}
			*dst = append(*dst, p)
		}
	}
	return g, nil
}

func parsePublicKeyPEM(b []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("jwt: public key is not PEM")
	}
	switch block.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		return c.PublicKey, nil
	}
	return nil, fmt.Errorf("jwt: PEM block %q is not a public key or certificate", block.Type)
}

// jwk is the part of RFC 7517 a verifier needs.
type jwk struct {
	Kty, Kid, Use, Alg, Crv string
	N, E, X, Y              string
}

func parseJWKS(b []byte) (map[string]crypto.PublicKey, error) {
	var set struct{ Keys []jwk }
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("jwt: JWKS: %w", err)
	}
	keys := map[string]crypto.PublicKey{}
	for i, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		var pub crypto.PublicKey
		switch k.Kty {
		case "RSA":
			n, err1 := b64int(k.N)
			e, err2 := b64int(k.E)
			if err1 != nil || err2 != nil || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31 {
				return nil, fmt.Errorf("jwt: JWKS key %d: bad RSA n or e", i)
			}
			pub = &rsa.PublicKey{N: n, E: int(e.Int64())}
		case "EC":
			if k.Crv != "P-256" {
				return nil, fmt.Errorf("jwt: JWKS key %d: curve %q is not P-256", i, k.Crv)
			}
			x, err1 := b64int(k.X)
			y, err2 := b64int(k.Y)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("jwt: JWKS key %d: bad EC x or y", i)
			}
			ek := &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}
			if _, err := ek.ECDH(); err != nil { // also checks the point is on the curve
				return nil, fmt.Errorf("jwt: JWKS key %d: %v", i, err)
			}
			pub = ek
		default:
			continue
		}
		if _, dup := keys[k.Kid]; dup {
			return nil, fmt.Errorf("jwt: JWKS has two keys with id %q", k.Kid)
		}
		keys[k.Kid] = pub
	}
	if len(keys) == 0 {
		return nil, errors.New("jwt: JWKS has no RSA or EC signing keys")
	}
	return keys, nil
}

func b64int(s string) (*big.Int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		return nil, errors.New("bad base64url integer")
	}
	return new(big.Int).SetBytes(b), nil
}
