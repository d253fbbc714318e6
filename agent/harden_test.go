//go:build linux

package agent

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestHarden runs Harden in a child process, because it changes the whole
// process, and checks the child is non-dumpable, has no core limit, and
// keeps working (allocating) afterwards.
func TestHarden(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=harden")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v\nstdout: %s\nstderr: %s", err, &stdout, &stderr)
	}
	if got := strings.TrimSpace(stdout.String()); got != "dumpable=0 core=0/0 vmlck=0" {
		t.Errorf("after Harden: %q, want dumpable=0 core=0/0 vmlck=0: no whole-process mlock (log: %s)", got, &stderr)
	}
	if log := stderr.String(); strings.Contains(log, "level=WARN") {
		t.Errorf("unexpected warning: %s", log)
	}

	t.Logf("Harden log: %s", strings.TrimSpace(stderr.String()))
}
