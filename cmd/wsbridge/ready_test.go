package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/keyring"
)

// natsWithPassword runs a NATS server of the test's own that admits only
// user with password.
func natsWithPassword(t *testing.T, user, password string) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, Username: user, Password: password,
		NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return s.Addr().String()
}

// gatewayKeyring makes a keyring k (and its key file k.key) in dir whose
// entry "gw" holds user and password, as `keyring init` and `keyring set`
// would.
func gatewayKeyring(t *testing.T, dir, user, password string) (*keyring.Keyring, string) {
	t.Helper()
	keyFile := filepath.Join(dir, "k.key")
	key, err := keyring.GenerateKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.Create(filepath.Join(dir, "k"), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.Set("gw", keyring.Credential{Username: user, Password: keyring.NewSecret(password)}); err != nil {
		t.Fatal(err)
	}
	return kr, keyFile
}

// TestServeReadyzChecksBrokerLogin: /readyz logs in to each backend with
// the gateway's keyring credential. A RabbitMQ user made for the test
// (and a Mosquitto and a NATS server admitting it) whose keyring entry
// holds another password: 503 naming every backend and "login refused",
// not the broker user; each refusal a WARN naming backend and keyring
// entry, never the password. The right password: 200. Relays (amqp,
// stomp, mqtt) and the brokers behind SSE (amqp, nats) alike.
func TestServeReadyzChecksBrokerLogin(t *testing.T) {
	user, password := brokertest.RabbitUser(t)
	mosquitto := brokertest.MosquittoWithPasswords(t, map[string]string{user: password})
	natsAddr := natsWithPassword(t, user, password)
	cfg := fmt.Sprintf(`backends:
  rabbit_amqp: {protocol: amqp, address: %s, credential: gw}
  rabbit_stomp: {protocol: stomp, address: %s, credential: gw}
  rabbit_sse: {protocol: amqp, address: %s, credential: gw}
  mosquitto: {protocol: mqtt, address: %s, credential: gw}
  nats: {protocol: nats, address: %s, credential: gw}
routes:
  - {path: /amqp, protocol: amqp, backend: rabbit_amqp}
  - {path: /stomp, protocol: stomp, backend: rabbit_stomp}
  - {path: /sse, protocol: sse, backend: rabbit_sse}
  - {path: /mqtt, protocol: mqtt, backend: mosquitto}
  - {path: /nsse, protocol: sse, backend: nats}
`, brokertest.RabbitAMQP(t), brokertest.RabbitSTOMP(t), brokertest.RabbitAMQP(t), mosquitto, natsAddr)
	backends := []string{"mosquitto", "nats", "rabbit_amqp", "rabbit_sse", "rabbit_stomp"}
	wrong := "not-" + password
	for _, tc := range []struct {
		name     string
		password string
	}{{"wrong password", wrong}, {"right password", password}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			kr, keyFile := gatewayKeyring(t, dir, user, tc.password)
			t.Setenv("WSBRIDGE_KEYRING_KEY", "")
			t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", keyFile)
			path := filepath.Join(dir, "c.yaml")
			os.WriteFile(path, []byte(cfg), 0o600)
			g := serve(t, "-config", path, "-keyring", kr.Path())

			if tc.password == password {
				code, body := get(t, "http://"+g.addr+"/readyz")
				if code != http.StatusOK {
					t.Fatalf("readyz with the right password: %d %q", code, body)
				}
				if strings.Contains(g.logs.String(), "refused") {
					t.Fatalf("an accepted login logged as refused:\n%s", g.logs)
				}
				return
			}
			// The gateway tries each login as it starts; a broker may take
			// seconds to refuse (RabbitMQ AMQP: 3 s), and each refusal is
			// logged once known.
			for _, b := range backends {
				g.logs.WaitFor(t, "backend="+b+" keyring_entry=gw")
			}
			code, body := get(t, "http://"+g.addr+"/readyz")
			if code != http.StatusServiceUnavailable {
				t.Fatalf("readyz with a wrong password: %d %q", code, body)
			}
			for _, b := range backends {
				if !strings.Contains(body, b+": login refused") {
					t.Errorf("readyz does not say %q: %q", b+": login refused", body)
				}
			}
			if strings.Contains(body, user) || strings.Contains(body, wrong) {
				t.Fatalf("readyz tells the broker user or password: %q", body)
			}
			for _, l := range strings.Split(g.logs.String(), "\n") {
				if strings.Contains(l, "keyring_entry=gw") && strings.Contains(l, "refused") && !strings.Contains(l, "level=WARN") {
					t.Errorf("a refused login not at WARN: %s", l)
				}
			}
			if strings.Contains(g.logs.String(), wrong) {
				t.Fatalf("the password reached the logs:\n%s", g.logs)
			}
		})
	}
}

