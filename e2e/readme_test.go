package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/agentproc"
)

// readmeBlock returns the lines of the first code block after marker in
// README.md.
func readmeBlock(t *testing.T, marker string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	found, in := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case !found:
			found = strings.Contains(l, marker)
		case !in && strings.HasPrefix(l, "```"):
			in = true
		case in && strings.HasPrefix(l, "```"):
			return lines
		case in && strings.TrimSpace(l) != "":
			lines = append(lines, l)
		}
	}
	t.Fatalf("README.md has no code block after %q", marker)
	return nil
}

// TestREADMESSHAdvice runs README's advice against "Too many
// authentication failures", line by line as written, where the problem
// really occurs: an ssh config whose IdentityAgent is another agent holding
// six keys, or one with IdentitiesOnly and six key files (sshd allows six
// attempts). Without the advice ssh fails there; with it, it logs in.
// The user's ssh config is passed with -F by a shell function, as ssh
// reads ~/.ssh/config from the passwd entry, not from $HOME.
func TestREADMESSHAdvice(t *testing.T) {
	needTools(t, "bash", "ssh-agent", "ssh-add", "ssh-keygen", "uptime")
	advice := readmeBlock(t, "e2e TestREADMESSHAdvice")
	v := newVM(t, nil)
	s := v.startSSHD(t)
	a := v.startAgent(t, "")
	dir := t.TempDir()

	var decoys []string
	for i := range 6 {
		k := filepath.Join(dir, "decoy"+strconv.Itoa(i))
		mustRun(t, exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "decoy", "-f", k))
		decoys = append(decoys, k)
	}
	other := filepath.Join(dir, "other-agent.sock")
	oa, err := agentproc.Start(exec.Command("ssh-agent", "-D", "-s", "-a", other), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(oa.Stop)
	add := exec.Command("ssh-add", decoys...)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+other)
	mustRun(t, add)

	common := "Host *\n  Port " + strconv.Itoa(s.Port) + "\n  UserKnownHostsFile " + v.knownHosts +
		"\n  StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n"
	const tooMany, denied = "Too many authentication failures", "Permission denied (publickey)"
	configs := []struct {
		name, config string
		// what plain ssh, and the IdentitiesOnly=yes advice README used
		// to give, answer in this setting
		plain, oldAdvice string
	}{
		{"another agent with six keys", common + "  IdentityAgent " + other + "\n", tooMany, denied},
		{"IdentitiesOnly and six key files", common + "  IdentitiesOnly yes\n  IdentityFile " + strings.Join(decoys, "\n  IdentityFile ") + "\n",
			tooMany, tooMany},
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "ssh_config")
			if err := os.WriteFile(cfg, []byte(c.config), 0o600); err != nil {
				t.Fatal(err)
			}
			run := func(line string) (string, error) {
				script := "ssh() { command ssh -F " + cfg + ` "$@"; }` + "\n" + line + "\n"
				cmd := exec.Command("bash", "-c", script)
				cmd.Env = append(v.agentEnv(), "SSH_AUTH_SOCK="+a.sock, "OSLOGIN_USER="+v.user, "HOST=127.0.0.1")
				out, err := cmd.CombinedOutput()
				return string(out), err
			}
			// The problem is real here: plain ssh, and the advice README
			// used to give, do not log in.
			for line, want := range map[string]string{
				`ssh "$OSLOGIN_USER@$HOST" true`: c.plain,
				`ssh -o IdentityAgent="$SSH_AUTH_SOCK" -o IdentitiesOnly=yes "$OSLOGIN_USER@$HOST" true`: c.oldAdvice,
			} {
				if out, err := run(line); err == nil || !strings.Contains(out, want) {
					t.Fatalf("%s: %v %q; want it to fail with %q, or the test does not reproduce the problem", line, err, out, want)
				}
			}
			for _, line := range advice {
				out, err := run(line)
				if err != nil {
					t.Fatalf("README line %s: %v\n%s", line, err, out)
				}
				if !strings.Contains(out, "load average") {
					t.Fatalf("README line %s printed %q; want uptime's output", line, out)
				}
			}
		})
	}
}

// TestDemo runs scripts/demo, README's first command, as a new user
// would: it must log in through the agent with OSLOGIN_EMULATOR_HOST
// alone naming the emulator, and every command it shows is one it ran.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both programs once more; skipped with -short")
	}
	needTools(t, "bash", "sshd", "ssh", "scp", "ssh-add", "ssh-keygen")
	cmd := exec.Command("../scripts/demo")
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OSLOGIN_EMULATOR_HOST=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/demo: %v\n%s", err, out)
	}
	for _, want := range []string{"hello from ", "256 KiB round trip, identical", "the VM side lists no key", "Permission denied (publickey)", "Done in "} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "$ ") && (strings.Contains(line, "--endpoint") || strings.Contains(line, "GCE_METADATA_HOST")) {
			t.Errorf("the demo shows %q: OSLOGIN_EMULATOR_HOST alone should do", line)
		}
	}
}
