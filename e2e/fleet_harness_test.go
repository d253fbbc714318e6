package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/sshd"
)

// The fleet harness: several emulated instances, each played by its own
// throwaway sshd that takes its logins from that instance's grants and
// publishes its host keys to that instance's guest attributes, as the guest
// agent does at first boot. Clients reach them the way the README's recipe
// does: an ssh_config written by `oslogin-agent ssh-config`, host names
// NAME.ZONE.PROJECT, host keys only through `oslogin-agent known-hosts`,
// StrictHostKeyChecking yes, and the connection through the ProxyCommand
// (straight to the external address, or through the emulator's IAP relay
// for instances without one). Instances listen on 22 on GCE; here every
// sshd has its own port, which ssh passes as %p (ssh -p, ansible_port).

// fleetHost is one instance and the sshd playing it.
type fleetHost struct {
	name   string
	direct bool // has an external address (natIP); else reachable only through the relay
	inst   emulator.Instance
	sshd   *sshd.Server // nil for an instance whose sshd is down
	port   int          // sshd's port, or a closed one when sshd is down
}

// dest is the NAME.ZONE.PROJECT name ssh and Ansible use.
func (h *fleetHost) dest(f *fleet) string { return h.name + "." + f.zone + "." + f.project }

// fleetSpec describes one instance of a fleet.
type fleetSpec struct {
	name   string
	direct bool
	down   bool // no sshd: IAP cannot connect to the backend (4003)
	noIAP  bool // the agent's account lacks roles/iap.tunnelResourceAccessor on it (4033)
}

type fleet struct {
	v       *vm
	project string
	zone    string
	hosts   []*fleetHost
	agent   *agentProc
	env     []string // for ssh, Ansible and the helpers ssh runs
	dir     string
	config  string // the README recipe's ssh_config: `oslogin-agent ssh-config --project P --zone Z`
}

// newFleet starts the emulator with the instances of specs, one sshd per
// instance (publishing its host keys), and the agent. The agent's account
// may log in everywhere (project-wide roles/compute.osLogin); IAP
// tunnelling is granted per instance, so a spec with noIAP is refused.
func newFleet(t *testing.T, specs []fleetSpec) *fleet {
	t.Helper()
	v := newVM(t, func(c *emulator.Config) {
		c.Accounts[0].IAPTunnel = false
		for _, s := range specs {
			in := emulator.Instance{Name: s.name,
				Grants: map[string]emulator.InstanceGrant{c.Accounts[0].Email: {IAPTunnel: !s.noIAP}}}
			if s.direct {
				in.NatIP = "127.0.0.1"
			}
			c.Instances = append(c.Instances, in)
		}
	})
	f := &fleet{v: v, project: v.emu.Emulator.Config().ProjectID, zone: emulator.DefaultZone, dir: t.TempDir()}
	for _, s := range specs {
		in, err := v.emu.Admin.Instance(context.Background(), "", s.name)
		if err != nil {
			t.Fatal(err)
		}
		h := &fleetHost{name: s.name, direct: s.direct, inst: in.Instance}
		if s.down {
			h.port = closedPort(t)
		} else {
			h.sshd = f.startSSHD(t, s.name)
			h.port = h.sshd.Port
		}
		f.hosts = append(f.hosts, h)
	}
	f.agent = v.destAgent(t) // with OSLOGIN_EMULATOR_HOST: its Compute API and IAP relay are the emulator's
	f.env = v.agentEnv("OSLOGIN_EMULATOR_HOST="+v.emu.Host, "OSLOGIN_USER="+f.agent.user, "SSH_AUTH_SOCK="+f.agent.sock)
	f.config = filepath.Join(f.dir, "ssh_config")
	if err := os.WriteFile(f.config, []byte(f.sshConfig(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// startSSHD runs an sshd playing instance name, publishing its host keys.
func (f *fleet) startSSHD(t *testing.T, name string) *sshd.Server {
	t.Helper()
	s, err := sshd.Start(sshd.Options{Dir: t.TempDir(), Emulator: bins.emulator, MetadataHost: f.v.emu.Host,
		KeysUser: f.v.akcUser, Instance: name, PublishHostKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshd log for %s (port %d):\n%s", name, s.Port, s.Log())
		}
	})
	return s
}

// sshConfig runs `oslogin-agent ssh-config` as the README tells a CI job to.
func (f *fleet) sshConfig(t *testing.T, args ...string) string {
	t.Helper()
	if len(args) == 0 {
		args = []string{"--project", f.project, "--zone", f.zone}
	}
	cmd := exec.Command(bins.agent, append([]string{"ssh-config"}, args...)...)
	cmd.Env = f.env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("oslogin-agent ssh-config %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// configValue is the value of the first line setting key in the recipe's
// ssh_config.
func (f *fleet) configValue(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile(f.config)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), " "); ok && k == key {
			return v
		}
	}
	t.Fatalf("the generated ssh_config has no %s:\n%s", key, b)
	return ""
}

// sshArgs are the options every fleet client uses on top of the generated
// config: no known_hosts file at all, so host keys come only from guest
// attributes through the config's KnownHostsCommand.
func (f *fleet) sshArgs(config string) []string {
	a := []string{"-F", config, "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR"}
	return a
}

// ssh runs command on h through the recipe's config.
func (f *fleet) ssh(h *fleetHost, command ...string) *exec.Cmd {
	args := append(f.sshArgs(f.config), "-p", strconv.Itoa(h.port), h.dest(f), "--")
	cmd := exec.Command("ssh", append(args, command...)...)
	cmd.Env = f.env
	return cmd
}

// sshCommand is the ssh program with its options as one string, for
// rsync -e and ProxyCommand-less tools.
func (f *fleet) sshCommand(h *fleetHost) string {
	var b strings.Builder
	b.WriteString("ssh")
	for _, a := range append(f.sshArgs(f.config), "-p", strconv.Itoa(h.port)) {
		b.WriteString(" " + shellQuoteArg(a))
	}
	return b.String()
}

func shellQuoteArg(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
