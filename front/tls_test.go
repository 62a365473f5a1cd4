package front_test

import (
	"crypto/tls"
	"os"
	"testing"

	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/front"
)

// A renewal that fails to load keeps the certificate in use.
func TestCertReloaderKeepsOldOnError(t *testing.T) {
	ca := brokertest.NewCA(t)
	certFile, keyFile := ca.ServerFiles(t, "gateway")
	r, err := front.NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	get := r.ServerConfig().GetCertificate
	before, _ := get(nil)
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("a broken certificate file reloaded")
	}
	if after, _ := get(nil); after != before {
		t.Fatal("the certificate in use changed after a failed reload")
	}
	if cfg := r.ServerConfig(); cfg.MinVersion != tls.VersionTLS12 {
		t.Fatalf("MinVersion %x", cfg.MinVersion)
	}
}

func TestClientTLSErrors(t *testing.T) {
	ca := brokertest.NewCA(t)
	certFile, _ := ca.ServerFiles(t, "client")
	for name, c := range map[string]front.ClientTLS{
		"missing CA file":         {CAFile: "/nonexistent/ca.pem"},
		"CA file without PEM":     {CAFile: writeTemp(t, "garbage")},
		"certificate without key": {CertFile: certFile},
	} {
		if _, err := c.Config("127.0.0.1"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	cfg, err := front.ClientTLS{CAFile: ca.File, ServerName: "broker.internal"}.Config("127.0.0.1")
	if err != nil || cfg.ServerName != "broker.internal" || cfg.RootCAs == nil {
		t.Fatalf("%+v %v", cfg, err)
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := t.TempDir() + "/f"
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
