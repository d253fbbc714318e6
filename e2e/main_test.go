package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/testenv"
)

// bins holds the binaries built once for the whole package.
var bins struct {
	dir      string
	agent    string
	emulator string
}

func TestMain(m *testing.M) {
	// Before anything else: no credential lookup may leave this machine or
	// read credentials that exist on it.
	cleanup, err := testenv.Isolate()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := run(m)
	cleanup()
	os.Exit(code)
}

func run(m *testing.M) int {
	// The binaries live in a directory every user can enter: sshd runs the
	// AuthorizedKeysCommand as "nobody" when the tests run as root.
	dir, err := os.MkdirTemp("", "oslogin-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bins.dir = dir
	bins.agent = filepath.Join(dir, "oslogin-agent")
	bins.emulator = filepath.Join(dir, "oslogin-emulator")
	for out, pkg := range map[string]string{bins.agent: "../cmd/oslogin-agent", bins.emulator: "../cmd/oslogin-emulator"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", pkg, err)
			return 1
		}
	}
	return m.Run()
}
