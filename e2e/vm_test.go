package e2e

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// vm is the "Google Cloud" of one test: the emulator (OS Login API, metadata
// server, VM side) and the POSIX user that OS Login assigns, existing on
// this machine so that real sshd instances can log it in.
type vm struct {
	emu        *emulatortest.Server
	email      string // the attached service account the agent acts as
	user       string // its POSIX username
	akcUser    string // AuthorizedKeysCommandUser
	root       bool
	knownHosts string
}

// needTools fails the test in CI, where .ci/run installs everything, and
// skips it on a developer machine that lacks a program.
func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err == nil {
			continue
		}
		if _, err := os.Stat(filepath.Join("/usr/sbin", n)); err == nil {
			continue
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed; .ci/run must install it", n)
		}
		t.Skipf("%s is not installed (apt-get install openssh-server ansible-core git rsync); skipping", n)
	}
}

// newVM starts an emulator whose attached service account is the agent's
// identity, and makes its POSIX user exist here. As root the user is created
// for the test (sa_<unique id>, the name OS Login gives service accounts) and
// removed after it; otherwise sshd can only log in the current user, so the
// emulator gives the account that name, as an admin can pre-create one.
func newVM(t *testing.T, mutate func(*emulator.Config)) *vm {
	t.Helper()
	needTools(t, "sshd", "ssh", "ssh-keygen")
	cfg := emulator.DefaultConfig()
	id := randomUniqueID(t)
	cfg.Accounts[0].UniqueID = id
	v := &vm{email: cfg.Accounts[0].Email, root: os.Geteuid() == 0}
	if v.root {
		v.user = "sa_" + id
		v.akcUser = "nobody"
	} else {
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		v.user = u.Username
		v.akcUser = u.Username
		cfg.Accounts[0].Username = u.Username
	}
	if mutate != nil {
		mutate(&cfg)
	}
	v.emu = emulatortest.Start(t, cfg)
	v.knownHosts = filepath.Join(t.TempDir(), "known_hosts")
	if v.root {
		createUser(t, v.user)
	}
	return v
}

func randomUniqueID(t *testing.T) string {
	n, err := rand.Int(rand.Reader, new(big.Int).Exp(big.NewInt(10), big.NewInt(20), nil))
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("1%020d", n)
}

// createUser adds a local account for the test and removes it afterwards.
// The password field is set to '*' because sshd without PAM refuses the
// locked '!' that useradd leaves.
func createUser(t *testing.T, name string) {
	t.Helper()
	mustRun(t, exec.Command("useradd", "-m", "-s", "/bin/bash", name))
	t.Cleanup(func() {
		exec.Command("pkill", "-KILL", "-u", name).Run()
		exec.Command("userdel", "-r", "-f", name).Run()
	})
	mustRun(t, exec.Command("usermod", "-p", "*", name))
}

// scratch returns a directory the login user owns, for files copied to
// the "VM".
func (v *vm) scratch(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if v.root {
		if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		mustRun(t, exec.Command("chown", v.user, dir))
	}
	return dir
}

// agentEnv is the environment the agent and the clients run in: the
// emulator as the metadata server, and no credential files.
func (v *vm) agentEnv(extra ...string) []string {
	env := []string{"GCE_METADATA_HOST=" + v.emu.Host}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GCE_METADATA_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "SSH_AUTH_SOCK", "SSH_AGENT_PID", "OSLOGIN_USER":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// authorizedKeys runs the AuthorizedKeysCommand by hand, as sshd would.
func (v *vm) authorizedKeys(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(bins.emulator, "authorized-keys", "--metadata-host", v.emu.Host, v.user).Output()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("authorized-keys: %v", err)
		}
	}
	return string(out)
}

// writes counts the OS Login calls that change a profile.
func (v *vm) writes() int {
	n := 0
	for method, c := range v.emu.Emulator.Calls() {
		switch method {
		case "users.importSshPublicKey", "users.sshPublicKeys.create", "users.sshPublicKeys.patch",
			"users.sshPublicKeys.delete", "users.projects.delete", "users.projects.provisionPosixAccount":
			n += c
		}
	}
	return n
}

func mustRun(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return string(out)
}
