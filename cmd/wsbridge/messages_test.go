package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/wsbridge/wsbridge/broker/brokertest"
)

// An unknown key gets the nearest key its level knows, when there is one
// near enough to be a typo, and nothing when there is none.
func TestConfigUnknownKeyDidYouMean(t *testing.T) {
	const ok = "backends:\n  b:\n    protocol: stomp\n    address: h:1\nroutes:\n  - path: /s\n    protocol: stomp\n    backend: b\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"top level", "listn: :1\n" + ok, `c.yaml:1: unknown key "listn"; did you mean "listen"?`},
		{"two letters swapped", "auht: {}\n" + ok, `c.yaml:1: unknown key "auht"; did you mean "auth"?`},
		{"nested", ok + "websocket:\n  ping_intervl: 1s\n", `c.yaml:10: unknown key "ping_intervl"; did you mean "ping_interval"?`},
		{"in a map of backends", strings.Replace(ok, "address: h:1", "address: h:1\n    embeded: true", 1), `c.yaml:5: unknown key "embeded"; did you mean "embedded"?`},
		{"in a list of routes", ok + "    bakend: b\n", `c.yaml:9: unknown key "bakend"; did you mean "backend"?`},
		{"the start of a key", ok + "limits:\n  amqp:\n    max_frame: 1\n", `c.yaml:11: unknown key "max_frame"; did you mean "max_frame_bytes"?`},
		{"a key of another level is not offered", ok + "websocket:\n  backends: 1\n", `c.yaml:10: unknown key "backends"` + "\n"},
		{"nothing near", "zzzzzz: 1\n" + ok, `c.yaml:1: unknown key "zzzzzz"` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig("c.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			if got := err.Error() + "\n"; !strings.Contains(got, tt.want) {
				t.Fatalf("error %q does not contain %q", got, tt.want)
			}
		})
	}
}

// TLS file errors name the key and the file at fault, and say "tls:" once.
func TestConfigTLSFileErrors(t *testing.T) {
	ca := brokertest.NewCA(t)
	dir := t.TempDir()
	ca.Issue(t, "gw", filepath.Join(dir, "gw.pem"), filepath.Join(dir, "gw.key"))
	const routes = "backends: {n: {protocol: nats, address: h:1}}\nroutes: [{path: /s, protocol: sse, backend: n}]\n"
	tests := []struct {
		name, tls string
		want      []string
	}{
		{"no key_file", "tls: {cert_file: gw.pem}\n", []string{"c.yaml:1: tls: serving TLS needs both cert_file and key_file: key_file is missing"}},
		{"no cert_file", "tls: {key_file: gw.key}\n", []string{"c.yaml:1: tls: serving TLS needs both cert_file and key_file: cert_file is missing"}},
		{"key_file not there", "tls: {cert_file: gw.pem, key_file: nope.key}\n",
			[]string{"c.yaml:1: tls.key_file: cannot read " + filepath.Join(dir, "nope.key") + ": no such file or directory"}},
		{"key_file a directory", "tls: {cert_file: gw.pem, key_file: .}\n", []string{"tls.key_file: cannot read " + dir + ": is a directory"}},
		{"cert_file not there", "tls: {cert_file: nope.pem, key_file: gw.key}\n", []string{"tls.cert_file: cannot read " + filepath.Join(dir, "nope.pem")}},
		{"files swapped", "tls: {cert_file: gw.key, key_file: gw.pem}\n", []string{"c.yaml:1: tls: failed to find certificate PEM data", "cert_file " + filepath.Join(dir, "gw.key")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(filepath.Join(dir, "c.yaml"), []byte(tt.tls+routes))
			if err == nil {
				t.Fatal("accepted")
			}
			got := strings.ReplaceAll(err.Error(), filepath.Join(dir, "c.yaml"), "c.yaml")
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("error %q does not contain %q", got, w)
				}
			}
			for _, bad := range []string{"tls: tls:", "read .:", "\n"} {
				if strings.Contains(got, bad) {
					t.Errorf("error %q contains %q", got, bad)
				}
			}
		})
	}
}