// TestServeReadyzLogsInAtMostEvery30s: a burst of /readyz costs one
// broker login, not one each; and a broker gone down shows at once,
// however fresh the login's result.
func TestServeReadyzLogsInAtMostEvery30s(t *testing.T) {
	path, keyFile := brokertest.RabbitKeyring(t)
	t.Setenv("WSBRIDGE_KEYRING_KEY", "")
	t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", keyFile)
	tap := brokertest.NewTapProxy(t, brokertest.RabbitAMQP(t))
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte("backends:\n  rabbit: {protocol: amqp, address: "+tap.Addr()+", credential: "+brokertest.RabbitEntry+
		"}\nroutes:\n  - {path: /amqp, protocol: amqp, backend: rabbit}\n"), 0o600)
	g := serve(t, "-config", cfg, "-keyring", path)
	const hits = 20
	for range hits {
		if code, body := get(t, "http://"+g.addr+"/readyz"); code != http.StatusOK {
			t.Fatalf("readyz: %d %q", code, body)
		}
	}
	tap.Close()
	// Each login opens with the AMQP protocol header; a bare dial sends
	// nothing.
	if logins := strings.Count(tap.Sent(), "AMQP\x00\x00\x09\x01"); logins != 1 {
		t.Fatalf("%d /readyz made %d broker logins, want 1 (the one at startup)", hits, logins)
	}
	if code, body := get(t, "http://"+g.addr+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "rabbit: "+tap.Addr()+" unreachable") {
		t.Fatalf("readyz with the broker gone: %d %q", code, body)
	}
}

// TestCheckLogin: `wsbridge check -login` logs in to each backend with its
// keyring entry: a refused password exits 1 naming the backend, the entry
// and the command that sets it, never the password; the right one exits 0.
func TestCheckLogin(t *testing.T) {
	user, password := brokertest.RabbitUser(t)
	cfg := fmt.Sprintf(`backends:
  rabbit_amqp: {protocol: amqp, address: %s, credential: gw}
  rabbit_stomp: {protocol: stomp, address: %s, credential: gw}
routes:
  - {path: /amqp, protocol: amqp, backend: rabbit_amqp}
  - {path: /stomp, protocol: stomp, backend: rabbit_stomp}
`, brokertest.RabbitAMQP(t), brokertest.RabbitSTOMP(t))
	wrong := "not-" + password
	for _, tc := range []struct {
		name     string
		password string
		code     int
		want     []string
	}{
		{"right password", password, 0, []string{`backend rabbit_amqp (amqp `, `login with keyring entry "gw" accepted`}},
		{"wrong password", wrong, 1, []string{`backend rabbit_amqp (amqp `, `backend rabbit_stomp (stomp `,
			`login with keyring entry "gw" refused`, "wsbridge keyring set gw -username USER -config ",
			"2 backends did not accept the gateway's login: rabbit_amqp, rabbit_stomp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			kr, keyFile := gatewayKeyring(t, dir, user, tc.password)
			t.Setenv("WSBRIDGE_KEYRING_KEY", "")
			t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", keyFile)
			path := filepath.Join(dir, "c.yaml")
			os.WriteFile(path, []byte(cfg), 0o600)
			out, errOut, code := wsbridge(t, "", "check", "-config", path, "-keyring", kr.Path(), "-login", "-listen", "127.0.0.1:0")
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s%s", code, tc.code, out, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out+errOut, w) {
					t.Errorf("output lacks %q:\n%s%s", w, out, errOut)
				}
			}
			if strings.Contains(out+errOut, wrong) {
				t.Fatalf("the password reached the output:\n%s%s", out, errOut)
			}
		})
	}
}
