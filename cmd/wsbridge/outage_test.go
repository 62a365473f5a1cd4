package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/broker/brokertest"
)

// outageProxy is the path from the gateway to a broker, which the test can
// take down, as a broker stopping does (connections closed, new ones
// refused), and bring back on the same address, without touching the
// shared broker behind it.
type outageProxy struct {
	addr, target string

	mu    sync.Mutex
	ln    net.Listener // nil while down
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// newOutageProxy listens on a loopback port below the ephemeral range: a
// port the kernel could hand out to a connection while the proxy is down
// might not be free to listen on again.
func newOutageProxy(t *testing.T, target string) *outageProxy {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 12000 {
				lo = n
			}
		}
	}
	p := &outageProxy{target: target, conns: map[net.Conn]struct{}{}}
	for range 100 {
		p.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+rand.IntN(lo-10000)))
		if err := p.listen(); err == nil {
			t.Cleanup(func() {
				p.stop()
				p.wg.Wait()
			})
			return p
		}
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return nil
}

func (p *outageProxy) listen() error {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go p.accept(ln)
	return nil
}

func (p *outageProxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.ln != ln { // stopped meanwhile
			p.mu.Unlock()
			c.Close()
			b.Close()
			continue
		}
		p.conns[c], p.conns[b] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			io.Copy(dst, src)
			dst.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			p.mu.Unlock()
		}
		go pipe(b, c)
		go pipe(c, b)
	}
}

// stop takes the path down: every connection closed, new ones refused.
func (p *outageProxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// start brings the path back on the same address.
func (p *outageProxy) start(t *testing.T) {
	t.Helper()
	if err := p.listen(); err != nil {
		t.Fatalf("listening again on %s: %v", p.addr, err)
	}
}

// follower is an npm eventsource following one stream
// (eventsource-outage.mjs), its lines readable as they come.
type follower struct {
	name  string
	lines chan string
	done  chan error // the script's exit
	out   []string   // every line, once done
	mu    sync.Mutex
}

func follow(t *testing.T, ctx context.Context, name, url, want string) *follower {
	t.Helper()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(e2eDir, "eventsource-outage.mjs"), url, want)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &follower{name: name, lines: make(chan string, 256), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f.mu.Lock()
			f.out = append(f.out, sc.Text())
			f.mu.Unlock()
			f.lines <- sc.Text()
		}
		f.done <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	return f
}

// waitFor returns once the follower printed a line starting with prefix.
func (f *follower) waitFor(t *testing.T, prefix string, g *gatewayProcess) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l := <-f.lines:
			if strings.HasPrefix(l, prefix) {
				return
			}
			if strings.HasPrefix(l, "FAIL") {
				t.Fatalf("%s: %s, waiting for %q\ngateway logs:\n%s", f.name, l, prefix, g.logs)
			}
		case <-timeout:
			t.Fatalf("%s: no %q within 30s; it printed %q\ngateway logs:\n%s", f.name, prefix, f.printed(), g.logs)
		}
	}
}

func (f *follower) printed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.out...)
}

