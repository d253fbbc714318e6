package e2e

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// TestStopSignals: SIGTERM, SIGINT and SIGHUP each delete every key from OS
// Login, remove the socket and exit 0.
func TestStopSignals(t *testing.T) {
	v := newVM(t, nil)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			a := v.startAgent(t, "")
			if n := len(v.emu.Emulator.Keys(v.email)); n != 1 {
				t.Fatalf("%d keys registered, want 1", n)
			}
			a.Cmd.Process.Signal(sig)
			select {
			case <-a.Done():
			case <-time.After(30 * time.Second):
				t.Fatal("agent did not exit")
			}
			if code := a.Cmd.ProcessState.ExitCode(); code != 0 {
				t.Fatalf("exit status %d after %v, want 0", code, sig)
			}
			if n := len(v.emu.Emulator.Keys(v.email)); n != 0 {
				t.Fatalf("%d keys left at OS Login after %v", n, sig)
			}
			if _, err := os.Stat(a.sock); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("socket left behind after %v: %v", sig, err)
			}
		})
	}
}

// TestInterruptedStart: Ctrl-C while the first key is being registered (OS
// Login has stored it, its answer is still on the way) stops the command
// mode before the command runs, with status 130, and leaves nothing.
func TestInterruptedStart(t *testing.T) {
	v := &vm{}
	cfg := emulator.DefaultConfig()
	v.emu = emulatortest.Start(t, cfg)
	v.email = cfg.Accounts[0].Email
	v.emu.Emulator.SetFault(emulator.Fault{Methods: "users.importSshPublicKey", Latency: 3 * time.Second})
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	marker := filepath.Join(dir, "command-ran")
	cmd := exec.Command(bins.agent, "-a", sock, "--endpoint", v.emu.URL, "--", "touch", marker)
	cmd.Env = v.agentEnv()
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(v.emu.Emulator.Keys(v.email)) == 1 }, "the key to be stored")
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("exit %v, want status 130\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted before the command started") {
		t.Fatalf("stderr does not say what happened:\n%s", stderr.String())
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the command ran although start-up was interrupted")
	}
	if n := len(v.emu.Emulator.Keys(v.email)); n != 0 {
		t.Fatalf("%d keys left registered", n)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// TestLiveSocketIsNotStolen: a second agent on the same path gives up with
// a clear error, registers nothing, and the first keeps serving.
func TestLiveSocketIsNotStolen(t *testing.T) {
	needTools(t, "ssh-add")
	v := newVM(t, nil)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	v.startAgent(t, sock)
	cmd := exec.Command(bins.agent, "-D", "-a", sock, "--endpoint", v.emu.URL)
	cmd.Env = v.agentEnv()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "another agent") {
		t.Fatalf("second agent: %v\n%s\nwant exit 1 naming the other agent", err, out)
	}
	if n := len(v.emu.Emulator.Keys(v.email)); n != 1 {
		t.Fatalf("%d keys at OS Login; the second agent must leave nothing registered", n)
	}
	l := exec.Command("ssh-add", "-l")
	l.Env = append(v.agentEnv(), "SSH_AUTH_SOCK="+sock)
	mustRun(t, l)
}

// TestContainment: another uid cannot use the agent, and a whole run leaves
// no private key material on disk.
func TestContainment(t *testing.T) {
	needTools(t, "ssh-add")
	v := newVM(t, nil)
	s := v.startSSHD(t)
	home, tmp, work := t.TempDir(), t.TempDir(), t.TempDir()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	args := []string{"-D", "-s", "-a", sock, "--endpoint", v.emu.URL}
	cmd := exec.Command(bins.agent, args...)
	cmd.Env = append(v.agentEnv(), "HOME="+home, "TMPDIR="+tmp)
	cmd.Dir = work
	a := runAgent(t, cmd, sock)
	mustRun(t, v.ssh(s, sock, "true"))

	t.Run("another uid is refused", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to run a client as another user")
		}
		l := exec.Command("ssh-add", "-l")
		l.Env = []string{"SSH_AUTH_SOCK=" + sock, "PATH=/usr/bin:/bin"}
		l.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := l.CombinedOutput()
		if err == nil {
			t.Fatalf("nobody listed the agent's keys:\n%s", out)
		}
		// Root may: OpenSSH allows the same uid or root.
		l = exec.Command("ssh-add", "-l")
		l.Env = []string{"SSH_AUTH_SOCK=" + sock, "PATH=/usr/bin:/bin"}
		mustRun(t, l)
	})

	a.Stop()
	t.Run("no private key material on disk", func(t *testing.T) {
		for _, dir := range []string{home, tmp, work, filepath.Dir(sock)} {
			filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return nil
				}
				b, _ := os.ReadFile(path)
				// Split so that this file does not itself look like key material.
				for _, marker := range []string{"PRIVATE KEY" + "-----", "openssh-key-" + "v1", `"private_` + `key"`} {
					if bytes.Contains(b, []byte(marker)) {
						t.Errorf("%s holds %q", path, marker)
					}
				}
				return nil
			})
		}
	})
}

