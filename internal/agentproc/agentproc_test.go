package agentproc

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The tests play the agent with sh, printing what agents print.
func TestStartReadsTheShellLines(t *testing.T) {
	cmd := exec.Command("sh", "-c", `echo "SSH_AUTH_SOCK=/tmp/a.sock; export SSH_AUTH_SOCK;"
echo "OSLOGIN_USER=sa_1; export OSLOGIN_USER;"
echo "echo Agent pid $$;"
trap 'exit 0' TERM
while :; do echo later; sleep 0.05; done`)
	p, err := Start(cmd, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if p.Vars["SSH_AUTH_SOCK"] != "/tmp/a.sock" || p.Vars["OSLOGIN_USER"] != "sa_1" || p.PID != cmd.Process.Pid {
		t.Fatalf("vars %v pid %d (process %d)", p.Vars, p.PID, cmd.Process.Pid)
	}
	time.Sleep(200 * time.Millisecond) // output after the echo line must not block the agent
	p.Stop()
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want the agent's own 0", code)
	}
	p.Stop() // stopping twice is harmless
}

func TestStartFailures(t *testing.T) {
	if _, err := Start(exec.Command("sh", "-c", "echo broken >&2; exit 3"), 10*time.Second); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("agent that exits: %v", err)
	}
	cmd := exec.Command("sleep", "30")
	start := time.Now()
	if _, err := Start(cmd, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("agent that never gets ready: %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("Start waited far past its timeout")
	}
	if cmd.ProcessState == nil {
		t.Fatalf("process %d left running", cmd.Process.Pid)
	}
}
