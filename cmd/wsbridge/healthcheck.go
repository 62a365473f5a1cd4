package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// healthcheckDrainBytes bounds what is read of an answer's body, so that
// its connection closes cleanly without the check holding a large body.
const healthcheckDrainBytes = 64 << 10

var healthcheckCmd = &command{
	name: "healthcheck", args: "[-timeout 2s] [-insecure] URL",
	summary: "GET URL; exit 0 iff it answers 200 (a container health check without curl)",
	detail: `For images without a shell or curl (distroless):
  HEALTHCHECK CMD ["/wsbridge", "healthcheck", "http://127.0.0.1:8080/healthz"]
/healthz answers 200 while the process serves; /readyz only when the backends
are reachable too. Redirects are not followed: only a 200 passes.`,
	minPos: 1, maxPos: 1,
	setup: func(fs *flag.FlagSet) runFunc {
		timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
		insecure := fs.Bool("insecure", false, "accept any TLS certificate (the check is of the process, not of its name)")
		return func(ctx context.Context, e *env, pos []string) error {
			return healthcheck(ctx, pos[0], *timeout, *insecure, e)
		}
	},
}

func healthcheck(ctx context.Context, rawURL string, timeout time.Duration, insecure bool, e *env) error {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &usageError{cmd: "healthcheck", err: fmt.Errorf("healthcheck: %q is not an http:// or https:// URL", rawURL)}
	}
	if timeout <= 0 {
		return &usageError{cmd: "healthcheck", err: fmt.Errorf("healthcheck: -timeout must be positive")}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := &http.Transport{DisableKeepAlives: true}
	if insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, healthcheckDrainBytes))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", u.Redacted(), resp.Status)
	}
	fmt.Fprintf(e.stdout, "%s: %s\n", u.Redacted(), resp.Status)
	return nil
}
