package sse

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/broker/brokertest"
	"github.com/wsbridge/wsbridge/front"
	"github.com/wsbridge/wsbridge/internal/authtest"
	"golang.org/x/crypto/bcrypt"
)

func do(t *testing.T, method, url string, header http.Header, body string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// TestAuthStreamsAndPublishes: the worked example's rules on SSE and HTTP
// publish over real NATS: 401 without a valid token (with the reason), 403
// for a topic outside the rules, and the allowed paths work end to end.
func TestAuthStreamsAndPublishes(t *testing.T) {
	logs := &brokertest.Logs{}
	s := startHubWith(t, natsBroker(t), Options{}, authtest.JWTPolicy(t, nil), logs)
	reader := authtest.Token(t, "rita", []string{"reader"}, time.Hour, nil)
	writer := authtest.Token(t, "will", []string{"writer"}, time.Hour, nil)

	refusals := []struct {
		name, method, url string
		header            http.Header
		status            int
		mention           string
	}{
		{"stream without a token", "GET", s.url + "/sse/demo.a", nil, 401, "a token is required"},
		{"stream with an expired token", "GET", s.url + "/sse/demo.a", bearer(authtest.Token(t, "rita", []string{"reader"}, -time.Hour, nil)), 401, "token expired"},
		{"stream with alg none", "GET", s.url + "/sse/demo.a", bearer(authtest.TokenAlgNone(t, "rita", []string{"reader"})), 401, "not signed with HS256"},
		{"stream outside the rules", "GET", s.url + "/sse/secret.a", bearer(reader), 403, "subscribe to secret.a"},
		{"multi-topic stream with one outside", "GET", s.url + "/sse?topic=demo.a&topic=secret.a", bearer(reader), 403, "subscribe to secret.a"},
		{"reader publishes", "POST", s.url + "/publish/demo.a", bearer(reader), 403, "publish to demo.a"},
		{"writer publishes outside", "POST", s.url + "/publish/secret.a", bearer(writer), 403, "publish to secret.a"},
		{"publish without a token", "POST", s.url + "/publish/demo.a", nil, 401, "a token is required"},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			status, body, h := do(t, r.method, r.url, r.header, "sneaky")
			if status != r.status || !strings.Contains(body, r.mention) {
				t.Fatalf("%d %q, want %d naming %q", status, body, r.status, r.mention)
			}
			if status == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without a Bearer challenge: %q", h.Get("WWW-Authenticate"))
			}
		})
	}

	// Each carrier opens a stream; the writer's publish reaches all three.
	streams := []*stream{
		openStream(t, s.url+"/sse/demo.a", bearer(reader)),
		openStream(t, s.url+"/sse/demo.a?access_token="+url.QueryEscape(reader), nil),
		openStream(t, s.url+"/sse/demo.a", http.Header{"Cookie": {"wsbridge_token=" + reader}}),
	}
	s.waitStats(t, "3 streams on one upstream subscription", func(st Stats) bool { return st.Clients == 3 && st.UpstreamSubs == 1 })
	if status, body, _ := do(t, "POST", s.url+"/publish/demo.a", bearer(writer), "hello"); status != http.StatusAccepted {
		t.Fatalf("writer's publish: %d %s", status, body)
	}
	for i, st := range streams {
		if ev := st.next(t); ev.data != "hello" {
			t.Fatalf("stream %d got %+v", i, ev)
		}
	}
	// Grants in the token widen what the route's rules allow, for that token only.
	granted := authtest.Token(t, "gina", nil, time.Hour, authtest.Claims{"wsbridge": map[string]any{"subscribe": []string{"gina.*"}}})
	openStream(t, s.url+"/sse/gina.x", bearer(granted))
	if status, body, _ := do(t, "GET", s.url+"/sse/gina.x", bearer(reader), ""); status != http.StatusForbidden {
		t.Fatalf("reader without the grant: %d %s", status, body)
	}
	for _, secret := range []string{reader, writer} {
		if strings.Contains(logs.String(), secret) {
			t.Fatal("a token reached the logs")
		}
	}
	if !strings.Contains(logs.String(), `identity="rita (reader)"`) {
		t.Fatalf("denials not logged with the identity:\n%s", logs)
	}
}

