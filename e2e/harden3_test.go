package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// startupCase is an agent started against a faulty emulator.
type startupCase struct {
	srv   *emulatortest.Server
	v     *vm
	email string
	sock  string
}

func newStartupCase(t *testing.T, fault *emulator.Fault) *startupCase {
	t.Helper()
	cfg := emulator.DefaultConfig()
	srv := emulatortest.Start(t, cfg)
	if fault != nil {
		srv.Emulator.SetFault(*fault)
	}
	email := cfg.Accounts[0].Email
	return &startupCase{srv: srv, v: &vm{emu: srv, email: email}, email: email,
		sock: filepath.Join(t.TempDir(), "agent.sock")}
}

func (c *startupCase) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command(bins.agent, append([]string{"-a", c.sock, "--endpoint", c.srv.URL}, args...)...)
	cmd.Env = c.v.agentEnv()
	return cmd
}

// agentsOn lists the processes whose command line names sock: the agent
// and its background half.
func agentsOn(sock string) []string {
	var found []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), sock) && strings.Contains(string(b), "oslogin-agent") {
			found = append(found, d.Name())
		}
	}
	return found
}

// TestStartTimeoutIsExact is issue 12 item 9: --start-timeout 3s took
// 21-26 s (the client's own attempt cap, then 20 s deleting a key never
// registered) and ended with the raw error. Now it ends at the deadline,
// with the documented message, and deletes nothing.
func TestStartTimeoutIsExact(t *testing.T) {
	c := newStartupCase(t, &emulator.Fault{Methods: emulator.FaultWrite, Status: 503})
	cmd := c.cmd("-D", "--start-timeout", "3s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want status 1\n%s", err, stderr.String())
	}
	if took < 3*time.Second || took > 4500*time.Millisecond {
		t.Errorf("start-up gave up after %v; want 3s", took)
	}
	if msg := lastLine(stderr.String()); !strings.Contains(msg, "no key registered within --start-timeout 3s") {
		t.Errorf("last line %q; want the documented message", msg)
	}
	if n := c.srv.Emulator.Calls()["users.sshPublicKeys.delete"]; n != 0 {
		t.Errorf("%d deletes of a key OS Login refused to import", n)
	}
}

// TestInterruptDuringStartup is issue 12 item 9: Ctrl-C during start-up
// took 16 s in command mode and was ignored by -s's background half. It
// must end start-up within a second in every mode, leaving no process and
// no key.
func TestInterruptDuringStartup(t *testing.T) {
	for _, mode := range [][]string{{"-D"}, {"-s"}, {"--", "true"}} {
		t.Run(mode[0], func(t *testing.T) {
			c := newStartupCase(t, &emulator.Fault{Methods: emulator.FaultWrite, Status: 503})
			cmd := c.cmd(mode...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(1500 * time.Millisecond) // retrying the import by now
			start := time.Now()
			cmd.Process.Signal(syscall.SIGINT)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
			took := time.Since(start)
			deadline := time.Now().Add(time.Second)
			for len(agentsOn(c.sock)) > 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if left := agentsOn(c.sock); len(left) > 0 {
				for _, pid := range left {
					exec.Command("kill", "-9", pid).Run()
				}
				t.Fatalf("agent processes %v still starting after Ctrl-C", left)
			}
			if took > time.Second {
				t.Errorf("Ctrl-C ended start-up after %v; want under a second\n%s", took, stderr.String())
			}
			c.srv.Emulator.ClearFaults()
			time.Sleep(300 * time.Millisecond)
			if n := len(c.srv.Emulator.Keys(c.email)); n != 0 {
				t.Errorf("%d keys registered after Ctrl-C", n)
			}
		})
	}
}

// TestBackgroundHalfDiesWithItsParent is issue 12 item 5: when the
// process running -s disappeared during start-up (Ctrl-C in the shell,
// a killed terminal), its background half finished starting and renewed
// a key forever, its pid known to nobody. Until it has handed over its
// variables it must stop with its parent, and delete its key.
func TestBackgroundHalfDiesWithItsParent(t *testing.T) {
	// Every write takes 2s: the parent is killed while the import runs.
	c := newStartupCase(t, &emulator.Fault{Methods: emulator.FaultWrite, Latency: 2 * time.Second, Times: 1})
	cmd := c.cmd("-s")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for len(agentsOn(c.sock)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := agentsOn(c.sock); len(left) > 0 {
		for _, pid := range left {
			exec.Command("kill", "-9", pid).Run()
		}
		t.Fatalf("background agent %v outlived its parent", left)
	}
	if n := len(c.srv.Emulator.Keys(c.email)); n != 0 {
		t.Errorf("%d keys left registered by the orphan", n)
	}
}

// TestSocketCheckedBeforeRegistering is issue 12 item 10: a socket path
// that cannot be used was found out only after the first key had been
// imported (and deleted again).
func TestSocketCheckedBeforeRegistering(t *testing.T) {
	c := newStartupCase(t, nil)
	c.sock = t.TempDir() // a directory, not a socket
	cmd := c.cmd("-D", "--start-timeout", "10s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "refusing to replace it") {
		t.Fatalf("exit %v, want status 1 and the socket refused\n%s", err, stderr.String())
	}
	if n := c.srv.Emulator.Calls()["users.importSshPublicKey"]; n != 0 {
		t.Fatalf("%d keys imported before the socket was checked", n)
	}
}

// TestSIGTERMDuringOutageExitsZero is issue 12 item 10: the README
// promises exit status 0 on SIGTERM; during an OS Login outage the agent
// exited 1, after trying to delete its key for 20 s.
func TestSIGTERMDuringOutageExitsZero(t *testing.T) {
	c := newStartupCase(t, nil)
	cmd := c.cmd("-D")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(stderr.String(), "oslogin-agent ready") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	c.srv.Emulator.SetFault(emulator.Fault{Methods: emulator.FaultAll, Status: 503})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("SIGTERM during an outage: %v, want exit status 0\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "expire") {
		t.Errorf("the log does not say the key expires by its TTL:\n%s", stderr.String())
	}
}
