package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// testdata/users.yaml works as its comments say, with nothing installed:
// bob (reader) follows demo.x, alice (writer) publishes to it, bob may not
// publish, and a wrong password is refused; STOMP logs in with the same
// names and passwords.
func TestUsersExample(t *testing.T) {
	g := serve(t, "-config", "../../testdata/users.yaml")
	base := "http://" + g.addr
	req := func(method, path, user, password, body string) *http.Response {
		t.Helper()
		r, err := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.SetBasicAuth(user, password)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	stream := req("GET", "/sse/demo.x", "bob", "bob-example-password", "")
	t.Cleanup(func() { stream.Body.Close() })
	if stream.StatusCode != 200 {
		t.Fatalf("bob's stream: %s", stream.Status)
	}
	buf := make([]byte, 512)
	if n, _ := stream.Body.Read(buf); !strings.Contains(string(buf[:n]), "retry:") {
		t.Fatalf("stream opened with %q", buf[:n]) // subscribed once its first bytes arrive
	}
	for _, tc := range []struct {
		user, password string
		want           int
	}{
		{"bob", "bob-example-password", 403},
		{"alice", "wrong", 401},
		{"alice", "alice-example-password", 202},
	} {
		resp := req("POST", "/publish/demo.x", tc.user, tc.password, "hi from "+tc.user)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("%s publishes: %s, want %d", tc.user, resp.Status, tc.want)
		}
	}
	got := make(chan string, 1)
	go func() {
		var seen strings.Builder
		for !strings.Contains(seen.String(), "data: hi from alice") {
			n, err := stream.Body.Read(buf)
			if err != nil {
				break
			}
			seen.Write(buf[:n])
		}
		got <- seen.String()
	}()
	select {
	case s := <-got:
		if !strings.Contains(s, "data: hi from alice") || strings.Contains(s, "from bob") {
			t.Fatalf("bob's stream got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bob's stream got nothing within 10s")
	}

	for _, tc := range []struct{ login, passcode, want string }{
		{"bob", "bob-example-password", "CONNECTED\n"},
		{"bob", "alice-example-password", "ERROR\n"},
	} {
		conn, c := dialSTOMP(t, g.addr, "")
		conn.WriteString("CONNECT\naccept-version:1.2\nlogin:" + tc.login + "\npasscode:" + tc.passcode + "\n\n\x00")
		select {
		case m := <-c.msgs:
			if !strings.HasPrefix(string(m), tc.want) {
				t.Fatalf("STOMP %s/%s: got %q, want %s", tc.login, tc.passcode, m, tc.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("STOMP %s: no answer", tc.login)
		}
	}
}
