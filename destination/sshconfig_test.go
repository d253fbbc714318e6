package destination_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/destination"
)

// sshG asks OpenSSH itself what a config means for host, so the test
// checks real parsing, token expansion included.
func sshG(t *testing.T, config, host string, extra ...string) map[string]string {
	t.Helper()
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("ssh is not installed")
	}
	path := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-G", "-F", path}, extra...)
	out, err := exec.Command("ssh", append(args, host)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh -G rejects the config: %v\n%s\nconfig:\n%s", err, out, config)
	}
	got := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(l, " ")
		got[k] = v
	}
	return got
}

func TestSSHConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "odd dir 100%")
	agent := filepath.Join(dir, "oslogin-agent")
	sock := filepath.Join(dir, "agent.sock")
	in := &destination.Instance{Project: "my-project", Zone: "us-central1-a", Name: "vm-a", ID: "123",
		InternalIP: "10.0.0.2", ExternalIP: "203.0.113.7"}

	c := destination.SSHConfig{Agent: agent, Socket: sock, User: "sa_1234"}
	block, err := c.HostBlock(in)
	if err != nil {
		t.Fatal(err)
	}
	got := sshG(t, block, "vm-a.us-central1-a.my-project")
	// ssh -G expands tokens in IdentityAgent but shows the commands as
	// written; it expands them when it runs them.
	rawAgent := strings.ReplaceAll(agent, "%", "%%")
	want := map[string]string{
		"hostname":              "203.0.113.7",
		"hostkeyalias":          "compute.123",
		"knownhostscommand":     `"` + rawAgent + `" known-hosts --project my-project --zone us-central1-a %H %I`,
		"stricthostkeychecking": "true",
		"checkhostip":           "no",
		"identityagent":         sock,
		"updatehostkeys":        "false",
		"user":                  "sa_1234",
		"proxycommand":          "exec '" + rawAgent + "' proxy --fdpass %n %p",
		"proxyusefdpass":        "yes",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q; want %q", k, got[k], v)
		}
	}
	// Another host is untouched by the block.
	if other := sshG(t, block, "vm-b.us-central1-a.my-project"); other["hostkeyalias"] != "" || other["proxycommand"] != "" {
		t.Errorf("block leaks to other hosts: %v", other)
	}

	direct := destination.SSHConfig{Agent: agent, Direct: true, InternalIP: true}
	block, err = direct.HostBlock(in)
	if err != nil {
		t.Fatal(err)
	}
	got = sshG(t, block, "vm-a.us-central1-a.my-project")
	if got["hostname"] != "10.0.0.2" || got["proxycommand"] != "" || got["user"] == "sa_1234" {
		t.Errorf("direct, internal: %v", got)
	}
	noNat := *in
	noNat.ExternalIP = ""
	if _, err := (destination.SSHConfig{Agent: agent, Direct: true}).HostBlock(&noNat); err == nil ||
		!strings.Contains(err.Error(), "no external address") {
		t.Errorf("direct without external address: %v", err)
	}

	pat, err := c.PatternBlock("my-project", "europe-west1-b")
	if err != nil {
		t.Fatal(err)
	}
	got = sshG(t, pat, "web-1.europe-west1-b.my-project")
	if got["proxycommand"] != "exec '"+rawAgent+"' proxy --fdpass %n %p" || got["proxyusefdpass"] != "yes" ||
		got["knownhostscommand"] != `"`+rawAgent+`" known-hosts %H %I` || got["hostkeyalias"] != "" ||
		got["stricthostkeychecking"] != "true" {
		t.Errorf("pattern: %v", got)
	}
	if _, err := direct.PatternBlock("my-project", ""); err == nil {
		t.Error("pattern block without the proxy: no error")
	}

	for _, bad := range []destination.SSHConfig{
		{Agent: "oslogin-agent"},
		{Agent: "/bin/x\"y"},
		{Agent: agent, User: "root\nHost *"},
		{Agent: agent, Socket: "/tmp/a\nProxyCommand evil"},
	} {
		if b, err := bad.HostBlock(in); err == nil {
			t.Errorf("%+v: wrote\n%s", bad, b)
		}
	}
}
