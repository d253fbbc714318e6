package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/sshd"
)

const playbook = `- hosts: all
  gather_facts: false
  tasks:
    - name: who am I
      command: id -un
      register: who
    - assert:
        that: who.stdout == lookup('env', 'OSLOGIN_USER')
    - file:
        path: "{{ base }}/{{ inventory_hostname }}"
        state: directory
        mode: "0750"
    - copy:
        content: "hello {{ inventory_hostname }}\n"
        dest: "{{ base }}/{{ inventory_hostname }}/hello.txt"
        mode: "0640"
    - template:
        src: motd.j2
        dest: "{{ base }}/{{ inventory_hostname }}/motd"
    - command: cat {{ base }}/{{ inventory_hostname }}/motd
      register: motd
      changed_when: false
    - assert:
        that: motd.stdout == 'managed by oslogin-agent for ' + inventory_hostname
`

// TestAnsible runs a playbook over four sshd hosts as a CI job would:
// `oslogin-agent -- ansible-playbook`, ten forks, ControlPersist on. The
// whole run may make at most two OS Login writes (register, delete): no API
// call per connection.
func TestAnsible(t *testing.T) {
	needTools(t, "ansible-playbook")
	v := newVM(t, nil)
	var hosts []*sshd.Server
	for i := 0; i < 4; i++ {
		hosts = append(hosts, v.startSSHD(t))
	}
	dir := t.TempDir()
	base := v.scratch(t)
	cp := controlPathDir(t)

	var inv strings.Builder
	inv.WriteString("[vms]\n")
	for i, h := range hosts {
		fmt.Fprintf(&inv, "vm%d ansible_host=127.0.0.1 ansible_port=%d\n", i+1, h.Port)
	}
	fmt.Fprintf(&inv, "\n[vms:vars]\nansible_user=\"{{ lookup('env', 'OSLOGIN_USER') }}\"\nbase=%s\n", base)
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
	cmd := exec.Command(bins.agent, "--endpoint", v.emu.URL, "-a", filepath.Join(dir, "agent.sock"), "--",
		"ansible-playbook", filepath.Join(dir, "site.yml"))
	cmd.Dir = dir
	cmd.Env = v.agentEnv("ANSIBLE_CONFIG="+cfg, "ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ansible-playbook through the agent failed: %v\n%s", err, out)
	}
	recap := regexp.MustCompile(`(?m)^(vm\d)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)
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
	for i := range hosts {
		got, err := os.ReadFile(filepath.Join(base, fmt.Sprintf("vm%d", i+1), "hello.txt"))
		if err != nil || string(got) != fmt.Sprintf("hello vm%d\n", i+1) {
			t.Errorf("vm%d hello.txt = %q, %v", i+1, got, err)
		}
	}
	if w := v.writes(); w > 2 {
		t.Fatalf("the run made %d OS Login writes (%v); want at most 2", w, v.emu.Emulator.Calls())
	}
	if keys := v.emu.Emulator.Keys(v.email); len(keys) != 0 {
		t.Fatalf("%d keys left at OS Login after the run", len(keys))
	}
}

// controlPathDir is a directory for ssh ControlPath sockets, short enough
// for their 108-byte limit; the masters in it are stopped when the test
// ends.
func controlPathDir(t *testing.T) string {
	t.Helper()
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
	return cp
}
