package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"go.yaml.in/yaml/v3"
)

// mint runs `wsbridge token` as a user would.
func mint(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(context.Background(), append([]string{"token"}, args...), nil, &out, &errb); code != 0 {
		t.Fatalf("wsbridge token %v: exit %d: %s", args, code, errb.String())
	}
	return strings.TrimSpace(out.String())
}

func post(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// serveJWTExample serves testdata/jwt.yaml with the test keyring and mints
// a reader's and a writer's token with `wsbridge token`.
func serveJWTExample(t *testing.T) (g *gatewayProcess, reader, writer string) {
	t.Helper()
	brokertest.RabbitAMQP(t)
	brokertest.RabbitSTOMP(t)
	brokertest.Mosquitto(t)
	path, keyFile := brokertest.RabbitKeyring(t)
	t.Setenv("WSBRIDGE_KEYRING_KEY", "")
	t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", keyFile)
	const config = "../../testdata/jwt.yaml"
	reader = mint(t, "-config", config, "-auth", "demo", "-sub", "rita", "-role", "reader")
	writer = mint(t, "-config", config, "-auth", "demo", "-sub", "will", "-role", "writer", "-ttl", "10m")
	return serve(t, "-config", config, "-keyring", path), reader, writer
}

// TestJWTExample is the README's worked example, testdata/jwt.yaml, with
// tokens minted by `wsbridge token`: a reader follows demo.* over SSE and
// gets what a writer sends over STOMP and HTTP; what the reader tries to
// send is refused on both, and no token reaches the logs.
func TestJWTExample(t *testing.T) {
	g, reader, writer := serveJWTExample(t)
	base := "http://" + g.addr
	topic := fmt.Sprintf("demo.example%d", time.Now().UnixNano())

	if code, body := get(t, base+"/sse/"+topic); code != http.StatusUnauthorized || !strings.Contains(body, "token is required") {
		t.Fatalf("stream without a token: %d %q", code, body)
	}
	lines := sseLines(t, base+"/sse/"+topic+"?access_token="+url.QueryEscape(reader))

	conn, c := dialSTOMP(t, g.addr, "")
	conn.WriteMessage(gws.OpcodeText, []byte("CONNECT\naccept-version:1.2\nheart-beat:0,0\npasscode:"+writer+"\n\n\x00"))
	if m := recv(t, c.msgs); !strings.HasPrefix(string(m), "CONNECTED\n") {
		t.Fatalf("writer's CONNECT: %q", m)
	}
	conn.WriteMessage(gws.OpcodeText, []byte("SEND\ndestination:/topic/"+topic+"\n\nfrom stomp\x00"))
	if code, body := post(t, base+"/publish/"+topic, writer, "from http"); code != http.StatusAccepted {
		t.Fatalf("writer's publish: %d %s", code, body)
	}
	if code, body := post(t, base+"/publish/"+topic, reader, "sneaky"); code != http.StatusForbidden || !strings.Contains(body, "publish to "+topic) {
		t.Fatalf("reader's publish: %d %s", code, body)
	}
	rconn, rc := dialSTOMP(t, g.addr, "")
	rconn.WriteMessage(gws.OpcodeText, []byte("CONNECT\naccept-version:1.2\nheart-beat:0,0\npasscode:"+reader+"\n\n\x00"))
	if m := recv(t, rc.msgs); !strings.HasPrefix(string(m), "CONNECTED\n") {
		t.Fatalf("reader's CONNECT: %q", m)
	}
	rconn.WriteMessage(gws.OpcodeText, []byte("SEND\ndestination:/topic/"+topic+"\n\nsneaky\x00"))
	if m := recv(t, rc.msgs); !strings.HasPrefix(string(m), "ERROR\nmessage:access refused\n") {
		t.Fatalf("reader's SEND: %q", m)
	}

	want := map[string]bool{"data: from stomp": false, "data: from http": false}
	timeout := time.After(10 * time.Second)
	for seen := 0; seen < len(want); {
		select {
		case l := <-lines:
			if strings.Contains(l, "sneaky") {
				t.Fatal("a refused message was delivered")
			}
			if done, ok := want[l]; ok && !done {
				want[l] = true
				seen++
			}
		case <-timeout:
			t.Fatalf("the reader's stream did not get everything: %v", want)
		}
	}
	logs := g.logs.String()
	if strings.Contains(logs, reader) || strings.Contains(logs, writer) {
		t.Fatal("a token reached the logs")
	}
	for _, w := range []string{`identity="rita (reader)"`, "access denied"} {
		if !strings.Contains(logs, w) {
			t.Fatalf("logs lack %q:\n%s", w, logs)
		}
	}
}

func recv(t *testing.T, ch <-chan []byte) []byte {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

func TestTokenAndPasswdCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"token", "-config", "../../testdata/jwt.yaml", "-auth", "demo"}, nil, &out, &errb); code == 0 ||
		!strings.Contains(errb.String(), "-sub") {
		t.Fatalf("token without -sub: exit %d %q", code, errb.String())
	}
	errb.Reset()
	if code := run(context.Background(), []string{"token", "-config", "../../testdata/jwt.yaml", "-auth", "nope", "-sub", "x"}, nil, &out, &errb); code == 0 ||
		!strings.Contains(errb.String(), `no jwt auth policy "nope"`) {
		t.Fatalf("token for an unknown policy: exit %d %q", code, errb.String())
	}

	out.Reset()
	if code := run(context.Background(), []string{"passwd"}, strings.NewReader("s3cret pass\n"), &out, &errb); code != 0 {
		t.Fatalf("passwd: %s", errb.String())
	}
	users := filepath.Join(t.TempDir(), "users.yaml")
	var line map[string]string
	if err := yaml.Unmarshal(out.Bytes(), &line); err != nil {
		t.Fatalf("passwd output %q is not YAML: %v", out.String(), err)
	}
	os.WriteFile(users, []byte("users:\n  ann:\n    "+out.String()), 0o600)
	u, err := auth.LoadUsers(users, auth.HashLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Check("198.51.100.1", "ann", "s3cret pass"); err != nil {
		t.Fatalf("the hash from passwd does not verify: %v", err)
	}
}

