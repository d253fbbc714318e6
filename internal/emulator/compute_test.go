package emulator_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// computeClient is Google's own Compute client, unmodified, pointed at the
// emulator with a token the emulator issued to email.
func computeClient(t *testing.T, srv *emulatortest.Server, email string, scopes ...string) *compute.Service {
	t.Helper()
	tok, err := srv.Emulator.MintToken(email, scopes...)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := compute.NewService(context.Background(), option.WithEndpoint(srv.URL+"/compute/v1/"),
		option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})))
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func apiCode(err error) (int, string, string) {
	var g *googleapi.Error
	if !errors.As(err, &g) {
		return 0, "", ""
	}
	reason := ""
	if len(g.Errors) > 0 {
		reason = g.Errors[0].Reason
	}
	return g.Code, reason, g.Message
}

func TestComputeInstancesGet(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	svc := computeClient(t, srv, saEmail)
	a, err := srv.Emulator.LookupInstance("", "vm-a")
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"vm-a", a.ID} {
		got, err := svc.Instances.Get(project, emulator.DefaultZone, ref).Do()
		if err != nil {
			t.Fatalf("get %s: %v", ref, err)
		}
		base := srv.URL + "/compute/v1/projects/" + project
		if got.Name != "vm-a" || got.Id != mustUint(t, a.ID) || got.Status != "RUNNING" ||
			got.Zone != base+"/zones/"+emulator.DefaultZone || got.SelfLink != base+"/zones/"+emulator.DefaultZone+"/instances/vm-a" ||
			got.Kind != "compute#instance" || got.Fingerprint == "" || got.CreationTimestamp == "" {
			t.Errorf("get %s: %+v", ref, got)
		}
		nic := got.NetworkInterfaces
		if len(nic) != 1 || nic[0].Name != "nic0" || nic[0].NetworkIP != "127.0.0.2" || len(nic[0].AccessConfigs) != 1 ||
			nic[0].AccessConfigs[0].NatIP != "127.0.0.3" || nic[0].AccessConfigs[0].Type != "ONE_TO_ONE_NAT" ||
			nic[0].AccessConfigs[0].Name != "External NAT" {
			t.Errorf("get %s: network interfaces %+v", ref, nic)
		}
		if len(got.ServiceAccounts) != 1 || got.ServiceAccounts[0].Email != saEmail ||
			len(got.ServiceAccounts[0].Scopes) != 1 || got.ServiceAccounts[0].Scopes[0] != emulator.ScopeComputeReadOnly {
			t.Errorf("get %s: service accounts %+v", ref, got.ServiceAccounts)
		}
		md := map[string]string{}
		for _, it := range got.Metadata.Items {
			md[it.Key] = *it.Value
		}
		if got.Metadata.Kind != "compute#metadata" || got.Metadata.Fingerprint == "" ||
			md[emulator.MetaEnableCertificates] != "true" || md[emulator.MetaEnableGuestAttrs] != "FALSE" {
			t.Errorf("get %s: metadata %+v", ref, md)
		}
	}
	// Metadata changes move the fingerprints.
	before, _ := svc.Instances.Get(project, emulator.DefaultZone, "vm-a").Do()
	if err := srv.Emulator.SetInstanceMetadata("", "vm-a", "startup", "x", false); err != nil {
		t.Fatal(err)
	}
	after, _ := svc.Instances.Get(project, emulator.DefaultZone, "vm-a").Do()
	if before.Metadata.Fingerprint == after.Metadata.Fingerprint || before.Fingerprint == after.Fingerprint {
		t.Errorf("fingerprints did not change with metadata")
	}
	if n := srv.Emulator.Calls()["compute.instances.get"]; n != 4 {
		t.Errorf("compute.instances.get counted %d times, want 4", n)
	}
}

func mustUint(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestComputeInstancesList(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	svc := computeClient(t, srv, saEmail)
	all, err := svc.Instances.List(project, emulator.DefaultZone).Do()
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Items) != 2 || all.Items[0].Name != emulator.DefaultInstanceName || all.Items[1].Name != "vm-a" || all.NextPageToken != "" {
		t.Errorf("list: %d items, next %q", len(all.Items), all.NextPageToken)
	}
	// Paging with maxResults 1 visits both, one per page, through Pages.
	var names []string
	err = svc.Instances.List(project, emulator.DefaultZone).MaxResults(1).Pages(context.Background(), func(l *compute.InstanceList) error {
		if len(l.Items) != 1 {
			t.Errorf("page of %d items", len(l.Items))
		}
		for _, in := range l.Items {
			names = append(names, in.Name)
		}
		return nil
	})
	if err != nil || strings.Join(names, ",") != emulator.DefaultInstanceName+",vm-a" {
		t.Errorf("paged list: %v %v", names, err)
	}
	f, err := svc.Instances.List(project, emulator.DefaultZone).Filter(`name = "vm-a"`).Do()
	if err != nil || len(f.Items) != 1 || f.Items[0].Name != "vm-a" {
		t.Errorf("filtered list: %v", err)
	}
	empty, err := svc.Instances.List(project, "asia-east1-c").Do()
	if err != nil || len(empty.Items) != 0 {
		t.Errorf("empty zone: %v %v", empty, err)
	}
}

