package e2e

import (
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/sshd"
)

// startSSHD starts a real sshd for the vm, with its own host key, and
// records that key in the vm's known_hosts: host keys are checked, never
// skipped.
func (v *vm) startSSHD(t *testing.T) *sshd.Server {
	t.Helper()
	s, err := sshd.Start(sshd.Options{Dir: t.TempDir(), Emulator: bins.emulator, MetadataHost: v.emu.Host, KeysUser: v.akcUser})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshd log (port %d):\n%s", s.Port, s.Log())
		}
	})
	appendFile(t, v.knownHosts, s.KnownHostsLine()+"\n")
	return s
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
func (v *vm) ssh(s *sshd.Server, sock string, command ...string) *exec.Cmd {
	args := append(v.sshOpts(sock), "-p", strconv.Itoa(s.Port), v.user+"@127.0.0.1", "--")
	return exec.Command("ssh", append(args, command...)...)
}
