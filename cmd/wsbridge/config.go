package main

import (
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/keyring"
	"github.com/wsbridge/wsbridge/memory"
	"github.com/wsbridge/wsbridge/sse"
	"github.com/wsbridge/wsbridge/validate"
	"go.yaml.in/yaml/v3"
)

// defaultConfig is what `wsbridge` serves with no -config.
//
//go:embed default.yaml
var defaultConfig []byte

// Config is the gateway's YAML configuration. README.md documents each key.
type Config struct {
	Listen         string                   `yaml:"listen"`
	TLS            TLSConfig                `yaml:"tls"`
	TrustedProxies []string                 `yaml:"trusted_proxies"`
	Demo           bool                     `yaml:"demo"`
	AllowedOrigins []string                 `yaml:"allowed_origins"`
	Log            LogConfig                `yaml:"log"`
	Admin          AdminConfig              `yaml:"admin"`
	Keyring        KeyringConfig            `yaml:"keyring"`
	WebSocket      WebSocketConfig          `yaml:"websocket"`
	SSE            SSEConfig                `yaml:"sse"`
	Limits         LimitsConfig             `yaml:"limits"`
	Backends       map[string]BackendConfig `yaml:"backends"`
	// Auth holds named authentication and authorization policies that
	// routes refer to by name.
	Auth   map[string]AuthConfig `yaml:"auth"`
	Routes []RouteConfig         `yaml:"routes"`

	origins  *front.Origins
	proxies  front.Proxies
	file     string                  // the -config argument; "" for the embedded default
	dir      string                  // the config file's directory: relative file paths start here
	policies map[string]*auth.Policy // by auth name, built by check
	keyring  atomic.Pointer[keyring.Keyring]
}

// AuthConfig is one policy: how clients prove who they are, which broker
// credential each identity gets, and what each may publish and subscribe.
type AuthConfig struct {
	Mode      string    `yaml:"mode"`
	JWT       JWTConfig `yaml:"jwt"`
	UsersFile string    `yaml:"users_file"`
	// Carriers are where a token may come from: header (Authorization:
	// Bearer), cookie, query (access_token), login (the protocol's password
	// field). Default: all four.
	Carriers []string `yaml:"carriers"`
	Cookie   string   `yaml:"cookie"`
	// Credential is a keyring entry or a template (user/{sub}, role/{role})
	// for relay routes; default: the backend's credential.
	Credential  string    `yaml:"credential"`
	ExpiryGrace Duration  `yaml:"expiry_grace"`
	ACL         []ACLRule `yaml:"acl"`
}

// JWTConfig says how tokens are checked.
type JWTConfig struct {
	Algorithm     string   `yaml:"algorithm"`
	Secret        string   `yaml:"secret"`
	SecretFile    string   `yaml:"secret_file"`
	PublicKeyFile string   `yaml:"public_key_file"`
	JWKSFile      string   `yaml:"jwks_file"`
	Audience      string   `yaml:"audience"`
	Issuer        string   `yaml:"issuer"`
	Leeway        Duration `yaml:"leeway"`
	RequireExp    *bool    `yaml:"require_exp"`
	RolesClaim    string   `yaml:"roles_claim"`
	GrantsClaim   string   `yaml:"grants_claim"`
}

// ACLRule allows destination patterns to identities with one of Roles or
// Subjects (neither: every authenticated identity).
type ACLRule struct {
	Roles     []string `yaml:"roles"`
	Subjects  []string `yaml:"subjects"`
	Publish   []string `yaml:"publish"`
	Subscribe []string `yaml:"subscribe"`
}

