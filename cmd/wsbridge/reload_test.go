package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/keyring"
)

// TestServeSIGHUPTakesTheFixedCredential: the keyring holds a wrong
// password for a RabbitMQ user made for the test (and a Mosquitto and a
// NATS server admitting it). Each refusal is a WARN whose fix is the
// keyring command with the -config (absolute) the gateway runs with and
// the SIGHUP that makes it take effect. Once the password is fixed and
// SIGHUP sent, the reload names the backends with a new credential; the
// next /readyz logs in again at once rather than keeping the refusal
// 30 s, and new sessions and broker connections (a STOMP relay CONNECT,
// an HTTP publish through AMQP) log in with the new password.
func TestServeSIGHUPTakesTheFixedCredential(t *testing.T) {
	user, password := brokertest.RabbitUser(t)
	mosquitto := brokertest.MosquittoWithPasswords(t, map[string]string{user: password})
	natsAddr := natsWithPassword(t, user, password)
	dir := t.TempDir()
	wrong := "not-" + password
	kr, _ := gatewayKeyring(t, dir, user, wrong)
	t.Setenv("WSBRIDGE_KEYRING_KEY", "")
	t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", "")
	config := filepath.Join(dir, "c.yaml")
	os.WriteFile(config, []byte(fmt.Sprintf(`keyring: {path: k}
backends:
  rabbit_amqp: {protocol: amqp, address: %s, credential: gw}
  rabbit_stomp: {protocol: stomp, address: %s, credential: gw}
  rabbit_sse: {protocol: amqp, address: %s, credential: gw}
  mosquitto: {protocol: mqtt, address: %s, credential: gw}
  nats: {protocol: nats, address: %s, credential: gw}
routes:
  - {path: /amqp, protocol: amqp, backend: rabbit_amqp}
  - {path: /stomp, protocol: stomp, backend: rabbit_stomp}
  - {path: /publish, protocol: publish, backend: rabbit_sse}
  - {path: /mqtt, protocol: mqtt, backend: mosquitto}
  - {path: /nsse, protocol: sse, backend: nats}
`, brokertest.RabbitAMQP(t), brokertest.RabbitSTOMP(t), brokertest.RabbitAMQP(t), mosquitto, natsAddr)), 0o600)
	// Run from elsewhere than the config's directory, as a service is: the
	// suggested command must not depend on the working directory.
	cwd := t.TempDir()
	t.Chdir(cwd)
	rel, err := filepath.Rel(cwd, config)
	if err != nil {
		t.Fatal(err)
	}
	g := serve(t, "-config", rel)
	backends := []string{"mosquitto", "nats", "rabbit_amqp", "rabbit_sse", "rabbit_stomp"}
	for _, b := range backends {
		g.logs.WaitFor(t, "backend="+b+" keyring_entry=gw")
	}
	fix := fmt.Sprintf("wsbridge keyring set gw -username USER -password-stdin -config %s`, then reload the gateway: kill -HUP %d", config, os.Getpid())
	for _, l := range strings.Split(g.logs.String(), "\n") {
		if strings.Contains(l, "refused the gateway's credential") && !strings.Contains(l, fix) {
			t.Errorf("the refusal's fix lacks %q: %s", fix, l)
		}
	}
	if code, body := get(t, "http://"+g.addr+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz with the wrong password: %d %q", code, body)
	}

	if err := kr.Set("gw", keyring.Credential{Username: user, Password: keyring.NewSecret(password)}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	g.logs.WaitFor(t, "SIGHUP: keyring reloaded")
	g.logs.WaitFor(t, "backends_with_new_credential="+strings.Join(backends, ","))

	// The login checks try the new credential at once. (The NATS
	// connection is its own readiness, and nats.go retries on its own
	// timer: it may not be back yet.)
	_, body := get(t, "http://"+g.addr+"/readyz")
	for _, b := range backends {
		if b != "nats" && strings.Contains(body, b+":") {
			t.Fatalf("readyz right after SIGHUP still says %q", body)
		}
	}
	conn, c := dialSTOMP(t, g.addr, "")
	conn.WriteString("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00")
	select {
	case m := <-c.msgs:
		if !strings.HasPrefix(string(m), "CONNECTED") {
			t.Fatalf("a STOMP session after SIGHUP: %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a STOMP session after SIGHUP: no answer")
	}
	resp, err := http.Post("http://"+g.addr+"/publish/reload."+user, "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("a publish after SIGHUP: %s", resp.Status)
	}
	// nats.go reconnects on its own timer (2 s) and tells no one outside
	// the broker; readiness is the only sign, so it is asked until then.
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := get(t, "http://"+g.addr+"/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz 15 s after SIGHUP: %d %q", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(g.logs.String(), password) || strings.Contains(g.logs.String(), wrong) {
		t.Fatal("a password reached the logs")
	}
}
