package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
)

// TestHostKeysFromGuestAttributes logs in with real OpenSSH whose only
// source of host keys is `oslogin-agent known-hosts`: the sshd's host key
// is published in an instance's guest attributes, as Google's guest agent
// does at first boot. A different published key, or none, must stop ssh.
func TestKnownHostsCommandFromGuestAttributes(t *testing.T) {
	v := newVM(t, func(c *emulator.Config) {
		c.Instances = append(c.Instances,
			emulator.Instance{Name: "vm-ssh", NatIP: "127.0.0.1"},
			emulator.Instance{Name: "vm-dark", NatIP: "127.0.0.1",
				Metadata: map[string]string{emulator.MetaEnableGuestAttrs: "FALSE"}})
	})
	s := v.startSSHD(t)
	a := v.startAgent(t, "")
	vmSSH, err := v.emu.Emulator.LookupInstance("", "vm-ssh")
	if err != nil {
		t.Fatal(err)
	}
	dark, err := v.emu.Emulator.LookupInstance("", "vm-dark")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(authorizedKey string) {
		t.Helper()
		f := strings.Fields(authorizedKey)
		if err := v.emu.Emulator.PutGuestAttribute("", "vm-ssh", "hostkeys", f[0], f[1]); err != nil {
			t.Fatal(err)
		}
	}
	publish(s.HostKey)
	project := v.emu.Emulator.Config().ProjectID
	// The helper finds everything through the emulator, as a user's shell
	// with OSLOGIN_EMULATOR_HOST would: nothing leaves 127.0.0.1.
	env := v.agentEnv("OSLOGIN_EMULATOR_HOST=" + v.emu.Host)

	login := func(alias string) (string, error) {
		t.Helper()
		cmd := exec.Command("ssh", "-F", "/dev/null",
			"-o", "StrictHostKeyChecking=yes",
			"-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
			"-o", "HostKeyAlias="+alias,
			// --no-cache: the key changes below must be seen at once, not
			// after the agent's cache lifetime (ssh exports IdentityAgent
			// as SSH_AUTH_SOCK to the command, so the agent would answer).
			"-o", "KnownHostsCommand="+bins.agent+" known-hosts --no-cache --project "+project+" %H %I",
			"-o", "BatchMode=yes", "-o", "IdentityAgent="+a.sock, "-o", "ControlMaster=no",
			"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
			"-p", strconv.Itoa(s.Port), a.user+"@127.0.0.1", "--", "echo", "logged-in")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	if out, err := login("compute." + vmSSH.ID); err != nil || strings.TrimSpace(out) != "logged-in" {
		t.Fatalf("login with the published host key: %v\n%s", err, out)
	}

	// The instance now publishes another key (a recreated guest, or
	// someone in the VM rewriting it): ssh must refuse, loudly.
	publish(otherHostKey(t))
	out, err := login("compute." + vmSSH.ID)
	if err == nil || !strings.Contains(out, "REMOTE HOST IDENTIFICATION HAS CHANGED") || strings.Contains(out, "logged-in") {
		t.Errorf("login with a changed published key: %v\n%s", err, out)
	}
	// A prefix of the id is another instance, never this one's keys.
	if out, err := login("compute." + vmSSH.ID[:len(vmSSH.ID)-1]); err == nil || strings.Contains(out, "logged-in") {
		t.Errorf("login with a prefix of the id: %v\n%s", err, out)
	}

	// Nothing published: the helper fails closed and says why.
	out, err = login("compute." + dark.ID)
	if err == nil || strings.Contains(out, "logged-in") ||
		!strings.Contains(out, "publishes no usable SSH host keys") || !strings.Contains(out, "enable-guest-attributes=TRUE") {
		t.Errorf("login with nothing published: %v\n%s", err, out)
	}
	if strings.Contains(out, "Are you sure you want to continue connecting") {
		t.Errorf("ssh offered to trust the host on first use:\n%s", out)
	}
}

// TestSSHConfigLogin logs in through a config written by
// `oslogin-agent ssh-config`. The proxy subcommand does not exist yet, so
// the config is written with --direct: HostName is the instance's address.
func TestSSHConfigLogin(t *testing.T) {
	v := newVM(t, func(c *emulator.Config) {
		c.Instances = append(c.Instances, emulator.Instance{Name: "vm-ssh", NatIP: "127.0.0.1"})
	})
	s := v.startSSHD(t)
	a := v.startAgent(t, "")
	f := strings.Fields(s.HostKey)
	if err := v.emu.Emulator.PutGuestAttribute("", "vm-ssh", "hostkeys", f[0], f[1]); err != nil {
		t.Fatal(err)
	}
	project := v.emu.Emulator.Config().ProjectID
	env := v.agentEnv("OSLOGIN_EMULATOR_HOST="+v.emu.Host, "OSLOGIN_USER="+a.user, "SSH_AUTH_SOCK="+a.sock)

	gen := exec.Command(bins.agent, "ssh-config", "--direct", "--project", project, "vm-ssh")
	gen.Env = env
	var stderr strings.Builder
	gen.Stderr = &stderr
	config, err := gen.Output()
	if err != nil {
		t.Fatalf("ssh-config: %v\n%s", err, stderr.String())
	}
	vm, _ := v.emu.Emulator.LookupInstance("", "vm-ssh")
	for _, want := range []string{"Host vm-ssh." + emulator.DefaultZone + "." + project + "\n", "HostKeyAlias compute." + vm.ID + "\n",
		"KnownHostsCommand " + bins.agent + " known-hosts", "User " + a.user + "\n", "IdentityAgent " + a.sock + "\n"} {
		if !strings.Contains(string(config), want) {
			t.Errorf("config lacks %q:\n%s", want, config)
		}
	}
	path := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(path, config, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ssh", "-F", path, "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "-p", strconv.Itoa(s.Port),
		"vm-ssh."+emulator.DefaultZone+"."+project, "--", "echo", "logged-in")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "logged-in" {
		t.Fatalf("login through the generated config: %v\n%s\nconfig:\n%s", err, out, config)
	}
}

// otherHostKey is a fresh public host key, as a recreated VM would have.
func otherHostKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k.Type() + " " + base64.StdEncoding.EncodeToString(k.Marshal())
}
