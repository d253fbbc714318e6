package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/option"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/sshd"
)

// TestHostKeysFromGuestAttributes: an sshd playing instance "hostvm"
// publishes its host keys as the guest agent does; read back through the
// Compute API they equal the server's keys, and a strict ssh whose only
// known_hosts is built from them (HostKeyAlias compute.<id>, as gcloud
// does) logs in. The login is granted on hostvm only, so it also proves the
// AuthorizedKeysCommand asked as hostvm.
func TestHostKeysFromGuestAttributes(t *testing.T) {
	v := newVM(t, func(c *emulator.Config) {
		c.Accounts[0].Login = false
		c.Instances = []emulator.Instance{{Name: emulator.DefaultInstanceName},
			{Name: "hostvm", Grants: map[string]emulator.InstanceGrant{c.Accounts[0].Email: {Login: true}}}}
	})
	hostvm, err := v.emu.Emulator.LookupInstance("", "hostvm")
	if err != nil {
		t.Fatal(err)
	}
	s, err := sshd.Start(sshd.Options{Dir: t.TempDir(), Emulator: bins.emulator, MetadataHost: v.emu.Host,
		KeysUser: v.akcUser, Instance: "hostvm", HostKeyTypes: []string{"ed25519", "ecdsa"}, PublishHostKeys: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.Log())
		}
	})

	// Read the keys back as a client would: Google's Compute client.
	ctx := context.Background()
	tok, err := v.emu.Emulator.MintToken(v.email, emulator.ScopeComputeReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := compute.NewService(ctx, option.WithEndpoint(v.emu.URL+"/compute/v1/"),
		option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})))
	if err != nil {
		t.Fatal(err)
	}
	ga, err := svc.Instances.GetGuestAttributes(emulator.DefaultProjectID, hostvm.Zone, hostvm.ID).QueryPath("hostkeys/").Context(ctx).Do()
	if err != nil {
		t.Fatal(err)
	}
	var published, served, knownHosts []string
	for _, it := range ga.QueryValue.Items {
		published = append(published, it.Key+" "+it.Value)
		knownHosts = append(knownHosts, "compute."+hostvm.ID+" "+it.Key+" "+it.Value)
	}
	for _, k := range s.HostKeys {
		f := strings.Fields(k)
		served = append(served, f[0]+" "+f[1])
	}
	slices.Sort(published)
	slices.Sort(served)
	if !slices.Equal(published, served) || len(served) != 2 {
		t.Fatalf("published %q, sshd has %q", published, served)
	}
	// The default instance published nothing.
	def, _ := v.emu.Emulator.LookupInstance("", emulator.DefaultInstanceName)
	if len(def.GuestAttributes) != 0 {
		t.Errorf("default instance has guest attributes %v", def.GuestAttributes)
	}

	dir := t.TempDir()
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(strings.Join(knownHosts, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "id_ed25519")
	mustRun(t, exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hostkeys-test", "-f", key))
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.emu.Emulator.ImportKey(v.email, "", strings.TrimSpace(string(pub)), time.Time{}); err != nil {
		t.Fatal(err)
	}
	sshArgs := func(knownHosts string) []string {
		return []string{"-F", "/dev/null", "-o", "UserKnownHostsFile=" + knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
			"-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=compute." + hostvm.ID, "-o", "CheckHostIP=no",
			"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-i", key,
			"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
			"-p", strconv.Itoa(s.Port), v.user + "@127.0.0.1", "--", "echo", "logged-in"}
	}
	if out := mustRun(t, exec.Command("ssh", sshArgs(kh)...)); strings.TrimSpace(out) != "logged-in" {
		t.Errorf("ssh said %q", out)
	}
	// The same ssh with a known_hosts naming other keys refuses the server.
	other := filepath.Join(dir, "other_known_hosts")
	if err := os.WriteFile(other, []byte("compute."+hostvm.ID+" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ssh", sshArgs(other)...).CombinedOutput(); err == nil {
		t.Errorf("ssh accepted a host key not published: %s", out)
	}
}

// TestHostKeysPublishRefused: an instance with guest attributes off makes
// Start fail with the metadata server's refusal instead of serving keys no
// client can verify.
func TestHostKeysPublishRefused(t *testing.T) {
	v := newVM(t, func(c *emulator.Config) {
		c.Instances = []emulator.Instance{{Name: emulator.DefaultInstanceName},
			{Name: "closed", Metadata: map[string]string{emulator.MetaEnableGuestAttrs: "FALSE"}}}
	})
	s, err := sshd.Start(sshd.Options{Dir: t.TempDir(), Emulator: bins.emulator, MetadataHost: v.emu.Host,
		KeysUser: v.akcUser, Instance: "closed", PublishHostKeys: true})
	if err == nil {
		s.Stop()
		t.Fatal("sshd started although its host keys could not be published")
	}
	if !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), `instance "closed"`) {
		t.Errorf("error %v", err)
	}
}
