package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sshd is one real OpenSSH server on 127.0.0.1 that takes keys only from
// `oslogin-emulator authorized-keys`, the way a GCE VM takes them from OS
// Login.
type sshd struct {
	port int
	log  string
}

// startSSHD starts an sshd with its own host key and records that key in
// the vm's known_hosts: host keys are checked, never skipped.
func (v *vm) startSSHD(t *testing.T) *sshd {
	t.Helper()
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	mustRun(t, exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e-host", "-f", hostKey))
	if v.root {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// sshd insists that the command's first word and its parents be owned
	// by root and not writable by others; /usr/bin/env is, the freshly
	// built emulator under /tmp is not.
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1
HostKey %s
PidFile none
UsePAM no
AuthorizedKeysFile none
AuthorizedKeysCommand /usr/bin/env %s authorized-keys --metadata-host %s %%u
AuthorizedKeysCommandUser %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
Subsystem sftp internal-sftp
MaxStartups 100:30:200
LogLevel VERBOSE
`, hostKey, bins.emulator, v.emu.Host, v.akcUser)
	confPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, exec.Command("/usr/sbin/sshd", "-t", "-f", confPath))
	pub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		s := &sshd{port: port, log: filepath.Join(dir, fmt.Sprintf("sshd-%d.log", port))}
		logf, err := os.Create(s.log)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", confPath, "-o", "Port="+strconv.Itoa(port))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logf.Close()
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		if s.waitReady(t, exited) {
			t.Cleanup(func() {
				cmd.Process.Signal(syscall.SIGTERM)
				<-exited
				if t.Failed() {
					b, _ := os.ReadFile(s.log)
					t.Logf("sshd log (port %d):\n%s", port, b)
				}
			})
			line := fmt.Sprintf("[127.0.0.1]:%d %s", port, strings.TrimSpace(string(pub)))
			appendFile(t, v.knownHosts, line+"\n")
			return s
		}
		cmd.Process.Kill()
		<-exited
		b, _ := os.ReadFile(s.log)
		if !strings.Contains(string(b), "Address already in use") {
			t.Fatalf("sshd did not start:\n%s", b)
		}
	}
	t.Fatal("sshd: no free port after 5 attempts")
	return nil
}

// waitReady waits for sshd to log that it listens; it logs that after
// listen(), so a connection made afterwards is never refused.
func (s *sshd) waitReady(t *testing.T, exited <-chan struct{}) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(s.log)
		if strings.Contains(string(b), "Server listening on ") {
			return true
		}
		select {
		case <-exited:
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// sshOpts are the client options every test uses: no user config, host keys
// checked strictly against the vm's known_hosts, keys only from the agent.
func (v *vm) sshOpts(sock string) []string {
	return []string{
		"-F", "/dev/null",
		"-o", "UserKnownHostsFile=" + v.knownHosts,
		"-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes",
		"-o", "IdentityAgent=" + sock,
		"-o", "ControlMaster=no",
		"-o", "ConnectTimeout=10",
		"-o", "LogLevel=ERROR",
	}
}

// ssh runs a command over ssh through the agent at sock.
func (v *vm) ssh(s *sshd, sock string, command ...string) *exec.Cmd {
	args := append(v.sshOpts(sock), "-p", strconv.Itoa(s.port), v.user+"@127.0.0.1", "--")
	return exec.Command("ssh", append(args, command...)...)
}
