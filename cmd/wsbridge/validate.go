// Validation: check fills each unset key (the sizes, rates and timeouts
// through defaults.go) and checks every value and every reference between
// keys, reporting file:line: key: reason.

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/keyring"
	"go.yaml.in/yaml/v3"
)

// checker collects errors, each located by its YAML path.
type checker struct {
	file string
	root *yaml.Node
	errs []error
}

func (c *checker) fail(path string, format string, args ...any) {
	c.errs = append(c.errs, &ConfigError{File: c.file, Line: c.line(path), Msg: path + ": " + fmt.Sprintf(format, args...)})
}

// line finds the line of a dotted path like "routes.0.backend"; it falls
// back to the nearest ancestor present in the file.
func (c *checker) line(path string) int {
	n := c.root
	if n == nil { // a checker of the wiring, after the file
		return 0
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, part := range strings.Split(path, ".") {
		var next *yaml.Node
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == part {
					next = n.Content[i+1]
					line = n.Content[i].Line
				}
			}
		case yaml.SequenceNode:
			if i, err := strconv.Atoi(part); err == nil && i < len(n.Content) {
				next = n.Content[i]
				line = next.Line
			}
		}
		if next == nil {
			break
		}
		n = next
	}
	return line
}

// checkListen checks a listen address; a bare port, the likeliest slip,
// is answered with the address it probably meant.
func checkListen(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return nil
	}
	if _, err := strconv.ParseUint(addr, 10, 16); err == nil {
		return fmt.Errorf("%q is not host:port: did you mean \":%s\" (every interface) or \"127.0.0.1:%s\" (this machine only)?", addr, addr, addr)
	}
	return fmt.Errorf("%q is not host:port (for example :8080 or 127.0.0.1:8080)", addr)
}