// publish posts body to the gateway and returns the status and body.
func publish(t *testing.T, g *gatewayProcess, topic, body string) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+g.addr+"/publish/"+topic, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// The npm eventsource through a broker outage, for each kind of backend
// behind SSE: the path to the broker goes down under a live stream and
// comes back. A stream asked for during the outage is told to come back
// (a 503 would end EventSource for good, and it never saw the broker
// again); a live stream whose subscription is lost ends, and comes back
// the same way (NATS's stays open: its client reconnects by itself). Each
// comes back by itself and gets a message published after the broker did.
// The gateway logs the outage with its cause, not once per client, and
// its end; publishes meanwhile get 503 saying why.
func TestEventSourceRidesOutABrokerOutage(t *testing.T) {
	requireNodeClients(t)
	cases := []struct {
		name    string
		target  func(testing.TB) string
		backend string // its config, with %s for the address
		ends    bool   // a live stream ends with the broker connection
	}{
		{"amqp", brokertest.RabbitAMQP, "{protocol: amqp, address: %q, credential: " + brokertest.RabbitEntry + "}", true},
		{"mqtt", brokertest.Mosquitto, "{protocol: mqtt, address: %q}", true},
		{"nats", brokertest.NATS, "{protocol: nats, address: %q}", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			proxy := newOutageProxy(t, c.target(t))
			cfg := filepath.Join(t.TempDir(), "outage.yaml")
			os.WriteFile(cfg, []byte(fmt.Sprintf(`allowed_origins: ["http://127.0.0.1:*"]
backends:
  broker: `+c.backend+`
routes:
  - {path: /sse, protocol: sse, backend: broker}
  - {path: /publish, protocol: publish, backend: broker}
`, proxy.addr)), 0o600)
			args := []string{"-config", cfg}
			if c.name == "amqp" {
				path, keyFile := brokertest.RabbitKeyring(t)
				t.Setenv("WSBRIDGE_KEYRING_KEY", "")
				t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", keyFile)
				args = append(args, "-keyring", path)
			}
			g := serve(t, args...)
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			base := fmt.Sprintf("wsbridge.test.outage.%s.%d", c.name, time.Now().UnixNano())
			live, late := base+".live", base+".late"

			a := follow(t, ctx, "live stream", "http://"+g.addr+"/sse/"+live, "after")
			a.waitFor(t, "open", g)
			if code, body := publish(t, g, live, "before"); code != http.StatusAccepted {
				t.Fatalf("publish before: %d %s", code, body)
			}
			a.waitFor(t, "message before", g)

			proxy.stop()
			// The gateway has seen it once a publish is refused, promptly,
			// saying why. (Paced: nothing else tells when nats.go saw it.)
			for {
				start := time.Now()
				code, body := publish(t, g, live, "lost")
				if code == http.StatusServiceUnavailable {
					// The first may be one the lost connection cut short.
					if !strings.Contains(body, "503 Service Unavailable: backend unavailable: the broker") || !strings.HasSuffix(body, "; the message was not published\n") ||
						time.Since(start) > 2*time.Second {
						t.Fatalf("publish during the outage: %q after %s", body, time.Since(start))
					}
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			b := follow(t, ctx, "stream opened during the outage", "http://"+g.addr+"/sse/"+late, "after")
			// Refused, back by itself, refused again: it follows the
			// refusal rather than giving up.
			b.waitFor(t, "unavailable ", g)
			b.waitFor(t, "unavailable ", g)
			if c.ends {
				a.waitFor(t, "unavailable ", g) // the live stream's end
				a.waitFor(t, "unavailable ", g) // and its return refused
			}

			proxy.start(t)
			tick := time.NewTicker(200 * time.Millisecond) // pacing the publishes, not synchronisation
			defer tick.Stop()
			results := map[*follower]error{}
			for len(results) < 2 {
				select {
				case err := <-a.done:
					results[a] = err
				case err := <-b.done:
					results[b] = err
				case <-tick.C:
					for _, topic := range []string{live, late} {
						if code, body := publish(t, g, topic, "after"); code != http.StatusAccepted && code != http.StatusServiceUnavailable {
							t.Fatalf("publish after: %d %s", code, body)
						}
					}
				case <-ctx.Done():
					t.Fatalf("not both back within 120s: %q %q\ngateway logs:\n%s", a.printed(), b.printed(), g.logs)
				}
			}
			last := func(f *follower) string {
				out := f.printed()
				if len(out) == 0 {
					return ""
				}
				return out[len(out)-1]
			}
			for f, err := range results {
				if err != nil || !strings.HasPrefix(last(f), "OK ") {
					t.Fatalf("%s: %v %q\ngateway logs:\n%s", f.name, err, f.printed(), g.logs)
				}
			}
			t.Logf("live stream: %s; stream opened during the outage: %s", last(a), last(b))
			// The live stream resumed with its Last-Event-ID: the events
			// the broker sent while it had no subscription are gone, and
			// it is told so.
			if c.ends && !strings.Contains(last(a), " resets=1") {
				t.Fatalf("live stream: %q, want one reset on its resume", a.printed())
			}
			if !c.ends && last(a) != "OK opens=1 unavailable=0 resets=0" {
				t.Fatalf("live stream: %q, want it open throughout", a.printed())
			}
			// Once as the connection was lost (a stream's subscription or a
			// publish in flight), once more with the cause the attempts to
			// reconnect found (or only that), and once as it ended. Where
			// the gateway dials (not NATS, which reconnects by itself), that
			// cause is the dial's error.
			logs := g.logs.String()
			warns := strings.Count(logs, `level=WARN msg="sse backend unavailable`)
			refused := strings.Contains(logs, "connection refused") || c.name == "nats"
			if warns < 1 || warns > 2 || !strings.Contains(logs, "backend=broker cause=unreachable") || !refused ||
				strings.Count(logs, `msg="sse backend available again" backend=broker`) != 1 {
				t.Fatalf("%d outage warnings: want the outage with its cause, and its end:\n%s", warns, logs)
			}
		})
	}
}
