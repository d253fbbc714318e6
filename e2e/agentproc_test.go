package e2e

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// agentProc is a running oslogin-agent binary in the foreground (-D).
type agentProc struct {
	cmd    *exec.Cmd
	sock   string
	pid    int
	user   string
	exited chan struct{}
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
	cmd.Env = v.agentEnv()
	a := &agentProc{cmd: cmd, sock: sock, exited: make(chan struct{}), stderr: &syncBuffer{}}
	cmd.Stderr = a.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			t.Logf("agent stderr:\n%s", a.stderr.String())
		}
	})

	vars := map[string]string{}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("agent exited before it was ready:\n%s", a.stderr.String())
			}
			if k, rest, ok := strings.Cut(line, "="); ok {
				vars[k], _, _ = strings.Cut(rest, ";")
			}
			if strings.HasPrefix(line, "echo Agent pid") {
				a.pid, _ = strconv.Atoi(vars["SSH_AGENT_PID"])
				a.user = vars["OSLOGIN_USER"]
				if vars["SSH_AUTH_SOCK"] != sock || a.pid != cmd.Process.Pid {
					t.Fatalf("agent printed %v; want socket %s and pid %d", vars, sock, cmd.Process.Pid)
				}
				go func() {
					for range lines {
					}
				}()
				return a
			}
		case <-timeout:
			t.Fatalf("agent not ready after 30s:\n%s", a.stderr.String())
		}
	}
}

// stop sends SIGTERM and waits for the agent to delete its keys and exit.
func (a *agentProc) stop() {
	select {
	case <-a.exited:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-a.exited
	}
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