func TestComputeAggregatedList(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	svc := computeClient(t, srv, saEmail)
	b, err := srv.Emulator.LookupInstance("", "vm-b")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		filter string
		want   map[string]string // scope → instance names, "" = warning
	}{
		{"", map[string]string{"zones/us-central1-a": emulator.DefaultInstanceName + ",vm-a", "zones/europe-west1-b": "vm-b"}},
		{"name eq vm-b", map[string]string{"zones/us-central1-a": "", "zones/europe-west1-b": "vm-b"}},
		{`(name = "vm-a")`, map[string]string{"zones/us-central1-a": "vm-a", "zones/europe-west1-b": ""}},
		{"id = " + b.ID, map[string]string{"zones/us-central1-a": "", "zones/europe-west1-b": "vm-b"}},
		{`name eq ".*\bvm-.*"`, map[string]string{"zones/us-central1-a": "vm-a", "zones/europe-west1-b": "vm-b"}},
		{"(name ne vm-a) AND (zone = us-central1-a)", map[string]string{"zones/us-central1-a": emulator.DefaultInstanceName, "zones/europe-west1-b": ""}},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			call := svc.Instances.AggregatedList(project)
			if tc.filter != "" {
				call = call.Filter(tc.filter)
			}
			got, err := call.Do()
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Items) != len(tc.want) {
				t.Errorf("scopes %v", got.Items)
			}
			for scope, want := range tc.want {
				l, ok := got.Items[scope]
				if !ok {
					t.Errorf("no scope %s", scope)
					continue
				}
				var names []string
				for _, in := range l.Instances {
					names = append(names, in.Name)
				}
				if strings.Join(names, ",") != want {
					t.Errorf("%s: %v, want %s", scope, names, want)
				}
				if want == "" && (l.Warning == nil || l.Warning.Code != "NO_RESULTS_ON_PAGE") {
					t.Errorf("%s: no NO_RESULTS_ON_PAGE warning: %+v", scope, l.Warning)
				}
			}
		})
	}
	_, err = svc.Instances.AggregatedList(project).Filter("machineType = e2-small").Do()
	if code, reason, _ := apiCode(err); code != 400 || reason != "invalid" {
		t.Errorf("unknown filter field: %v", err)
	}
}

