package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A keyring file the user cannot read or write is reported once as a
// keyring error ("keyring:" once, not "keyring ...: keyring: open"), naming
// the file and where its name came from, the user the command runs as,
// the file's (or directory's) owner and mode, and what to run or change.
// As root, the commands run as nobody (setpriv), for whom root's 0600
// files are closed; as anyone else, the files are made unreadable.
func TestKeyringPermissionErrors(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no file modes")
	}
	root := os.Geteuid() == 0
	var asUser func(t *testing.T, stdin string, args ...string) (string, int)
	me := ""
	if root {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("running as root without setpriv to run as another user")
		}
		bin := filepath.Join(t.TempDir(), "wsbridge")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		// The binary in a directory nobody may enter: copy it out.
		shared := sharedDir(t)
		exe := filepath.Join(shared, "wsbridge")
		if b, err := os.ReadFile(bin); err != nil || os.WriteFile(exe, b, 0o755) != nil {
			t.Fatal("copying the binary", err)
		}
		me, _ = userName(65534)
		asUser = func(t *testing.T, stdin string, args ...string) (string, int) {
			cmd := exec.Command(setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", exe}, args...)...)
			cmd.Dir = shared
			var stderr bytes.Buffer
			cmd.Stdin, cmd.Stderr = strings.NewReader(stdin), &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			return stderr.String(), cmd.ProcessState.ExitCode()
		}
	} else {
		me, _ = userName(os.Geteuid())
		asUser = func(t *testing.T, stdin string, args ...string) (string, int) {
			_, errOut, code := wsbridge(t, stdin, args...)
			return errOut, code
		}
	}
	// closed makes path unreadable (or its directory unwritable) to the
	// user the commands run as.
	closed := func(t *testing.T, path string, mode os.FileMode) {
		if root {
			return // root's 0600 file, root's 0755 directory
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(path, 0o700) })
	}
	setup := func(t *testing.T) (dir, config string) {
		dir = filepath.Join(sharedDir(t), "gw")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		config = filepath.Join(dir, "c.yaml")
		os.WriteFile(config, []byte("backends: {r: {protocol: stomp, address: 127.0.0.1:61613, credential: rabbit}}\n"+
			"routes: [{path: /s, protocol: stomp, backend: r}]\n"), 0o644)
		t.Setenv("WSBRIDGE_KEYRING", "")
		t.Setenv("WSBRIDGE_KEYRING_KEY", "")
		t.Setenv("WSBRIDGE_KEYRING_KEY_FILE", "")
		if _, errOut, code := wsbridge(t, "", "keyring", "init", "-config", config); code != 0 {
			t.Fatal(errOut)
		}
		return dir, config
	}

	for _, tc := range []struct {
		name  string
		close func(t *testing.T, dir string)
		args  func(config string) []string
		want  func(dir string) []string
	}{
		{"master key file unreadable",
			func(t *testing.T, dir string) { closed(t, filepath.Join(dir, "wsbridge.keyring.key"), 0) },
			func(config string) []string { return []string{"check", "-config", config} },
			func(dir string) []string {
				key := filepath.Join(dir, "wsbridge.keyring.key")
				return []string{"keyring: cannot read the master key file " + key + " (the keyring path + .key): permission denied to user " + me,
					"the file belongs to ", "mode 0", "chown ", key}
			}},
		{"keyring unreadable",
			func(t *testing.T, dir string) {
				kr := filepath.Join(dir, "wsbridge.keyring")
				closed(t, kr, 0)
				if root { // nobody reads the key, not the keyring
					os.Chmod(kr+".key", 0o644)
				}
			},
			func(config string) []string { return []string{"check", "-config", config} },
			func(dir string) []string {
				return []string{"keyring: cannot read the keyring " + filepath.Join(dir, "wsbridge.keyring") + " (the default, beside ",
					"permission denied to user " + me, "the file belongs to ", "chown "}
			}},
		{"keyring directory unwritable",
			func(t *testing.T, dir string) {
				if root {
					os.Chmod(filepath.Join(dir, "wsbridge.keyring"), 0o644)
					os.Chmod(filepath.Join(dir, "wsbridge.keyring.key"), 0o644)
				}
				closed(t, dir, 0o555)
			},
			func(config string) []string {
				return []string{"keyring", "set", "rabbit", "-username", "gw", "-password-stdin", "-config", config}
			},
			func(dir string) []string {
				return []string{"keyring: cannot write the keyring " + filepath.Join(dir, "wsbridge.keyring"),
					"permission denied to user " + me, "its directory " + dir + " belongs to ", "sudo -u "}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, config := setup(t)
			tc.close(t, dir)
			errOut, code := asUser(t, "pw\n", tc.args(config)...)
			if code != 1 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			for _, w := range tc.want(dir) {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			if strings.Count(errOut, "keyring:") != 1 || strings.Contains(errOut, ": open ") {
				t.Errorf("not one keyring error in its own words:\n%s", errOut)
			}
		})
	}
}

// sharedDir is a directory every user may enter, removed after the test:
// t.TempDir's parent is its owner's alone.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wsbridge-access-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
		os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