// TestNotDumpable: the agent process cannot be dumped or inspected by its
// own user: no core files, and its /proc files belong to root. As root the
// agent is run as "nobody" so that the ownership says something.
func TestNotDumpable(t *testing.T) {
	v := newVM(t, nil)
	uid := os.Getuid()
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	cmd := exec.Command(bins.agent, "-D", "-s", "-a", sock, "--endpoint", v.emu.URL)
	cmd.Env = append(v.agentEnv(), "HOME="+dir)
	if uid == 0 {
		uid = 65534
		if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, uid, uid); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	runAgent(t, cmd, sock)

	limits, err := os.ReadFile(filepathProc(cmd.Process.Pid, "limits"))
	if err != nil {
		t.Fatal(err)
	}
	if !coreLimitZero(string(limits)) {
		t.Fatalf("core file size limit is not 0:\n%s", limits)
	}
	// The kernel gives a non-dumpable process's private /proc files to root.
	var st syscall.Stat_t
	if err := syscall.Stat(filepathProc(cmd.Process.Pid, "environ"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 0 {
		t.Fatalf("/proc/%d/environ belongs to uid %d, the agent's own: the agent is dumpable", cmd.Process.Pid, st.Uid)
	}
}

// TestBadInput: every invalid flag, credential file and API refusal gives a
// clear message and the right exit status, and leaves nothing registered
// and no socket behind.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		return p
	}
	tests := []badInput{
		{name: "unknown flag", args: []string{"--frobnicate"}, status: 2, want: "unknown flag: --frobnicate"},
		{name: "ttl not a duration", args: []string{"--ttl", "ten"}, status: 2, want: "invalid argument"},
		{name: "ttl in days", args: []string{"--ttl", "2d"}, status: 2, want: "--ttl"},
		{name: "ttl too short", args: []string{"--ttl", "5s"}, status: 2, want: "too short to renew"},
		{name: "ttl too long", args: []string{"--ttl", "400h"}, status: 2, want: "ephemeral"},
		{name: "negative ttl", args: []string{"--ttl", "-1m"}, status: 2, want: "too short"},
		{name: "rotation shorter than half the ttl", args: []string{"--ttl", "10m", "--rotate", "1m"}, status: 2, want: "--rotate 1m0s is shorter"},
		{name: "rotation too long", args: []string{"--rotate", "2000h"}, status: 2, want: "rotate at least monthly"},
		{name: "propagation longer than the old key lives", args: []string{"--ttl", "20s", "--propagation", "10s"}, status: 2, want: "use at most 8s"},
		{name: "small rsa", args: []string{"--key-type", "rsa-1024"}, status: 2, want: "--key-type"},
		{name: "unknown key type", args: []string{"--key-type", "dsa"}, status: 2, want: "ed25519"},
		{name: "log format", args: []string{"--log-format", "xml"}, status: 2, want: "want text or json"},
		{name: "sh and csh", args: []string{"-s", "-c"}, status: 2, want: "cannot be used together"},
		{name: "foreground with a command", args: []string{"-D", "--", "true"}, status: 2, want: "cannot be used with a command"},
		{name: "kill without an agent", args: []string{"-k"}, status: 1, want: "SSH_AGENT_PID is not set"},
		{name: "credentials file missing", env: []string{"GOOGLE_APPLICATION_CREDENTIALS=" + filepath.Join(dir, "none.json")}, status: 1, want: "no such file"},
		{name: "credentials file is a directory", env: []string{"GOOGLE_APPLICATION_CREDENTIALS=" + dir}, status: 1, want: "is a directory"},
		{name: "credentials not JSON", env: []string{"GOOGLE_APPLICATION_CREDENTIALS=" + write("bad.json", "{nope")}, status: 1, want: "not a credentials JSON file"},
		{name: "credentials of the wrong type", env: []string{"GOOGLE_APPLICATION_CREDENTIALS=" + write("t.json", `{"type":"gdch_service_account"}`)}, status: 1, want: "cannot be used with OS Login"},
		{name: "account that is not an e-mail", args: []string{"--account", "deployer"}, status: 1, want: "not an account e-mail"},
		{name: "OS Login refuses permission", fault: &emulator.Fault{Methods: "write", Status: 403}, status: 1, want: "roles/compute.osLogin"},
		{name: "policy blocks key management", fault: &emulator.Fault{Methods: "users.importSshPublicKey", BlockKeyManagement: true}, status: 1, want: "administrator policy"},
		{name: "VM token without write scope", config: func(c *emulator.Config) {
			c.InstanceScopes = []string{"https://www.googleapis.com/auth/compute.readonly"}
		}, status: 1, want: "cloud-platform"},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

func filepathProc(pid int, name string) string {
	return filepath.Join("/proc", strconv.Itoa(pid), name)
}

func coreLimitZero(limits string) bool {
	for _, l := range strings.Split(limits, "\n") {
		if strings.HasPrefix(l, "Max core file size") {
			f := strings.Fields(strings.TrimPrefix(l, "Max core file size"))
			return len(f) >= 2 && f[0] == "0" && f[1] == "0"
		}
	}
	return false
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
