package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/wsbridge/wsbridge/broker/brokertest"
)

// TestServeTLS: wss:// and https:// with a throwaway CA, TLS 1.2 at
// least, and a SIGHUP that swaps the certificate for new handshakes while
// a connection made before it carries on.
func TestServeTLS(t *testing.T) {
	ca := brokertest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "gw.pem"), filepath.Join(dir, "gw.key")
	ca.Issue(t, "first", certFile, keyFile)
	config := filepath.Join(dir, "tls.yaml")
	os.WriteFile(config, []byte(fmt.Sprintf(`tls:
  cert_file: gw.pem
  key_file: gw.key
backends:
  nats:
    protocol: nats
    embedded: true
    address: 127.0.0.1:0
routes:
  - {path: /stomp, protocol: stomp, mode: translate, backend: nats}
  - {path: /sse, protocol: sse, backend: nats}
`)), 0o600)
	g := serve(t, "-config", config)
	client := func(max uint16) *tls.Config {
		return &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1", MaxVersion: max}
	}
	https := &http.Client{Transport: &http.Transport{TLSClientConfig: client(0)}}
	resp, err := https.Get("https://" + g.addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.TLS.PeerCertificates[0].Subject.CommonName != "first" || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("served %q over TLS version %x", resp.TLS.PeerCertificates[0].Subject.CommonName, resp.TLS.Version)
	}
	if _, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: client(tls.VersionTLS11)}}).Get("https://" + g.addr + "/healthz"); err == nil {
		t.Fatal("a TLS 1.1 client was served")
	}
	if resp, err := http.Get("http://" + g.addr + "/healthz"); err == nil && resp.StatusCode == 200 {
		t.Fatal("plain HTTP was served on the TLS listener")
	}

	dialWSS := func() (*gws.Conn, *wsClient) {
		c := &wsClient{msgs: make(chan []byte, 16), closed: make(chan error, 1)}
		conn, _, err := gws.NewClient(c, &gws.ClientOption{Addr: "wss://" + g.addr + "/stomp", TlsConfig: client(0),
			RequestHeader: http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}})
		if err != nil {
			t.Fatal(err)
		}
		go conn.ReadLoop()
		t.Cleanup(func() { conn.NetConn().Close() })
		return conn, c
	}
	before, bc := dialWSS()
	before.WriteMessage(gws.OpcodeText, []byte("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00"))
	if m := recv(t, bc.msgs); !strings.HasPrefix(string(m), "CONNECTED") {
		t.Fatalf("wss CONNECT: %q", m)
	}

	ca.Issue(t, "renewed", certFile, keyFile)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	g.logs.WaitFor(t, "SIGHUP: certificate reloaded")
	resp, err = (&http.Client{Transport: &http.Transport{TLSClientConfig: client(0)}}).Get("https://" + g.addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "renewed" {
		t.Fatalf("after SIGHUP new handshakes get %q", cn)
	}
	// The connection from before the reload still works.
	before.WriteMessage(gws.OpcodeText, []byte("SUBSCRIBE\nid:0\ndestination:/topic/tls.still\nreceipt:r\n\n\x00"))
	if m := recv(t, bc.msgs); !strings.HasPrefix(string(m), "RECEIPT") {
		t.Fatalf("the connection made before SIGHUP: %q", m)
	}
}

