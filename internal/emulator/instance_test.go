package emulator_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

const otherSA = "builder@emulator-project.iam.gserviceaccount.com"

// fleetConfig is the default project with two more VMs: vm-a (certificate
// only, no guest attributes, an external address, a narrow scope) and vm-b
// (another attached service account, a login grant for the user only there).
func fleetConfig() emulator.Config {
	c := testConfig()
	c.Accounts = append(c.Accounts, emulator.Account{Email: otherSA})
	c.Instances = []emulator.Instance{
		{Name: "vm-a", NetworkIP: "127.0.0.2", NatIP: "127.0.0.3", Scopes: []string{emulator.ScopeComputeReadOnly},
			Metadata: map[string]string{emulator.MetaEnableCertificates: "true", emulator.MetaEnableGuestAttrs: "FALSE"}},
		{Name: "vm-b", Zone: "europe-west1-b", ServiceAccount: otherSA,
			Grants: map[string]emulator.InstanceGrant{"Denied@example.com": {Login: true, IAPTunnel: true}}},
	}
	return c
}

func vmGet(t *testing.T, srv *emulatortest.Server, vm, path string) (int, string) {
	t.Helper()
	code, _, body := do(t, http.MethodGet, srv.URL+"/computeMetadata/v1/"+path, "", nil,
		map[string]string{"Metadata-Flavor": "Google", emulator.InstanceHeader: vm})
	return code, body
}

func TestInstancesFromConfig(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	all := srv.Emulator.Instances()
	if len(all) != 3 || all[0].Name != emulator.DefaultInstanceName || all[1].Name != "vm-a" || all[2].Name != "vm-b" {
		t.Fatalf("instances %+v, want the default VM first, then vm-a and vm-b", all)
	}
	a, b := all[1], all[2]
	if a.Zone != emulator.DefaultZone || a.Status != "RUNNING" || a.ServiceAccount != saEmail || len(a.ID) != 19 {
		t.Errorf("vm-a defaults: %+v", a.Instance)
	}
	if b.ServiceAccount != otherSA || b.NetworkIP != "127.0.0.1" || b.Grants["denied@example.com"] != (emulator.InstanceGrant{Login: true, IAPTunnel: true}) {
		t.Errorf("vm-b: %+v", b.Instance)
	}
	again := emulatortest.Start(t, fleetConfig()).Emulator.Instances()
	if again[1].ID != a.ID {
		t.Errorf("derived id changed between runs: %s, %s", a.ID, again[1].ID)
	}
}

func TestInstanceConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   emulator.Instance
		want string
	}{
		{"bad name", emulator.Instance{Name: "VM_1"}, "lowercase"},
		{"external address", emulator.Instance{Name: "vm", NetworkIP: "10.0.0.7"}, "loopback"},
		{"external nat", emulator.Instance{Name: "vm", NatIP: "8.8.8.8"}, "loopback"},
		{"unknown sa", emulator.Instance{Name: "vm", ServiceAccount: "nobody@p.iam.gserviceaccount.com"}, "service account"},
		{"user as sa", emulator.Instance{Name: "vm", ServiceAccount: userEmail}, "service account"},
		{"unknown grantee", emulator.Instance{Name: "vm", Grants: map[string]emulator.InstanceGrant{"x@example.com": {Login: true}}}, "unknown account"},
		{"status", emulator.Instance{Name: "vm", Status: "ASLEEP"}, "status"},
		{"zone", emulator.Instance{Name: "vm", Zone: "mars"}, "zone"},
		{"id", emulator.Instance{Name: "vm", ID: "0123"}, "id"},
		{"same name", emulator.Instance{Name: emulator.DefaultInstanceName}, "already used"},
		{"metadata key", emulator.Instance{Name: "vm", Metadata: map[string]string{"a b": "1"}}, "metadata key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			c.Instances = []emulator.Instance{{Name: emulator.DefaultInstanceName}, tc.in}
			if tc.name != "same name" {
				c.Instances = c.Instances[1:]
			}
			_, err := emulator.New(emulator.Options{Config: c})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestParseConfigInstances(t *testing.T) {
	c, err := emulator.ParseConfig([]byte(`{"projectMetadata": {"enable-oslogin": "TRUE"},
		"accounts": [{"email": "a@p.iam.gserviceaccount.com", "login": true, "computeViewer": true, "iapTunnel": true}],
		"instances": [{"name": "web", "networkIP": "127.0.0.5", "metadata": {"enable-guest-attributes": "TRUE"},
		               "grants": {"a@p.iam.gserviceaccount.com": {"adminLogin": true}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	emu, err := emulator.New(emulator.Options{Config: c})
	if err != nil {
		t.Fatal(err)
	}
	got := emu.Instances()
	if len(got) != 1 || got[0].Name != "web" || !got[0].Grants["a@p.iam.gserviceaccount.com"].Login {
		t.Fatalf("instances %+v: want web alone, with adminLogin implying login", got)
	}
	if cfg := emu.Config(); cfg.InstanceName != "web" || cfg.InstanceID != got[0].ID {
		t.Errorf("default instance %s/%s, want web (the only one configured)", cfg.InstanceName, cfg.InstanceID)
	}
	if _, err := emulator.ParseConfig([]byte(`{"instances": [{"name": "web", "nic": "x"}]}`)); err == nil {
		t.Error("unknown instance field accepted")
	}
}

// TestMetadataSpeaksAsInstance: each VM's metadata server answers with that
// VM's identity, addresses, attributes and attached account.
func TestMetadataSpeaksAsInstance(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	a, _ := srv.Emulator.LookupInstance("", "vm-a")
	for _, tc := range []struct{ vm, path, want string }{
		{"", "instance/name", emulator.DefaultInstanceName},
		{"vm-a", "instance/name", "vm-a"},
		{a.ID, "instance/name", "vm-a"},
		{"europe-west1-b/vm-b", "instance/zone", "projects/" + srv.Emulator.Config().ProjectNumber + "/zones/europe-west1-b"},
		{"vm-a", "instance/id", a.ID},
		{"vm-a", "instance/network-interfaces/0/ip", "127.0.0.2"},
		{"vm-a", "instance/network-interfaces/0/access-configs/0/external-ip", "127.0.0.3"},
		{"vm-a", "instance/attributes/enable-oslogin-certificates", "true"},
		{"vm-a", "instance/attributes/", "enable-guest-attributes\nenable-oslogin-certificates\n"},
		{"vm-a", "project/attributes/enable-oslogin", "TRUE"},
		{"vm-b", "instance/service-accounts/default/email", otherSA},
		{"vm-a", "instance/service-accounts/default/scopes", emulator.ScopeComputeReadOnly + "\n"},
	} {
		code, body := vmGet(t, srv, tc.vm, tc.path)
		if code != 200 || body != tc.want {
			t.Errorf("%s %s: %d %q, want %q", tc.vm, tc.path, code, body, tc.want)
		}
	}
	for _, tc := range []struct{ vm, path string }{
		{"vm-b", "instance/network-interfaces/0/access-configs/0/external-ip"},
		{"vm-b", "instance/attributes/enable-oslogin"}, // project-wide, not the instance's own
		{"no-such-vm", "instance/name"},
	} {
		if code, body := vmGet(t, srv, tc.vm, tc.path); code != 404 {
			t.Errorf("%s %s: %d %q, want 404", tc.vm, tc.path, code, body)
		}
	}
}

// TestMetadataTokenIsTheInstances: a VM's token belongs to its own attached
// account, so two VMs act as two identities.
func TestMetadataTokenIsTheInstances(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	code, body := vmGet(t, srv, "vm-b", "instance/service-accounts/default/token")
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &tok) != nil {
		t.Fatalf("token: %d %s", code, body)
	}
	if err := getProfile(service(t, srv, tok.AccessToken), otherSA); err != nil {
		t.Errorf("vm-b's token cannot read its own account's profile: %v", err)
	}
	if err := getProfile(service(t, srv, tok.AccessToken), saEmail); apiError(t, err).Code != 403 {
		t.Errorf("vm-b's token read another account's profile: %v", err)
	}
}

// TestGuestAttributesWrittenAsTheGuestAgent: a PUT as the guest agent does
// it lands on the instance it names; a VM with guest attributes disabled is
// refused; the flavor header is required.
func TestGuestAttributesWrittenAsTheGuestAgent(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	put := func(vm, path, value string, header map[string]string) int {
		h := map[string]string{"Metadata-Flavor": "Google", emulator.InstanceHeader: vm}
		for k, v := range header {
			h[k] = v
		}
		code, _, _ := do(t, http.MethodPut, srv.URL+"/computeMetadata/v1/instance/guest-attributes/"+path, "", strings.NewReader(value), h)
		return code
	}
	if code := put("vm-b", "hostkeys/ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIB", nil); code != 200 {
		t.Fatalf("PUT: %d", code)
	}
	if code := put("vm-b", "hostkeys/ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIC", nil); code != 200 {
		t.Fatalf("second PUT: %d", code)
	}
	b, _ := srv.Emulator.LookupInstance("", "vm-b")
	if len(b.GuestAttributes) != 1 || b.GuestAttributes[0] != (emulator.GuestAttribute{Namespace: "hostkeys", Key: "ssh-ed25519", Value: "AAAAC3NzaC1lZDI1NTE5AAAAIC"}) {
		t.Errorf("vm-b attributes %+v, want the second value alone", b.GuestAttributes)
	}
	if code, body := vmGet(t, srv, "vm-b", "instance/guest-attributes/hostkeys/ssh-ed25519"); code != 200 || body != "AAAAC3NzaC1lZDI1NTE5AAAAIC" {
		t.Errorf("read back: %d %q", code, body)
	}
	if d, _ := srv.Emulator.LookupInstance("", emulator.DefaultInstanceName); len(d.GuestAttributes) != 0 {
		t.Errorf("the default VM got vm-b's attributes: %+v", d.GuestAttributes)
	}
	if code := put("vm-a", "hostkeys/ssh-ed25519", "AAAA", nil); code != 403 {
		t.Errorf("PUT on a VM with guest attributes disabled: %d, want 403", code)
	}
	if code := put("vm-b", "hostkeys/ssh-rsa", "AAAA", map[string]string{"Metadata-Flavor": ""}); code != 403 {
		t.Errorf("PUT without Metadata-Flavor: %d, want 403", code)
	}
	if code := put("vm-b", "host keys/x", "AAAA", nil); code != 400 {
		t.Errorf("PUT with a bad name: %d, want 400", code)
	}
	if err := srv.Emulator.PutGuestAttribute("", "vm-a", "hostkeys", "ssh-rsa", "AAAA"); err == nil {
		t.Error("PutGuestAttribute on a disabled VM succeeded")
	}
}

// TestAuthorizeIsPerInstance: an instance-level login grant lets the account
// in on that VM only.
func TestAuthorizeIsPerInstance(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	if _, err := srv.Emulator.ImportKey("denied@example.com", "", sshKey(t, 7, ""), emuNowPlusHour(srv)); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"vm-b": `{"success":true}`, "vm-a": `{"success":false}`, "": `{"success":false}`}
	for vm, body := range want {
		code, got := vmGet(t, srv, vm, "oslogin/authorize?email=denied@example.com&policy=login")
		if code != 200 || got != body {
			t.Errorf("authorize on %q: %d %s, want %s", vm, code, got, body)
		}
	}
	keys, err := emulator.AuthorizedKeys(context.Background(), emulator.AuthorizedKeysOptions{MetadataHost: srv.Host, Instance: "vm-b"}, usernameOf(t, srv, "denied@example.com"))
	if err != nil || len(keys) != 1 {
		t.Errorf("authorized keys on vm-b: %v %v", keys, err)
	}
	if _, err := emulator.AuthorizedKeys(context.Background(), emulator.AuthorizedKeysOptions{MetadataHost: srv.Host}, usernameOf(t, srv, "denied@example.com")); err == nil {
		t.Error("authorized keys on the default VM for an account granted only on vm-b")
	}
}

// TestInstanceAdminAPI drives every instance route through AdminClient.
func TestInstanceAdminAPI(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	ctx := context.Background()
	adm := srv.Admin
	n, err := adm.PutInstance(ctx, emulator.Instance{Name: "late", NetworkIP: "127.0.0.9"})
	if err != nil || n.ID == "" || n.Zone != emulator.DefaultZone {
		t.Fatalf("put: %+v %v", n, err)
	}
	if err := adm.SetInstanceGrant(ctx, "", "late", userEmail, emulator.InstanceGrant{IAPTunnel: true}); err != nil {
		t.Fatal(err)
	}
	if err := adm.SetInstanceMetadata(ctx, "", n.ID, emulator.MetaEnableCertificates, "TRUE"); err != nil {
		t.Fatal(err)
	}
	got, err := adm.Instance(ctx, emulator.DefaultZone, "late")
	if err != nil || !got.Grants[userEmail].IAPTunnel || got.Metadata[emulator.MetaEnableCertificates] != "TRUE" {
		t.Errorf("after changes: %+v %v", got.Instance, err)
	}
	// Replacing keeps the id; the metadata of the replacement is what counts.
	if r, err := adm.PutInstance(ctx, emulator.Instance{Name: "late", Status: "TERMINATED"}); err != nil || r.ID != n.ID || r.Metadata != nil {
		t.Errorf("replace: %+v %v", r, err)
	}
	if err := adm.SetProjectMetadata(ctx, emulator.MetaEnableGuestAttrs, "FALSE"); err != nil {
		t.Fatal(err)
	}
	if code, _ := vmGet(t, srv, "late", "project/attributes/enable-guest-attributes"); code != 200 {
		t.Errorf("project metadata not served: %d", code)
	}
	f, tr := false, true
	if err := adm.SetProjectRoles(ctx, saEmail, emulator.ProjectRoles{ComputeViewer: &f, IAPTunnel: &tr}); err != nil {
		t.Fatal(err)
	}
	if a := account(t, srv.Emulator, saEmail); a.ComputeViewer || !a.IAPTunnel || !a.Login {
		t.Errorf("roles: %+v", a)
	}
	if err := adm.RemoveInstance(ctx, "", "late"); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"get removed":   func() error { _, err := adm.Instance(ctx, "", "late"); return err }(),
		"grant unknown": adm.SetInstanceGrant(ctx, "", "late", userEmail, emulator.InstanceGrant{}),
		"bad instance": func() error {
			_, err := adm.PutInstance(ctx, emulator.Instance{Name: "x", NatIP: "1.1.1.1"})
			return err
		}(),
		"grant stranger":  adm.SetInstanceGrant(ctx, "", emulator.DefaultInstanceName, "who@example.com", emulator.InstanceGrant{Login: true}),
		"roles stranger":  adm.SetProjectRoles(ctx, "who@example.com", emulator.ProjectRoles{}),
		"bad project key": adm.SetProjectMetadata(ctx, "a/b", "x"),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func emuNowPlusHour(srv *emulatortest.Server) time.Time { return srv.Emulator.Now().Add(time.Hour) }

func usernameOf(t *testing.T, srv *emulatortest.Server, email string) string {
	t.Helper()
	for _, a := range srv.Emulator.State().Accounts {
		if strings.EqualFold(a.Email, email) && len(a.PosixAccounts) > 0 {
			return a.PosixAccounts[0].Username
		}
	}
	t.Fatalf("no POSIX account for %s", email)
	return ""
}
