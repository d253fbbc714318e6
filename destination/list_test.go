package destination_test

import (
	"context"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// TestList lists the running instances of every zone with their switches:
// the instance's enable-oslogin-certificates wins over the project's.
func TestList(t *testing.T) {
	cfg := fleet()
	cfg.ProjectMetadata[emulator.MetaEnableCertificates] = "TRUE"
	cfg.Instances = append(cfg.Instances,
		emulator.Instance{Name: "lenient", Metadata: map[string]string{emulator.MetaEnableCertificates: "FALSE"}},
		emulator.Instance{Name: "stopped", Status: "TERMINATED"})
	srv := emulatortest.Start(t, cfg)
	list, err := resolver(t, srv, viewer).List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, in := range list {
		got[in.Name+"/"+in.Zone] = in.Switches.OSLoginCertificates
	}
	want := map[string]bool{"vm-a/us-central1-a": true, "vm-b/europe-west1-b": true, "twin/us-central1-a": true,
		"twin/europe-west1-b": true, "short-id/us-central1-a": true, "long-id/europe-west1-b": true, "lenient/us-central1-a": false}
	if len(got) != len(want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: listed %v (%v), want certificates=%v", k, g, ok, v)
		}
	}
}
