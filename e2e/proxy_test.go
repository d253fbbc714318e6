package e2e

import (
	"bufio"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/sshd"
)

// instanceSSHD plays instance name: its logins follow that instance's
// grants, and its host keys are published in its guest attributes.
func (v *vm) instanceSSHD(t *testing.T, name string) *sshd.Server {
	t.Helper()
	s, err := sshd.Start(sshd.Options{Dir: t.TempDir(), Emulator: bins.emulator, MetadataHost: v.emu.Host,
		KeysUser: v.akcUser, Instance: name, PublishHostKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshd log (%s, port %d):\n%s", name, s.Port, s.Log())
		}
	})
	return s
}

// destAgent starts the agent with OSLOGIN_EMULATOR_HOST, so that its
// Compute API and IAP relay are the emulator's.
func (v *vm) destAgent(t *testing.T) *agentProc {
	t.Helper()
	sock := t.TempDir() + "/agent.sock"
	cmd := exec.Command(bins.agent, "-D", "-s", "-a", sock, "--endpoint", v.emu.URL, "--propagation", "0s")
	cmd.Env = v.agentEnv("OSLOGIN_EMULATOR_HOST=" + v.emu.Host)
	return runAgent(t, cmd, sock)
}

// TestProxyLogin logs in with stock ssh by instance name alone: host keys
// from known-hosts, the connection from `oslogin-agent proxy`, which the
// agent makes (directly to the external address, or through the
// emulator's IAP relay) and hands over as a descriptor, or pumps on
// stdio. A second connection within the cache's lifetime costs no Compute
// call and no token.
func TestProxyLogin(t *testing.T) {
	v := newVM(t, func(c *emulator.Config) {
		c.Instances = append(c.Instances,
			emulator.Instance{Name: "vm-ext", NatIP: "127.0.0.1"},
			emulator.Instance{Name: "vm-iap"})
	})
	servers := map[string]*sshd.Server{"vm-ext": v.instanceSSHD(t, "vm-ext"), "vm-iap": v.instanceSSHD(t, "vm-iap")}
	a := v.destAgent(t)
	project := v.emu.Emulator.Config().ProjectID
	env := v.agentEnv("OSLOGIN_EMULATOR_HOST="+v.emu.Host, "SSH_AUTH_SOCK="+a.sock)

	login := func(name string, fdpass bool, env []string) (string, error) {
		t.Helper()
		in, err := v.emu.Emulator.LookupInstance("", name)
		if err != nil {
			t.Fatal(err)
		}
		proxy, pass := bins.agent+" proxy --project "+project+" %n %p", "no"
		if fdpass {
			proxy, pass = bins.agent+" proxy --fdpass --project "+project+" %n %p", "yes"
		}
		cmd := exec.Command("ssh", "-F", "/dev/null",
			"-o", "StrictHostKeyChecking=yes",
			"-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
			"-o", "HostKeyAlias=compute."+in.ID,
			"-o", "KnownHostsCommand="+bins.agent+" known-hosts --project "+project+" %H %I",
			"-o", "ProxyCommand="+proxy, "-o", "ProxyUseFdpass="+pass,
			"-o", "BatchMode=yes", "-o", "IdentityAgent="+a.sock, "-o", "ControlMaster=no",
			"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
			"-p", strconv.Itoa(servers[name].Port), a.user+"@"+name, "--", "echo", "logged-in")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	tests := []struct {
		name    string
		fdpass  bool
		viaIAP  bool
		comment string
	}{
		{"vm-ext", true, false, "external address, descriptor handed to ssh"},
		{"vm-iap", true, true, "no external address: IAP, the agent relays"},
		{"vm-ext", false, false, "external address, stdio pumped by the proxy"},
		{"vm-iap", false, true, "IAP, stdio pumped by the proxy"},
	}
	for _, tt := range tests {
		before := v.emu.Emulator.Relay().Stats().Connects
		if out, err := login(tt.name, tt.fdpass, env); err != nil || strings.TrimSpace(out) != "logged-in" {
			t.Fatalf("%s (%s): %v\n%s", tt.name, tt.comment, err, out)
		}
		if iap := v.emu.Emulator.Relay().Stats().Connects > before; iap != tt.viaIAP {
			t.Errorf("%s (%s): went through IAP: %v, want %v", tt.name, tt.comment, iap, tt.viaIAP)
		}
	}

	// Everything is cached now: another connection of each kind asks
	// Google nothing at all.
	v.emu.Emulator.ResetCalls()
	for _, name := range []string{"vm-ext", "vm-iap"} {
		start := time.Now()
		if out, err := login(name, true, env); err != nil || strings.TrimSpace(out) != "logged-in" {
			t.Fatalf("%s again: %v\n%s", name, err, out)
		}
		t.Logf("%s: cached login in %v", name, time.Since(start).Round(time.Millisecond))
	}
	for method, n := range v.emu.Emulator.Calls() {
		if strings.HasPrefix(method, "compute.") || method == "metadata.token" || method == "oauth2.token" {
			t.Errorf("within the cache lifetime, %d %s call(s)", n, method)
		}
	}

	// No agent on SSH_AUTH_SOCK (ssh still gets its keys through
	// IdentityAgent): the helpers look up and connect on their own.
	alone := v.agentEnv("OSLOGIN_EMULATOR_HOST=" + v.emu.Host)
	for _, tt := range []struct {
		name   string
		fdpass bool
	}{{"vm-ext", true}, {"vm-iap", false}} {
		v.emu.Emulator.ResetCalls()
		if out, err := login(tt.name, tt.fdpass, alone); err != nil || strings.TrimSpace(out) != "logged-in" {
			t.Fatalf("%s without an agent on SSH_AUTH_SOCK: %v\n%s", tt.name, err, out)
		}
		if v.emu.Emulator.Calls()["compute.instances.aggregatedList"] == 0 {
			t.Errorf("%s without an agent: no Compute lookup, so something else answered", tt.name)
		}
	}
}

// TestProxyErrors: what IAP and the Compute API refuse is said once on
// stderr, in words a person can act on, with status 1 and nothing on stdout.
func TestProxyErrors(t *testing.T) {
	v := newVM(t, func(c *emulator.Config) {
		c.Instances = append(c.Instances, emulator.Instance{Name: "vm-iap"}, emulator.Instance{Name: "vm-gone"})
	})
	s := v.instanceSSHD(t, "vm-iap")
	a := v.destAgent(t)
	project := v.emu.Emulator.Config().ProjectID
	env := v.agentEnv("OSLOGIN_EMULATOR_HOST="+v.emu.Host, "SSH_AUTH_SOCK="+a.sock)
	run := func(args ...string) (stdout, stderr string, err error) {
		cmd := exec.Command(bins.agent, append([]string{"proxy", "--project", project}, args...)...)
		cmd.Env = env
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}
	closed := closedPort(t)

	// The agent caches vm-gone, then it disappears: IAP's lookup fails.
	if _, stderr, err := run("--iap", "vm-gone", "1"); err == nil || !strings.Contains(stderr, "4003") {
		t.Fatalf("warming the cache: %v %s", err, stderr)
	}
	if err := v.emu.Emulator.RemoveInstance("", "vm-gone"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		setup func()
		args  []string
		want  []string
	}{
		{"closed port (4003)", nil, []string{"vm-iap", strconv.Itoa(closed)},
			[]string{"IAP could not connect to port " + strconv.Itoa(closed), "firewall must allow ingress from 35.235.240.0/20", "[4003"}},
		{"unknown to IAP (4047)", nil, []string{"--iap", "vm-gone", "22"},
			[]string{"IAP found no instance \"vm-gone\"", "check the instance name, zone and project", "[4047"}},
		{"unknown instance", nil, []string{"vm-ghost", "22"},
			[]string{"there is no instance vm-ghost in any zone of project " + project}},
		{"no IAP grant (4033)", func() {
			no := false
			if err := v.emu.Emulator.SetProjectRoles(v.email, emulator.ProjectRoles{IAPTunnel: &no}); err != nil {
				t.Fatal(err)
			}
		}, []string{"vm-iap", strconv.Itoa(s.Port)},
			[]string{"IAP denied the tunnel", "roles/iap.tunnelResourceAccessor", v.email, "[4033"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			stdout, stderr, err := run(tt.args...)
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Errorf("exit: %v, want status 1", err)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if n := strings.Count(stderr, "oslogin-agent proxy:"); n != 1 || strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr has %d messages, want one line:\n%s", n, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestTunnelLocalPort carries a TCP connection through
// `oslogin-agent tunnel`, which prints the port it listens on.
func TestTunnelLocalPort(t *testing.T) {
	v := newVM(t, func(c *emulator.Config) { c.Instances = append(c.Instances, emulator.Instance{Name: "vm-iap"}) })
	s := v.instanceSSHD(t, "vm-iap")
	a := v.destAgent(t)
	project := v.emu.Emulator.Config().ProjectID
	cmd := exec.Command(bins.agent, "tunnel", "--project", project, "--local-host-port", "127.0.0.1:0", "vm-iap", strconv.Itoa(s.Port))
	cmd.Env = v.agentEnv("OSLOGIN_EMULATOR_HOST="+v.emu.Host, "SSH_AUTH_SOCK="+a.sock)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("tunnel stderr:\n%s", stderr.String())
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("no port printed: %v", err)
	}
	port, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("printed %q, want a port", line)
	}
	for i := range 2 {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		banner, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || !strings.HasPrefix(banner, "SSH-2.0-") {
			t.Fatalf("connection %d: read %q (%v), want sshd's banner", i, banner, err)
		}
	}
	if st := v.emu.Emulator.Relay().Stats(); st.Connects < 2 {
		t.Errorf("relay saw %d connects, want 2", st.Connects)
	}
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}
