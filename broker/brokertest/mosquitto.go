package brokertest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// MosquittoWithPasswords starts a Mosquitto of the test's own on a free
// loopback port, admitting only users (name -> password): the shared one
// allows anonymous clients and its config is not the tests' to change. It
// returns host:port and stops the broker when the test ends. Without the
// mosquitto and mosquitto_passwd binaries the test is skipped locally and
// fails under CI=true.
func MosquittoWithPasswords(t testing.TB, users map[string]string) string {
	t.Helper()
	bin, passwd := lookPath("mosquitto"), lookPath("mosquitto_passwd")
	if bin == "" || passwd == "" {
		msg := "mosquitto and mosquitto_passwd are needed for a broker that refuses logins (apt-get install mosquitto)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwords")
	names := make([]string, 0, len(users))
	for name := range users {
		names = append(names, name)
	}
	sort.Strings(names)
	for i, name := range names {
		args := []string{"-b", pwFile, name, users[name]}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(passwd, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v: %s", err, out)
		}
	}
	addr := DeadAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	me := "root"
	if u, err := user.Current(); err == nil {
		me = u.Username // run as root, mosquitto would switch to a user that cannot read dir
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	body := fmt.Sprintf("listener %s %s\nallow_anonymous false\npassword_file %s\npersistence false\nlog_dest stderr\nuser %s\n",
		port, host, pwFile, me)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &watchedOutput{want: " running", seen: make(chan struct{})}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("mosquitto: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	select {
	case <-out.seen:
		return addr
	case err := <-exited:
		exited <- err
		t.Fatalf("mosquitto ended before listening: %v\n%s", err, out)
	case <-time.After(10 * time.Second):
		t.Fatalf("mosquitto not listening within 10s:\n%s", out)
	}
	return ""
}

// lookPath finds a binary in PATH or the sbin directories, where Debian
// installs mosquitto but which a user's PATH may lack.
func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// watchedOutput collects a process's output and closes seen once want
// appears in it: the event a test waits for before using the process.
type watchedOutput struct {
	want string
	seen chan struct{}

	mu   sync.Mutex
	buf  bytes.Buffer
	done bool
}

func (w *watchedOutput) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.done && strings.Contains(w.buf.String(), w.want) {
		w.done = true
		close(w.seen)
	}
	return len(p), nil
}

func (w *watchedOutput) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