// TestAuthStreamEndsWhenTokenExpires: the stream says why and ends.
func TestAuthStreamEndsWhenTokenExpires(t *testing.T) {
	s := startHubWith(t, natsBroker(t), Options{}, authtest.JWTPolicy(t, nil), io.Discard)
	st := openStream(t, s.url+"/sse/demo.a", bearer(authtest.Token(t, "rita", []string{"reader"}, 2*time.Second, nil)))
	for {
		select {
		case ev := <-st.events:
			if ev.typ == "error" {
				if !strings.Contains(ev.data, "token expired") {
					t.Fatalf("error event %q", ev.data)
				}
				select {
				case <-st.done:
				case <-time.After(10 * time.Second):
					t.Fatal("stream still open after the expiry event")
				}
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no expiry event")
		}
	}
}

// TestAuthUsersBasic: with a users file, HTTP clients use Basic auth.
func TestAuthUsersBasic(t *testing.T) {
	h, err := auth.HashPassword("pw-of-will")
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/users.yaml"
	os.WriteFile(path, []byte("users:\n  will:\n    password_hash: \""+h+"\"\n    roles: [writer]\n"), 0o600)
	users, err := auth.LoadUsers(path, auth.HashLimits{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := auth.New(auth.Options{Mode: auth.ModeUsers, Users: users, Rules: authtest.Rules(t)})
	if err != nil {
		t.Fatal(err)
	}
	s := startHubWith(t, natsBroker(t), Options{}, p, io.Discard)
	req := func(user, pass string) int {
		r, _ := http.NewRequest("POST", s.url+"/publish/demo.a", strings.NewReader("x"))
		r.SetBasicAuth(user, pass)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := req("will", "pw-of-will"); got != http.StatusAccepted {
		t.Fatalf("right password: %d", got)
	}
	if got := req("will", "wrong"); got != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", got)
	}
	if status, _, hd := do(t, "POST", s.url+"/publish/demo.a", nil, "x"); status != 401 || !strings.HasPrefix(hd.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("no credentials: %d %q", status, hd.Get("WWW-Authenticate"))
	}
}

// TestAuthStreamInsideLeeway: a token is admitted until exp + leeway, and
// its stream lives until then too (plus the grace), not ended at once; one
// past exp + leeway is refused with 401.
func TestAuthStreamInsideLeeway(t *testing.T) {
	cases := []struct {
		name          string
		age           time.Duration // how long ago the token's exp was
		leeway, grace time.Duration
		admitted      bool
	}{
		{"expired 1s ago, inside the leeway", time.Second, 3500 * time.Millisecond, 0, true},
		{"expired 1s ago, inside leeway and grace", time.Second, 2500 * time.Millisecond, time.Second, true},
		{"past exp + leeway", 4 * time.Second, 2 * time.Second, time.Hour, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			pol := authtest.JWTPolicy(t, func(o *auth.Options) { o.JWT, o.ExpiryGrace = authtest.Verifier(t, c.leeway), c.grace })
			s := startHubWith(t, natsBroker(t), Options{}, pol, io.Discard)
			exp := time.Unix(time.Now().Add(-c.age).Unix(), 0)
			tok := authtest.Token(t, "rita", []string{"reader"}, 0, authtest.Claims{"exp": exp.Unix()})
			if !c.admitted {
				if status, body, _ := do(t, "GET", s.url+"/sse/demo.a", bearer(tok), ""); status != 401 || !strings.Contains(body, "token expired") {
					t.Fatalf("%d %q, want 401 token expired", status, body)
				}
				return
			}
			st := openStream(t, s.url+"/sse/demo.a", bearer(tok))
			opened := time.Now()
			if ev := st.next(t); ev.typ != "error" || !strings.Contains(ev.data, "token expired") {
				t.Fatalf("got %+v, want the token expired error event", ev)
			}
			end := exp.Add(c.leeway + c.grace)
			switch ended := time.Now(); {
			case ended.Sub(opened) < time.Second:
				t.Fatalf("ended %s after the stream opened", ended.Sub(opened))
			case ended.Before(end):
				t.Fatalf("ended %s before exp + leeway + grace", end.Sub(ended))
			}
			st.ended(t)
		})
	}
}

// TestAuthUsersBasicLoginFlood: Basic-auth publishes and streams from one
// address that fail their password checks, sent at once, do not hold up a
// publish from another address: beyond the address's share of password
// checks they are refused at once: publishes with 429 and Retry-After,
// streams with a busy stream EventSource retries (refuseBusy). The address
// is the one the server resolves: a trusted proxy's X-Forwarded-For names
// it, an untrusted peer's is not believed, so varying the header does not
// buy a flood more places. The bound is a generous multiple of a single
// publish's time, measured first in the same test.
func TestAuthUsersBasicLoginFlood(t *testing.T) {
	h := slowHash(t, "pw-of-will", 40*time.Millisecond)
	path := t.TempDir() + "/users.yaml"
	os.WriteFile(path, []byte("users:\n  will:\n    password_hash: \""+h+"\"\n    roles: [writer]\n"), 0o600)
	local, err := netip.ParsePrefix("127.0.0.1/32")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		proxies front.Proxies
		floodAt func(i int) string // the flood's X-Forwarded-For
		validAt string
	}{
		{"behind a trusted proxy", front.Proxies{local}, func(int) string { return "198.51.100.1" }, "198.51.100.2"},
		{"untrusted peer varying X-Forwarded-For", nil, func(i int) string { return fmt.Sprintf("203.0.113.%d", i+1) }, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			users, err := auth.LoadUsers(path, auth.HashLimits{Concurrent: 1, PerClient: 2, Wait: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			p, err := auth.New(auth.Options{Mode: auth.ModeUsers, Users: users, Rules: authtest.Rules(t)})
			if err != nil {
				t.Fatal(err)
			}
			// The valid publish goes once the whole flood has arrived: a
			// request's arrival is the event to wait for, not its start.
			arrived := make(chan struct{}, 64)
			flooding := func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if _, pass, _ := r.BasicAuth(); pass == "wrong" {
						arrived <- struct{}{}
					}
					next.ServeHTTP(w, r)
				})
			}
			s := startHubOn(t, natsBroker(t), Options{}, p, io.Discard, front.ServerOptions{TrustedProxies: c.proxies}, flooding)
			type answer struct {
				status int
				retry  string
				busy   bool // a stream refused for load (refuseBusy)
			}
			request := func(method, path, xff, pass string) answer {
				r, _ := http.NewRequest(method, s.url+path, strings.NewReader("x"))
				r.SetBasicAuth("will", pass)
				if xff != "" {
					r.Header.Set("X-Forwarded-For", xff)
				}
				resp, err := http.DefaultClient.Do(r)
				if err != nil {
					t.Error(err)
					return answer{}
				}
				defer resp.Body.Close()
				a := answer{status: resp.StatusCode, retry: resp.Header.Get("Retry-After")}
				if resp.Header.Get("Content-Type") == "text/event-stream" {
					b, _ := io.ReadAll(resp.Body)
					a.busy = strings.Contains(string(b), "\nevent: busy\n")
				}
				return a
			}
			publish := func() time.Duration {
				start := time.Now()
				if a := request("POST", "/publish/demo.a", c.validAt, "pw-of-will"); a.status != http.StatusAccepted {
					t.Fatalf("valid publish: %d", a.status)
				}
				return time.Since(start)
			}
			var single []time.Duration
			for range 3 {
				single = append(single, publish())
			}
			slices.Sort(single)
			baseline := single[1]

			const flood = 16
			answers := make(chan answer, flood)
			var done sync.WaitGroup
			done.Add(flood)
			for i := range flood {
				method, path := "POST", "/publish/demo.a"
				if i%2 == 1 {
					method, path = "GET", "/sse/demo.a"
				}
				go func() {
					defer done.Done()
					answers <- request(method, path, c.floodAt(i), "wrong")
				}()
			}
			for range flood {
				<-arrived
			}
			var d time.Duration
			if c.validAt != "" {
				d = publish()
			}
			done.Wait()
			close(answers)
			limited := 0
			for a := range answers {
				switch {
				case a.status == http.StatusTooManyRequests && a.retry != "", a.busy:
					limited++
				case a.status != http.StatusUnauthorized:
					t.Errorf("flood request answered %d (Retry-After %q), want 401, 429 with Retry-After, or a busy stream", a.status, a.retry)
				}
			}
			t.Logf("single publish %v; %d of %d flood requests refused unchecked", baseline, limited, flood)
			if limited < flood/2 {
				t.Errorf("%d of %d concurrent bad logins from one address got 429, want most", limited, flood)
			}
			if c.validAt != "" {
				ratio := float64(d) / float64(baseline)
				t.Logf("publish from another address during the flood: %v (%.1fx)", d, ratio)
				if ratio > 8 {
					t.Errorf("publish took %.1fx a single publish during the flood, want at most 8x", ratio)
				}
			}
		})
	}
}

// slowHash is a bcrypt hash of password whose check takes at least least:
// long enough for concurrent logins to overlap, yet quick under the race
// detector too, which slows bcrypt about twelvefold.
func slowHash(t *testing.T, password string, least time.Duration) string {
	t.Helper()
	for cost := 6; ; cost++ {
		h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		bcrypt.CompareHashAndPassword(h, []byte(password))
		if time.Since(start) >= least || cost == bcrypt.MaxCost {
			return string(h)
		}
	}
}
