package iaptunnel_test

import (
	"os"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/testenv"
)

// TestMain isolates the tests from the machine. The test binary doubles as
// a ProxyCommand helper for the real-ssh test (see helperMain).
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	testenv.Main(m)
}
