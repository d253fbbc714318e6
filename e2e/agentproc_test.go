package e2e

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/agentproc"
)

// agentProc is a running oslogin-agent binary in the foreground (-D -s).
type agentProc struct {
	*agentproc.Process
	sock   string
	user   string
	stderr *syncBuffer
}

// startAgent runs `oslogin-agent -D -s` against the vm's emulator and waits
// for the shell lines it prints once its key is registered.
func (v *vm) startAgent(t *testing.T, sock string, extra ...string) *agentProc {
	t.Helper()
	if sock == "" {
		sock = filepath.Join(t.TempDir(), "agent.sock")
	}
	args := append([]string{"-D", "-s", "-a", sock, "--endpoint", v.emu.URL, "--propagation", "0s"}, extra...)
	cmd := exec.Command(bins.agent, args...)
	// OSLOGIN_EMULATOR_HOST: the agent's Compute API and IAP relay, which
	// answer the helpers ssh starts, are the emulator's too, and nothing
	// it does can leave 127.0.0.1.
	cmd.Env = v.agentEnv("OSLOGIN_EMULATOR_HOST=" + v.emu.Host)
	return runAgent(t, cmd, sock)
}

// runAgent starts a prepared `oslogin-agent -D -s` command, checks the
// variables it prints, and stops it when the test ends.
func runAgent(t *testing.T, cmd *exec.Cmd, sock string) *agentProc {
	t.Helper()
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	p, err := agentproc.Start(cmd, 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	a := &agentProc{Process: p, sock: sock, user: p.Vars["OSLOGIN_USER"], stderr: stderr}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("agent stderr:\n%s", a.stderr.String())
		}
	})
	if p.Vars["SSH_AUTH_SOCK"] != sock || p.Vars["SSH_AGENT_PID"] != strconv.Itoa(cmd.Process.Pid) || p.PID != cmd.Process.Pid {
		t.Fatalf("agent printed %v (pid %d); want socket %s and pid %d", p.Vars, p.PID, sock, cmd.Process.Pid)
	}
	return a
}

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
