//go:build linux

package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/wsbridge/wsbridge/auth"
	"github.com/wsbridge/wsbridge/keyring"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"
)

// atTerminal runs wsbridge args with a pseudo-terminal as standard input,
// types lines at it once the command has turned echo off, and returns what
// the command printed and what the terminal showed (its echo).
func atTerminal(t *testing.T, lines string, args ...string) (stdout, stderr, screen string, code int) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	t.Cleanup(func() { ptmx.Close(); tty.Close() })
	if _, tty := terminalFd(tty); !tty {
		t.Fatal("a pseudo-terminal is not taken for a terminal")
	}
	// What the terminal shows, read until the test closes it.
	shown := make(chan string, 64)
	go func() {
		defer close(shown)
		buf := make([]byte, 1024)
		for {
			n, err := ptmx.Read(buf)
			if n > 0 {
				shown <- string(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	var out, errOut strings.Builder
	done := make(chan int, 1)
	go func() { done <- run(t.Context(), args, tty, &out, &errOut) }()

	// A change of terminal mode sends no event anywhere, so the flag is
	// polled. Typing before echo is off would be echoed by the terminal
	// whatever the command did.
	deadline := time.Now().Add(10 * time.Second)
	for {
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if tio.Lflag&unix.ECHO == 0 {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("exit %d before turning echo off: %s", code, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("echo not turned off within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	// Every line is typed while echo is off: the terminal takes input
	// (and echoes it, or not) as it arrives, before the command reads it.
	if _, err := io.WriteString(ptmx, lines); err != nil {
		t.Fatal(err)
	}
	select {
	case code = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the command did not finish")
	}
	// Typed now, after the command, it must be echoed again: the command
	// restored the terminal. The terminal echoes in order, so what it
	// shows up to this line is all it showed of the lines before.
	io.WriteString(ptmx, "after\n")
	var b strings.Builder
	timeout := time.After(10 * time.Second)
	for !strings.Contains(b.String(), "after\r\n") {
		select {
		case s, ok := <-shown:
			if !ok {
				return out.String(), errOut.String(), b.String(), code
			}
			b.WriteString(s)
		case <-timeout:
			return out.String(), errOut.String(), b.String(), code
		}
	}
	return out.String(), errOut.String(), b.String(), code
}

// passwd at a terminal prompts twice with echo off: the password never
// shows, the hash verifies, and the terminal echoes again afterwards.
func TestPasswdAtATerminalDoesNotEcho(t *testing.T) {
	out, errOut, screen, code := atTerminal(t, "s3cret pass\ns3cret pass\n", "passwd")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(screen, "s3cret") || strings.Contains(errOut, "s3cret") || !strings.Contains(screen, "after") {
		t.Fatalf("the terminal showed %q (want no password, and the echo back on)", screen)
	}
	if errOut != "Password: \nAgain: \n" {
		t.Fatalf("prompts %q", errOut)
	}
	var line map[string]string
	if err := yaml.Unmarshal([]byte(out), &line); err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "u.yaml")
	os.WriteFile(users, []byte("users:\n  ann:\n    "+out), 0o600)
	u, err := auth.LoadUsers(users, auth.HashLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Check("198.51.100.1", "ann", "s3cret pass"); err != nil {
		t.Fatalf("the hash does not verify the typed password: %v", err)
	}

	// Two passwords that differ store nothing.
	out, errOut, _, code = atTerminal(t, "one\ntwo\n", "passwd")
	if code != 1 || out != "" || !strings.Contains(errOut, "the two passwords differ") {
		t.Fatalf("differing passwords: exit %d, %q %q", code, out, errOut)
	}
}

// keyring set at a terminal needs no -password-stdin: it prompts, with
// echo off, and stores what was typed.
func TestKeyringSetAtATerminalDoesNotEcho(t *testing.T) {
	clearKeyringEnv(t)
	kr := filepath.Join(t.TempDir(), "t.keyring")
	if _, errOut, code := wsbridge(t, "", "keyring", "init", "-keyring", kr); code != 0 {
		t.Fatal(errOut)
	}
	for _, flags := range [][]string{nil, {"-password-stdin"}} {
		args := append([]string{"keyring", "set", "rabbit", "-username", "gw", "-keyring", kr}, flags...)
		out, errOut, screen, code := atTerminal(t, "Pa55:word\nPa55:word\n", args...)
		if code != 0 || !strings.Contains(out, "stored rabbit (username gw)") {
			t.Fatalf("%v: exit %d, %q %q", flags, code, out, errOut)
		}
		if strings.Contains(screen, "Pa55") || strings.Contains(out+errOut, "Pa55") || !strings.Contains(screen, "after") {
			t.Fatalf("%v: the terminal showed %q", flags, screen)
		}
		key, _ := keyring.LoadKeyFile(kr + ".key")
		k, err := keyring.Open(kr, key)
		if err != nil {
			t.Fatal(err)
		}
		if c, err := k.Get("rabbit"); err != nil || c.Password.Reveal() != "Pa55:word" {
			t.Fatalf("stored %v %v", c, err)
		}
	}
}

// From a pipe, which is a file but no terminal, passwords are read as a
// line, with no prompt.
func TestPasswordFromAPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, tty := terminalFd(r); tty {
		t.Fatal("a pipe is taken for a terminal")
	}
	io.WriteString(w, "from a pipe\n")
	w.Close()
	var out, errOut strings.Builder
	if code := run(t.Context(), []string{"passwd"}, r, &out, &errOut); code != 0 || errOut.Len() > 0 || !strings.HasPrefix(out.String(), "password_hash: ") {
		t.Fatalf("exit %d, %q %q", code, out.String(), errOut.String())
	}
}