// check fills the defaults and checks every value; it builds nothing that
// outlives it (a TLS config or policy made to see that it can be made is
// dropped: buildServer makes the gateway's own).
func (cfg *Config) check(c *checker) {
	if cfg.Listen == "" {
		cfg.Listen = ":8080"
	}
	if err := checkListen(cfg.Listen); err != nil {
		c.fail("listen", "%v", err)
	}
	for i, o := range cfg.AllowedOrigins {
		if _, err := front.NewOrigins([]string{o}); err != nil {
			c.fail(fmt.Sprintf("allowed_origins.%d", i), "%v", err)
		}
	}
	for i, p := range cfg.TrustedProxies {
		if _, err := front.ParseProxies([]string{p}); err != nil {
			c.fail(fmt.Sprintf("trusted_proxies.%d", i), "%q is not an address or CIDR (10.0.0.0/8, 192.168.1.5, fd00::/8)", p)
		}
	}
	switch t := &cfg.TLS; {
	case t.CertFile == "" && t.KeyFile != "":
		c.fail("tls", "serving TLS needs both cert_file and key_file: cert_file is missing")
	case t.CertFile != "" && t.KeyFile == "":
		c.fail("tls", "serving TLS needs both cert_file and key_file: key_file is missing")
	case t.CertFile != "":
		t.CertFile, t.KeyFile = cfg.path(t.CertFile), cfg.path(t.KeyFile)
		// Each file on its own first, so that the error names the one
		// that is missing or unreadable.
		unreadable := false
		for _, f := range []struct{ key, path string }{{"tls.cert_file", t.CertFile}, {"tls.key_file", t.KeyFile}} {
			if err := readable(f.path); err != nil {
				c.fail(f.key, "%v", err)
				unreadable = true
			}
		}
		if unreadable {
			break
		}
		if _, err := front.NewCertReloader(t.CertFile, t.KeyFile); err != nil {
			c.fail("tls", "%s (cert_file %s, key_file %s)", strings.TrimPrefix(err.Error(), "tls: "), t.CertFile, t.KeyFile)
		}
	}

	if cfg.Admin.Listen != "" {
		host, _, err := net.SplitHostPort(cfg.Admin.Listen)
		if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			c.fail("admin.listen", "%q is not a loopback host:port: profiles expose the gateway's memory, so the admin listener serves this machine only (127.0.0.1:9090; reach it remotely through an SSH or kubectl port-forward)", cfg.Admin.Listen)
		}
	}
	switch cfg.Log.Level {
	case "":
		cfg.Log.Level = "info"
	case "debug", "info", "warn", "error":
	default:
		c.fail("log.level", "%q is not one of debug, info, warn, error", cfg.Log.Level)
	}
	switch cfg.Log.Format {
	case "":
		cfg.Log.Format = "text"
	case "text", "json":
	default:
		c.fail("log.format", "%q is not text or json", cfg.Log.Format)
	}

	cfg.checkSizes(c)

	names := make([]string, 0, len(cfg.Backends))
	for name := range cfg.Backends {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		b := cfg.Backends[name]
		p := "backends." + name
		k := backendKindOf(b.Protocol)
		if k == nil {
			c.fail(p+".protocol", "%q is not a supported protocol (%s)", b.Protocol, strings.Join(backendKindNames(func(*backendKind) bool { return true }), ", "))
		}
		if b.Exchange != "" && (k == nil || k.exchange == "") {
			c.fail(p+".exchange", "only %s backends have an exchange", strings.Join(backendKindNames(func(k *backendKind) bool { return k.exchange != "" }), " and "))
		}
		if b.Embedded || b.StoreDir != "" {
			if k == nil || !k.embeddable {
				c.fail(p+".embedded", "only a %s backend can be embedded", strings.Join(backendKindNames(func(k *backendKind) bool { return k.embeddable }), " or "))
			}
			if b.Address == "" {
				b.Address = "127.0.0.1:4222"
			}
			if host, _, err := net.SplitHostPort(b.Address); err == nil {
				if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
					c.fail(p+".address", "an embedded server listens on loopback only, not %q", host)
				}
			}
		}
		if b.StoreDir != "" && !b.Embedded {
			c.fail(p+".store_dir", "store_dir (JetStream storage) needs embedded: true")
		}
		if b.MQTTAddress != "" {
			host, port, err := net.SplitHostPort(b.MQTTAddress)
			ip := net.ParseIP(host)
			switch {
			case !b.Embedded:
				c.fail(p+".mqtt_address", "only an embedded nats server has an MQTT listener to open")
			case err != nil || port == "" || ip == nil || !ip.IsLoopback():
				c.fail(p+".mqtt_address", "%q is not a loopback host:port", b.MQTTAddress)
			case b.StoreDir == "":
				c.fail(p+".mqtt_address", "NATS's MQTT listener needs JetStream: set store_dir")
			}
		}
		if _, port, err := net.SplitHostPort(b.Address); err != nil || port == "" {
			c.fail(p+".address", "%q is not host:port", b.Address)
		}
		if b.VHost == "" {
			b.VHost = "/"
		}
		if b.Exchange == "" && k != nil {
			b.Exchange = k.exchange
		}
		c.durIn(p+".dial_timeout", &b.DialTimeout, 5*time.Second, 10*time.Millisecond, time.Minute)
		if t := b.TLS; t.Enabled || t != (BackendTLSConfig{}) {
			_, err := cfg.backendTLS(b)
			switch {
			case err != nil:
				c.fail(p+".tls", "%s", strings.TrimPrefix(err.Error(), "tls: "))
			case b.Embedded:
				c.fail(p+".tls", "the embedded server is reached in-process; TLS is for external brokers")
			}
		}
		cfg.Backends[name] = b
	}

	cfg.checkAuth(c)

	if len(cfg.Routes) == 0 {
		c.fail("routes", "at least one route is needed")
	}
	seen := map[string]bool{"/healthz": true, "/readyz": true}
	if cfg.Demo {
		seen["/"] = true
	}
	for i := range cfg.Routes {
		r := &cfg.Routes[i]
		p := fmt.Sprintf("routes.%d", i)
		switch {
		case !strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, " {}"):
			c.fail(p+".path", "%q must be an absolute URL path", r.Path)
		case seen[r.Path]:
			c.fail(p+".path", "%q is already taken", r.Path)
		}
		seen[r.Path] = true
		key := routeKey(*r)
		switch {
		case key != r.Protocol:
		case r.Mode != "" && r.Mode != "relay":
			c.fail(p+".mode", "%q is not a mode (relay, or translate for stomp routes)", r.Mode)
		case r.Mode == "relay" && !hasModes(r.Protocol):
			c.fail(p+".mode", "only stomp routes have a mode")
		}
		k := routeKindOf(key)
		if len(r.VHosts) > 0 && (k == nil || !k.vhosts) {
			c.fail(p+".vhosts", "only amqp routes open virtual hosts")
		}
		if r.Auth != "" {
			a, ok := cfg.Auth[r.Auth]
			switch {
			case !ok:
				c.fail(p+".auth", "%q is not defined under auth", r.Auth)
			case a.Credential != "" && k != nil && !k.relay:
				c.fail(p+".auth", "auth %q picks a broker credential per identity, which only relay routes (stomp relay, mqtt, amqp) can use: %s routes share the backend's one connection", r.Auth, key)
			}
		}
		if k == nil {
			c.fail(p+".protocol", "%q is not a supported route protocol (%s)", r.Protocol, strings.Join(routeProtocols(), ", "))
		}
		b, ok := cfg.Backends[r.Backend]
		switch {
		case !ok:
			c.fail(p+".backend", "%q is not defined under backends", r.Backend)
		case k != nil && backendKindOf(b.Protocol) != nil && !slices.Contains(k.accepts, b.Protocol): // an unknown protocol is reported once, at the backend
			c.fail(p+".backend", "backend %q speaks %s, which cannot serve a %s route (stomp routes relay to stomp backends; mode: translate maps onto nats, amqp or mqtt)", r.Backend, b.Protocol, key)
		case k != nil && k.needsCredential && b.Credential == "" && cfg.Auth[r.Auth].Credential == "":
			// The AMQP relay answers every client's login with the gateway's
			// own: with none, RabbitMQ refuses each connection after its delay.
			c.fail(p+".backend", "an %s route logs in to the broker with a keyring entry: set backends.%s.credential, or a credential in the route's auth policy", key, r.Backend)
		}
	}
}