func TestComputeGuestAttributes(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	svc := computeClient(t, srv, saEmail, emulator.ScopeComputeReadOnly)
	const ed, ecdsa = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY="
	_, err := svc.Instances.GetGuestAttributes(project, "europe-west1-b", "vm-b").QueryPath("hostkeys/").Do()
	if code, reason, msg := apiCode(err); code != 404 || reason != "notFound" ||
		msg != "The resource 'hostkeys/' of type 'Guest Attribute' was not found." {
		t.Errorf("unpublished: %v", err)
	}
	for k, v := range map[string]string{"ssh-ed25519": ed, "ecdsa-sha2-nistp256": ecdsa} {
		if err := srv.Emulator.PutGuestAttribute("", "vm-b", "hostkeys", k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Emulator.PutGuestAttribute("", "vm-b", "other", "k", "v"); err != nil {
		t.Fatal(err)
	}
	got, err := svc.Instances.GetGuestAttributes(project, "europe-west1-b", "vm-b").QueryPath("hostkeys/").Do()
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != "compute#guestAttributes" || got.QueryPath != "hostkeys/" || got.QueryValue == nil || len(got.QueryValue.Items) != 2 {
		t.Fatalf("published: %+v", got)
	}
	for _, it := range got.QueryValue.Items {
		if it.Namespace != "hostkeys" || (it.Key == "ssh-ed25519") != (it.Value == ed) {
			t.Errorf("item %+v", it)
		}
	}
	v, err := svc.Instances.GetGuestAttributes(project, "europe-west1-b", "vm-b").VariableKey("hostkeys/ssh-ed25519").Do()
	if err != nil || v.VariableKey != "hostkeys/ssh-ed25519" || v.VariableValue != ed {
		t.Errorf("variableKey: %+v %v", v, err)
	}
	_, err = svc.Instances.GetGuestAttributes(project, "europe-west1-b", "vm-b").VariableKey("hostkeys/ssh-rsa").Do()
	if code, _, msg := apiCode(err); code != 404 || !strings.Contains(msg, "'hostkeys/ssh-rsa' of type 'Guest Attribute'") {
		t.Errorf("missing variableKey: %v", err)
	}
}

func TestComputeProjectsGet(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	if err := srv.Emulator.SetProjectMetadata("ssh-keys", "", true); err != nil {
		t.Fatal(err)
	}
	svc := computeClient(t, srv, saEmail)
	c := srv.Emulator.Config()
	for _, ref := range []string{project, c.ProjectNumber} {
		p, err := svc.Projects.Get(ref).Do()
		if err != nil {
			t.Fatal(err)
		}
		md := map[string]string{}
		for _, it := range p.CommonInstanceMetadata.Items {
			md[it.Key] = *it.Value
		}
		if p.Name != project || p.Id != mustUint(t, c.ProjectNumber) || p.SelfLink != srv.URL+"/compute/v1/projects/"+project ||
			!emulator.MetadataTrue(md[emulator.MetaEnableOSLogin]) || !emulator.MetadataTrue(md[emulator.MetaEnableGuestAttrs]) {
			t.Errorf("project %s: %+v, metadata %v", ref, p, md)
		}
	}
}

// TestComputeRefusals walks Google's order of checks: credentials, scopes,
// project, permission, then the resource.
func TestComputeRefusals(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	good := computeClient(t, srv, saEmail)
	noScope := computeClient(t, srv, saEmail, "https://www.googleapis.com/auth/userinfo.email")
	noRole := computeClient(t, srv, userEmail)
	forged, err := compute.NewService(context.Background(), option.WithEndpoint(srv.URL+"/compute/v1/"),
		option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "ya29.not-issued-here"})))
	if err != nil {
		t.Fatal(err)
	}
	const inst = "projects/" + project + "/zones/us-central1-a/instances/"
	for _, tc := range []struct {
		name   string
		call   func() error
		code   int
		reason string
		msg    string
	}{
		{"forged token", func() error { _, err := forged.Instances.Get(project, "us-central1-a", "vm-a").Do(); return err },
			401, "authError", ""},
		{"no compute scope", func() error { _, err := noScope.Instances.Get(project, "us-central1-a", "vm-a").Do(); return err },
			403, "insufficientPermissions", "Request had insufficient authentication scopes."},
		{"no compute.viewer", func() error { _, err := noRole.Instances.Get(project, "us-central1-a", "vm-a").Do(); return err },
			403, "forbidden", "Required 'compute.instances.get' permission for '" + inst + "vm-a'"},
		{"no compute.viewer list", func() error { _, err := noRole.Instances.AggregatedList(project).Do(); return err },
			403, "forbidden", "Required 'compute.instances.list' permission for 'projects/" + project + "'"},
		{"no compute.viewer guest attributes", func() error {
			_, err := noRole.Instances.GetGuestAttributes(project, "us-central1-a", "vm-a").QueryPath("hostkeys/").Do()
			return err
		}, 403, "forbidden", "Required 'compute.instances.getGuestAttributes' permission for '" + inst + "vm-a'"},
		{"unknown instance", func() error { _, err := good.Instances.Get(project, "us-central1-a", "nope").Do(); return err },
			404, "notFound", "The resource '" + inst + "nope' was not found"},
		{"wrong zone", func() error { _, err := good.Instances.Get(project, "europe-west1-b", "vm-a").Do(); return err },
			404, "notFound", "The resource 'projects/" + project + "/zones/europe-west1-b/instances/vm-a' was not found"},
		{"bad zone", func() error { _, err := good.Instances.List(project, "nowhere").Do(); return err },
			404, "notFound", "The resource 'projects/" + project + "/zones/nowhere' was not found"},
		{"unknown project", func() error { _, err := good.Projects.Get("other-project").Do(); return err },
			404, "notFound", "The resource 'projects/other-project' was not found"},
		{"bad page token", func() error {
			_, err := good.Instances.List(project, "us-central1-a").PageToken("garbage!").Do()
			return err
		}, 400, "invalid", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			code, reason, msg := apiCode(err)
			if code != tc.code || reason != tc.reason || tc.msg != "" && msg != tc.msg {
				t.Errorf("got %v (%d %s %q), want %d %s %q", err, code, reason, msg, tc.code, tc.reason, tc.msg)
			}
		})
	}
}

// TestComputeFaults: the method id and the "compute" selector reach the
// Compute face like the OS Login one.
func TestComputeFaults(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	svc := computeClient(t, srv, saEmail)
	srv.Emulator.SetFault(emulator.Fault{Methods: "compute.instances.getGuestAttributes", Status: 503, Times: 1})
	srv.Emulator.SetFault(emulator.Fault{Methods: emulator.FaultCompute, Status: 500, Times: 1})
	_, err := svc.Instances.GetGuestAttributes(project, "us-central1-a", "vm-a").Do()
	if code, _, _ := apiCode(err); code != 503 {
		t.Errorf("method fault: %v", err)
	}
	_, err = svc.Projects.Get(project).Do()
	if code, _, _ := apiCode(err); code != 500 {
		t.Errorf("compute fault: %v", err)
	}
	if _, err := svc.Projects.Get(project).Do(); err != nil {
		t.Errorf("after the faults: %v", err)
	}
	// The OS Login selector "all" leaves Compute alone.
	srv.Emulator.SetFault(emulator.Fault{Methods: emulator.FaultAll, Status: 500})
	if _, err := svc.Projects.Get(project).Do(); err != nil {
		t.Errorf("all fault reached compute: %v", err)
	}
}
