package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
)

// TestVMRefuses checks that the VM side is honest: a key that expired, a
// key the agent deleted on exit, and an account without the login grant do
// not log in.
func TestVMRefuses(t *testing.T) {
	t.Run("expired key", func(t *testing.T) {
		v := newVM(t, nil)
		s := v.startSSHD(t)
		a := v.startAgent(t, "", "--ttl", "10m")
		mustRun(t, v.ssh(s, a.sock, "true"))
		v.emu.Emulator.Advance(11 * time.Minute) // past the TTL; the agent renews at 5m of real time
		out, err := v.ssh(s, a.sock, "true").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Permission denied") {
			t.Fatalf("login with an expired key: err=%v output=%q; want Permission denied", err, out)
		}
		if keys := v.authorizedKeys(t); keys != "" {
			t.Fatalf("authorized-keys still prints %q after expiry", keys)
		}
	})

	t.Run("key deleted when the agent exits", func(t *testing.T) {
		v := newVM(t, nil)
		s := v.startSSHD(t)
		a := v.startAgent(t, "")
		mustRun(t, v.ssh(s, a.sock, "true"))
		line := v.emu.Emulator.Keys(v.email)[0].Key
		if !strings.Contains(v.authorizedKeys(t), blob(line)) {
			t.Fatal("the VM side does not list the agent's key while it runs")
		}
		a.Stop()
		if keys := v.emu.Emulator.Keys(v.email); len(keys) != 0 {
			t.Fatalf("OS Login still holds %d keys after the agent exited", len(keys))
		}
		if keys := v.authorizedKeys(t); keys != "" {
			t.Fatalf("authorized-keys still prints %q after the agent exited", keys)
		}
		if _, err := os.Stat(a.sock); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket %s left behind: %v", a.sock, err)
		}
		if err := v.ssh(s, a.sock, "true").Run(); err == nil {
			t.Fatal("login succeeded after the agent exited")
		}
	})

	t.Run("account without the login grant", func(t *testing.T) {
		v := newVM(t, func(c *emulator.Config) { c.Accounts[0].Login = false })
		s := v.startSSHD(t)
		a := v.startAgent(t, "")
		out, err := v.ssh(s, a.sock, "true").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Permission denied") {
			t.Fatalf("login without roles/compute.osLogin: err=%v output=%q; want Permission denied", err, out)
		}
		// The same key logs in once the grant exists: the refusal was the grant.
		if err := v.emu.Emulator.SetGrant(v.email, true, false); err != nil {
			t.Fatal(err)
		}
		mustRun(t, v.ssh(s, a.sock, "true"))
	})
}

// TestShellUsage runs the two forms a CI job uses, from shell scripts.
func TestShellUsage(t *testing.T) {
	needTools(t, "bash", "ssh-add")
	v := newVM(t, nil)
	s := v.startSSHD(t)
	sshLine := "ssh " + strings.Join(v.sshOpts(`"$SSH_AUTH_SOCK"`), " ") + " -p " + strconv.Itoa(s.Port)

	t.Run("command mode exits with the command's status and deletes the key", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "a.sock")
		script := `set -eu
` + bins.agent + ` -a ` + sock + ` --endpoint ` + v.emu.URL + ` -- bash -c '
  ` + sshLine + ` "$OSLOGIN_USER@127.0.0.1" echo "inside-$OSLOGIN_USER"
  test "$SSH_AUTH_SOCK" = ` + sock + `
  exit 3'
`
		cmd := exec.Command("bash", "-c", script)
		cmd.Env = v.agentEnv()
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("exit = %v, want status 3; output:\n%s", err, out)
		}
		if !strings.Contains(string(out), "inside-"+v.user) {
			t.Fatalf("the command did not log in; output:\n%s", out)
		}
		if keys := v.emu.Emulator.Keys(v.email); len(keys) != 0 {
			t.Fatalf("%d keys left at OS Login after the command ended", len(keys))
		}
		if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket left behind: %v", err)
		}
	})

	t.Run("eval -s then -k", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "a.sock")
		script := `set -euo pipefail
eval "$(` + bins.agent + ` -s -a ` + sock + ` --endpoint ` + v.emu.URL + `)"
test -n "$SSH_AGENT_PID" && kill -0 "$SSH_AGENT_PID"
ssh-add -l | grep -q ED25519
` + sshLine + ` "$OSLOGIN_USER@127.0.0.1" echo "evaled-$OSLOGIN_USER"
pid=$SSH_AGENT_PID
eval "$(` + bins.agent + ` -k)"
test -z "${SSH_AGENT_PID:-}"
! kill -0 "$pid" 2>/dev/null
echo stopped
`
		cmd := exec.Command("bash", "-c", script)
		cmd.Env = v.agentEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("script failed: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "evaled-"+v.user) || !strings.Contains(string(out), "stopped") {
			t.Fatalf("unexpected output:\n%s", out)
		}
		if keys := v.emu.Emulator.Keys(v.email); len(keys) != 0 {
			t.Fatalf("%d keys left at OS Login after -k", len(keys))
		}
		if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket left behind after -k: %v", err)
		}
	})
}

