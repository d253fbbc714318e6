package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// emulatorEnv is the environment with OSLOGIN_EMULATOR_HOST as the only
// pointer to the emulator: GCE_METADATA_HOST and the proxy variables name
// a recorder, which must see no connection at all.
func (v *vm) emulatorEnv(t *testing.T, extra ...string) (env []string, conns *atomic.Int64) {
	t.Helper()
	addr, conns := connRecorder(t)
	env = v.agentEnv(append([]string{
		"OSLOGIN_EMULATOR_HOST=" + v.emu.Host,
		"HTTP_PROXY=http://" + addr, "HTTPS_PROXY=http://" + addr, "NO_PROXY=",
	}, extra...)...)
	for i, kv := range env {
		if strings.HasPrefix(kv, "GCE_METADATA_HOST=") {
			env[i] = "GCE_METADATA_HOST=" + addr
		}
	}
	return env, conns
}

// connRecorder counts the connections made to a loopback port.
func connRecorder(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().String(), &n
}

// TestEmulatorVariableIsEnough: with OSLOGIN_EMULATOR_HOST alone (no
// --endpoint, GCE_METADATA_HOST and proxies pointing elsewhere) the agent
// registers its key, ssh logs in, the AuthorizedKeysCommand helper lists
// the key, and nothing but the emulator is contacted.
func TestEmulatorVariableIsEnough(t *testing.T) {
	needTools(t, "bash")
	v := newVM(t, nil)
	s := v.startSSHD(t)
	env, conns := v.emulatorEnv(t)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	script := `set -euo pipefail
eval "$(` + bins.agent + ` -s -a ` + sock + `)" >/dev/null
` + bins.emulator + ` authorized-keys "$OSLOGIN_USER" | grep -c '^ssh-ed25519 '
ssh ` + strings.Join(v.sshOpts(`"$SSH_AUTH_SOCK"`), " ") + ` -p ` + itoa(s.Port) + ` "$OSLOGIN_USER@127.0.0.1" echo logged-in
u=$OSLOGIN_USER
eval "$(` + bins.agent + ` -k)" >/dev/null
` + bins.emulator + ` authorized-keys "$u" | wc -l
`
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v\nstdout: %s\nstderr: %s", err, out, stderr.String())
	}
	if got := strings.Fields(string(out)); len(got) != 3 || got[0] != "1" || got[1] != "logged-in" || got[2] != "0" {
		t.Fatalf("output %q; want the key listed once, a login, then no key", out)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr not empty: %s", stderr.String())
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("%d connections reached GCE_METADATA_HOST or a proxy; with OSLOGIN_EMULATOR_HOST set only the emulator may be asked", n)
	}
	if keys := v.emu.Emulator.Keys(v.email); len(keys) != 0 {
		t.Errorf("%d keys left", len(keys))
	}
}

// TestCommandModeIsQuiet: on success, command mode adds nothing to the
// command's output, byte for byte; the audit goes to --log-file; a log
// file that cannot be written is reported, not silently dropped.
func TestCommandModeIsQuiet(t *testing.T) {
	v := newVM(t, nil)
	s := v.startSSHD(t)
	env, _ := v.emulatorEnv(t)
	// The command logs in (so the agent signs) and writes to both streams.
	inner := "ssh " + strings.Join(v.sshOpts(`"$SSH_AUTH_SOCK"`), " ") + " -p " + itoa(s.Port) +
		` "$OSLOGIN_USER@127.0.0.1" 'echo remote-out; echo remote-err >&2'; printf 'local out\n'; printf 'local err\n' >&2`
	wantOut, wantErr := "remote-out\nlocal out\n", "remote-err\nlocal err\n"
	logFile := filepath.Join(t.TempDir(), "agent.log")
	tests := []struct {
		name     string
		args     []string
		stderr   func(string) bool
		checkLog bool
	}{
		{"no flags", nil, func(s string) bool { return s == wantErr }, false},
		{"with a log file", []string{"--log-file", logFile}, func(s string) bool { return s == wantErr }, true},
		{"with a log file that cannot be written", []string{"--log-file", "/dev/full"}, func(s string) bool {
			return strings.Contains(s, "remote-err\n") && strings.Contains(s, "local err\n") &&
				strings.Contains(s, "oslogin-agent: cannot write to the log file /dev/full") &&
				strings.Contains(s, "log records could not be written to /dev/full")
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"-a", filepath.Join(t.TempDir(), "a.sock")}, tc.args...), "--", "bash", "-c", inner)
			cmd := exec.Command(bins.agent, args...)
			cmd.Env = env
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%v\nstdout: %q\nstderr: %q", err, stdout.String(), stderr.String())
			}
			if stdout.String() != wantOut || !tc.stderr(stderr.String()) {
				t.Fatalf("stdout %q, stderr %q; want the command's own output, %q and %q", stdout.String(), stderr.String(), wantOut, wantErr)
			}
			if tc.checkLog {
				b, err := os.ReadFile(logFile)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Contains(b, []byte(`msg=signature`)) || !bytes.Contains(b, []byte("result=ok")) || !bytes.Contains(b, []byte(`msg="oslogin-agent ready"`)) {
					t.Fatalf("the log file lacks the start-up and signature records:\n%s", b)
				}
			}
		})
	}
}

