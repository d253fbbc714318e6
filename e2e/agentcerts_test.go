package e2e

import (
	"context"
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
	direct   bool // has an external address (natIP); else reachable only through the IAP relay
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
			if f.direct {
				in.NatIP = "127.0.0.1"
			}
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

// TestAgentCertificatesAnsible is issue 10's fleet run: one playbook over
// six VMs, certificate-only and key VMs mixed, half of them without an
// external address and reachable only through the IAP relay. Ansible's ssh
// uses the README recipe's ssh_config (`oslogin-agent ssh-config`: the
// connection from `oslogin-agent proxy --fdpass`, host keys only through
// KnownHostsCommand, StrictHostKeyChecking yes) and the agent as its only
// identity source. Every host succeeds, nothing says "Too many
// authentication failures", each certificate-only VM costs at most one
// signing call, and the relay-only VMs are reached through the relay.
func TestAgentCertificatesAnsible(t *testing.T) {
	needTools(t, "ansible-playbook")
	vms := []fleetVM{
		{name: "cert-1", certOnly: true, direct: true}, {name: "cert-2", certOnly: true}, {name: "cert-3", certOnly: true},
		{name: "keys-1", direct: true}, {name: "keys-2"}, {name: "keys-3", direct: true},
	}
	v := newVM(t, fleetConfig(vms))
	vms = v.startFleet(t, vms)
	a := v.startCertAgent(t)
	ctx := context.Background()
	admin := v.emu.Admin
	project, zone := v.emu.Emulator.Config().ProjectID, emulator.DefaultZone
	dest := func(f fleetVM) string { return f.name + "." + zone + "." + project }
	env := v.agentEnv("OSLOGIN_EMULATOR_HOST="+v.emu.Host, "OSLOGIN_USER="+a.user, "SSH_AUTH_SOCK="+a.sock)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// The README recipe's ssh_config, as the agent writes it.
	gen := exec.Command(bins.agent, "ssh-config", "--project", project, "--zone", zone)
	gen.Env = env
	var genErr strings.Builder
	gen.Stderr = &genErr
	config, err := gen.Output()
	if err != nil {
		t.Fatalf("oslogin-agent ssh-config: %v\n%s", err, genErr.String())
	}
	for _, want := range []string{"' proxy --fdpass %n %p\n", "ProxyUseFdpass yes\n", "StrictHostKeyChecking yes\n",
		"KnownHostsCommand " + bins.agent + " known-hosts %H %I\n", "IdentityAgent " + a.sock + "\n"} {
		if !strings.Contains(string(config), want) {
			t.Fatalf("ssh-config lacks %q:\n%s", want, config)
		}
	}
	configPath := write("ssh_config", string(config))
	// No known_hosts file at all: host keys come only from the VMs' guest
	// attributes through KnownHostsCommand.
	sshArgs := []string{"-F", configPath, "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "ConnectTimeout=20"}

	base := v.scratch(t)
	cp := controlPathDir(t)
	var inv strings.Builder
	inv.WriteString("[vms]\n")
	for _, f := range vms {
		fmt.Fprintf(&inv, "%s ansible_port=%d\n", dest(f), f.srv.Port)
	}
	fmt.Fprintf(&inv, "\n[vms:vars]\nbase=%s\n", base)
	write("inventory.ini", inv.String())
	write("site.yml", playbook)
	write("motd.j2", "managed by oslogin-agent for {{ inventory_hostname }}\n")
	cfg := write("ansible.cfg", fmt.Sprintf(`[defaults]
inventory = %s
forks = 10
interpreter_python = /usr/bin/python3
retry_files_enabled = False
timeout = 30
local_tmp = %s
remote_tmp = %s/.ansible-tmp
[ssh_connection]
ssh_args = %s -o ControlMaster=auto -o ControlPersist=60s
control_path_dir = %s
pipelining = True
`, filepath.Join(dir, "inventory.ini"), filepath.Join(dir, "tmp"), base, strings.Join(sshArgs, " "), cp))

	if err := admin.ResetCalls(ctx); err != nil {
		t.Fatal(err)
	}
	relayBefore, err := admin.RelayStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command("ansible-playbook", filepath.Join(dir, "site.yml"))
	cmd.Dir = dir
	cmd.Env = append(env, "ANSIBLE_CONFIG="+cfg, "ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0")
	out, err := cmd.CombinedOutput()
	t.Logf("ansible over %d VMs (3 through the relay): %v", len(vms), time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("ansible-playbook failed: %v\n%s\nagent:\n%s", err, out, a.stderr.String())
	}
	const tooMany = "Too many authentication failures"
	if strings.Contains(string(out), tooMany) || strings.Contains(a.stderr.String(), tooMany) {
		t.Errorf("%q during the run:\n%s", tooMany, out)
	}
	for _, f := range vms {
		if l := f.srv.Log(); strings.Contains(l, tooMany) || strings.Contains(l, "maximum authentication attempts exceeded") {
			t.Errorf("sshd of %s ran out of authentication attempts:\n%s", f.name, l)
		}
	}
	recap := regexp.MustCompile(`(?m)^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)
	rows := recap.FindAllStringSubmatch(string(out), -1)
	if len(rows) != len(vms) {
		t.Fatalf("recap has %d hosts, want %d:\n%s", len(rows), len(vms), out)
	}
	for _, r := range rows {
		// 7 tasks ok; changed: command id, file, copy, template.
		if r[2] != "7" || r[3] != "4" || r[4] != "0" || r[5] != "0" {
			t.Errorf("%s: ok=%s changed=%s unreachable=%s failed=%s; want ok=7 changed=4 unreachable=0 failed=0", r[1], r[2], r[3], r[4], r[5])
		}
	}
	for _, f := range vms {
		got, err := os.ReadFile(filepath.Join(base, dest(f), "hello.txt"))
		if want := "hello " + dest(f) + "\n"; err != nil || string(got) != want {
			t.Errorf("%s: hello.txt = %q, %v; want %q", f.name, got, err, want)
		}
	}
	calls, err := admin.Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := calls[signMethod]; n > 3 {
		t.Errorf("%d signing calls for 3 certificate-only VMs; want at most one each: %v", n, calls)
	}
	for _, f := range vms {
		want := map[bool]int{true: 1, false: 0}[f.certOnly]
		if n := len(regexp.MustCompile(`msg="certificate signed" instance=`+f.name+` `).FindAllString(a.stderr.String(), -1)); n != want {
			t.Errorf("%d certificates signed for %s, want %d", n, f.name, want)
		}
	}
	relayAfter, err := admin.RelayStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := relayAfter.Connects - relayBefore.Connects; n < 3 {
		t.Errorf("%d relay connects during the run; the 3 relay-only VMs need at least one each", n)
	}
	t.Logf("signing calls: %d, relay connects: %d, calls: %v", calls[signMethod], relayAfter.Connects-relayBefore.Connects, calls)

	// Each VM once more, one connection at a time, to see its route: the
	// relay for exactly the VMs without an external address, and the
	// certificates of the run reused.
	for _, f := range vms {
		before, err := admin.RelayStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ssh := exec.Command("ssh", append(sshArgs, "-o", "ControlMaster=no", "-p", strconv.Itoa(f.srv.Port), dest(f), "--", "id", "-un")...)
		ssh.Env = env
		if out, err := ssh.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != a.user {
			t.Errorf("ssh %s: %v: %s", dest(f), err, out)
			continue
		}
		after, err := admin.RelayStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n, want := after.Connects-before.Connects, map[bool]int{true: 0, false: 1}[f.direct]; n != want {
			t.Errorf("ssh %s (external address %v) made %d relay connects, want %d", dest(f), f.direct, n, want)
		}
	}
	if calls, err := admin.Calls(ctx); err != nil || calls[signMethod] != 3 {
		t.Errorf("after one more login to each VM: %d signing calls, want the run's 3 (%v)", calls[signMethod], err)
	}
}

// TestAgentCertificateFailures: each refusal leaves a clear message in the
// agent's log and a failed login; an expiring certificate is replaced for
// the next connection.
func TestAgentCertificateFailures(t *testing.T) {
	const vmSA = "vm-sa@" + emulator.DefaultProjectID + ".iam.gserviceaccount.com"
	const movedSA = "moved-sa@" + emulator.DefaultProjectID + ".iam.gserviceaccount.com"
	vms := []fleetVM{{name: "cert-1", certOnly: true}, {name: "cert-2", certOnly: true}, {name: "foreign-sa", certOnly: true},
		{name: "sa-moved", certOnly: true}}
	v := newVM(t, func(c *emulator.Config) {
		fleetConfig(vms)(c)
		c.Instances[2].ServiceAccount = vmSA
		c.Accounts = append(c.Accounts, emulator.Account{Email: vmSA, ServiceAccount: true},
			emulator.Account{Email: movedSA, ServiceAccount: true, ServiceAccountUsers: []string{c.Accounts[0].Email}})
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

	// Google signs a certificate that names a service account other than
	// the VM's, and the VM refuses it. The agent gets there when its
	// record of the VM is older than a change of the VM's service account:
	// its host key index (built at the first connection above, reused for
	// 5 minutes) still names the old one.
	t.Run("VM's service account changed", func(t *testing.T) {
		ctx := context.Background()
		st, err := v.emu.Admin.Instance(ctx, "", "sa-moved")
		if err != nil {
			t.Fatal(err)
		}
		if st.Instance.ServiceAccount != v.email {
			t.Fatalf("sa-moved runs as %q, want %q", st.Instance.ServiceAccount, v.email)
		}
		changed := st.Instance
		changed.ServiceAccount = movedSA
		if _, err := v.emu.Admin.PutInstance(ctx, changed); err != nil {
			t.Fatal(err)
		}
		srv := vms[3].srv
		const noPrincipal = "Certificate does not contain an authorized principal"
		if err := login(srv); err == nil {
			t.Fatal("logged in with a certificate naming the VM's former service account")
		}
		if !strings.Contains(srv.Log(), noPrincipal) {
			t.Fatalf("the VM did not refuse a certificate; sshd log:\n%s", srv.Log())
		}
		signed := regexp.MustCompile(`msg="certificate signed" instance=sa-moved .*service_account=(\S+)`)
		if m := signed.FindAllStringSubmatch(a.stderr.String(), -1); len(m) != 1 || m[0][1] != v.email {
			t.Fatalf("want one certificate for sa-moved naming the former service account %s; got %q", v.email, m)
		}
		// What the user sees: the agent says the VM refused the
		// certificate, what to check, and that it starts over.
		refused := regexp.MustCompile(`level=WARN msg="[^"]*refused the certificate[^"]*" .*instance=sa-moved .*service_account=` +
			regexp.QuoteMeta(v.email) + `.*`)
		// The agent learns it when ssh hangs up on it, just before ssh exits.
		var line string
		for deadline := time.Now().Add(10 * time.Second); line == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			line = refused.FindString(a.stderr.String())
		}
		if line == "" {
			t.Fatalf("the agent's log does not say that sa-moved refused its certificate:\n%s", a.stderr.String())
		}
		for _, want := range []string{"service account", "roles/compute.osLogin", "clock", "next connection"} {
			if !strings.Contains(line, want) {
				t.Errorf("the refusal record does not mention %q: %s", want, line)
			}
		}
		t.Logf("agent: %s", line)
		// The next connection gets a fresh record and a certificate naming
		// the VM's service account now, well within the 5 minutes the
		// record would otherwise be trusted.
		if err := login(srv); err != nil {
			t.Fatalf("second login after the service account change: %v\n%s", err, a.stderr.String())
		}
		m := signed.FindAllStringSubmatch(a.stderr.String(), -1)
		if len(m) != 2 || m[1][1] != movedSA {
			t.Fatalf("want a second certificate for sa-moved naming %s; got %q", movedSA, m)
		}
		// And it is reused: no third certificate.
		if err := login(srv); err != nil {
			t.Fatal(err)
		}
		if n := len(signed.FindAllString(a.stderr.String(), -1)); n != 2 {
			t.Errorf("%d certificates for sa-moved after three logins, want 2", n)
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