// hasModes reports whether a route protocol has a mode besides relay.
func hasModes(protocol string) bool {
	for _, k := range routeKinds {
		if strings.HasPrefix(k.key, protocol+"/") {
			return true
		}
	}
	return false
}

// checkAuth checks that each auth policy can be built.
func (cfg *Config) checkAuth(c *checker) {
	for _, name := range sortedKeys(cfg.Auth) {
		// The policy is dropped: buildPolicies makes the gateway's, with
		// the keyring it looks credentials up in.
		_ = cfg.policy(c, name, func(string) (keyring.Credential, error) { return keyring.Credential{}, keyring.ErrNoEntry })
	}
}

// policy builds the auth policy name, reporting its problems to c; nil
// when there are any. lookup finds the broker credentials it picks.
func (cfg *Config) policy(c *checker, name string, lookup func(string) (keyring.Credential, error)) *auth.Policy {
	a := cfg.Auth[name]
	p := "auth." + name
	errs := len(c.errs)
	o := auth.Options{Mode: auth.Mode(a.Mode), Credential: a.Credential, ExpiryGrace: time.Duration(a.ExpiryGrace),
		Lookup: lookup}
	switch o.Mode {
	case auth.ModeNone:
	case auth.ModeJWT:
		o.JWT = cfg.checkJWT(c, p+".jwt", &a.JWT)
		if a.UsersFile != "" {
			c.fail(p+".users_file", "a users file is for mode: users")
		}
	case auth.ModeUsers:
		if a.UsersFile == "" {
			c.fail(p+".users_file", "mode users needs a users_file")
			break
		}
		u, err := auth.LoadUsers(cfg.path(a.UsersFile), auth.HashLimits{Concurrent: cfg.Limits.PasswordChecks,
			PerClient: cfg.Limits.PasswordChecksPerIP, Wait: time.Duration(cfg.Limits.PasswordCheckWait)})
		// Each problem of the users file on a line of its own,
		// located in both files.
		var joined interface{ Unwrap() []error }
		if errors.As(err, &joined) {
			for _, e := range joined.Unwrap() {
				c.fail(p+".users_file", "%v", e)
			}
		} else if err != nil {
			c.fail(p+".users_file", "%v", err)
		}
		o.Users = u
	case "":
		c.fail(p+".mode", "choose a mode: none, jwt or users")
	default:
		c.fail(p+".mode", "%q is not one of none, jwt, users", a.Mode)
	}
	if a.Mode != "jwt" && (a.JWT != JWTConfig{}) {
		c.fail(p+".jwt", "jwt settings are for mode: jwt")
	}
	if a.Carriers == nil {
		a.Carriers = []string{"header", "cookie", "query", "login"}
	}
	if a.Cookie == "" {
		a.Cookie = "wsbridge_token"
	}
	for i, carrier := range a.Carriers {
		switch carrier {
		case "header":
			o.Carriers.Header = true
		case "cookie":
			o.Carriers.Cookie = a.Cookie
		case "query":
			o.Carriers.Query = true
		case "login":
			o.Carriers.Login = true
		default:
			c.fail(fmt.Sprintf("%s.carriers.%d", p, i), "%q is not one of header, cookie, query, login", carrier)
		}
	}
	for i, r := range a.ACL {
		rp := fmt.Sprintf("%s.acl.%d", p, i)
		rule := auth.Rule{Roles: r.Roles, Subjects: r.Subjects}
		if len(r.Publish) == 0 && len(r.Subscribe) == 0 {
			c.fail(rp, "a rule allows nothing without publish or subscribe patterns")
		}
		for what, list := range map[string]struct {
			in  []string
			out *[]auth.Pattern
		}{"publish": {r.Publish, &rule.Publish}, "subscribe": {r.Subscribe, &rule.Subscribe}} {
			for j, s := range list.in {
				pat, err := auth.ParsePattern(s)
				if err != nil {
					c.fail(fmt.Sprintf("%s.%s.%d", rp, what, j), "%v", err)
				}
				*list.out = append(*list.out, pat)
			}
		}
		o.Rules = append(o.Rules, rule)
	}
	if len(c.errs) > errs {
		return nil
	}
	pol, err := auth.New(o)
	if err != nil {
		c.fail(p, "%s", strings.TrimPrefix(err.Error(), "auth: "))
		return nil
	}
	return pol
}