// activated runs the service unit's ExecStart arguments behind
// systemd-socket-activate, listening where the socket unit says, with
// the unit's %t (the runtime directory) in a temporary directory.
//
// exited is closed once the process has exited and cmd.ProcessState is set.
func (v *vm) activated(t *testing.T, env []string, listen []string, args []string) (cmd *exec.Cmd, stderr *syncBuffer, exited <-chan struct{}) {
	t.Helper()
	saArgs := []string{"-E", "OSLOGIN_EMULATOR_HOST=" + v.emu.Host}
	for _, l := range listen {
		saArgs = append(saArgs, "-l", l)
	}
	cmd = exec.Command("systemd-socket-activate", append(append(saArgs, bins.agent), args...)...)
	cmd.Env = env
	stderr = &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
		}
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("systemd-socket-activate and agent stderr:\n%s", stderr.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "Listening on") {
		if time.Now().After(deadline) {
			t.Fatalf("systemd-socket-activate did not listen:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cmd, stderr, done
}

// unitValue reads Key= from a unit file in contrib/systemd.
func unitValue(t *testing.T, unit, key string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "contrib", "systemd", unit))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+"="); ok {
			return v
		}
	}
	t.Fatalf("%s has no %s=", unit, key)
	return ""
}

// TestSocketActivation serves the systemd socket through
// systemd-socket-activate, as the units in contrib/systemd set it up: the
// first connection starts the agent, ssh-add -l lists its key, ssh logs
// in, and stopping the service deletes the key.
func TestSocketActivation(t *testing.T) {
	needTools(t, "systemd-socket-activate", "ssh-add")
	v := newVM(t, nil)
	s := v.startSSHD(t)
	execStart := strings.Fields(unitValue(t, "oslogin-agent.service", "ExecStart"))
	listen := unitValue(t, "oslogin-agent.socket", "ListenStream")
	if unitValue(t, "oslogin-agent.socket", "SocketMode") != "0600" || unitValue(t, "oslogin-agent.socket", "DirectoryMode") != "0700" {
		t.Fatal("the socket unit must make the socket 0600 in a 0700 directory")
	}
	runtimeDir := t.TempDir() // %t
	sock := strings.ReplaceAll(listen, "%t", runtimeDir)
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil { // DirectoryMode=0700
		t.Fatal(err)
	}
	env, conns := v.emulatorEnv(t)
	cmd, _, exited := v.activated(t, env, []string{sock}, execStart[1:])
	if len(v.emu.Emulator.Keys(v.email)) != 0 {
		t.Fatal("a key was registered before the first connection")
	}
	add := exec.Command("ssh-add", "-l")
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	out := mustRun(t, add)
	if !strings.Contains(out, "(ED25519)") || !strings.Contains(out, "oslogin-agent "+v.user) {
		t.Fatalf("ssh-add -l: %q; want the agent's ED25519 key", out)
	}
	if got := strings.TrimSpace(mustRun(t, v.ssh(s, sock, "echo", "activated"))); got != "activated" {
		t.Fatalf("login printed %q", got)
	}
	if n := len(v.emu.Emulator.Keys(v.email)); n != 1 {
		t.Fatalf("%d keys registered, want 1", n)
	}
	// systemd stops a service with SIGTERM; systemd-socket-activate
	// exec'ed the agent, so it is the agent that gets it.
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not exit after SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("the agent exited %d after SIGTERM, want 0", code)
	}
	if n := len(v.emu.Emulator.Keys(v.email)); n != 0 {
		t.Fatalf("%d keys left after the service stopped", n)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the socket is systemd's and must stay: %v", err)
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("%d connections went beyond the emulator", n)
	}
}