// TestRotationUnderTraffic logs in continuously while the agent renews and
// rotates its key several times: not one login may fail.
func TestRotationUnderTraffic(t *testing.T) {
	v := newVM(t, nil)
	s := v.startSSHD(t)
	a := v.startAgent(t, "", "--ttl", "10s", "--rotate", "5s", "--propagation", "1s")
	v.emu.Emulator.ResetCalls()

	const rotations = 4
	deadline := time.Now().Add(rotations*5*time.Second + 3*time.Second)
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				out, err := v.ssh(s, a.sock, "echo", "ok").CombinedOutput()
				if err != nil || strings.TrimSpace(string(out)) != "ok" {
					failed.Add(1)
					mu.Lock()
					failures = append(failures, time.Now().Format("15:04:05.000")+" "+strings.TrimSpace(string(out)))
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	calls := v.emu.Emulator.Calls()
	t.Logf("%d logins ok, %d failed; imports %d, renewals %d, deletes %d", ok.Load(), failed.Load(),
		calls["users.importSshPublicKey"], calls["users.sshPublicKeys.patch"], calls["users.sshPublicKeys.delete"])
	if failed.Load() != 0 {
		t.Fatalf("%d logins failed across rotations:\n%s", failed.Load(), strings.Join(failures, "\n"))
	}
	if calls["users.importSshPublicKey"] < rotations {
		t.Fatalf("only %d new keys registered in %d rotation periods", calls["users.importSshPublicKey"], rotations)
	}
	if calls["users.sshPublicKeys.delete"] < rotations-1 {
		t.Fatalf("only %d old keys deleted", calls["users.sshPublicKeys.delete"])
	}
	if n := len(v.emu.Emulator.Keys(v.email)); n > 2 {
		t.Fatalf("OS Login holds %d keys; rotation should keep at most 2", n)
	}
	if ok.Load() < 20 {
		t.Fatalf("only %d logins in the whole run; the test did not exercise rotation", ok.Load())
	}
}

// TestCrashSafety kills the agent with SIGKILL: its key stays valid only
// until its expiry, and a new agent takes over the stale socket.
func TestCrashSafety(t *testing.T) {
	v := newVM(t, nil)
	s := v.startSSHD(t)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	a := v.startAgent(t, sock, "--ttl", "2m")
	mustRun(t, v.ssh(s, a.sock, "true"))
	line := v.emu.Emulator.Keys(v.email)[0].Key

	a.Cmd.Process.Signal(syscall.SIGKILL)
	<-a.Done()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("after SIGKILL the socket file should remain (nothing could remove it): %v", err)
	}
	if !strings.Contains(v.authorizedKeys(t), blob(line)) {
		t.Fatal("the key vanished from the VM side before its expiry")
	}
	v.emu.Emulator.Advance(2*time.Minute + time.Second)
	if strings.Contains(v.authorizedKeys(t), blob(line)) {
		t.Fatal("the VM side still accepts the crashed agent's key after its TTL")
	}

	b := v.startAgent(t, sock, "--ttl", "10m") // the stale socket is reclaimed
	mustRun(t, v.ssh(s, b.sock, "true"))
	if strings.Contains(v.authorizedKeys(t), blob(line)) {
		t.Fatal("the old key came back")
	}
}
