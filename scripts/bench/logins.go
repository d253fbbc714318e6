package main

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/sshd"
)

// vmUser is the POSIX user logins use. As root it is created for the run,
// sa_<unique id> as OS Login names service accounts, and removed afterwards;
// otherwise sshd can only log in the current user, so the emulator account
// gets that name.
type vmUser struct {
	name     string
	uniqueID string
	akcUser  string // AuthorizedKeysCommandUser
	root     bool
}

func (b *bench) loginUser() (*vmUser, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Exp(big.NewInt(10), big.NewInt(20), nil))
	if err != nil {
		return nil, err
	}
	u := &vmUser{uniqueID: fmt.Sprintf("1%020d", n), root: os.Geteuid() == 0}
	if !u.root {
		cur, err := user.Current()
		if err != nil {
			return nil, err
		}
		u.name, u.akcUser = cur.Username, cur.Username
		return u, nil
	}
	u.name, u.akcUser = "sa_"+u.uniqueID, "nobody"
	if err := runQuiet(exec.Command("useradd", "-m", "-s", "/bin/sh", u.name)); err != nil {
		return nil, err
	}
	b.onCleanup(func() { exec.Command("userdel", "-r", "-f", u.name).Run() })
	// sshd without PAM refuses the locked '!' password useradd leaves.
	if err := runQuiet(exec.Command("usermod", "-p", "*", u.name)); err != nil {
		return nil, err
	}
	return u, nil
}

// emuConfig is the emulator configuration of every part of the bench: its
// account is the login user's.
func (b *bench) emuConfig() emulator.Config {
	cfg := emulator.DefaultConfig()
	if b.user != nil {
		cfg.Accounts[0].UniqueID = b.user.uniqueID
		if !b.user.root {
			cfg.Accounts[0].Username = b.user.name
		}
	}
	return cfg
}

// startSSHD starts an sshd that takes keys only from the emulator, as a GCE
// VM takes them from OS Login, and adds its host key to knownHosts.
func (b *bench) startSSHD(dir string, e *emu, knownHosts string) (*sshd.Server, error) {
	s, err := sshd.Start(sshd.Options{Dir: dir, Emulator: b.emulatorBin, MetadataHost: e.Host, KeysUser: b.user.akcUser})
	if err != nil {
		return nil, err
	}
	b.onCleanup(s.Stop)
	f, err := os.OpenFile(knownHosts, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, s.KnownHostsLine()); err != nil {
		return nil, err
	}
	return s, nil
}

// LoginResult compares `ssh host true` through both agents.
type LoginResult struct {
	N                int     `json:"logins_per_agent"`
	OslMedianMs      float64 `json:"oslogin_agent_median_ms"`
	SSHMedianMs      float64 `json:"ssh_agent_median_ms"`
	OslMeanMs        float64 `json:"oslogin_agent_mean_ms"`
	SSHMeanMs        float64 `json:"ssh_agent_mean_ms"`
	Ratio            float64 `json:"ratio_median"`
	RatioMean        float64 `json:"ratio_mean"`
	APICallsPerLogin float64 `json:"api_calls_per_login"`
	APICalls         string  `json:"calls_during_logins"`
	Failures         int     `json:"failures"`
}

// AnsibleResult compares a playbook over several hosts through both agents.
type AnsibleResult struct {
	Hosts       int       `json:"hosts"`
	Runs        int       `json:"runs_per_agent"`
	OslMedianS  float64   `json:"oslogin_agent_median_s"`
	SSHMedianS  float64   `json:"ssh_agent_median_s"`
	Ratio       float64   `json:"ratio"`
	OslRunsS    []float64 `json:"oslogin_agent_runs_s"`
	SSHRunsS    []float64 `json:"ssh_agent_runs_s"`
	APICalls    int       `json:"api_calls"`
	Connections int       `json:"ssh_logins"`
}

