package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/api/option"
	oslogin "google.golang.org/api/oslogin/v1"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// TestCertificateCommands runs authorized-principals and trusted-ca as sshd
// would, on a certificate the emulator signed through the generated client,
// and authorized-keys on a VM that requires certificates.
func TestCertificateCommands(t *testing.T) {
	cfg := emulator.DefaultConfig()
	cfg.Instances = []emulator.Instance{{Name: emulator.DefaultInstanceName}, {Name: "other"}}
	srv := emulatortest.Start(t, cfg)
	emu := srv.Emulator
	sa := emu.Accounts()[0]
	user := "sa_" + sa.UniqueID
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
	if _, err := emu.ImportKey(sa.Email, "", key, time.Time{}); err != nil {
		t.Fatal(err)
	}
	tok, err := emu.MintToken(sa.Email)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := oslogin.NewService(context.Background(), option.WithEndpoint(srv.APIEndpoint()),
		option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})))
	if err != nil {
		t.Fatal(err)
	}
	in, err := emu.LookupInstance("", emulator.DefaultInstanceName)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := svc.Projects.Locations.SignSshPublicKey("projects/"+cfg.ProjectID+"/locations/"+emulator.Region(in.Zone),
		&oslogin.SignSshPublicKeyRequest{SshPublicKey: key, ServiceAccount: in.ServiceAccount,
			ComputeInstance: "projects/" + cfg.ProjectID + "/zones/" + in.Zone + "/instances/" + in.ID}).Do()
	if err != nil {
		t.Fatal(err)
	}
	cert := strings.Fields(resp.SignedSshPublicKey)[1]
	plain := strings.Fields(key)[1]

	for _, tt := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"accepted", []string{"authorized-principals", "--metadata-host", srv.Host, user, cert}, 0, user + "\n"},
		{"default instance by name", []string{"authorized-principals", "--metadata-host", srv.Host, "--instance", emulator.DefaultInstanceName, user, cert}, 0, user + "\n"},
		{"another instance", []string{"authorized-principals", "--metadata-host", srv.Host, "--instance", "other", user, cert}, 0, ""},
		{"another user", []string{"authorized-principals", "--metadata-host", srv.Host, "root", cert}, 0, ""},
		{"plain key", []string{"authorized-principals", "--metadata-host", srv.Host, user, plain}, 1, ""},
		{"not base64", []string{"authorized-principals", "--metadata-host", srv.Host, user, "!!"}, 1, ""},
		{"no certificate", []string{"authorized-principals", "--metadata-host", srv.Host, user}, 1, ""},
		{"no host", []string{"authorized-principals", user, cert}, 1, ""},
		{"trusted-ca", []string{"trusted-ca", "--metadata-host", srv.Host}, 0, emu.CAPublicKey() + "\n"},
		{"trusted-ca stray argument", []string{"trusted-ca", "--metadata-host", srv.Host, "x"}, 1, ""},
		{"authorized-keys before certificates are required", []string{"authorized-keys", "--metadata-host", srv.Host, user}, 0, key + "\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errb, noEnv)
			if code != tt.code || out.String() != tt.out {
				t.Errorf("exit %d stdout %q (stderr %q), want %d %q", code, out.String(), errb.String(), tt.code, tt.out)
			}
		})
	}

	// enable-oslogin-certificates=TRUE: the VM's sshd has no
	// AuthorizedKeysCommand; the command answers nothing and says why.
	if err := emu.SetProjectMetadata(emulator.MetaEnableCertificates, "TRUE", false); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"authorized-keys", "--metadata-host", srv.Host, user}, &out, &errb, noEnv); code != 0 || out.Len() != 0 ||
		!strings.Contains(errb.String(), "enable-oslogin-certificates") {
		t.Errorf("authorized-keys on a certificate-only VM: exit %d stdout %q stderr %q", code, out.String(), errb.String())
	}
	// The instance's value wins over the project's.
	if err := emu.SetInstanceMetadata("", emulator.DefaultInstanceName, emulator.MetaEnableCertificates, "false", false); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run(context.Background(), []string{"authorized-keys", "--metadata-host", srv.Host, user}, &out, &errb, noEnv); code != 0 || out.String() != key+"\n" {
		t.Errorf("instance enable-oslogin-certificates=false over project TRUE: exit %d stdout %q", code, out.String())
	}
}
