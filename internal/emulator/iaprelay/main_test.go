package iaprelay_test

import (
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/testenv"
)

// TestMain isolates the tests from the machine (no metadata server, no
// credentials; gcloud gets its own config directory in its test).
func TestMain(m *testing.M) { testenv.Main(m) }