// TestRelayToBrokerOverTLS: a STOMP relay route reaches RabbitMQ through a
// TLS listener with the CA from the config; with the wrong CA the client
// is told the broker is unavailable.
func TestRelayToBrokerOverTLS(t *testing.T) {
	brokertest.RabbitSTOMP(t)
	path, keyFile := brokertest.RabbitKeyring(t)
	t.Setenv("WSBRIDGE_KEYRING_KEY", "")
	t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", keyFile)
	ca := brokertest.NewCA(t)
	proxy := brokertest.TLSProxy(t, ca, brokertest.RabbitSTOMP(t))
	wrong := brokertest.NewCA(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "relay-tls.yaml")
	os.WriteFile(config, []byte(fmt.Sprintf(`backends:
  rabbit:
    protocol: stomp
    address: %s
    credential: rabbit
    tls:
      ca_file: %s
  untrusted:
    protocol: stomp
    address: %s
    credential: rabbit
    tls:
      ca_file: %s
routes:
  - {path: /stomp, protocol: stomp, backend: rabbit}
  - {path: /untrusted, protocol: stomp, backend: untrusted}
`, proxy, ca.File, proxy, wrong.File)), 0o600)
	g := serve(t, "-config", config, "-keyring", path)

	conn, c := dialSTOMP(t, g.addr, "")
	conn.WriteMessage(gws.OpcodeText, []byte("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00"))
	if m := recv(t, c.msgs); !strings.HasPrefix(string(m), "CONNECTED") {
		t.Fatalf("relay over TLS: %q", m)
	}

	uc := &wsClient{msgs: make(chan []byte, 16), closed: make(chan error, 1)}
	uconn, _, err := gws.NewClient(uc, &gws.ClientOption{Addr: "ws://" + g.addr + "/untrusted",
		RequestHeader: http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}})
	if err != nil {
		t.Fatal(err)
	}
	go uconn.ReadLoop()
	defer uconn.NetConn().Close()
	uconn.WriteMessage(gws.OpcodeText, []byte("CONNECT\naccept-version:1.2\n\n\x00"))
	if m := recv(t, uc.msgs); !strings.HasPrefix(string(m), "ERROR\nmessage:broker unavailable") {
		t.Fatalf("relay to an untrusted broker: %q", m)
	}
	var ce *gws.CloseError
	if err := <-uc.closed; !errors.As(err, &ce) || ce.Code != 1011 {
		t.Fatalf("close %v, want 1011", err)
	}
}

// TestConnectionsPerIPLimit: the per-address limit closes the connection
// with 1013 and a retry hint, and a closed connection frees its slot.
func TestConnectionsPerIPLimit(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "limits.yaml")
	os.WriteFile(config, []byte(`limits:
  max_connections_per_ip: 2
backends:
  nats: {protocol: nats, embedded: true, address: "127.0.0.1:0"}
routes:
  - {path: /stomp, protocol: stomp, mode: translate, backend: nats}
`), 0o600)
	g := serve(t, "-config", config)
	// A session answers only once it is registered: after CONNECTED both
	// count against the limit.
	connected := func() *gws.Conn {
		conn, c := dialSTOMP(t, g.addr, "")
		conn.WriteMessage(gws.OpcodeText, []byte("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00"))
		if m := recv(t, c.msgs); !strings.HasPrefix(string(m), "CONNECTED") {
			t.Fatalf("%q", m)
		}
		return conn
	}
	a := connected()
	connected()
	third := &wsClient{msgs: make(chan []byte, 1), closed: make(chan error, 1)}
	c3, _, err := gws.NewClient(third, &gws.ClientOption{
		Addr: "ws://" + g.addr + "/stomp", RequestHeader: http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}})
	if err != nil {
		t.Fatalf("third connection from one address not upgraded to be closed: %v", err)
	}
	go c3.ReadLoop()
	var ce *gws.CloseError
	if err := <-third.closed; !errors.As(err, &ce) || ce.Code != 1013 || !strings.Contains(string(ce.Reason), "limits.max_connections_per_ip); retry in ") {
		t.Fatalf("third connection from one address closed with %v, want 1013 with a retry hint", err)
	}
	a.WriteClose(1000, nil)
	deadline := time.Now().Add(10 * time.Second)
	for { // the slot is released on the server's goroutine
		c := &wsClient{msgs: make(chan []byte, 1), closed: make(chan error, 1)}
		conn, _, err := gws.NewClient(c, &gws.ClientOption{Addr: "ws://" + g.addr + "/stomp", RequestHeader: http.Header{"Sec-Websocket-Protocol": {"v12.stomp"}}})
		if err == nil {
			conn.NetConn().Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a freed slot was not reusable: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