// loginBench runs `ssh host true` alternately through oslogin-agent and
// through ssh-agent, against the same sshd and the same
// AuthorizedKeysCommand: ssh-agent's public key is imported into the same
// OS Login account. Then, unless ansibleRuns is 0, a playbook over four
// sshd both ways.
func (b *bench) loginBench() (*LoginResult, *AnsibleResult, error) {
	dir, err := os.MkdirTemp(b.tmp, "login")
	if err != nil {
		return nil, nil, err
	}
	// sshd runs the AuthorizedKeysCommand as nobody when root.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, nil, err
	}
	e, err := startEmulator(b.emuConfig())
	if err != nil {
		return nil, nil, err
	}
	defer e.Close()
	knownHosts := filepath.Join(dir, "known_hosts")
	s, err := b.startSSHD(dir, e, knownHosts)
	if err != nil {
		return nil, nil, err
	}
	osl, err := b.startOslAgent(e, filepath.Join(dir, "osl.sock"), filepath.Join(dir, "osl.log"))
	if err != nil {
		return nil, nil, err
	}
	defer osl.Stop()
	if osl.user != b.user.name {
		return nil, nil, fmt.Errorf("oslogin-agent reports user %q, want %q", osl.user, b.user.name)
	}
	sa, err := b.startSSHAgent(dir, b.loginKeyType)
	if err != nil {
		return nil, nil, err
	}
	defer sa.Stop()
	if _, err := e.ImportKey(e.Email, "", sa.pub, time.Time{}); err != nil {
		return nil, nil, err
	}
	socks := map[string]string{nameOsl: osl.sock, nameSSH: sa.sock}

	login := func(sock string) (time.Duration, error) {
		cmd := exec.Command("ssh", "-F", "/dev/null",
			"-o", "UserKnownHostsFile="+knownHosts, "-o", "StrictHostKeyChecking=yes",
			"-o", "BatchMode=yes", "-o", "IdentityAgent="+sock, "-o", "ControlMaster=no",
			"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
			"-p", strconv.Itoa(s.Port), b.user.name+"@127.0.0.1", "true")
		cmd.Env = cleanEnv(b.home, "127.0.0.1:1")
		t := time.Now()
		err := runQuiet(cmd)
		return time.Since(t), err
	}
	// One login each first: warms sshd, the page cache and the emulator.
	for _, name := range []string{nameOsl, nameSSH} {
		if _, err := login(socks[name]); err != nil {
			return nil, nil, fmt.Errorf("login through %s: %w", name, err)
		}
	}
	times := map[string][]float64{}
	res := &LoginResult{N: b.logins}
	before := e.Calls()
	for i := range b.logins {
		order := []string{nameOsl, nameSSH}
		if i%2 == 1 {
			order = []string{nameSSH, nameOsl}
		}
		for _, name := range order {
			d, err := login(socks[name])
			if err != nil {
				res.Failures++
				b.progress("  login through %s failed: %v", name, err)
				continue
			}
			times[name] = append(times[name], ms(d))
		}
	}
	calls := diffCalls(before, e.Calls())
	res.OslMedianMs, res.SSHMedianMs = median(times[nameOsl]), median(times[nameSSH])
	res.OslMeanMs, res.SSHMeanMs = mean(times[nameOsl]), mean(times[nameSSH])
	if res.SSHMedianMs > 0 {
		res.Ratio = res.OslMedianMs / res.SSHMedianMs
		res.RatioMean = res.OslMeanMs / res.SSHMeanMs
	}
	// Both agents' logins ran the same AuthorizedKeysCommand (metadata.*
	// requests, the VM's side); the agent's own OS Login API calls are the
	// users.* ones, and all of them count against oslogin-agent's logins.
	res.APICallsPerLogin = float64(apiCalls(calls)) / float64(b.logins)
	res.APICalls = fmt.Sprint(calls)
	b.progress("  ssh true: oslogin-agent median %.1f ms, ssh-agent %.1f ms (n=%d each); calls %v",
		res.OslMedianMs, res.SSHMedianMs, b.logins, calls)

	if b.ansibleRuns == 0 {
		return res, nil, nil
	}
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		b.progress("  ansible-playbook not installed; Ansible part skipped")
		return res, nil, nil
	}
	ans, err := b.ansibleBench(dir, e, s, knownHosts, socks)
	return res, ans, err
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

const benchPlaybook = `- hosts: all
  gather_facts: false
  tasks:
    - ping:
    - command: id -un
      register: who
      changed_when: false
    - assert:
        that: who.stdout == ansible_user
    - copy:
        content: "hello {{ inventory_hostname }}\n"
        dest: "{{ base }}/{{ inventory_hostname }}.txt"
        mode: "0640"
    - command: cat {{ base }}/{{ inventory_hostname }}.txt
      register: hello
      changed_when: false
    - assert:
        that: hello.stdout == 'hello ' + inventory_hostname
    - file:
        path: "{{ base }}/{{ inventory_hostname }}.txt"
        state: absent
`

var recapRE = regexp.MustCompile(`(?m)^h\d+\s+: ok=(\d+)\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)`)

