// Package brokertest is what tests need of real brokers. Run, RunTLS and
// RunLogin are the contract every broker.Broker implementation's tests
// hold it to (contract.go). The rest finds the real brokers integration
// tests talk to and the credentials the gateway is to inject (a broker
// that cannot be reached skips the test locally, naming the variable to
// set, and fails it under CI=true), makes throwaway brokers, users,
// queues and CAs, cuts connections (TapProxy), and serves a gateway route
// under test (serve.go, which imports bridge for its WebSocket options
// and front for its server; RunTLS imports front for the client TLS).
// Tests of the broker clients, front, adapters, sse and the commands
// import it.
package brokertest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/keyring"
)

// Addr returns the address in env (or def) once it accepts TCP connections.
func Addr(t testing.TB, env, def, what string) string {
	t.Helper()
	addr := os.Getenv(env)
	if addr == "" {
		addr = def
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		msg := fmt.Sprintf("%s not reachable at %s (start it or set %s): %v", what, addr, env, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	c.Close()
	return addr
}

// RabbitSTOMP is RabbitMQ's STOMP listener.
func RabbitSTOMP(t testing.TB) string {
	return Addr(t, "WSBRIDGE_TEST_STOMP_ADDR", "127.0.0.1:61613", "RabbitMQ STOMP (rabbitmq-plugins enable rabbitmq_stomp)")
}

// RabbitEntry is the keyring entry holding the RabbitMQ test identity.
const RabbitEntry = "rabbit"

// RabbitKeyring returns a keyring file and its key file holding the
// RabbitMQ identity under RabbitEntry. CI creates a dedicated user whose
// random password exists only there (WSBRIDGE_TEST_KEYRING,
// WSBRIDGE_TEST_KEYRING_KEY_FILE); locally, without those, a throwaway
// keyring with guest/guest stands in.
func RabbitKeyring(t testing.TB) (path, keyFile string) {
	t.Helper()
	path, keyFile = os.Getenv("WSBRIDGE_TEST_KEYRING"), os.Getenv("WSBRIDGE_TEST_KEYRING_KEY_FILE")
	if path != "" {
		return path, keyFile
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI must provide WSBRIDGE_TEST_KEYRING and WSBRIDGE_TEST_KEYRING_KEY_FILE with a dedicated RabbitMQ user")
	}
	dir := t.TempDir()
	keyFile = filepath.Join(dir, "test.keyring.key")
	key, err := keyring.GenerateKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "test.keyring")
	kr, err := keyring.Create(path, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.Set(RabbitEntry, keyring.Credential{Username: "guest", Password: keyring.NewSecret("guest")}); err != nil {
		t.Fatal(err)
	}
	return path, keyFile
}

// RabbitCredential opens RabbitKeyring and returns the RabbitMQ identity.
func RabbitCredential(t testing.TB) keyring.Credential {
	t.Helper()
	path, keyFile := RabbitKeyring(t)
	key, err := keyring.LoadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kr.Get(RabbitEntry)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// RabbitAMQP is RabbitMQ's AMQP 0-9-1 listener.
func RabbitAMQP(t testing.TB) string {
	return Addr(t, "WSBRIDGE_TEST_AMQP_ADDR", "127.0.0.1:5672", "RabbitMQ AMQP")
}

// NATS is a NATS server.
func NATS(t testing.TB) string {
	return Addr(t, "WSBRIDGE_TEST_NATS_ADDR", "127.0.0.1:4222", "NATS")
}

// DeadAddr is a loopback address where nothing listens.
func DeadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Mosquitto is an MQTT broker (anonymous on our machines).
func Mosquitto(t testing.TB) string {
	return Addr(t, "WSBRIDGE_TEST_MQTT_ADDR", "127.0.0.1:1883", "Mosquitto")
}

// RabbitMQTT is RabbitMQ's MQTT plugin. .ci/run starts it on 1884, since
// Mosquitto holds 1883 here.
func RabbitMQTT(t testing.TB) string {
	return Addr(t, "WSBRIDGE_TEST_RABBIT_MQTT_ADDR", "127.0.0.1:1884", "RabbitMQ MQTT plugin (see .ci/run)")
}

// RabbitUser creates a RabbitMQ user of the test's own, with a random
// password and full permissions on vhost "/", and deletes it when the test
// ends. It needs rabbitmqctl (what .ci/run uses); without it the test is
// skipped locally and fails under CI=true.
func RabbitUser(t testing.TB) (user, password string) {
	t.Helper()
	RabbitAMQP(t)
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		msg := "rabbitmqctl is needed to create a RabbitMQ user: " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	var b [12]byte
	rand.Read(b[:])
	user, password = "wsbridge_test_"+hex.EncodeToString(b[:4]), hex.EncodeToString(b[4:])
	ctl := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("rabbitmqctl", args...).CombinedOutput(); err != nil {
			t.Fatalf("rabbitmqctl %s: %v: %s", args[0], err, out)
		}
	}
	// The password goes through stdin, not the command line others can read.
	cmd := exec.Command("rabbitmqctl", "add_user", user)
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rabbitmqctl add_user: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("rabbitmqctl", "delete_user", user).Run() })
	ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
	return user, password
}