// checkJWT loads the verifier's key and checks its settings.
func (cfg *Config) checkJWT(c *checker, p string, j *JWTConfig) *auth.JWT {
	o := auth.JWTOptions{Algorithm: j.Algorithm, Audience: j.Audience, Issuer: j.Issuer, Leeway: time.Duration(j.Leeway),
		RequireExp: j.RequireExp == nil || *j.RequireExp, RolesClaim: j.RolesClaim, GrantsClaim: j.GrantsClaim}
	if j.Leeway == 0 {
		o.Leeway = 30 * time.Second
	}
	unreadable := false
	read := func(key, name string) []byte {
		b, err := os.ReadFile(cfg.path(name))
		if err != nil {
			c.fail(p+"."+key, "%v", err)
			unreadable = true
		}
		return b
	}
	switch {
	case j.Secret != "" && j.SecretFile != "":
		c.fail(p+".secret", "give secret or secret_file, not both")
	case j.Secret != "":
		o.Secret = []byte(j.Secret)
	case j.SecretFile != "":
		o.Secret = []byte(strings.TrimRight(string(read("secret_file", j.SecretFile)), "\r\n"))
	}
	if j.PublicKeyFile != "" {
		o.PublicKeyPEM = read("public_key_file", j.PublicKeyFile)
	}
	if j.JWKSFile != "" {
		o.JWKS = read("jwks_file", j.JWKSFile)
	}
	if unreadable {
		return nil
	}
	v, err := auth.NewJWT(o)
	if err != nil {
		c.fail(p, "%s", strings.TrimPrefix(err.Error(), "jwt: "))
	}
	return v
}

// readable checks that a file named in the config can be read, saying
// which and why not: "cannot read /etc/wsbridge/key.pem: no such file or
// directory", never "read .: is a directory".
func readable(path string) error {
	f, err := os.Open(path)
	if err == nil {
		var st os.FileInfo
		if st, err = f.Stat(); err == nil && st.IsDir() {
			err = errors.New("is a directory, not a file")
		}
		f.Close()
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("cannot read %s: %w", path, err)
	}
	return nil
}