// ansibleBench runs the playbook over four sshd (the one given and three
// more), alternating the agents, with fresh ControlPersist masters each run.
func (b *bench) ansibleBench(dir string, e *emu, first *sshd.Server, knownHosts string, socks map[string]string) (*AnsibleResult, error) {
	hosts := []*sshd.Server{first}
	for len(hosts) < 4 {
		s, err := b.startSSHD(dir, e, knownHosts)
		if err != nil {
			return nil, err
		}
		hosts = append(hosts, s)
	}
	adir := filepath.Join(dir, "ansible")
	base := filepath.Join(dir, "remote")
	for _, d := range []string{adir, base} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if b.user.root {
		if err := runQuiet(exec.Command("chown", b.user.name, base)); err != nil {
			return nil, err
		}
	}
	var inv strings.Builder
	inv.WriteString("[vms]\n")
	for i, h := range hosts {
		fmt.Fprintf(&inv, "h%d ansible_host=127.0.0.1 ansible_port=%d\n", i+1, h.Port)
	}
	fmt.Fprintf(&inv, "\n[vms:vars]\nansible_user=%s\nbase=%s\n", b.user.name, base)
	files := map[string]string{"inventory.ini": inv.String(), "site.yml": benchPlaybook}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(adir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}

	run := func(sock string) (time.Duration, error) {
		// ControlPath sockets must fit in 108 bytes: a short, fresh
		// directory per run, so every run logs in anew.
		cp, err := os.MkdirTemp("", "cp")
		if err != nil {
			return 0, err
		}
		defer func() {
			entries, _ := os.ReadDir(cp)
			for _, en := range entries {
				exec.Command("ssh", "-O", "exit", "-o", "ControlPath="+filepath.Join(cp, en.Name()), "x").Run()
			}
			os.RemoveAll(cp)
		}()
		cfg := fmt.Sprintf(`[defaults]
inventory = %s
forks = 10
interpreter_python = /usr/bin/python3
retry_files_enabled = False
timeout = 20
local_tmp = %s
remote_tmp = %s/.ansible-tmp
[ssh_connection]
ssh_args = -F /dev/null -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentityAgent=%s -o ControlMaster=auto -o ControlPersist=60s
control_path_dir = %s
pipelining = True
`, filepath.Join(adir, "inventory.ini"), filepath.Join(adir, "tmp"), base, knownHosts, sock, cp)
		cfgPath := filepath.Join(adir, "ansible.cfg")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			return 0, err
		}
		cmd := exec.Command("ansible-playbook", filepath.Join(adir, "site.yml"))
		cmd.Dir = adir
		cmd.Env = cleanEnv(b.home, "127.0.0.1:1", "ANSIBLE_CONFIG="+cfgPath, "ANSIBLE_NOCOLOR=1")
		t := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(t)
		if err != nil {
			return 0, fmt.Errorf("ansible-playbook: %v\n%s", err, out)
		}
		rows := recapRE.FindAllStringSubmatch(string(out), -1)
		if len(rows) != len(hosts) {
			return 0, fmt.Errorf("ansible recap has %d hosts, want %d:\n%s", len(rows), len(hosts), out)
		}
		for _, r := range rows {
			if r[2] != "0" || r[3] != "0" {
				return 0, fmt.Errorf("ansible: unreachable or failed hosts:\n%s", out)
			}
		}
		return d, nil
	}
	// Warm-up, not counted: ansible's own caches and byte-compiled modules.
	if _, err := run(socks[nameSSH]); err != nil {
		return nil, err
	}
	res := &AnsibleResult{Hosts: len(hosts), Runs: b.ansibleRuns}
	before := e.Calls()
	for i := range b.ansibleRuns {
		order := []string{nameOsl, nameSSH}
		if i%2 == 1 {
			order = []string{nameSSH, nameOsl}
		}
		for _, name := range order {
			d, err := run(socks[name])
			if err != nil {
				return nil, fmt.Errorf("through %s: %w", name, err)
			}
			if name == nameOsl {
				res.OslRunsS = append(res.OslRunsS, d.Seconds())
			} else {
				res.SSHRunsS = append(res.SSHRunsS, d.Seconds())
			}
			b.progress("  ansible through %-13s run %d  %.2f s", name, i+1, d.Seconds())
		}
	}
	res.APICalls = apiCalls(diffCalls(before, e.Calls()))
	res.Connections = len(hosts) * b.ansibleRuns
	res.OslMedianS, res.SSHMedianS = median(res.OslRunsS), median(res.SSHRunsS)
	if res.SSHMedianS > 0 {
		res.Ratio = res.OslMedianS / res.SSHMedianS
	}
	return res, nil
}
