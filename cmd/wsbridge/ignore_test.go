package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// What `wsbridge keyring init` makes in a checkout is neither offered
// for commit nor copied into a Docker build context.
func TestKeyringFilesAreIgnored(t *testing.T) {
	for _, f := range []string{"../../.gitignore", "../../.dockerignore"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"*.keyring", "*.keyring.key"} {
			if !strings.Contains(string(b), "\n"+want+"\n") {
				t.Errorf("%s does not list %s", filepath.Base(f), want)
			}
		}
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	for _, name := range []string{"wsbridge.keyring", "wsbridge.keyring.key"} {
		if err := exec.Command("git", "check-ignore", "-q", "--no-index", name).Run(); err != nil {
			t.Errorf("git would offer %s for commit: %v", name, err)
		}
	}
}
