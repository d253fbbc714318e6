package iaptunnel_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

const sshdBinary = "/usr/sbin/sshd"

// startSSHD runs a throwaway sshd on a loopback port that admits one
// generated key for the current user. It is stopped at the end of the test.
func startSSHD(t *testing.T, dir string) (port int, hostKeyLine, clientKey string) {
	t.Helper()
	if _, err := os.Stat(sshdBinary); err != nil {
		t.Skip("no sshd (apt-get install openssh-server)")
	}
	for _, k := range []string{"host", "client"} {
		run(t, exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "iaptunnel-test-"+k, "-f", filepath.Join(dir, k)))
	}
	pub, err := os.ReadFile(filepath.Join(dir, "client.pub"))
	if err != nil {
		t.Fatal(err)
	}
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authKeys, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		os.MkdirAll("/run/sshd", 0o755) // sshd as root needs its privilege separation directory
	}
	port = closedPort(t)
	conf := fmt.Sprintf("ListenAddress 127.0.0.1:%d\nHostKey %s\nPidFile none\nUsePAM no\nAuthorizedKeysFile %s\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
		port, filepath.Join(dir, "host"), authKeys)
	confPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &syncWriter{w: &bytes.Buffer{}}
	cmd := exec.Command(sshdBinary, "-D", "-e", "-f", confPath)
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("sshd log:\n%s", log.String())
		}
	})
	hostPub, err := os.ReadFile(filepath.Join(dir, "host.pub"))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(hostPub))
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(log.String(), "Server listening") {
			return port, "vm1 " + fields[0] + " " + fields[1], filepath.Join(dir, "client")
		}
	}
	t.Fatalf("sshd did not start:\n%s", log.String())
	return
}

// TestRealSSH runs OpenSSH's ssh with the test binary as its ProxyCommand,
// through the real relay, to a real sshd; the host key is checked. It
// pushes 4 MiB through the session under a WebSocket drop and compares
// the remote SHA-256.
func TestRealSSH(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no ssh client")
	}
	dir := t.TempDir()
	port, hostKey, key := startSSHD(t, dir)
	e := newEnv(t, iaprelay.Options{})
	e.relay.SetFault(iaprelay.Fault{Drop: true, Direction: iaprelay.DirUp, AfterBytes: 1 << 20, Times: 1})
	knownHosts := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(hostKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 4<<20)
	stream(7).Read(payload)
	sum := sha256.Sum256(payload)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile="+knownHosts, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
		"-o", "ProxyUseFdpass=no", "-o", "ProxyCommand="+self, "-l", currentUser(t), "vm1", "sha256sum")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "IAPTUNNEL_TEST_URL="+e.url,
		"IAPTUNNEL_TEST_TOKEN="+e.be.mint(user, time.Hour), fmt.Sprintf("IAPTUNNEL_TEST_PORT=%d", port))
	cmd.Stdin = bytes.NewReader(payload)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ssh: %v\n%s", err, stderr.String())
	}
	if got := strings.Fields(string(out)); len(got) == 0 || got[0] != hex.EncodeToString(sum[:]) {
		t.Fatalf("remote sha256sum %q, want %x", out, sum)
	}
	st := e.relay.Stats()
	t.Logf("ssh moved %d bytes up; relay drops %d, reconnects %d", st.BytesUp, st.Drops, st.Reconnects)
	if st.Drops != 1 || st.Reconnects != 1 {
		t.Errorf("relay drops %d reconnects %d, want 1 and 1", st.Drops, st.Reconnects)
	}
}