// TestSystemdUnitsVerify has systemd-analyze check the units offline, with
// the binary where go install puts it (%h/go/bin; %h is the test's own
// HOME, see testenv).
func TestSystemdUnitsVerify(t *testing.T) {
	needTools(t, "systemd-analyze")
	home, err := os.UserHomeDir()
	if err != nil || !strings.Contains(home, "oslogin-test-home-") {
		t.Fatalf("HOME %q is not the test's own", home)
	}
	if err := os.MkdirAll(filepath.Join(home, "go", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bins.agent, filepath.Join(home, "go", "bin", "oslogin-agent")); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, u := range []string{"oslogin-agent.socket", "oslogin-agent.service"} {
		b, err := os.ReadFile(filepath.Join("..", "contrib", "systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, u), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("systemd-analyze", "verify", "--man=no", "./oslogin-agent.socket", "./oslogin-agent.service")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestSocketActivationRefusals: sockets the agent cannot serve are refused
// with a clear message, and no key is registered.
func TestSocketActivationRefusals(t *testing.T) {
	needTools(t, "systemd-socket-activate")
	v := newVM(t, nil)
	freePort := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	tests := []struct {
		name   string
		listen func(dir string) []string
		args   []string
		status int
		want   string
	}{
		{"two sockets", func(d string) []string { return []string{filepath.Join(d, "a.sock"), filepath.Join(d, "b.sock")} },
			[]string{"-D"}, 1, "systemd passed 2 sockets; oslogin-agent serves exactly one"},
		{"a TCP socket", func(string) []string { return []string{freePort()} },
			[]string{"-D"}, 1, "is not a listening Unix stream socket"},
		{"without -D", func(d string) []string { return []string{filepath.Join(d, "a.sock")} },
			[]string{"-s"}, 2, "only -D or -d serves"},
		{"with -a", func(d string) []string { return []string{filepath.Join(d, "a.sock")} },
			[]string{"-D", "-a", "/tmp/x.sock"}, 2, "-a cannot be used with a socket from systemd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, _ := v.emulatorEnv(t)
			listen := tc.listen(t.TempDir())
			cmd, stderr, exited := v.activated(t, env, listen, tc.args)
			network := "unix"
			if !strings.HasPrefix(listen[0], "/") {
				network = "tcp"
			}
			if c, err := net.Dial(network, listen[0]); err == nil { // the first connection starts the agent
				defer c.Close()
			}
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				t.Fatal("the agent did not exit")
			}
			if cmd.ProcessState.ExitCode() != tc.status {
				t.Fatalf("exit %v, want %d", cmd.ProcessState, tc.status)
			}
			if msg := lastLine(stderr.String()); !strings.HasPrefix(msg, "oslogin-agent: ") || !strings.Contains(msg, tc.want) {
				t.Fatalf("last stderr line %q; want it to say %q", msg, tc.want)
			}
			if n := len(v.emu.Emulator.Keys(v.email)); n != 0 {
				t.Fatalf("%d keys registered", n)
			}
			if n := v.writes(); n != 0 {
				t.Fatalf("%d OS Login writes; a socket that cannot be served must cost none", n)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestBackgroundStartFailure: when -s cannot start, the terminal gets one
// line saying why, stdout nothing to eval, and OS Login no key.
func TestBackgroundStartFailure(t *testing.T) {
	cfg := emulator.DefaultConfig()
	srv := emulatortest.Start(t, cfg)
	srv.Emulator.SetFault(emulator.Fault{Methods: "write", Status: 403})
	v := &vm{emu: srv, email: cfg.Accounts[0].Email}
	env, _ := v.emulatorEnv(t)
	cmd := exec.Command(bins.agent, "-s", "-a", filepath.Join(t.TempDir(), "a.sock"))
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1; stderr %q", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if stdout.Len() != 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "oslogin-agent: ") || !strings.Contains(lines[0], "roles/compute.osLogin") {
		t.Fatalf("stdout %q, stderr %q; want nothing to eval and one line naming the missing role", stdout.String(), stderr.String())
	}
	if n := len(srv.Emulator.Keys(v.email)); n != 0 {
		t.Fatalf("%d keys registered", n)
	}
}
