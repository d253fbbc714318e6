package oslogin_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/oslogin"
)

const vmAccount = "vm-sa@" + emulator.DefaultProjectID + ".iam.gserviceaccount.com"

// certFixture is an emulator with two instances: "own", whose attached
// account is the caller itself, and "foreign", whose attached account the
// caller may act as only when actAs is true.
func certFixture(t *testing.T, actAs bool, scopes ...string) (*fixture, func(name string) oslogin.CertificateRequest) {
	t.Helper()
	caller := emulator.DefaultAccount("")
	vmSA := emulator.Account{Email: vmAccount, ServiceAccount: true}
	if actAs {
		vmSA.ServiceAccountUsers = []string{caller.Email}
	}
	f := newFixture(t, func(c *emulator.Config) {
		c.Accounts = []emulator.Account{caller, vmSA}
		c.Instances = []emulator.Instance{
			{Name: "own", Metadata: map[string]string{emulator.MetaEnableCertificates: "TRUE"}},
			{Name: "foreign", ServiceAccount: vmAccount},
		}
	}, scopes...)
	return f, func(name string) oslogin.CertificateRequest {
		in, err := f.srv.Emulator.LookupInstance("", name)
		if err != nil {
			t.Fatal(err)
		}
		return oslogin.CertificateRequest{PublicKey: line, Project: emulator.DefaultProjectID, Zone: in.Zone,
			InstanceID: in.ID, ServiceAccount: in.ServiceAccount}
	}
}

// TestSignCertificate signs through the v1 method: the first call of an
// account without a POSIX account provisions one and retries; later calls
// sign directly; the certificate is for the key sent and names the POSIX
// user.
func TestSignCertificate(t *testing.T) {
	f, req := certFixture(t, true)
	ctx := context.Background()
	for i, name := range []string{"own", "foreign", "own"} {
		f.srv.Emulator.ResetCalls()
		cert, err := f.client.SignCertificate(ctx, req(name))
		if err != nil {
			t.Fatalf("sign %d for %s: %v", i, name, err)
		}
		pub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(line))
		if string(cert.Key.Marshal()) != string(pub.Marshal()) || cert.CertType != ssh.UserCert || len(cert.ValidPrincipals) != 1 {
			t.Fatalf("certificate %+v is not a user certificate of the key sent", cert)
		}
		calls := f.srv.Emulator.Calls()
		wantProvision := 0
		if i == 0 {
			wantProvision = 1
		}
		if calls["users.projects.provisionPosixAccount"] != wantProvision || calls["projects.locations.signSshPublicKey"] != 1+wantProvision {
			t.Fatalf("sign %d: calls %v; want %d provision and %d sign", i, calls, wantProvision, 1+wantProvision)
		}
	}
}

// TestSignCertificateRefused checks that each refusal says what to grant.
func TestSignCertificateRefused(t *testing.T) {
	tests := []struct {
		name     string
		actAs    bool
		scopes   []string
		prepare  func(f *fixture) error
		instance string
		is       error
		want     []string
	}{
		{name: "missing scope", actAs: true, scopes: []string{emulator.ScopeCompute}, instance: "own",
			is: oslogin.ErrScopes, want: []string{"cloud-platform", "403"}},
		{name: "login grant revoked", actAs: true, instance: "own",
			prepare: func(f *fixture) error { return f.srv.Emulator.SetGrant(f.email, false, false) },
			is:      oslogin.ErrPermission, want: []string{"roles/compute.osLogin", "403"}},
		{name: "no actAs on the attached account", instance: "foreign",
			is: oslogin.ErrPermission, want: []string{"roles/iam.serviceAccountUser", vmAccount}},
		{name: "unknown instance", actAs: true, instance: "gone", is: oslogin.ErrNoInstance, want: []string{"404"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, req := certFixture(t, tt.actAs, tt.scopes...)
			if tt.prepare != nil {
				if err := tt.prepare(f); err != nil {
					t.Fatal(err)
				}
			}
			var r oslogin.CertificateRequest
			if tt.instance == "gone" {
				r = req("own")
				r.InstanceID = "123456789"
			} else {
				r = req(tt.instance)
			}
			_, err := f.client.SignCertificate(context.Background(), r)
			if !errors.Is(err, tt.is) {
				t.Fatalf("error %v; want %v", err, tt.is)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
