package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The systemd install steps of docs/production.md work as written, up to
// systemctl: run by bash in a scratch root (every /etc/ and /usr/local/bin/
// path moved under it, as on a fresh Debian 12 that has /etc/systemd/system
// and /usr/local/bin but no /etc/credstore), they make the files the unit
// names, with the modes the docs give, and `wsbridge check` passes; without
// the two variables, check says it finds no master key, as the docs warn.
func TestSystemdInstallSteps(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not installed")
	}
	doc, err := os.ReadFile("../../docs/production.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(doc), "\n## systemd\n")
	_, block, _ := strings.Cut(section, "\n```sh\n")
	block, _, ok := strings.Cut(block, "\n```\n")
	if !ok || !strings.Contains(block, "wsbridge check") {
		t.Fatalf("no sh block with wsbridge check under ## systemd in docs/production.md")
	}

	work, root := t.TempDir(), t.TempDir()
	for _, d := range []string{"etc/systemd/system", "usr/local/bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("go", "build", "-o", filepath.Join(work, "wsbridge"), ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	unit, err := os.ReadFile("../../testdata/systemd/wsbridge.service")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(work, "wsbridge.service"), unit, 0o644)
	// The steps store "rabbit"; the port is any free one, as a port of the
	// machine's own would be before the service starts.
	os.WriteFile(filepath.Join(work, "config.yaml"), []byte("listen: 127.0.0.1:0\n"+
		"backends: {rabbit: {protocol: stomp, address: 127.0.0.1:61613, credential: rabbit}}\n"+
		"routes: [{path: /stomp, protocol: stomp, backend: rabbit}]\n"), 0o644)

	var script strings.Builder
	script.WriteString("set -eu\n")
	sc := bufio.NewScanner(strings.NewReader(block))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "systemctl ") {
			continue // no PID 1 systemd here
		}
		line = strings.ReplaceAll(line, "/etc/", root+"/etc/")
		line = strings.ReplaceAll(line, "/usr/local/bin/", root+"/usr/local/bin/")
		script.WriteString(line + "\n")
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WSBRIDGE_") && !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	env = append(env, "PATH="+filepath.Join(root, "usr/local/bin")+":"+os.Getenv("PATH"), "BROKER_PASSWORD=example-password")
	cmd := exec.Command(bash, "-c", script.String())
	cmd.Dir, cmd.Env = work, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the steps failed: %v\n%s\nscript:\n%s", err, out, script.String())
	}
	if !strings.Contains(string(out), "/etc/wsbridge/config.yaml: ok: serve would start with it") {
		t.Fatalf("check did not pass:\n%s", out)
	}

	for path, mode := range map[string]os.FileMode{
		"usr/local/bin/wsbridge":              0o755,
		"etc/wsbridge":                        0o755 | os.ModeDir,
		"etc/wsbridge/config.yaml":            0o644,
		"etc/wsbridge/wsbridge.keyring":       0o600,
		"etc/credstore":                       0o700 | os.ModeDir,
		"etc/credstore/wsbridge.keyring.key":  0o600,
		"etc/systemd/system/wsbridge.service": 0o644,
	} {
		st, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Errorf("the steps made no /%s: %v", path, err)
		} else if st.Mode() != mode {
			t.Errorf("/%s: mode %v, want %v", path, st.Mode(), mode)
		}
	}
	// The unit reads what the steps made.
	for _, l := range strings.Split(string(unit), "\n") {
		var path string
		switch {
		case strings.HasPrefix(l, "LoadCredential="):
			_, path, _ = strings.Cut(l, ":")
		case strings.HasPrefix(l, "ExecStart="):
			fields := strings.Fields(strings.TrimPrefix(l, "ExecStart="))
			for i, f := range fields {
				if f == "-config" {
					path = fields[i+1]
				}
			}
			if _, err := os.Stat(filepath.Join(root, fields[0])); err != nil {
				t.Errorf("ExecStart runs %s, which the steps did not install", fields[0])
			}
		}
		if path != "" {
			if _, err := os.Stat(filepath.Join(root, path)); err != nil {
				t.Errorf("the unit names %s, which the steps did not make (%s)", path, l)
			}
		}
	}

	// A new shell without the two variables: check looks for the key
	// beside the keyring, as the docs warn.
	cmd = exec.Command(filepath.Join(root, "usr/local/bin/wsbridge"), "check", "-config", filepath.Join(root, "etc/wsbridge/config.yaml"))
	cmd.Env = env
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no master key") {
		t.Fatalf("check without the variables: %v\n%s", err, out)
	}
}
