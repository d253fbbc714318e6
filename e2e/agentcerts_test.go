package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/sshd"
)

const signMethod = "projects.locations.signSshPublicKey"

// fleetVM is one emulator instance played by its own sshd.
type fleetVM struct {
	name     string
	certOnly bool
	srv      *sshd.Server
}

// startFleet starts one sshd per instance, configured as the guest agent
// configures it (certificate-only where enable-oslogin-certificates=TRUE),
// each with its own host key published as guest attributes.
func (v *vm) startFleet(t *testing.T, vms []fleetVM) []fleetVM {
	t.Helper()
	for i := range vms {
		s, err := sshd.Start(sshd.Options{Dir: t.TempDir(), Emulator: bins.emulator, MetadataHost: v.emu.Host,
			KeysUser: v.akcUser, Instance: vms[i].name, CertificateOnly: vms[i].certOnly, PublishHostKeys: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			s.Stop()
			if t.Failed() {
				t.Logf("sshd %s log (port %d):\n%s", vms[i].name, s.Port, s.Log())
			}
		})
		appendFile(t, v.knownHosts, s.KnownHostsLine()+"\n")
		vms[i].srv = s
	}
	return vms
}

// fleetConfig adds the instances to the emulator configuration.
func fleetConfig(vms []fleetVM) func(*emulator.Config) {
	return func(c *emulator.Config) {
		for _, f := range vms {
			in := emulator.Instance{Name: f.name}
			if f.certOnly {
				in.Metadata = map[string]string{emulator.MetaEnableCertificates: "TRUE"}
			}
			c.Instances = append(c.Instances, in)
		}
	}
}

// startCertAgent runs the agent with OSLOGIN_EMULATOR_HOST, so that OS
// Login, Compute and the metadata server are all the emulator's.
func (v *vm) startCertAgent(t *testing.T, extra ...string) *agentProc {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	args := append([]string{"-D", "-s", "-a", sock, "--propagation", "0s", "--log-level", "debug"}, extra...)
	cmd := exec.Command(bins.agent, args...)
	cmd.Env = v.agentEnv("OSLOGIN_EMULATOR_HOST=" + v.emu.Host)
	return runAgent(t, cmd, sock)
}

func mixedFleet() []fleetVM {
	return []fleetVM{{name: "cert-1", certOnly: true}, {name: "cert-2", certOnly: true}, {name: "cert-3", certOnly: true},
		{name: "keys-1"}, {name: "keys-2"}, {name: "keys-3"}}
}

