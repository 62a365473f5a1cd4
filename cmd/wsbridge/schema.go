// The configuration schema: the YAML types, with a plain value for each
// key and the helpers that only read them.

package main

import (
	_ "embed"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wsbridge/wsbridge/sse"
	"go.yaml.in/yaml/v3"
)

// defaultConfig is what `wsbridge` serves with no -config.
//
//go:embed default.yaml
var defaultConfig []byte

// Config is the gateway's YAML configuration. README.md documents each key.
// parseConfig fills its defaults and checks it; from then on it is read,
// never written: it holds plain values only. What is built from it (auth
// policies, TLS configs, brokers, the keyring in force) belongs to the
// gateway that buildServer makes.
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

	file string // the -config argument; "" for the embedded default
	dir  string // the config file's directory: relative file paths start here
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
	// LargeMessageBytesPerSecond is the process-wide rate at which
	// messages beyond memory.OwnBytes are taken in (bridge.Intake).
	LargeMessageBytesPerSecond int `yaml:"large_message_bytes_per_second"`
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

// withListen is the config serving at listen instead (-listen); "" keeps
// its own.
func (cfg *Config) withListen(listen string) *Config {
	if listen == "" {
		return cfg
	}
	c := *cfg
	c.Listen = listen
	return &c
}

// label names the config in messages.
func (cfg *Config) label() string {
	if cfg.file == "" {
		return "embedded default config"
	}
	return cfg.file
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