// A taken port stops startup with a hint to choose another, before the
// embedded NATS server (or anything else) has started.
func TestServePortTaken(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, tc := range []struct {
		name, config string
		args         []string
		want         string
	}{
		{"listen", "listen: " + held.Addr().String() + "\n", nil, "-listen HOST:PORT"},
		{"-listen", "", []string{"-listen", held.Addr().String()}, "-listen HOST:PORT"},
		{"admin.listen", "listen: 127.0.0.1:0\nadmin: {listen: \"" + held.Addr().String() + "\"}\n", nil, "admin.listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(cfg, []byte(tc.config+"backends: {n: {protocol: nats, embedded: true, address: 127.0.0.1:0}}\n"+
				"routes: [{path: /s, protocol: sse, backend: n}]\n"), 0o600)
			g, err := startServe(t, append([]string{"-config", cfg}, tc.args...)...)
			if err == nil {
				t.Fatalf("served on a taken port:\n%s", g.logs)
			}
			msg := err.Error()
			if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(msg, held.Addr().String()+": the port is taken") || !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q: want the address, that it is taken and %q", msg, tc.want)
			}
			if strings.Contains(g.logs.String(), "embedded nats") {
				t.Fatalf("the embedded NATS server started before the port was found taken:\n%s", g.logs)
			}
		})
	}
}

// The startup log lists each route's URL, https:// and wss:// when the
// gateway serves TLS, with a config file as with the embedded default.
func TestServeLogsRouteURLs(t *testing.T) {
	ca := brokertest.NewCA(t)
	dir := t.TempDir()
	ca.Issue(t, "gw", filepath.Join(dir, "gw.pem"), filepath.Join(dir, "gw.key"))
	const routes = `backends:
  nats: {protocol: nats, embedded: true, address: 127.0.0.1:0}
demo: true
routes:
  - {path: /stomp, protocol: stomp, mode: translate, backend: nats}
  - {path: /sse, protocol: sse, backend: nats}
  - {path: /publish/, protocol: publish, backend: nats}
`
	for _, tc := range []struct {
		name, tls, web, ws string
	}{
		{"plain", "", "http://", "ws://"},
		{"TLS", "tls: {cert_file: gw.pem, key_file: gw.key}\n", "https://", "wss://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(dir, tc.name+".yaml")
			os.WriteFile(cfg, []byte(tc.tls+routes), 0o600)
			g := serve(t, "-config", cfg)
			logs := g.logs.String()
			for _, want := range []string{
				"msg=route url=" + tc.ws + g.addr + "/stomp protocol=stomp backend=nats mode=translate",
				"msg=route url=" + tc.web + g.addr + "/sse/TOPIC protocol=sse backend=nats",
				"msg=route url=" + tc.web + g.addr + "/publish/TOPIC protocol=publish backend=nats",
				"open the demo page: " + tc.web + g.addr + "/ ",
				"curl -N " + tc.web + g.addr + "/sse/demo",
			} {
				if !strings.Contains(logs, want) {
					t.Errorf("the startup log lacks %q:\n%s", want, logs)
				}
			}
			if tc.web == "https://" && strings.Contains(logs, "http://"+g.addr) {
				t.Errorf("a TLS gateway's log offers http://:\n%s", logs)
			}
		})
	}
}

// A bare port, for -listen or the config's listen, is answered with the
// addresses it probably meant, not net's "missing port in address".
func TestListenBarePortHint(t *testing.T) {
	const want = `"8085" is not host:port: did you mean ":8085" (every interface) or "127.0.0.1:8085" (this machine only)?`
	_, errOut, code := wsbridge(t, "", "serve", "-listen", "8085")
	if code != 2 || !strings.Contains(errOut, "-listen: "+want) {
		t.Fatalf("-listen 8085: exit %d, stderr %q", code, errOut)
	}
	_, err := parseConfig("c.yaml", []byte("listen: 8085\nbackends: {n: {protocol: nats, address: h:1}}\nroutes: [{path: /s, protocol: sse, backend: n}]\n"))
	if err == nil || !strings.Contains(err.Error(), "c.yaml:1: listen: "+want) {
		t.Fatalf("listen: 8085: %v", err)
	}
}