// TestAgentCertificates: stock ssh, scp and sftp log in through the agent
// to a certificate-only VM, and to a VM that takes imported keys, with no
// certificate file anywhere; the agent signs once per VM and reuses the
// certificate for the next connections.
func TestAgentCertificates(t *testing.T) {
	vms := mixedFleet()[2:4] // cert-3, keys-1
	v := newVM(t, fleetConfig(vms))
	vms = v.startFleet(t, vms)
	a := v.startCertAgent(t)
	certVM, keyVM := vms[0].srv, vms[1].srv

	for _, s := range []*sshd.Server{certVM, keyVM, certVM} {
		out, err := v.ssh(s, a.sock, "id", "-un").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != v.user {
			t.Fatalf("ssh through the agent (port %d): %v: %s\nagent:\n%s", s.Port, err, out, a.stderr.String())
		}
	}
	dir := v.scratch(t)
	local := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(local, []byte("certified\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	scp := exec.Command("scp", append(v.sshOpts(a.sock), "-P", strconv.Itoa(certVM.Port), local, v.user+"@127.0.0.1:"+dir+"/copied")...)
	if out, err := scp.CombinedOutput(); err != nil {
		t.Fatalf("scp: %v: %s", err, out)
	}
	batch := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(batch, []byte("get "+dir+"/copied "+local+".back\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sftp := exec.Command("sftp", append(v.sshOpts(a.sock), "-P", strconv.Itoa(certVM.Port), "-b", batch, v.user+"@127.0.0.1")...)
	if out, err := sftp.CombinedOutput(); err != nil {
		t.Fatalf("sftp: %v: %s", err, out)
	}
	if got, err := os.ReadFile(local + ".back"); err != nil || string(got) != "certified\n" {
		t.Fatalf("sftp fetched %q, %v", got, err)
	}
	// Registering the key created the POSIX account, so no 404 first.
	if n := v.emu.Emulator.Calls()[signMethod]; n != 1 {
		t.Errorf("%d signing calls for one VM and five connections; want 1", n)
	}
	if n := strings.Count(a.stderr.String(), "certificate signed"); n != 1 {
		t.Errorf("%d certificate records, want 1", n)
	}
	if !regexp.MustCompile(`msg=signature .*certificate.instance=cert-3`).MatchString(a.stderr.String()) {
		t.Errorf("no signature record names the certificate:\n%s", a.stderr.String())
	}
}

// TestAgentCertificatesAnsible runs one playbook over six VMs, three of
// them certificate-only, through the agent: every host succeeds, no
// "Too many authentication failures", and at most one certificate per
// certificate-only VM. Direct connections (the proxy helper is another
// branch).
func TestAgentCertificatesAnsible(t *testing.T) {
	needTools(t, "ansible-playbook")
	vms := mixedFleet()
	v := newVM(t, fleetConfig(vms))
	vms = v.startFleet(t, vms)
	a := v.startCertAgent(t)
	dir := t.TempDir()
	base := v.scratch(t)
	cp, err := os.MkdirTemp("", "cp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		entries, _ := os.ReadDir(cp)
		for _, e := range entries {
			exec.Command("ssh", "-O", "exit", "-o", "ControlPath="+filepath.Join(cp, e.Name()), "x").Run()
		}
		os.RemoveAll(cp)
	})
	var inv strings.Builder
	inv.WriteString("[vms]\n")
	for _, f := range vms {
		fmt.Fprintf(&inv, "%s ansible_host=127.0.0.1 ansible_port=%d\n", f.name, f.srv.Port)
	}
	fmt.Fprintf(&inv, "\n[vms:vars]\nansible_user=%s\nbase=%s\n", v.user, base)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("inventory.ini", inv.String())
	write("site.yml", playbook)
	write("motd.j2", "managed by oslogin-agent for {{ inventory_hostname }}\n")
	cfg := write("ansible.cfg", fmt.Sprintf(`[defaults]
inventory = %s
forks = 10
interpreter_python = /usr/bin/python3
retry_files_enabled = False
timeout = 20
local_tmp = %s
remote_tmp = %s/.ansible-tmp
[ssh_connection]
ssh_args = -F /dev/null -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes -o ControlMaster=auto -o ControlPersist=60s
control_path_dir = %s
pipelining = True
`, filepath.Join(dir, "inventory.ini"), filepath.Join(dir, "tmp"), base, v.knownHosts, cp))
	v.emu.Emulator.ResetCalls()
	start := time.Now()
	cmd := exec.Command("ansible-playbook", filepath.Join(dir, "site.yml"))
	cmd.Dir = dir
	cmd.Env = v.agentEnv("ANSIBLE_CONFIG="+cfg, "ANSIBLE_NOCOLOR=1", "SSH_AUTH_SOCK="+a.sock, "OSLOGIN_USER="+v.user)
	out, err := cmd.CombinedOutput()
	t.Logf("ansible over %d VMs: %v", len(vms), time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("ansible-playbook failed: %v\n%s\nagent:\n%s", err, out, a.stderr.String())
	}
	if strings.Contains(string(out), "Too many authentication failures") {
		t.Fatalf("Too many authentication failures:\n%s", out)
	}
	recap := regexp.MustCompile(`(?m)^([a-z]+-\d)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)
	rows := recap.FindAllStringSubmatch(string(out), -1)
	if len(rows) != len(vms) {
		t.Fatalf("recap has %d hosts, want %d:\n%s", len(rows), len(vms), out)
	}
	for _, r := range rows {
		if r[2] != "7" || r[4] != "0" || r[5] != "0" {
			t.Errorf("%s: ok=%s unreachable=%s failed=%s", r[1], r[2], r[4], r[5])
		}
	}
	calls := v.emu.Emulator.Calls()
	if n := calls[signMethod]; n > 3 {
		t.Errorf("%d signing calls for 3 certificate-only VMs; want at most one each: %v", n, calls)
	}
	if n := strings.Count(a.stderr.String(), "certificate signed"); n != 3 {
		t.Errorf("%d certificates signed, want 3", n)
	}
	t.Logf("signing calls: %d, compute calls: %v", calls[signMethod], calls)
}

// TestAgentCertificateFailures: each refusal leaves a clear message in the
// agent's log and a failed login; an expiring certificate is replaced for
// the next connection.
func TestAgentCertificateFailures(t *testing.T) {
	const vmSA = "vm-sa@" + emulator.DefaultProjectID + ".iam.gserviceaccount.com"
	vms := []fleetVM{{name: "cert-1", certOnly: true}, {name: "cert-2", certOnly: true}, {name: "foreign-sa", certOnly: true}}
	v := newVM(t, func(c *emulator.Config) {
		fleetConfig(vms)(c)
		c.Instances[2].ServiceAccount = vmSA
		c.Accounts = append(c.Accounts, emulator.Account{Email: vmSA, ServiceAccount: true})
		c.CertificateLifetime = 20 * time.Second // valid 50s with the backdate; renewed 12.5s before its end
	})
	vms = v.startFleet(t, vms)
	a := v.startCertAgent(t)
	login := func(s *sshd.Server) error {
		out, err := v.ssh(s, a.sock, "id", "-un").CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) != v.user {
			return fmt.Errorf("logged in as %q", out)
		}
		return err
	}

	t.Run("no actAs on the VM's service account", func(t *testing.T) {
		if err := login(vms[2].srv); err == nil {
			t.Fatal("logged in without a certificate")
		}
		if !strings.Contains(a.stderr.String(), "roles/iam.serviceAccountUser") || !strings.Contains(a.stderr.String(), vmSA) {
			t.Fatalf("agent log does not say which grant is missing:\n%s", a.stderr.String())
		}
	})

	t.Run("expiring certificate renewed", func(t *testing.T) {
		if err := login(vms[0].srv); err != nil {
			t.Fatal(err)
		}
		time.Sleep(38 * time.Second) // past refreshAt (50s - 12.5s after signing)
		if err := login(vms[0].srv); err != nil {
			t.Fatalf("after renewal: %v\n%s", err, a.stderr.String())
		}
		if n := strings.Count(a.stderr.String(), "instance=cert-1"); n < 2 {
			t.Fatalf("certificate for cert-1 not renewed:\n%s", a.stderr.String())
		}
	})

	t.Run("login grant revoked", func(t *testing.T) {
		if err := v.emu.Emulator.SetGrant(v.email, false, false); err != nil {
			t.Fatal(err)
		}
		if err := login(vms[1].srv); err == nil {
			t.Fatal("logged in after the grant was revoked")
		}
		if !strings.Contains(a.stderr.String(), "roles/compute.osLogin") {
			t.Fatalf("agent log does not name the missing role:\n%s", a.stderr.String())
		}
	})
}
