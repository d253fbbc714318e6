package iaprelay_test

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
	"github.com/oslogin-agent/oslogin-agent/internal/sshd"
)

// needTool skips when a program is missing on a developer machine; in CI
// (CI set) a missing OpenSSH fails, since the CI image must provide it.
func needTool(t *testing.T, name string, ciMustHave bool) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := filepath.Join("/usr/sbin", name); fileExists(p) {
		return p
	}
	if ciMustHave && os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed; CI must install it", name)
	}
	t.Skipf("%s is not installed; skipping", name)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestGcloudProxyCommandThroughRelay runs stock ssh with gcloud's
// `start-iap-tunnel --listen-on-stdin` as ProxyCommand, pointed at the
// relay, to a real throwaway sshd that takes its keys from the emulator's
// OS Login, and runs a remote command.
func TestGcloudProxyCommandThroughRelay(t *testing.T) {
	gcloud := needTool(t, "gcloud", false)
	needTool(t, "sshd", true)
	sshBin := needTool(t, "ssh", true)
	needTool(t, "ssh-keygen", true)

	// sshd runs the AuthorizedKeysCommand as another user, so the binary's
	// directory must be readable by it.
	bin, err := os.MkdirTemp("", "iaprelay-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	emuBin := filepath.Join(bin, "oslogin-emulator")
	if out, err := exec.Command("go", "build", "-o", emuBin, "../../../cmd/oslogin-emulator").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	cfg := emulator.DefaultConfig()
	n, _ := rand.Int(rand.Reader, new(big.Int).Exp(big.NewInt(10), big.NewInt(19), nil))
	cfg.Accounts[0].UniqueID = fmt.Sprintf("1%019d", n)
	login, keysUser := "sa_"+cfg.Accounts[0].UniqueID, "nobody"
	if os.Geteuid() == 0 {
		run(t, exec.Command("useradd", "-m", "-s", "/bin/sh", login))
		t.Cleanup(func() {
			exec.Command("pkill", "-KILL", "-u", login).Run()
			exec.Command("userdel", "-r", "-f", login).Run()
		})
		run(t, exec.Command("usermod", "-p", "*", login))
	} else {
		u, err := osuser.Current()
		if err != nil {
			t.Fatal(err)
		}
		login, keysUser = u.Username, u.Username
		cfg.Accounts[0].Username = u.Username
	}
	emu := emulatortest.Start(t, cfg)
	email := cfg.Accounts[0].Email

	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	run(t, exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "relay-test", "-f", key))
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emu.Emulator.ImportKey(email, "", strings.TrimSpace(string(pub)), time.Time{}); err != nil {
		t.Fatal(err)
	}
	srv, err := sshd.Start(sshd.Options{Dir: t.TempDir(), Emulator: emuBin, MetadataHost: emu.Host, KeysUser: keysUser})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)

	e := newTLSEnv(t, iaprelay.Options{})
	caFile := filepath.Join(dir, "relay-ca.pem")
	if err := os.WriteFile(caFile, e.caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	e.be.addInstance("vm1", "127.0.0.1", true)
	e.be.allowed[email] = true
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(e.be.token(email, time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	knownHosts := filepath.Join(dir, "known_hosts")
	_, hostKey, _ := strings.Cut(srv.HostKey, " ")
	hostKey = strings.Fields(srv.HostKey)[0] + " " + strings.Fields(hostKey)[0]
	if err := os.WriteFile(knownHosts, []byte("compute.vm1 "+hostKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	proxy := fmt.Sprintf("%s compute start-iap-tunnel vm1 %%p --listen-on-stdin --zone %s --project %s --iap-tunnel-url-override=%s --verbosity=warning",
		gcloud, zone, project, e.base)
	cmd := exec.Command(sshBin, "-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile="+knownHosts, "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=compute.vm1",
		"-o", "ProxyUseFdpass=no", "-o", "ProxyCommand="+proxy, "-p", fmt.Sprint(srv.Port),
		login+"@vm1", "echo through-iap; id -un")
	// gcloud gets its own empty configuration, this token and the relay's
	// certificate only: no real
	// credentials are read and nothing leaves 127.0.0.1.
	cmd.Env = append(os.Environ(), "CLOUDSDK_CONFIG="+filepath.Join(dir, "gcloud"),
		"CLOUDSDK_AUTH_ACCESS_TOKEN_FILE="+tokenFile, "CLOUDSDK_CORE_DISABLE_PROMPTS=1",
		"CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE="+caFile,
		"CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=true", "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=true")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ssh through gcloud and the relay: %v\n%s\nsshd log:\n%s", err, out, srv.Log())
	}
	if got := string(out); !strings.Contains(got, "through-iap\n"+login+"\n") {
		t.Fatalf("remote output %q, want through-iap and %s", got, login)
	}
	if st := e.relay.Stats(); st.Connects != 1 || st.BytesUp == 0 || st.BytesDown == 0 {
		t.Errorf("stats %+v, want one session that carried bytes", st)
	}
}

func run(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
}