// TestTokenWithPrivateKey: an ES256 policy with a public key file accepts
// what `wsbridge token -key` signs with the matching private key, and
// refuses a token signed by another key.
func TestTokenWithPrivateKey(t *testing.T) {
	dir := t.TempDir()
	writeKey := func(name string) *ecdsa.PrivateKey {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
		return k
	}
	k := writeKey("signer.pem")
	writeKey("other.pem")
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	os.WriteFile(filepath.Join(dir, "verify.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
	config := filepath.Join(dir, "es.yaml")
	os.WriteFile(config, []byte(`auth:
  es:
    mode: jwt
    jwt: {algorithm: ES256, public_key_file: verify.pem, audience: app}
backends:
  nats: {protocol: nats, embedded: true}
routes:
  - {path: /sse, protocol: sse, backend: nats, auth: es}
`), 0o600)
	cfg, err := loadConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	policies, err := buildPolicies(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	good := mint(t, "-config", config, "-auth", "es", "-sub", "eve", "-role", "reader", "-key", filepath.Join(dir, "signer.pem"))
	if id, err := policies["es"].FromLogin("198.51.100.1", "", good); err != nil || id.Subject != "eve" {
		t.Fatalf("token from -key: %+v %v", id, err)
	}
	bad := mint(t, "-config", config, "-auth", "es", "-sub", "eve", "-key", filepath.Join(dir, "other.pem"))
	if _, err := policies["es"].FromLogin("198.51.100.1", "", bad); err == nil {
		t.Fatal("a token signed by another key was accepted")
	}
	var out, errb bytes.Buffer
	if run(context.Background(), []string{"token", "-config", config, "-auth", "es", "-sub", "eve"}, nil, &out, &errb) == 0 ||
		!strings.Contains(errb.String(), "-key") {
		t.Fatalf("ES256 without -key: %q", errb.String())
	}
}