// One run reports every problem of the file, in file order: unknown keys
// and values of the wrong type with the checks of the rest, not one layer
// per run; a value that could not be read draws no second complaint.
func TestConfigErrorsAllAtOnce(t *testing.T) {
	const bad = `auht: {}
sse:
  heartbeat: 15
backends:
  n: {protocol: natz, address: h:1}
routes:
  - {path: sse, protocol: sse, backend: n}
limits:
  login_timeout: soon
`
	_, err := parseConfig("c.yaml", []byte(bad))
	if err == nil {
		t.Fatal("accepted")
	}
	want := []string{
		`c.yaml:1: unknown key "auht"; did you mean "auth"?`,
		`c.yaml:3: "15" is not a duration such as 30s or 1m`,
		`c.yaml:5: backends.n.protocol: "natz" is not a supported protocol (stomp, amqp, nats, mqtt)`,
		`c.yaml:7: routes.0.path: "sse" must be an absolute URL path`,
		`c.yaml:9: "soon" is not a duration such as 30s or 1m`,
	}
	if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("errors:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

// check binds what serve would (listen, admin.listen) and releases it: a
// port another process holds fails check as it fails serve, and each
// line on stdout names the step that passed, the last one ("serve would
// start with it") only when every step did.
func TestCheckTriesThePorts(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	const rest = "backends: {n: {protocol: nats, embedded: true, address: 127.0.0.1:0}}\nroutes: [{path: /s, protocol: sse, backend: n}]\n"
	for _, tc := range []struct {
		name, config string
		args         []string
		code         int
		stdout       []string
		stderr       string
	}{
		{"free", "listen: 127.0.0.1:0\nadmin: {listen: \"127.0.0.1:0\"}\n", nil, 0,
			[]string{"config c.yaml: ok (1 route, 1 backend, 0 auth policies)", "keyring: not needed", "listen 127.0.0.1:0: ok: free (bound and released)",
				"admin.listen 127.0.0.1:0: ok: free", "c.yaml: ok: serve would start with it"}, ""},
		{"listen taken", "listen: " + held.Addr().String() + "\n", nil, 1,
			[]string{"config c.yaml: ok", "keyring: not needed"}, "listen on " + held.Addr().String() + ": the port is taken"},
		{"-listen taken", "", []string{"-listen", held.Addr().String()}, 1,
			[]string{"config c.yaml: ok"}, "listen on " + held.Addr().String() + ": the port is taken"},
		{"admin.listen taken", "listen: 127.0.0.1:0\nadmin: {listen: \"" + held.Addr().String() + "\"}\n", nil, 1,
			[]string{"listen 127.0.0.1:0: ok"}, "admin.listen: listen on " + held.Addr().String() + ": the port is taken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "c.yaml"), []byte(tc.config+rest), 0o600)
			t.Chdir(dir)
			out, errOut, code := wsbridge(t, "", append([]string{"check", "-config", "c.yaml"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s%s", code, tc.code, out, errOut)
			}
			for _, w := range tc.stdout {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if !strings.Contains(errOut, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, errOut)
			}
			if ok := strings.Contains(out, "serve would start"); ok != (tc.code == 0) {
				t.Errorf("says serve would start: %v, exit %d:\n%s", ok, code, out)
			}
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				if !strings.Contains(l, ": ok") && !strings.HasPrefix(l, "keyring: not needed") {
					t.Errorf("a line that does not say which step passed: %q", l)
				}
			}
		})
	}
}
