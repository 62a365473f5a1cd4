package front

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// CertReloader serves the gateway's certificate and swaps it when Reload
// reads new files, so a renewed certificate takes effect on SIGHUP without
// dropping a connection: live connections keep the one they shook hands
// with, new handshakes get the new one.
type CertReloader struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

// NewCertReloader loads the certificate and key (PEM files).
func NewCertReloader(certFile, keyFile string) (*CertReloader, error) {
	r := &CertReloader{certFile: certFile, keyFile: keyFile}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again; on error the certificate in use stays.
func (r *CertReloader) Reload() error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return tlsError(err)
	}
	r.cert.Store(&c)
	return nil
}

// tlsError says an error is about TLS, once: crypto/tls's own errors
// already begin "tls: ", a file's do not.
func tlsError(err error) error {
	if strings.HasPrefix(err.Error(), "tls: ") {
		return err
	}
	return fmt.Errorf("tls: %w", err)
}

// ServerConfig is the listener's TLS configuration: TLS 1.2 and newer only.
func (r *CertReloader) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.cert.Load(), nil
		},
		NextProtos: []string{"http/1.1"}, // WebSocket upgrades need HTTP/1.1
	}
}

// ClientTLS is how the gateway reaches a broker over TLS.
type ClientTLS struct {
	CAFile     string // PEM roots to trust; empty: the system's
	ServerName string // expected name in the broker's certificate; empty: the address's host
	CertFile   string // client certificate for brokers that ask for one
	KeyFile    string
}

// Config builds the tls.Config for dialling host.
func (c ClientTLS) Config(host string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, tlsError(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: %s holds no PEM certificates", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("tls: a client certificate needs both cert_file and key_file")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, tlsError(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
