package destination_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/destination"
)

func TestHostKeysFromGuestAttributes(t *testing.T) {
	srv := startFleet(t)
	k := newTestKeys(t)
	put := func(ref, key, value string) {
		t.Helper()
		zone := ""
		if ref == "twin" {
			zone = "us-central1-a"
		}
		if err := srv.Emulator.PutGuestAttribute(zone, ref, "hostkeys", key, value); err != nil {
			t.Fatal(err)
		}
	}
	put("vm-a", "ssh-ed25519", k.ed+"\n")
	put("vm-a", "ecdsa-sha2-nistp256", k.ed) // mislabelled: dropped, the rest kept
	put("short-id", "ssh-ed25519", k.ed2)
	put("long-id", "ecdsa-sha2-nistp256", k.ecdsa)
	put("twin", "ssh-rsa", "not base64!") // the us-central1-a twin: nothing usable

	r := resolver(t, srv, viewer)
	ctx := context.Background()
	lines := func(name string) (string, error) {
		in, err := r.Lookup(ctx, mustParse(t, name))
		if err != nil {
			return "", err
		}
		hk, err := r.HostKeys(ctx, in)
		return destination.KnownHostsLines(name, hk.Keys), err
	}
	a, _ := srv.Emulator.LookupInstance("", "vm-a")
	for _, tc := range []struct{ name, want string }{
		{"compute." + a.ID, "compute." + a.ID + " ssh-ed25519 " + k.ed + "\n"},
		{"compute.12", "compute.12 ssh-ed25519 " + k.ed2 + "\n"},
		{"compute.123", "compute.123 ecdsa-sha2-nistp256 " + k.ecdsa + "\n"},
	} {
		got, err := lines(tc.name)
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v\nwant %q", tc.name, got, err, tc.want)
		}
	}

	for _, tc := range []struct {
		name string
		msg  []string
	}{
		{"twin.us-central1-a." + project, []string{"instance twin (zone us-central1-a, project dest-project) publishes no usable SSH host keys",
			"refusing to connect rather than trust it on first use", "hostkeys/ssh-rsa: value is not canonical base64",
			"enable-guest-attributes=TRUE", "first boot", "constraints/compute.disableGuestAttributesAccess"}},
		{"vm-b", []string{"instance vm-b", "Guest attributes are not enabled for it: set the metadata item enable-guest-attributes=TRUE"}},
	} {
		_, err := lines(tc.name)
		var nk *destination.NoHostKeysError
		if !errors.As(err, &nk) {
			t.Fatalf("%s: error %T %v; want NoHostKeysError", tc.name, err, err)
		}
		for _, m := range tc.msg {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("%s: message %q\nlacks %q", tc.name, err, m)
			}
		}
	}
	// Published but for another instance's name: the record found must be
	// used by id, so a VM without keys is never given another one's.
	if got, err := lines("twin.europe-west1-b." + project); got != "" || err == nil {
		t.Errorf("twin in europe-west1-b: %q, %v; want no keys", got, err)
	}
}

func TestHostKeysPermission(t *testing.T) {
	srv := startFleet(t)
	r := resolver(t, srv, outsider)
	in := &destination.Instance{Project: project, Zone: "us-central1-a", Name: "vm-a", ID: "99"}
	_, err := r.HostKeys(context.Background(), in)
	var pe *destination.PermissionError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "compute.instances.getGuestAttributes") ||
		!strings.Contains(err.Error(), "roles/compute.instanceAdmin.v1") {
		t.Errorf("error %T %v", err, err)
	}
}
