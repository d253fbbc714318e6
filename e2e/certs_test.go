package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	oslogin "google.golang.org/api/oslogin/v1"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/sshd"
)

// TestCertificateOnlyVM plays a VM with enable-oslogin-certificates=TRUE:
// sshd configured as the guest agent configures it (the OS Login CA, the
// principals command, no AuthorizedKeysCommand), and stock ssh presenting
// a key and the certificate the emulator signed for it through the
// generated v1 client. Refused: a certificate for another instance, one
// whose login grant was revoked, an imported plain key, and a certificate
// past its validity by the emulator clock (sshd checks validity with the
// real clock, so the refusal there comes from oslogin/authorize).
func TestCertificateOnlyVM(t *testing.T) {
	v := newVM(t, func(c *emulator.Config) {
		c.Instances = []emulator.Instance{
			{Name: emulator.DefaultInstanceName, Metadata: map[string]string{emulator.MetaEnableCertificates: "TRUE"}},
			{Name: "other", Metadata: map[string]string{emulator.MetaEnableCertificates: "TRUE"}},
		}
	})
	emu := v.emu.Emulator
	s, err := sshd.Start(sshd.Options{Dir: t.TempDir(), Emulator: bins.emulator, MetadataHost: v.emu.Host,
		KeysUser: v.akcUser, Instance: emulator.DefaultInstanceName, CertificateOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshd log (port %d):\n%s", s.Port, s.Log())
		}
	})
	appendFile(t, v.knownHosts, s.KnownHostsLine()+"\n")
	conf, err := os.ReadFile(filepath.Join(filepath.Dir(s.LogPath), "sshd_config"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(conf), "AuthorizedKeysCommand") || !strings.Contains(string(conf), "TrustedUserCAKeys ") ||
		!strings.Contains(string(conf), "AuthorizedPrincipalsCommand ") {
		t.Fatalf("sshd_config is not a certificate-only VM's:\n%s", conf)
	}

	tok, err := emu.MintToken(v.email)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := oslogin.NewService(context.Background(), option.WithEndpoint(v.emu.APIEndpoint()),
		option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "id_ed25519")
	mustRun(t, exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cert-test", "-f", keyFile))
	pub, err := os.ReadFile(keyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	signFor := func(name string) (string, error) {
		in, err := emu.LookupInstance("", name)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := svc.Projects.Locations.SignSshPublicKey(
			"projects/"+emulator.DefaultProjectID+"/locations/"+emulator.Region(in.Zone),
			&oslogin.SignSshPublicKeyRequest{SshPublicKey: strings.TrimSpace(string(pub)), ServiceAccount: in.ServiceAccount,
				ComputeInstance: "projects/" + emulator.DefaultProjectID + "/zones/" + in.Zone + "/instances/" + in.ID}).Do()
		if err != nil {
			return "", err
		}
		path := filepath.Join(t.TempDir(), "id_ed25519-cert.pub")
		if err := os.WriteFile(path, []byte(resp.SignedSshPublicKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path, nil
	}
	// The client's first call finds no POSIX account, as gcloud's does.
	if _, err := signFor(emulator.DefaultInstanceName); err == nil || err.(*googleapi.Error).Code != http.StatusNotFound {
		t.Fatalf("sign without a POSIX account: %v, want 404", err)
	}
	if _, err := svc.Users.Projects.ProvisionPosixAccount("users/"+v.email+"/projects/"+emulator.DefaultProjectID,
		&oslogin.ProvisionPosixAccountRequest{Regions: []string{emulator.Region(emulator.DefaultZone)}}).Do(); err != nil {
		t.Fatal(err)
	}
	login := func(key, cert string) (string, error) {
		args := []string{"-F", "/dev/null", "-o", "UserKnownHostsFile=" + v.knownHosts, "-o", "StrictHostKeyChecking=yes",
			"-o", "BatchMode=yes", "-o", "IdentityAgent=none", "-o", "IdentitiesOnly=yes", "-i", key,
			"-o", "ControlMaster=no", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"}
		if cert != "" {
			args = append(args, "-o", "CertificateFile="+cert)
		}
		args = append(args, "-p", strconv.Itoa(s.Port), v.user+"@127.0.0.1", "--", "id", "-un")
		out, err := exec.Command("ssh", args...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	// refusedByPrincipals asserts that sshd accepted the certificate's CA
	// and validity and refused it only because the principals command
	// (OS Login's authorize) printed nothing.
	const noPrincipal = "Certificate does not contain an authorized principal"
	refusedByPrincipals := func(t *testing.T, key, cert string) {
		t.Helper()
		before := strings.Count(s.Log(), noPrincipal)
		if out, err := login(key, cert); err == nil {
			t.Errorf("accepted: %s", out)
		}
		if strings.Count(s.Log(), noPrincipal) == before {
			t.Errorf("sshd did not refuse for want of a principal")
		}
	}

	cert, err := signFor(emulator.DefaultInstanceName)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := login(keyFile, cert); err != nil || out != v.user {
		t.Fatalf("certificate login: %v: %s", err, out)
	}

	t.Run("certificate for another instance", func(t *testing.T) {
		other, err := signFor("other")
		if err != nil {
			t.Fatal(err)
		}
		refusedByPrincipals(t, keyFile, other)
	})

	t.Run("imported plain key", func(t *testing.T) {
		plainFile := filepath.Join(t.TempDir(), "id_plain")
		mustRun(t, exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", plainFile))
		plain, err := os.ReadFile(plainFile + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := emu.ImportKey(v.email, "", strings.TrimSpace(string(plain)), time.Time{}); err != nil {
			t.Fatal(err)
		}
		if out, err := login(plainFile, ""); err == nil {
			t.Errorf("accepted: %s", out)
		}
		var stderr strings.Builder
		cmd := exec.Command(bins.emulator, "authorized-keys", "--metadata-host", v.emu.Host, "--instance", emulator.DefaultInstanceName, v.user)
		cmd.Stderr = &stderr
		if out, _ := cmd.Output(); len(out) != 0 || !strings.Contains(stderr.String(), emulator.MetaEnableCertificates) {
			t.Errorf("authorized-keys on the certificate-only VM: %q, stderr %q", out, stderr.String())
		}
	})

	t.Run("login grant revoked", func(t *testing.T) {
		if err := emu.SetGrant(v.email, false, false); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := emu.SetGrant(v.email, true, false); err != nil {
				t.Fatal(err)
			}
		}()
		refusedByPrincipals(t, keyFile, cert)
	})

	// Last: it moves the emulator clock.
	t.Run("expired certificate", func(t *testing.T) {
		if out, err := login(keyFile, cert); err != nil || out != v.user {
			t.Fatalf("before expiry: %v: %s", err, out)
		}
		emu.Advance(emulator.DefaultCertificateLifetime + time.Second)
		refusedByPrincipals(t, keyFile, cert)
		// A certificate signed now is not yet valid for sshd, whose clock
		// is behind the advanced emulator's: clock skew, as on a real VM.
	})
}
