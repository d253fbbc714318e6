package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

// TestFleet is issue 9's acceptance: reach any VM the way
// `gcloud compute ssh` does, with no gcloud. Five instances (three with an
// external address, two reachable only through the IAP relay) are driven
// with ssh, scp, rsync and an Ansible playbook through the README recipe's
// ssh_config; host keys come only from guest attributes and are checked
// strictly. Then the failures a user meets: a relay drop mid-transfer, a
// recreated VM, and IAP's 4033/4003/4047.
func TestFleet(t *testing.T) {
	needTools(t, "scp", "rsync", "sha256sum")
	f := newFleet(t, []fleetSpec{
		{name: "web-1", direct: true},
		{name: "web-2", direct: true},
		{name: "web-3", direct: true},
		{name: "db-1"},
		{name: "db-2"},
		{name: "locked", noIAP: true},
		{name: "dark", down: true},
		{name: "gone"},
	})
	fleetHosts := f.hosts[:5]
	host := func(name string) *fleetHost {
		for _, h := range f.hosts {
			if h.name == name {
				return h
			}
		}
		t.Fatalf("no host %s", name)
		return nil
	}
	ctx := context.Background()
	admin := f.v.emu.Admin
	relayStats := func() iaprelay.Stats {
		t.Helper()
		s, err := admin.RelayStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	t.Run("the recipe's ssh_config", func(t *testing.T) {
		config, _ := os.ReadFile(f.config)
		for _, want := range []string{
			"Host *." + f.zone + "." + f.project + "\n",
			"KnownHostsCommand " + bins.agent + " known-hosts %H %I\n",
			"StrictHostKeyChecking yes\n",
			"UpdateHostKeys no\n",
			"User " + f.agent.user + "\n",
			"IdentityAgent " + f.agent.sock + "\n",
			"' proxy --fdpass %n %p\n",
			"ProxyUseFdpass yes\n",
		} {
			if !strings.Contains(string(config), want) {
				t.Errorf("ssh-config lacks %q:\n%s", want, config)
			}
		}
		// ssh runs "exec " + ProxyCommand through the shell: a command that
		// starts with exec itself becomes "exec exec ..." and never runs.
		if pc := f.configValue(t, "ProxyCommand"); strings.HasPrefix(pc, "exec ") {
			t.Errorf("ssh-config writes ProxyCommand %q: ssh already execs it, so the shell runs `exec exec ...` and fails with \"exec: exec: not found\"; write the command without exec", pc)
		}
	})

	t.Run("ssh reaches every instance, direct or through the relay", func(t *testing.T) {
		for _, h := range fleetHosts {
			before := relayStats().Connects
			start := time.Now()
			out, err := f.ssh(h, "id -un; echo on-$0").CombinedOutput()
			t.Logf("ssh %s (direct %v): %v", h.dest(f), h.direct, time.Since(start).Round(time.Millisecond))
			if want := f.agent.user + "\non-bash\n"; err != nil || string(out) != want {
				t.Fatalf("ssh %s: %v: %q, want %q", h.dest(f), err, out, want)
			}
			connects := relayStats().Connects - before
			if want := map[bool]int{true: 0, false: 1}[h.direct]; connects != want {
				t.Errorf("ssh %s (direct %v) made %d relay connects, want %d", h.dest(f), h.direct, connects, want)
			}
		}
	})

	t.Run("ssh-config --direct blocks pin compute.ID", func(t *testing.T) {
		config := f.sshConfig(t, "--direct", "--project", f.project, "--zone", f.zone, "web-1", "web-2")
		path := filepath.Join(t.TempDir(), "direct_config")
		os.WriteFile(path, []byte(config), 0o600)
		for _, name := range []string{"web-1", "web-2"} {
			h := host(name)
			if !strings.Contains(config, "HostKeyAlias compute."+h.inst.ID+"\n") {
				t.Errorf("no HostKeyAlias for %s:\n%s", name, config)
			}
			args := append(f.sshArgs(path), "-p", strconv.Itoa(h.port), h.dest(f), "--", "echo", "direct-"+name)
			cmd := exec.Command("ssh", args...)
			cmd.Env = f.env
			if out, err := cmd.CombinedOutput(); err != nil || string(out) != "direct-"+name+"\n" {
				t.Errorf("ssh %s with the --direct config: %v\n%s", name, err, out)
			}
		}
	})

	remote := f.v.scratch(t)
	payload := filepath.Join(t.TempDir(), "payload")
	sum := writeRandom(t, payload, 64<<20)

	// scpRoundTrip copies the payload to h, checks its sha256 there, copies
	// it back and checks it here; it returns the upload time.
	scpRoundTrip := func(t *testing.T, h *fleetHost, name string) time.Duration {
		t.Helper()
		dst := h.dest(f) + ":" + remote + "/" + name
		args := append(f.sshArgs(f.config), "-P", strconv.Itoa(h.port))
		start := time.Now()
		up := exec.Command("scp", append(args, payload, dst)...)
		up.Env = f.env
		mustRun(t, up)
		took := time.Since(start)
		out := mustRun(t, f.ssh(h, "sha256sum", remote+"/"+name))
		if got := strings.Fields(out); len(got) == 0 || got[0] != sum {
			t.Fatalf("sha256 on %s: %q, want %s", h.name, out, sum)
		}
		back := filepath.Join(t.TempDir(), "back")
		down := exec.Command("scp", append(args, dst, back)...)
		down.Env = f.env
		mustRun(t, down)
		if got := fileSHA256(t, back); got != sum {
			t.Fatalf("downloaded copy from %s has sha256 %s, want %s", h.name, got, sum)
		}
		return took
	}

	t.Run("scp 64 MiB direct and through the relay", func(t *testing.T) {
		for _, tc := range []struct{ host, file string }{{"web-1", "direct.bin"}, {"db-1", "relay.bin"}} {
			h := host(tc.host)
			took := scpRoundTrip(t, h, tc.file)
			t.Logf("scp 64 MiB up to %s (direct %v): %v (%.1f MiB/s)", h.name, h.direct, took.Round(time.Millisecond), 64/took.Seconds())
		}
	})

	t.Run("a relay drop mid-scp resumes and the file arrives intact", func(t *testing.T) {
		h := host("db-2")
		before := relayStats()
		if err := admin.SetRelayFault(ctx, iaprelay.Fault{Instance: h.name, Drop: true, Direction: iaprelay.DirUp,
			AfterBytes: 16 << 20, Times: 1}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { admin.ClearRelayFaults(ctx) })
		took := scpRoundTrip(t, h, "dropped.bin")
		after := relayStats()
		if after.Drops != before.Drops+1 || after.Reconnects < before.Reconnects+1 {
			t.Fatalf("relay stats before %+v after %+v: want exactly one drop and a reconnect", before, after)
		}
		t.Logf("scp 64 MiB up to %s with one WebSocket drop after 16 MiB: %v; relay resent %d bytes, %d reconnects",
			h.name, took.Round(time.Millisecond), after.BytesResent-before.BytesResent, after.Reconnects-before.Reconnects)
	})

	t.Run("rsync direct and through the relay", func(t *testing.T) {
		src := t.TempDir()
		os.MkdirAll(filepath.Join(src, "sub"), 0o755)
		os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha\n"), 0o644)
		writeRandom(t, filepath.Join(src, "sub", "b.bin"), 3<<20)
		for _, name := range []string{"web-2", "db-1"} {
			h := host(name)
			target := remote + "/rsync-" + name + "/"
			up := exec.Command("rsync", "-a", "-e", f.sshCommand(h), src+"/", h.dest(f)+":"+target)
			up.Env = f.env
			mustRun(t, up)
			back := t.TempDir()
			down := exec.Command("rsync", "-a", "-e", f.sshCommand(h), h.dest(f)+":"+target, back+"/")
			down.Env = f.env
			mustRun(t, down)
			for _, file := range []string{"a.txt", "sub/b.bin"} {
				if fileSHA256(t, filepath.Join(back, file)) != fileSHA256(t, filepath.Join(src, file)) {
					t.Errorf("%s did not survive the rsync round trip to %s", file, name)
				}
			}
		}
	})

	t.Run("README's GitHub Actions recipe: ansible-playbook over the fleet", func(t *testing.T) {
		needTools(t, "ansible-playbook", "bash")
		f.readmeRecipe(t, fleetHosts)
	})

	t.Run("IAP refusals say what to fix and exit non-zero", func(t *testing.T) {
		if err := admin.SetRelayFault(ctx, iaprelay.Fault{Instance: "gone", RefuseCode: 4047, Times: 1}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { admin.ClearRelayFaults(ctx) })
		nosuch := &fleetHost{name: "nosuch", port: 22}
		for _, tc := range []struct {
			why  string
			host *fleetHost
			want []string
		}{
			{"4033: no IAP tunnel role on the instance", host("locked"),
				[]string{"roles/iap.tunnelResourceAccessor", f.v.email, `"locked"`, f.zone, f.project}},
			{"4003: nothing listens on the port", host("dark"),
				[]string{"35.235.240.0/20", "port " + strconv.Itoa(host("dark").port), "sshd", `"dark"`}},
			{"4047: IAP finds no such instance", host("gone"),
				[]string{"check the instance name, zone and project", `"gone"`, f.zone, f.project}},
			{"no such instance in the Compute API", nosuch,
				[]string{"nosuch", f.zone, f.project}},
		} {
			t.Run(tc.why, func(t *testing.T) {
				out, err := f.ssh(tc.host, "echo", "logged-in").CombinedOutput()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 255 || strings.Contains(string(out), "logged-in") {
					t.Fatalf("ssh %s: %v, want exit 255\n%s", tc.host.dest(f), err, out)
				}
				for _, w := range tc.want {
					if !strings.Contains(string(out), w) {
						t.Errorf("ssh %s said, without %q:\n%s", tc.host.dest(f), w, out)
					}
				}
				t.Logf("ssh %s exit %d:\n%s", tc.host.dest(f), ee.ExitCode(), out)
			})
		}
	})

	t.Run("a VM recreated under the same name: refused loudly while cached, verified anew with --no-cache", func(t *testing.T) {
		h := host("web-3")
		// Connected before: the agent has verified and cached web-3's keys.
		mustRun(t, f.ssh(h, "true"))
		// A config written before the recreation pins the old compute.ID.
		pinned := filepath.Join(t.TempDir(), "pinned_config")
		os.WriteFile(pinned, []byte(f.sshConfig(t, "--direct", "--project", f.project, "--zone", f.zone, h.name)), 0o600)
		oldID := h.inst.ID
		newIn := h.inst
		newIn.ID = "9" + oldID[1:]
		if newIn.ID == oldID {
			newIn.ID = "8" + oldID[1:]
		}
		if _, err := admin.PutInstance(ctx, newIn); err != nil {
			t.Fatal(err)
		}
		// The new VM's sshd has a new host key and publishes it.
		fresh := f.startSSHD(t, h.name)
		recreated := &fleetHost{name: h.name, direct: true, port: fresh.Port}
		for _, tc := range []struct {
			how    string
			config string
		}{
			{"by name, the recipe's config", f.config},
			{"by a config pinning compute." + oldID, pinned},
		} {
			args := append(f.sshArgs(tc.config), "-p", strconv.Itoa(recreated.port), h.dest(f), "--", "echo", "logged-in")
			cmd := exec.Command("ssh", args...)
			cmd.Env = f.env
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 255 || strings.Contains(string(out), "logged-in") {
				t.Errorf("ssh %s to the recreated VM: %v, want exit 255\n%s", tc.how, err, out)
				continue
			}
			loud := strings.Contains(string(out), "REMOTE HOST IDENTIFICATION HAS CHANGED") ||
				strings.Contains(string(out), "there is no instance with id "+oldID)
			if !loud {
				t.Errorf("ssh %s to the recreated VM refused without saying why:\n%s", tc.how, out)
			}
			t.Logf("ssh %s to the recreated VM (exit %d):\n%s", tc.how, ee.ExitCode(), out)
		}
		// Asking the Compute API directly (known-hosts --no-cache) sees the
		// recreation at once: the new VM is accepted and the old server,
		// still answering on its port, is refused loudly.
		noCache := "KnownHostsCommand=" + bins.agent + " known-hosts --no-cache %H %I"
		for _, tc := range []struct {
			to     string
			port   int
			accept bool
		}{{"the recreated VM", fresh.Port, true}, {"the old server", h.port, false}} {
			args := append(f.sshArgs(f.config), "-o", noCache, "-p", strconv.Itoa(tc.port), h.dest(f), "--", "echo", "logged-in")
			cmd := exec.Command("ssh", args...)
			cmd.Env = f.env
			out, err := cmd.CombinedOutput()
			switch {
			case tc.accept && (err != nil || string(out) != "logged-in\n"):
				t.Errorf("ssh with known-hosts --no-cache to %s: %v\n%s", tc.to, err, out)
			case !tc.accept && (err == nil || !strings.Contains(string(out), "REMOTE HOST IDENTIFICATION HAS CHANGED")):
				t.Errorf("ssh with known-hosts --no-cache to %s: %v, want it refused loudly\n%s", tc.to, err, out)
			}
		}
	})
}

// readmeRecipe runs README's GitHub Actions recipe: the lines of the
// workflow's Deploy step and the inventory, as written but for the project
// id (and an ansible_port per host: every sshd here has its own port, where
// VMs all listen on 22). The step starts its own agent in command mode and
// appends `oslogin-agent ssh-config` to ~/.ssh/config; ssh reads that file
// from the passwd entry's home, not $HOME, so Ansible's ssh gets it with -F.
func (f *fleet) readmeRecipe(t *testing.T, hosts []*fleetHost) {
	t.Helper()
	step := deployStep(t)
	var inv strings.Builder
	for _, l := range readmeBlock(t, "e2e TestFleet: inventory") {
		l = strings.ReplaceAll(l, "my-project", f.project)
		for _, h := range hosts {
			if strings.TrimSpace(l) == h.dest(f) {
				l += " ansible_port=" + strconv.Itoa(h.port)
			}
		}
		inv.WriteString(l + "\n")
	}
	for _, h := range hosts {
		if !strings.Contains(inv.String(), h.dest(f)+" ansible_port=") {
			t.Fatalf("README's inventory does not name %s:\n%s", h.dest(f), inv.String())
		}
	}
	dir := t.TempDir()
	home := t.TempDir()
	base := f.v.scratch(t)
	cp := controlPathDir(t)
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
	// Runner-side settings a workflow would not need: the interpreter, the
	// scratch directory the "VMs" write to, short control paths.
	cfg := write("ansible.cfg", fmt.Sprintf(`[defaults]
interpreter_python = /usr/bin/python3
retry_files_enabled = False
timeout = 30
local_tmp = %s
remote_tmp = %s/.ansible-tmp
[ssh_connection]
control_path_dir = %s
pipelining = True
`, filepath.Join(dir, "tmp"), base, cp))
	os.MkdirAll(filepath.Join(dir, "group_vars"), 0o755)
	write(filepath.Join("group_vars", "all.yml"), "base: "+base+"\n")
	// ssh_args in the environment: ansible.cfg would read the % of a
	// ProxyCommand as interpolation.
	var sshArgs []string
	for _, a := range f.sshArgs(filepath.Join(home, ".ssh", "config")) {
		if a == "ControlMaster=no" {
			a = "ControlMaster=auto"
		}
		sshArgs = append(sshArgs, shellQuoteArg(a))
	}
	sshArgs = append(sshArgs, "-o", "ControlPersist=60s")
	cmd := exec.Command("bash", "-ec", step)
	cmd.Dir = dir
	cmd.Env = f.v.agentEnv("OSLOGIN_EMULATOR_HOST="+f.v.emu.Host, "HOME="+home,
		"PATH="+bins.dir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"ANSIBLE_CONFIG="+cfg, "ANSIBLE_SSH_ARGS="+strings.Join(sshArgs, " "),
		"ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0")
	keysBefore := len(f.v.emu.Emulator.Keys(f.v.email))
	f.v.emu.Emulator.ResetCalls()
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("README's Deploy step failed: %v\n%s\nstep:\n%s", err, out, step)
	}
	t.Logf("README's Deploy step (agent start, ssh-config, ansible-playbook over %d hosts, forks 10): %v",
		len(hosts), took.Round(time.Millisecond))
	calls := f.v.emu.Emulator.Calls()
	var compute []string
	for m, n := range calls {
		if strings.HasPrefix(m, "compute.") {
			compute = append(compute, fmt.Sprintf("%s=%d", m, n))
		}
	}
	slices.Sort(compute)
	t.Logf("Compute API calls during the step: %s", strings.Join(compute, " "))
	// The step's agent caches lookups and host keys: the ProxyCommand and
	// KnownHostsCommand runs of every fork and task must not each ask.
	if n := calls["compute.instances.get"]; n > 2*len(hosts) {
		t.Errorf("%d instances.get calls for %d hosts: the agent's cache is not used", n, len(hosts))
	}
	config, _ := os.ReadFile(filepath.Join(home, ".ssh", "config"))
	if !strings.Contains(string(config), "Host *."+f.zone+"."+f.project+"\n") || !strings.Contains(string(config), "StrictHostKeyChecking yes\n") {
		t.Errorf("the step wrote ~/.ssh/config:\n%s", config)
	}
	recap := regexp.MustCompile(`(?m)^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)
	rows := recap.FindAllStringSubmatch(string(out), -1)
	if len(rows) != len(hosts) {
		t.Fatalf("recap has %d hosts, want %d:\n%s", len(rows), len(hosts), out)
	}
	for _, r := range rows {
		// 7 tasks ok; changed: command id, file, copy, template.
		if r[2] != "7" || r[3] != "4" || r[4] != "0" || r[5] != "0" {
			t.Errorf("%s: ok=%s changed=%s unreachable=%s failed=%s; want ok=7 changed=4 unreachable=0 failed=0", r[1], r[2], r[3], r[4], r[5])
		}
	}
	for _, h := range hosts {
		got, err := os.ReadFile(filepath.Join(base, h.dest(f), "hello.txt"))
		if want := "hello " + h.dest(f) + "\n"; err != nil || string(got) != want {
			t.Errorf("%s: hello.txt = %q, %v; want %q", h.name, got, err, want)
		}
	}
	if n := len(f.v.emu.Emulator.Keys(f.v.email)); n != keysBefore {
		t.Errorf("OS Login holds %d keys after the step, %d before: the step's agent left its key", n, keysBefore)
	}
}

// deployStep is the shell of the README workflow's Deploy step, with the
// emulator's project id.
func deployStep(t *testing.T) string {
	t.Helper()
	lines := readmeBlock(t, "e2e TestFleet runs this workflow")
	var step []string
	indent := -1
	for i, l := range lines {
		if strings.TrimSpace(l) != "- name: Deploy" {
			continue
		}
		if i+1 >= len(lines) || strings.TrimSpace(lines[i+1]) != "run: |" {
			t.Fatalf("README's Deploy step has no `run: |` after it")
		}
		for _, r := range lines[i+2:] {
			n := len(r) - len(strings.TrimLeft(r, " "))
			if indent < 0 {
				indent = n
			}
			if n < indent {
				break
			}
			step = append(step, r[indent:])
		}
	}
	if len(step) == 0 {
		t.Fatal("README's workflow has no Deploy step")
	}
	return strings.ReplaceAll(strings.Join(step, "\n")+"\n", "my-project", emulator.DefaultProjectID)
}

// writeRandom writes n random bytes to path and returns their sha256.
func writeRandom(t *testing.T, path string, n int64) string {
	t.Helper()
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(fh, h), rand.Reader, n); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644)
	return hex.EncodeToString(h.Sum(nil))
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
