package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wsbridge/wsbridge/admin"
)

// admin.listen opens a second, loopback-only listener with Go's profiles
// and a size snapshot; the public listener serves neither.
func TestAdminListenerServesProfilesAndStats(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "admin.yaml")
	os.WriteFile(cfg, append([]byte("admin: {listen: \"127.0.0.1:0\"}\n"), defaultConfig...), 0o600)
	g := serve(t, "-config", cfg)
	m := regexp.MustCompile(`msg="admin listener \(profiles, stats\)" addr=(\S+)`).FindStringSubmatch(g.logs.String())
	if m == nil {
		t.Fatalf("no admin listener in the logs:\n%s", g.logs)
	}
	adminAddr := m[1]

	stats := func() admin.Stats {
		t.Helper()
		code, body := get(t, "http://"+adminAddr+"/debug/stats")
		var s admin.Stats
		if err := json.Unmarshal([]byte(body), &s); code != 200 || err != nil {
			t.Fatalf("stats: %d %q %v", code, body, err)
		}
		return s
	}
	before := stats()
	if before.RSSBytes <= 0 || before.Goroutines <= 0 || before.ProcessID != os.Getpid() {
		t.Fatalf("stats %+v", before)
	}
	conn, c := dialSTOMP(t, g.addr, "http://localhost:5173")
	conn.WriteString("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\x00")
	if m := recv(t, c.msgs); !strings.HasPrefix(string(m), "CONNECTED\n") {
		t.Fatalf("got %q", m)
	}
	if s := stats(); s.Connections != before.Connections+1 {
		t.Fatalf("connections %d with a session open, %d before", s.Connections, before.Connections)
	}

	resp, err := http.Post("http://"+adminAddr+"/debug/gc", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var afterGC admin.Stats
	if err := json.NewDecoder(resp.Body).Decode(&afterGC); err != nil || resp.StatusCode != 200 || afterGC.NumGC <= before.NumGC {
		t.Fatalf("POST /debug/gc: %d %+v %v", resp.StatusCode, afterGC, err)
	}
	resp.Body.Close()
	if code, _ := get(t, "http://"+adminAddr+"/debug/gc"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /debug/gc: %d", code)
	}
	if code, body := get(t, "http://"+adminAddr+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("pprof index: %d", code)
	}
	if code, body := get(t, "http://"+adminAddr+"/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "ReadLoop") {
		t.Fatalf("goroutine profile: %d, no session read loop in it", code)
	}
	for _, path := range []string{"/debug/pprof/", "/debug/stats"} {
		if code, _ := get(t, "http://"+g.addr+path); code != 404 {
			t.Errorf("public listener serves %s: %d", path, code)
		}
	}
}
