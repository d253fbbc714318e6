package destination_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/oslogin-agent/oslogin-agent/destination"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

const (
	project  = "dest-project"
	viewer   = "viewer@dest-project.iam.gserviceaccount.com"
	outsider = "outsider@dest-project.iam.gserviceaccount.com"
)

// fleet is a project with instances in two zones, one name used twice, and
// ids of which one is a prefix of another.
func fleet() emulator.Config {
	return emulator.Config{
		ProjectID: project,
		Accounts: []emulator.Account{
			{Email: viewer, ServiceAccount: true, Login: true, ComputeViewer: true},
			{Email: outsider, ServiceAccount: true, Login: true},
		},
		ProjectMetadata: map[string]string{"enable-oslogin": "TRUE", "enable-guest-attributes": "TRUE"},
		Instances: []emulator.Instance{
			{Name: "vm-a", NetworkIP: "127.0.0.2", NatIP: "127.0.0.3",
				Metadata: map[string]string{"enable-oslogin-certificates": "true"}},
			{Name: "vm-b", Zone: "europe-west1-b", NoServiceAccount: true,
				Metadata: map[string]string{"enable-oslogin": "false", "enable-guest-attributes": "FALSE"}},
			{Name: "twin", Zone: "us-central1-a", ID: "5001"},
			{Name: "twin", Zone: "europe-west1-b", ID: "5002"},
			{Name: "short-id", ID: "12"},
			{Name: "long-id", ID: "123", Zone: "europe-west1-b"},
		},
	}
}

// resolver returns a Resolver acting as email against the emulator.
func resolver(t *testing.T, srv *emulatortest.Server, email string) *destination.Resolver {
	t.Helper()
	tok, err := srv.Emulator.MintToken(email)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &oauth2.Transport{Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})}}
	r, err := destination.NewResolver(destination.Options{HTTPClient: hc, ComputeURL: srv.URL + "/compute/v1/", Project: project})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func startFleet(t *testing.T) *emulatortest.Server {
	t.Helper()
	return emulatortest.Start(t, fleet())
}

func mustParse(t *testing.T, s string) destination.Name {
	t.Helper()
	n, err := destination.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestLookup(t *testing.T) {
	srv := emulatortest.Start(t, fleet())
	r := resolver(t, srv, viewer)
	a, err := srv.Emulator.LookupInstance("", "vm-a")
	if err != nil {
		t.Fatal(err)
	}
	wantA := destination.Instance{Project: project, Zone: "us-central1-a", Name: "vm-a", ID: a.ID, Status: "RUNNING",
		InternalIP: "127.0.0.2", ExternalIP: "127.0.0.3", ServiceAccount: viewer,
		Switches: destination.Switches{OSLogin: true, OSLoginCertificates: true, GuestAttributes: true}}
	wantB := destination.Instance{Project: project, Zone: "europe-west1-b", Name: "vm-b", Status: "RUNNING",
		InternalIP: "127.0.0.1"}
	for _, tc := range []struct {
		name string
		want destination.Instance
	}{
		{"vm-a", wantA},                                  // zone found by aggregatedList
		{"vm-a.us-central1-a." + project, wantA},         // gcloud config-ssh form
		{"compute." + a.ID, wantA},                       // host key alias, any zone
		{"vm-b", wantB},                                  // instance metadata wins over the project's
		{"short-id", destination.Instance{ID: "12"}},     // checked by id only below
		{"compute.12", destination.Instance{ID: "12"}},   // not compute.123
		{"compute.123", destination.Instance{ID: "123"}}, // not compute.12
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Lookup(context.Background(), mustParse(t, tc.name))
			if err != nil {
				t.Fatal(err)
			}
			if tc.want.Name == "" {
				if got.ID != tc.want.ID {
					t.Errorf("id %s; want %s", got.ID, tc.want.ID)
				}
				return
			}
			if tc.want.ID == "" {
				tc.want.ID = got.ID
			}
			if *got != tc.want {
				t.Errorf("got  %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}

func TestLookupErrors(t *testing.T) {
	srv := emulatortest.Start(t, fleet())
	ctx := context.Background()
	for _, tc := range []struct {
		name, as string
		check    func(error) bool
		msg      []string
	}{
		{"twin", viewer, isType[*destination.AmbiguousError],
			[]string{"instance twin exists in 2 zones of project dest-project (europe-west1-b, us-central1-a)", "twin.ZONE.dest-project"}},
		{"twin.europe-west1-b." + project, viewer, noError, nil},
		{"nope", viewer, isType[*destination.NotFoundError], []string{"no instance nope in any zone of project dest-project"}},
		{"nope.us-central1-a." + project, viewer, isType[*destination.NotFoundError], []string{"no instance nope in zone us-central1-a"}},
		{"compute.1", viewer, isType[*destination.NotFoundError], []string{"no instance with id 1"}},
		{"vm-a", outsider, isType[*destination.PermissionError],
			[]string{"lack the permission compute.instances.list in project dest-project", "roles/compute.viewer"}},
		{"vm-a.us-central1-a." + project, outsider, isType[*destination.PermissionError],
			[]string{"lack the permission compute.instances.get"}},
		{"vm-a.us-central1-a.other-project", viewer, isType[*destination.NotFoundError], nil},
	} {
		t.Run(tc.name+"/"+tc.as, func(t *testing.T) {
			_, err := resolver(t, srv, tc.as).Lookup(ctx, mustParse(t, tc.name))
			if !tc.check(err) {
				t.Fatalf("error %T %v", err, err)
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("message %q\nlacks %q", err, m)
				}
			}
			if err != nil && (strings.Contains(err.Error(), "http") || strings.Contains(err.Error(), "destination:")) {
				t.Errorf("message has a URL or package prefix: %q", err)
			}
		})
	}
}

func isType[T error](err error) bool {
	var target T
	return errors.As(err, &target)
}

func noError(err error) bool { return err == nil }
