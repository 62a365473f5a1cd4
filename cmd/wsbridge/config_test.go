package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigsLoad(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs in testdata/")
	}
	for _, f := range files {
		if _, err := loadConfig(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	cfg, err := loadConfig("")
	if err != nil {
		t.Fatalf("embedded default: %v", err)
	}
	if cfg.needsKeyring() {
		t.Fatal("the embedded default must run without a keyring")
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := parseConfig("c.yaml", []byte("backends:\n  b:\n    protocol: stomp\n    address: h:1\nroutes:\n  - {path: /s, protocol: stomp, backend: b}\n"))
	if err != nil {
		t.Fatal(err)
	}
	// A 1 MiB application message passes every default on its way.
	const mib = 1 << 20
	if cfg.Listen != ":8080" || cfg.WebSocket.MaxMessageBytes <= mib || time.Duration(cfg.WebSocket.PingInterval) != 30*time.Second ||
		cfg.Limits.STOMP.MaxFrameBytes <= mib || cfg.Limits.MQTT.MaxPacketBytes <= mib || cfg.SSE.MaxPublishBytes < mib ||
		time.Duration(cfg.WebSocket.MessageTimeout) != 15*time.Second || cfg.Limits.MemoryBytes != 1<<30 ||
		cfg.Backends["b"].VHost != "/" || cfg.Limits.MaxConnections != 10000 {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
	if got := time.Duration(*cfg.Limits.LoginTimeout); got != 5*time.Second {
		t.Fatalf("limits.login_timeout %s, want 5s", got)
	}
	if time.Duration(*cfg.SSE.FlushInterval) != 20*time.Millisecond || cfg.WebSocket.ReadBufferBytes != 1024 {
		t.Fatalf("sse.flush_interval %s, websocket.read_buffer_bytes %d", time.Duration(*cfg.SSE.FlushInterval), cfg.WebSocket.ReadBufferBytes)
	}
	// A stream's queue and a topic's ring hold a 1 MiB event with room to
	// spare, and the hub gets what the config says.
	if so := cfg.SSE.Options(); so.ClientQueueBytes != 4*mib || so.ReplayBytes != 4*mib || so.MaxLiveTopics != 10000 {
		t.Fatalf("sse byte limits: %+v", so)
	}
	// An explicit 0s turns coalescing off; it is not "unset".
	cfg, err = parseConfig("c.yaml", []byte("sse: {flush_interval: 0s}\nbackends:\n  b:\n    protocol: stomp\n    address: h:1\nroutes:\n  - {path: /s, protocol: stomp, backend: b}\n"))
	if err != nil || *cfg.SSE.FlushInterval != 0 {
		t.Fatalf("explicit 0s: %v %v", err, cfg)
	}
}

func TestConfigErrorsNameFileLineAndReason(t *testing.T) {
	const ok = "backends:\n  b:\n    protocol: stomp\n    address: h:1\nroutes:\n  - path: /s\n    protocol: stomp\n    backend: b\n"
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown top-level key", "listn: :1\n" + ok, []string{"c.yaml:1: unknown key \"listn\""}},
		{"unknown nested key", ok + "websocket:\n  ping: 1s\n", []string{"c.yaml:10: unknown key \"ping\""}},
		{"wrong type", ok + "limits:\n  max_connections: many\n", []string{"c.yaml:10:", "whole number"}},
		{"bad duration", ok + "websocket:\n  write_timeout: soon\n", []string{"c.yaml:10:", "not a duration"}},
		{"out of range", ok + "limits:\n  stomp:\n    max_frame_bytes: 10\n", []string{"c.yaml:11: limits.stomp.max_frame_bytes: 10 is out of range"}},
		{"bad listen", "listen: nowhere\n" + ok, []string{"c.yaml:1: listen:"}},
		{"bad origin", "allowed_origins: [\"example.com\"]\n" + ok, []string{"c.yaml:1: allowed_origins.0:"}},
		{"unknown backend", strings.Replace(ok, "backend: b", "backend: x", 1), []string{"c.yaml:8: routes.0.backend: \"x\" is not defined"}},
		{"unknown protocol", strings.Replace(ok, "protocol: stomp\n    address", "protocol: smtp\n    address", 1), []string{"c.yaml:3: backends.b.protocol"}},
		{"relative path", strings.Replace(ok, "path: /s", "path: s", 1), []string{"c.yaml:6: routes.0.path"}},
		{"reserved path", strings.Replace(ok, "path: /s", "path: /healthz", 1), []string{"already taken"}},
		{"no routes", "listen: :1\n", []string{"at least one route"}},
		{"bad address", strings.Replace(ok, "address: h:1", "address: h", 1), []string{"c.yaml:4: backends.b.address"}},
		{"admin on a public address", "admin: {listen: \"0.0.0.0:9090\"}\n" + ok, []string{"c.yaml:1: admin.listen", "loopback"}},
		{"admin not host:port", "admin: {listen: \"9090\"}\n" + ok, []string{"c.yaml:1: admin.listen"}},
		{"amqp route without a broker login", "backends:\n  r:\n    protocol: amqp\n    address: h:1\nroutes:\n  - {path: /amqp, protocol: amqp, backend: r}\n", []string{"c.yaml:6: routes.0.backend", "backends.r.credential"}},
		{"large messages slower than the largest can go", ok + "websocket:\n  large_message_bytes_per_second: 2097152\n", []string{"c.yaml:10: websocket.large_message_bytes_per_second: 2097152 is less than 4 x websocket.max_message_bytes"}},
		{"flush interval too long", ok + "sse:\n  flush_interval: 2s\n", []string{"c.yaml:10: sse.flush_interval: 2s is out of range"}},
		{"stream queue under a KiB", ok + "sse:\n  client_queue_bytes: 100\n", []string{"c.yaml:10: sse.client_queue_bytes: 100 is out of range"}},
		{"ring under a KiB", ok + "sse:\n  replay_bytes: 100\n", []string{"c.yaml:10: sse.replay_bytes: 100 is out of range"}},
		{"negative live topics", ok + "sse:\n  max_live_topics: -1\n", []string{"c.yaml:10: sse.max_live_topics: -1 is out of range"}},
		{"login timeout 0s is not off", ok + "limits:\n  login_timeout: 0s\n", []string{"c.yaml:10: limits.login_timeout: 0s is out of range", "no \"off\""}},
		{"negative login timeout", ok + "limits:\n  login_timeout: -5s\n", []string{"c.yaml:10:", "\"-5s\": a duration cannot be negative"}},
		{"login timeout too long", ok + "limits:\n  login_timeout: 1h\n", []string{"c.yaml:10: limits.login_timeout: 1h0m0s is out of range"}},
		{"password check wait too long", ok + "limits:\n  password_check_wait: 2m\n", []string{"c.yaml:10: limits.password_check_wait: 2m0s is out of range"}},
		{"bad log level", ok + "log:\n  level: loud\n", []string{"c.yaml:10: log.level"}},
		{"syntax error", "routes: [\n", []string{"c.yaml:"}},
		{"mqtt listener without jetstream", "backends:\n  n:\n    protocol: nats\n    embedded: true\n    mqtt_address: 127.0.0.1:1884\nroutes:\n  - {path: /s, protocol: sse, backend: n}\n", []string{"c.yaml:5: backends.n.mqtt_address", "store_dir"}},
		{"embedded on a public address", "backends:\n  n:\n    protocol: nats\n    embedded: true\n    address: 0.0.0.0:4222\nroutes:\n  - {path: /s, protocol: sse, backend: n}\n", []string{"c.yaml:5: backends.n.address", "loopback"}},
		{"translate onto a stomp backend", strings.Replace(ok, "backend: b", "backend: b\n    mode: translate", 1), []string{"routes.0.backend", "translate"}},
		{"undefined auth", ok + "    auth: nope\n", []string{"c.yaml:9: routes.0.auth: \"nope\" is not defined"}},
		{"auth without mode", ok + "auth:\n  a: {}\n", []string{"auth.a.mode", "choose a mode"}},
		{"unknown auth mode", ok + "auth:\n  a:\n    mode: ldap\n", []string{"c.yaml:11: auth.a.mode: \"ldap\""}},
		{"short HS256 secret", ok + "auth:\n  a:\n    mode: jwt\n    jwt:\n      algorithm: HS256\n      secret: short\n", []string{"c.yaml:12: auth.a.jwt", "at least 32 bytes"}},
		{"unknown algorithm", ok + "auth:\n  a:\n    mode: jwt\n    jwt:\n      algorithm: none\n", []string{"auth.a.jwt", "HS256, RS256, ES256"}},
		{"missing key file", ok + "auth:\n  a:\n    mode: jwt\n    jwt:\n      algorithm: RS256\n      public_key_file: /nonexistent.pem\n", []string{"c.yaml:14: auth.a.jwt.public_key_file"}},
		{"users mode without a file", ok + "auth:\n  a:\n    mode: users\n", []string{"auth.a.users_file", "needs a users_file"}},
		{"bad carrier", ok + "auth:\n  a:\n    mode: users\n    users_file: /nonexistent\n    carriers: [pigeon]\n", []string{"c.yaml:13: auth.a.carriers.0: \"pigeon\""}},
		{"bad pattern", ok + "auth:\n  a:\n    mode: none\n    acl:\n      - publish: [\"a.#.b\"]\n", []string{"auth.a.acl.0.publish.0", "last segment"}},
		{"rule that allows nothing", ok + "auth:\n  a:\n    mode: none\n    acl:\n      - roles: [x]\n", []string{"auth.a.acl.0", "allows nothing"}},
		{"credential template on an anonymous route", ok + "auth:\n  a:\n    mode: none\n    credential: user/{sub}\n", []string{"c.yaml:10: auth.a:", "anonymous clients have no {sub}"}},
		{"per-identity credential on sse", "backends:\n  n:\n    protocol: nats\n    address: h:1\nauth:\n  a:\n    mode: none\n    credential: fixed\nroutes:\n  - {path: /s, protocol: sse, backend: n, auth: a}\n", []string{"routes.0.auth", "only relay routes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig("c.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	if _, err := loadConfig(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("missing file: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}
