package destination_test

import (
	"context"
	"strconv"
	"testing"

	"golang.org/x/oauth2"
	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/option"
)

// TestMatchesGoogleClient reads the same instances with Google's generated
// Compute client and with this package's four hand-written calls: the
// fields a connection uses must agree. compute/v1 stays in tests; the agent
// does not link it.
func TestMatchesGoogleClient(t *testing.T) {
	srv := startFleet(t)
	tok, err := srv.Emulator.MintToken(viewer)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := compute.NewService(context.Background(), option.WithEndpoint(srv.URL+"/compute/v1/"),
		option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})))
	if err != nil {
		t.Fatal(err)
	}
	r := resolver(t, srv, viewer)
	for _, name := range []string{"vm-a", "vm-b", "short-id", "long-id"} {
		ours, err := r.Lookup(context.Background(), mustParse(t, name))
		if err != nil {
			t.Fatal(err)
		}
		g, err := svc.Instances.Get(project, ours.Zone, name).Do()
		if err != nil {
			t.Fatal(err)
		}
		nat, sa := "", ""
		if ac := g.NetworkInterfaces[0].AccessConfigs; len(ac) > 0 {
			nat = ac[0].NatIP
		}
		if len(g.ServiceAccounts) > 0 {
			sa = g.ServiceAccounts[0].Email
		}
		if strconv.FormatUint(g.Id, 10) != ours.ID || g.Name != ours.Name || g.Status != ours.Status ||
			g.NetworkInterfaces[0].NetworkIP != ours.InternalIP || nat != ours.ExternalIP || sa != ours.ServiceAccount {
			t.Errorf("%s: ours %+v\ngoogle's id %d name %s status %s ip %s nat %s sa %s", name, *ours,
				g.Id, g.Name, g.Status, g.NetworkInterfaces[0].NetworkIP, nat, sa)
		}
	}
}