// TLSConfig makes the gateway serve https:// and wss:// with a certificate
// that SIGHUP reloads.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// BackendTLSConfig reaches a broker over TLS.
type BackendTLSConfig struct {
	Enabled    bool   `yaml:"enabled"`
	CAFile     string `yaml:"ca_file"`
	ServerName string `yaml:"server_name"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
}

// LogConfig selects the log level and format.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// AdminConfig opens the admin listener: profiles (/debug/pprof/) and a
// size snapshot (/debug/stats), on loopback only.
type AdminConfig struct {
	Listen string `yaml:"listen"`
}

// KeyringConfig locates the keyring and its master key file; relative
// paths start at the config file's directory, as TLS and auth files do.
type KeyringConfig struct {
	Path    string `yaml:"path"`
	KeyFile string `yaml:"key_file"`
}

// WebSocketConfig holds the WebSocket settings shared by all routes.
type WebSocketConfig struct {
	MaxMessageBytes  int      `yaml:"max_message_bytes"`
	ReadBufferBytes  int      `yaml:"read_buffer_bytes"`
	SendBufferBytes  *int     `yaml:"send_buffer_bytes"`
	PingInterval     Duration `yaml:"ping_interval"`
	WriteTimeout     Duration `yaml:"write_timeout"`
	HandshakeTimeout Duration `yaml:"handshake_timeout"`
	MessageTimeout   Duration `yaml:"message_timeout"`
	Compression      bool     `yaml:"compression"`
	// LingerBytesPerSecond is the process-wide budget of lingering
	// closes (bridge.Linger).
	LingerBytesPerSecond int `yaml:"linger_bytes_per_second"`
}

// SSEConfig holds the settings of SSE streams and HTTP publishes.
type SSEConfig struct {
	Heartbeat    Duration `yaml:"heartbeat"`
	Retry        Duration `yaml:"retry"`
	ReplayEvents int      `yaml:"replay_events"`
	ReplayBytes  int      `yaml:"replay_bytes"`
	// FlushInterval is a pointer so that an explicit 0s (flush every
	// event at once) differs from unset.
	FlushInterval      *Duration `yaml:"flush_interval"`
	ClientQueueEvents  int       `yaml:"client_queue_events"`
	ClientQueueBytes   int       `yaml:"client_queue_bytes"`
	MaxLiveTopics      int       `yaml:"max_live_topics"`
	Linger             Duration  `yaml:"linger"`
	MaxTopicsPerStream int       `yaml:"max_topics_per_stream"`
	MaxPublishBytes    int       `yaml:"max_publish_bytes"`
}

// Options are the hub's options these settings make, for the rest to be
// filled in where the hub is made.
func (sc SSEConfig) Options() sse.Options {
	return sse.Options{
		Heartbeat: time.Duration(sc.Heartbeat), Retry: time.Duration(sc.Retry),
		Replay: sc.ReplayEvents, ReplayBytes: int64(sc.ReplayBytes),
		ClientQueue: sc.ClientQueueEvents, ClientQueueBytes: int64(sc.ClientQueueBytes),
		MaxLiveTopics: sc.MaxLiveTopics, Linger: time.Duration(sc.Linger),
		FlushInterval: time.Duration(*sc.FlushInterval),
		MaxTopics:     sc.MaxTopicsPerStream, MaxPublishBytes: sc.MaxPublishBytes,
	}
}

// LimitsConfig bounds what clients may do.
type LimitsConfig struct {
	MaxConnections      int     `yaml:"max_connections"`
	MaxConnectionsPerIP int     `yaml:"max_connections_per_ip"`
	HandshakesPerSecond float64 `yaml:"handshakes_per_second"`
	HandshakeBurst      int     `yaml:"handshake_burst"`
	// Password checks bound users-mode logins (auth.HashLimits).
	PasswordChecks      int      `yaml:"password_checks"`
	PasswordChecksPerIP int      `yaml:"password_checks_per_ip"`
	PasswordCheckWait   Duration `yaml:"password_check_wait"`
	// MemoryBytes is the budget for everything held for clients.
	MemoryBytes int               `yaml:"memory_bytes"`
	STOMP       STOMPLimitsConfig `yaml:"stomp"`
	MQTT        MQTTLimitsConfig  `yaml:"mqtt"`
	AMQP        AMQPLimitsConfig  `yaml:"amqp"`

	// LoginTimeout is a pointer so that an explicit 0s, which would read
	// as "no deadline", is refused rather than taken for unset.
	LoginTimeout *Duration `yaml:"login_timeout"`
}

// AMQPLimitsConfig bounds AMQP frames.
type AMQPLimitsConfig struct {
	MaxFrameBytes int `yaml:"max_frame_bytes"`
	MaxChannels   int `yaml:"max_channels"`
	MaxTableDepth int `yaml:"max_table_depth"`
}

// MQTTLimitsConfig bounds MQTT packets.
type MQTTLimitsConfig struct {
	MaxPacketBytes       int `yaml:"max_packet_bytes"`
	MaxBrokerPacketBytes int `yaml:"max_broker_packet_bytes"`
}

// STOMPLimitsConfig bounds STOMP frames.
type STOMPLimitsConfig struct {
	MaxFrameBytes       int `yaml:"max_frame_bytes"`
	MaxHeaders          int `yaml:"max_headers"`
	MaxHeaderLineBytes  int `yaml:"max_header_line_bytes"`
	MaxBrokerFrameBytes int `yaml:"max_broker_frame_bytes"`
}

// BackendConfig is one broker.
type BackendConfig struct {
	Protocol    string   `yaml:"protocol"`
	Address     string   `yaml:"address"`
	Credential  string   `yaml:"credential"`
	VHost       string   `yaml:"vhost"`
	Exchange    string   `yaml:"exchange"`
	DialTimeout Duration `yaml:"dial_timeout"`
	// Embedded runs a NATS server inside the gateway (protocol nats only).
	Embedded bool   `yaml:"embedded"`
	StoreDir string `yaml:"store_dir"`
	// MQTTAddress opens the embedded server's MQTT listener (needs store_dir).
	MQTTAddress string `yaml:"mqtt_address"`
	// TLS reaches the broker over TLS.
	TLS BackendTLSConfig `yaml:"tls"`

	tls *tls.Config
}

// RouteConfig maps a URL path to a protocol adapter and a backend.
type RouteConfig struct {
	Path     string `yaml:"path"`
	Protocol string `yaml:"protocol"`
	Backend  string `yaml:"backend"`
	// Mode is relay (default) or translate, for stomp routes.
	Mode string `yaml:"mode"`
	// VHosts are the virtual hosts an amqp route's clients may open.
	VHosts []string `yaml:"vhosts"`
	// Auth names the route's policy under auth; empty: anonymous clients.
	Auth string `yaml:"auth"`
}

// Duration is a time.Duration written as "30s", "1m".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	// A TypeError lets the decoder go on and report the file's other errors.
	v, err := time.ParseDuration(n.Value)
	switch {
	case n.Kind != yaml.ScalarNode || err != nil:
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a duration such as 30s or 1m", n.Line, n.Value)}}
	case v < 0:
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q: a duration cannot be negative", n.Line, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// ConfigError is a configuration problem with its place in the file.
type ConfigError struct {
	File string
	Line int
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// loadConfig reads and checks a config file; name "" means the embedded
// default.
func loadConfig(name string) (*Config, error) {
	data, label := defaultConfig, "embedded default config"
	if name != "" {
		var err error
		if data, err = os.ReadFile(name); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		label = name
	}
	cfg, err := parseConfig(label, data)
	if err != nil {
		return nil, err
	}
	cfg.file = name
	return cfg, nil
}

var (
	lineRE    = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownRE = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)
	typeRE    = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
)

// parseConfig decodes strictly (unknown keys are errors), fills defaults
// and checks every value, reporting file:line: reason.
func parseConfig(file string, data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(file, err)
	}
	cfg := &Config{dir: filepath.Dir(file)}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	// Unknown keys and values of the wrong type (a TypeError) leave the
	// rest decoded: the checks still run, so that one run reports every
	// problem of the file, not one layer per run.
	var decodeErrs []error
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, yamlError(file, err)
		}
		decodeErrs = yamlErrors(file, te)
	}
	c := checker{file: file, root: &root}
	cfg.check(&c)
	errs := decodeErrs
	// A value the decoder could not take was left unset, and a check of
	// the same line would only say so again ("routes: x" is not a list;
	// "at least one route is needed").
	bad := map[int]bool{}
	for _, e := range decodeErrs {
		if ce, ok := e.(*ConfigError); ok && ce.Line > 0 {
			bad[ce.Line] = true
		}
	}
	for _, e := range c.errs {
		if ce, ok := e.(*ConfigError); ok && bad[ce.Line] {
			continue
		}
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		return nil, errors.Join(sortByLine(errs)...)
	}
	return cfg, nil
}

// sortByLine orders errors as they appear in the file, so that the
// decoder's and the checks' interleave; the order within a line is kept.
func sortByLine(errs []error) []error {
	line := func(e error) int {
		if ce, ok := e.(*ConfigError); ok {
			return ce.Line
		}
		return 0
	}
	sort.SliceStable(errs, func(i, j int) bool { return line(errs[i]) < line(errs[j]) })
	return errs
}

func yamlError(file string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return errors.Join(yamlErrors(file, te)...)
	}
	return lineError(file, strings.TrimPrefix(err.Error(), "yaml: "))
}

// yamlErrors are the decoder's complaints, each located.
func yamlErrors(file string, te *yaml.TypeError) []error {
	errs := make([]error, 0, len(te.Errors))
	for _, e := range te.Errors {
		errs = append(errs, lineError(file, e))
	}
	return errs
}

func lineError(file, msg string) error {
	line := 0
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if m := unknownRE.FindStringSubmatch(msg); m != nil {
		msg = fmt.Sprintf("unknown key %q", m[1])
		if near := closestKey(m[1], configKeys()[m[2]]); near != "" {
			msg += fmt.Sprintf("; did you mean %q?", near)
		}
	} else if m := typeRE.FindStringSubmatch(msg); m != nil {
		msg = fmt.Sprintf("expected %s, got %s %q", friendlyType(m[3]), m[1], m[2])
	}
	return &ConfigError{File: file, Line: line, Msg: msg}
}

// configKeys maps each struct type of the config schema, by the name the
// YAML decoder reports ("main.TLSConfig"), to the keys it knows.
var configKeys = sync.OnceValue(func() map[string][]string {
	keys := map[string][]string{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || keys[t.String()] != nil {
			return
		}
		keys[t.String()] = []string{}
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			keys[t.String()] = append(keys[t.String()], name)
			walk(f.Type)
		}
	}
	walk(reflect.TypeFor[Config]())
	return keys
})

// closestKey is the known key nearest to an unknown one, when it is near
// enough to be a typo (edit distance at most 2, and at most a third of
// its length; two letters swapped count one, so "auht" is "auth") or its
// start ("max_frame" for "max_frame_bytes"); "" otherwise.
func closestKey(key string, known []string) string {
	best, bestD, starts := "", 0, []string{}
	for _, k := range known {
		d := editDistance(key, k)
		if d <= 2 && 3*d <= len(k) && (best == "" || d < bestD || d == bestD && k < best) {
			best, bestD = k, d
		}
		if strings.HasPrefix(k, key+"_") {
			starts = append(starts, k)
		}
	}
	if best == "" && len(starts) == 1 {
		return starts[0]
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of adjacent bytes, the
// typos hands make.
func editDistance(a, b string) int {
	pprev, prev, cur := make([]int, len(b)+1), make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, sub)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], pprev[j-2]+1)
			}
		}
		pprev, prev, cur = prev, cur, pprev
	}
	return prev[len(b)]
}

func friendlyType(t string) string {
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["):
		return "a mapping"
	case t == "int":
		return "a whole number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	}
	return "a mapping"
}

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

func (c *checker) intIn(path string, v *int, def, lo, hi int) {
	if *v == 0 {
		*v = def
		return
	}
	if *v < lo || *v > hi {
		c.fail(path, "%d is out of range [%d, %d]", *v, lo, hi)
	}
}

func (c *checker) durIn(path string, v *Duration, def, lo, hi time.Duration) {
	if *v == 0 {
		*v = Duration(def)
		return
	}
	if time.Duration(*v) < lo || time.Duration(*v) > hi {
		c.fail(path, "%s is out of range [%s, %s]", time.Duration(*v), lo, hi)
	}
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

// openRoutes are the paths of the routes without an auth policy when the
// gateway listens on addr beyond loopback (every interface, another
// address, a host name): anyone who reaches it uses them with the
// gateway's broker credential. None when it listens on loopback.
func (cfg *Config) openRoutes(addr string) []string {
	if loopback(addr) {
		return nil
	}
	var open []string
	for _, r := range cfg.Routes {
		if r.Auth == "" {
			open = append(open, r.Path)
		}
	}
	return open
}

// loopback reports whether a listen address serves this machine only.
func loopback(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// openRoutesWarning and openRoutesFix are said of openRoutes at startup
// and by check.
const (
	openRoutesWarning = "routes without an auth policy on an address other machines may reach: anyone who reaches it publishes and subscribes through them as the gateway, with its broker credential"
	openRoutesFix     = "give each route an auth policy (routes[].auth, defined under auth:; see testdata/jwt.yaml), or listen on loopback (listen: 127.0.0.1:8080) behind a proxy that authenticates"
)

// backendProtocols are the brokers the gateway can talk to.
var backendProtocols = map[string]bool{"stomp": true, "amqp": true, "nats": true, "mqtt": true}

// routeBackends says, for each route protocol, which backend protocols can
// serve it: STOMP relays to a STOMP broker; SSE and HTTP publish go
// through a broker.Broker.
var routeBackends = map[string]map[string]bool{
	"stomp":           {"stomp": true},
	"mqtt":            {"mqtt": true},
	"amqp":            {"amqp": true},
	"stomp/translate": {"nats": true, "amqp": true, "mqtt": true},
	"sse":             {"amqp": true, "nats": true, "mqtt": true, "stomp": true},
	"publish":         {"amqp": true, "nats": true, "mqtt": true, "stomp": true},
}

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
	cfg.origins, _ = front.NewOrigins(cfg.AllowedOrigins)
	for i, p := range cfg.TrustedProxies {
		if _, err := front.ParseProxies([]string{p}); err != nil {
			c.fail(fmt.Sprintf("trusted_proxies.%d", i), "%q is not an address or CIDR (10.0.0.0/8, 192.168.1.5, fd00::/8)", p)
		}
	}
	cfg.proxies, _ = front.ParseProxies(cfg.TrustedProxies)
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

	ws, d := &cfg.WebSocket, bridge.DefaultWSOptions()
	c.intIn("websocket.max_message_bytes", &ws.MaxMessageBytes, d.MaxMessageBytes, 1<<10, 64<<20)
	c.intIn("websocket.read_buffer_bytes", &ws.ReadBufferBytes, d.ReadBufferBytes, 512, 1<<20)
	c.durIn("websocket.ping_interval", &ws.PingInterval, d.PingInterval, time.Second, time.Hour)
	c.durIn("websocket.write_timeout", &ws.WriteTimeout, d.WriteTimeout, 100*time.Millisecond, 5*time.Minute)
	c.durIn("websocket.handshake_timeout", &ws.HandshakeTimeout, d.HandshakeTimeout, 100*time.Millisecond, time.Minute)
	c.durIn("websocket.message_timeout", &ws.MessageTimeout, d.MessageTimeout, 100*time.Millisecond, 10*time.Minute)
	c.intIn("websocket.linger_bytes_per_second", &ws.LingerBytesPerSecond, bridge.DefaultLingerBytesPerSecond, 64<<10, 1<<30)
	// A pointer, so that an explicit 0 (the kernel's autotuning) differs
	// from silence (the default).
	if ws.SendBufferBytes == nil {
		ws.SendBufferBytes = &d.SendBufferBytes
	} else if v := *ws.SendBufferBytes; v != 0 && (v < 4<<10 || v > 64<<20) {
		c.fail("websocket.send_buffer_bytes", "%d is not 0 (the kernel's autotuning) or between %d and %d", v, 4<<10, 64<<20)
	}

	sc, sd := &cfg.SSE, sse.DefaultOptions()
	c.durIn("sse.heartbeat", &sc.Heartbeat, sd.Heartbeat, 100*time.Millisecond, 10*time.Minute)
	c.durIn("sse.retry", &sc.Retry, sd.Retry, 100*time.Millisecond, 10*time.Minute)
	c.intIn("sse.replay_events", &sc.ReplayEvents, sd.Replay, 1, 1<<20)
	c.intIn("sse.replay_bytes", &sc.ReplayBytes, int(sd.ReplayBytes), 1<<10, 1<<30)
	c.intIn("sse.client_queue_events", &sc.ClientQueueEvents, sd.ClientQueue, 1, 1<<20)
	c.intIn("sse.client_queue_bytes", &sc.ClientQueueBytes, int(sd.ClientQueueBytes), 1<<10, 1<<30)
	c.intIn("sse.max_live_topics", &sc.MaxLiveTopics, sd.MaxLiveTopics, 1, 10_000_000)
	c.durIn("sse.linger", &sc.Linger, sd.Linger, time.Millisecond, time.Hour)
	if sc.FlushInterval == nil {
		d := Duration(sd.FlushInterval)
		sc.FlushInterval = &d
	} else if v := time.Duration(*sc.FlushInterval); v > time.Second {
		c.fail("sse.flush_interval", "%s is out of range [0s, 1s]", v)
	}
	c.intIn("sse.max_topics_per_stream", &sc.MaxTopicsPerStream, sd.MaxTopics, 1, 1024)
	c.intIn("sse.max_publish_bytes", &sc.MaxPublishBytes, sd.MaxPublishBytes, 1, 64<<20)

	so := front.DefaultServerOptions()
	c.intIn("limits.max_connections", &cfg.Limits.MaxConnections, so.MaxConns, 1, 10_000_000)
	c.intIn("limits.max_connections_per_ip", &cfg.Limits.MaxConnectionsPerIP, so.MaxConnsPerIP, 1, 10_000_000)
	if hs := &cfg.Limits.HandshakesPerSecond; *hs == 0 {
		*hs = so.HandshakeRate
	} else if *hs < 0.01 || *hs > 1e6 {
		c.fail("limits.handshakes_per_second", "%g is out of range [0.01, 1000000]", *hs)
	}
	c.intIn("limits.handshake_burst", &cfg.Limits.HandshakeBurst, so.HandshakeBurst, 1, 1_000_000)
	c.intIn("limits.memory_bytes", &cfg.Limits.MemoryBytes, memory.DefaultBudgetBytes, 1<<20, 1<<40)
	if lt := &cfg.Limits.LoginTimeout; *lt == nil {
		v := Duration(d.LoginTimeout)
		*lt = &v
	} else if v := time.Duration(**lt); v < 100*time.Millisecond || v > 5*time.Minute {
		c.fail("limits.login_timeout", "%s is out of range [100ms, 5m0s]; there is no \"off\": a connection that has not logged in holds a slot and must end (default %s)", v, d.LoginTimeout)
	}
	hl := auth.DefaultHashLimits()
	c.intIn("limits.password_checks", &cfg.Limits.PasswordChecks, hl.Concurrent, 1, 1024)
	c.intIn("limits.password_checks_per_ip", &cfg.Limits.PasswordChecksPerIP, hl.PerClient, 1, 1_000_000)
	c.durIn("limits.password_check_wait", &cfg.Limits.PasswordCheckWait, hl.Wait, time.Millisecond, time.Minute)
	sl := &cfg.Limits.STOMP
	// A frame as large as the largest message: what a client sends in
	// one WebSocket message, STOMP carries in one frame.
	c.intIn("limits.stomp.max_frame_bytes", &sl.MaxFrameBytes, validate.DefaultSTOMPLimits().MaxFrameBytes, 256, 64<<20)
	c.intIn("limits.stomp.max_headers", &sl.MaxHeaders, 64, 1, 10000)
	c.intIn("limits.stomp.max_header_line_bytes", &sl.MaxHeaderLineBytes, 8<<10, 64, 1<<20)
	c.intIn("limits.stomp.max_broker_frame_bytes", &sl.MaxBrokerFrameBytes, 16<<20, 1<<10, 1<<30)
	ml := &cfg.Limits.MQTT
	c.intIn("limits.mqtt.max_packet_bytes", &ml.MaxPacketBytes, validate.DefaultMQTTLimits().MaxPacketBytes, 16, 256<<20)
	c.intIn("limits.mqtt.max_broker_packet_bytes", &ml.MaxBrokerPacketBytes, 16<<20, 1<<10, 256<<20)
	al, ad := &cfg.Limits.AMQP, validate.DefaultAMQPLimits()
	c.intIn("limits.amqp.max_frame_bytes", &al.MaxFrameBytes, ad.MaxFrameBytes, validate.AMQPMinFrameMax, 64<<20)
	c.intIn("limits.amqp.max_channels", &al.MaxChannels, ad.MaxChannels, 1, 65535)
	c.intIn("limits.amqp.max_table_depth", &al.MaxTableDepth, ad.MaxTableDepth, 1, 64)

	names := make([]string, 0, len(cfg.Backends))
	for name := range cfg.Backends {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		b := cfg.Backends[name]
		p := "backends." + name
		if !backendProtocols[b.Protocol] {
			c.fail(p+".protocol", "%q is not a supported protocol (stomp, amqp, nats, mqtt)", b.Protocol)
		}
		if b.Exchange != "" && b.Protocol != "amqp" {
			c.fail(p+".exchange", "only amqp backends have an exchange")
		}
		if b.Embedded || b.StoreDir != "" {
			if b.Protocol != "nats" {
				c.fail(p+".embedded", "only a nats backend can be embedded")
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
		if b.Exchange == "" && b.Protocol == "amqp" {
			b.Exchange = "amq.topic"
		}
		c.durIn(p+".dial_timeout", &b.DialTimeout, 5*time.Second, 10*time.Millisecond, time.Minute)
		if t := b.TLS; t.Enabled || t != (BackendTLSConfig{}) {
			host, _, _ := net.SplitHostPort(b.Address)
			ct := front.ClientTLS{ServerName: t.ServerName}
			for _, f := range []struct {
				in  string
				out *string
			}{{t.CAFile, &ct.CAFile}, {t.CertFile, &ct.CertFile}, {t.KeyFile, &ct.KeyFile}} {
				if f.in != "" {
					*f.out = cfg.path(f.in)
				}
			}
			conf, err := ct.Config(host)
			switch {
			case err != nil:
				c.fail(p+".tls", "%s", strings.TrimPrefix(err.Error(), "tls: "))
			case b.Embedded:
				c.fail(p+".tls", "the embedded server is reached in-process; TLS is for external brokers")
			}
			b.tls = conf
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
		key := r.Protocol
		switch {
		case r.Mode == "translate" && r.Protocol == "stomp":
			key = "stomp/translate"
		case r.Mode != "" && r.Mode != "relay":
			c.fail(p+".mode", "%q is not a mode (relay, or translate for stomp routes)", r.Mode)
		case r.Mode == "relay" && r.Protocol != "stomp":
			c.fail(p+".mode", "only stomp routes have a mode")
		}
		if len(r.VHosts) > 0 && r.Protocol != "amqp" {
			c.fail(p+".vhosts", "only amqp routes open virtual hosts")
		}
		if r.Auth != "" {
			a, ok := cfg.Auth[r.Auth]
			switch {
			case !ok:
				c.fail(p+".auth", "%q is not defined under auth", r.Auth)
			case a.Credential != "" && (key == "sse" || key == "publish" || key == "stomp/translate"):
				c.fail(p+".auth", "auth %q picks a broker credential per identity, which only relay routes (stomp relay, mqtt, amqp) can use: %s routes share the backend's one connection", r.Auth, key)
			}
		}
		serves, known := routeBackends[key]
		if !known {
			c.fail(p+".protocol", "%q is not a supported route protocol (stomp, mqtt, amqp, sse, publish)", r.Protocol)
		}
		b, ok := cfg.Backends[r.Backend]
		switch {
		case !ok:
			c.fail(p+".backend", "%q is not defined under backends", r.Backend)
		case known && backendProtocols[b.Protocol] && !serves[b.Protocol]: // an unknown protocol is reported once, at the backend
			c.fail(p+".backend", "backend %q speaks %s, which cannot serve a %s route (stomp routes relay to stomp backends; mode: translate maps onto nats, amqp or mqtt)", r.Backend, b.Protocol, key)
		case key == "amqp" && b.Credential == "" && cfg.Auth[r.Auth].Credential == "":
			// The relay answers every client's login with the gateway's own:
			// with none, RabbitMQ refuses each connection after its delay.
			c.fail(p+".backend", "an amqp route logs in to the broker with a keyring entry: set backends.%s.credential, or a credential in the route's auth policy", r.Backend)
		}
	}
}

// logRoutes tells the operator where each route is served, as URLs on
// the address the gateway listens at, https:// and wss:// when it serves
// TLS, with what to try first for the demo and SSE and publish routes.
func (cfg *Config) logRoutes(log *slog.Logger, addr net.Addr, tls bool) {
	web, ws := "http://", "ws://"
	if tls {
		web, ws = "https://", "wss://"
	}
	base := displayAddr(addr)
	var sse, publish string
	for _, r := range cfg.Routes {
		path := strings.TrimSuffix(r.Path, "/")
		attrs := []any{"protocol", r.Protocol, "backend", r.Backend}
		if r.Mode != "" {
			attrs = append(attrs, "mode", r.Mode)
		}
		if r.Auth != "" {
			attrs = append(attrs, "auth", r.Auth)
		}
		var url string
		switch r.Protocol {
		case "sse":
			url = web + base + path + "/TOPIC"
			if sse == "" {
				sse = web + base + path
			}
		case "publish":
			url = web + base + path + "/TOPIC"
			if publish == "" {
				publish = web + base + path
			}
		default:
			url = ws + base + path
		}
		log.Info("route", append([]any{"url", url}, attrs...)...)
	}
	if cfg.Demo {
		hint := "open the demo page: " + web + base + "/"
		if sse != "" {
			hint += "   follow it from a terminal: curl -N " + sse + "/demo"
		}
		if publish != "" {
			hint += "   publish: curl -d hi " + publish + "/demo"
		}
		log.Info(hint)
	}
}

// natsHeaderRoom is what the embedded NATS server's max_payload allows
// beyond the largest body for its headers (a Content-Type), which NATS
// counts in the payload.
const natsHeaderRoom = 64 << 10

// embeddedMaxPayload is the embedded NATS server's max_payload: the
// largest message a route may publish through it (a WebSocket message
// translated from STOMP, an HTTP publish), with room for its headers.
// NATS's own default, exactly 1 MiB, refuses a 1 MiB body with a
// Content-Type.
func (cfg *Config) embeddedMaxPayload() int32 {
	body := max(cfg.WebSocket.MaxMessageBytes, cfg.Limits.STOMP.MaxFrameBytes, cfg.SSE.MaxPublishBytes)
	return int32(body + natsHeaderRoom)
}

// needsKeyring reports whether any backend or auth policy names a keyring
// entry.
func (cfg *Config) needsKeyring() bool {
	for _, b := range cfg.Backends {
		if b.Credential != "" {
			return true
		}
	}
	for _, a := range cfg.Auth {
		if a.Credential != "" {
			return true
		}
	}
	return false
}

// lookupCredential reads the keyring in force (it is swapped on SIGHUP).
func (cfg *Config) lookupCredential(name string) (keyring.Credential, error) {
	kr := cfg.keyring.Load()
	if kr == nil {
		return keyring.Credential{}, keyring.ErrNoEntry
	}
	return kr.Get(name)
}

// checkAuth checks each auth policy and builds it.
func (cfg *Config) checkAuth(c *checker) {
	cfg.policies = map[string]*auth.Policy{}
	for _, name := range sortedKeys(cfg.Auth) {
		a := cfg.Auth[name]
		p := "auth." + name
		errs := len(c.errs)
		o := auth.Options{Mode: auth.Mode(a.Mode), Credential: a.Credential, ExpiryGrace: time.Duration(a.ExpiryGrace),
			Lookup: cfg.lookupCredential}
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
			continue
		}
		pol, err := auth.New(o)
		if err != nil {
			c.fail(p, "%s", strings.TrimPrefix(err.Error(), "auth: "))
			continue
		}
		cfg.policies[name] = pol
	}
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

// path resolves a file named in the config against the config's directory.
func (cfg *Config) path(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(cfg.dir, name)
}

// jwtSecret is the HS256 secret of an auth policy, for `wsbridge token`.
func (cfg *Config) jwtSecret(name string) ([]byte, error) {
	a, ok := cfg.Auth[name]
	switch {
	case !ok:
		return nil, fmt.Errorf("no auth policy %q in the config", name)
	case a.Mode != "jwt" || a.JWT.Algorithm != "HS256":
		return nil, fmt.Errorf("auth %q does not use HS256; sign with its private key (-key FILE)", name)
	case a.JWT.Secret != "":
		return []byte(a.JWT.Secret), nil
	}
	b, err := os.ReadFile(cfg.path(a.JWT.SecretFile))
	return []byte(strings.TrimRight(string(b), "\r\n")), err
}
