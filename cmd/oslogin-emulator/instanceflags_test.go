package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	compute "google.golang.org/api/compute/v1"
	"google.golang.org/api/option"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
)

// startInProcess runs the serving mode with args and returns its address;
// the emulator stops when the test ends.
func startInProcess(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"--listen", "127.0.0.1:0"}, args...), pw, &stderr, noEnv)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("emulator did not stop")
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		<-done
		t.Fatalf("no address line: %v; stderr %s", err, stderr.String())
	}
	go io.Copy(io.Discard, pr)
	return strings.TrimSpace(strings.TrimPrefix(line, "export OSLOGIN_EMULATOR_HOST="))
}

// TestInstanceFlags defines a fleet on the command line and reads it back
// through the admin API and Google's Compute client.
func TestInstanceFlags(t *testing.T) {
	const viewer = "viewer@example.com"
	addr := startInProcess(t,
		"--user", viewer, "--compute-viewer", viewer, "--user", "ops@example.com",
		"--instance", "web-1,zone=europe-west1-b,ip=127.0.0.2,nat=127.0.0.3,status=stopped,sa=none,certificates=true,guest-attributes=false",
		"--instance", "db,id=4242,scope=compute.readonly,oslogin=false",
		"--project-metadata", "block-project-ssh-keys=TRUE",
		"--grant", "ops@example.com=europe-west1-b/web-1:admin-login+iap-tunnel",
		"--grant", "ops@example.com=db:login")
	ctx := context.Background()
	adm := emulator.NewAdminClient("http://" + addr)
	all, err := adm.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]emulator.InstanceState{}
	for _, in := range all {
		byName[in.Name] = in
	}
	web, db := byName["web-1"], byName["db"]
	if web.Zone != "europe-west1-b" || web.NetworkIP != "127.0.0.2" || web.NatIP != "127.0.0.3" || web.Status != "STOPPED" ||
		!web.NoServiceAccount || web.Metadata[emulator.MetaEnableCertificates] != "TRUE" || web.Metadata[emulator.MetaEnableGuestAttrs] != "FALSE" ||
		web.Grants["ops@example.com"] != (emulator.InstanceGrant{Login: true, AdminLogin: true, IAPTunnel: true}) {
		t.Errorf("web-1: %+v", web.Instance)
	}
	if db.ID != "4242" || db.Zone != emulator.DefaultZone || len(db.Scopes) != 1 || db.Scopes[0] != emulator.ScopeComputeReadOnly ||
		db.Metadata[emulator.MetaEnableOSLogin] != "FALSE" || db.Grants["ops@example.com"] != (emulator.InstanceGrant{Login: true}) {
		t.Errorf("db: %+v", db.Instance)
	}
	tok, err := adm.MintToken(ctx, viewer)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := compute.NewService(ctx, option.WithEndpoint("http://"+addr+"/compute/v1/"),
		option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})))
	if err != nil {
		t.Fatal(err)
	}
	got, err := svc.Instances.Get(emulator.DefaultProjectID, emulator.DefaultZone, "4242").Do()
	if err != nil || got.Name != "db" {
		t.Errorf("get db by id: %v %v", got, err)
	}
	p, err := svc.Projects.Get(emulator.DefaultProjectID).Do()
	if err != nil {
		t.Fatal(err)
	}
	md := map[string]string{}
	for _, it := range p.CommonInstanceMetadata.Items {
		md[it.Key] = *it.Value
	}
	// The flag adds to the default project metadata instead of replacing it.
	if md["block-project-ssh-keys"] != "TRUE" || md[emulator.MetaEnableOSLogin] != "TRUE" || md[emulator.MetaEnableGuestAttrs] != "TRUE" {
		t.Errorf("project metadata %v", md)
	}
}

// TestInstanceFlagErrors: bad values are usage errors (exit 2) that name
// the flag and the problem.
func TestInstanceFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--instance", ""}, "the name first"},
		{[]string{"--instance", "zone=us-east1-b"}, "the name first"},
		{[]string{"--instance", "vm,colour=red"}, `unknown option "colour"`},
		{[]string{"--instance", "vm,zone"}, "is not KEY=VALUE"},
		{[]string{"--instance", "vm,ip=127.0.0.2,ip=127.0.0.3"}, "ip given twice"},
		{[]string{"--instance", "vm,certificates=maybe"}, "not a boolean"},
		{[]string{"--instance", "Bad_Name"}, "name must be"},
		{[]string{"--instance", "vm,zone=mars"}, "invalid zone"},
		{[]string{"--instance", "vm,ip=10.0.0.1"}, "must be a loopback address"},
		{[]string{"--instance", "vm,status=sleeping"}, "unknown status"},
		{[]string{"--instance", "vm,sa=ghost@example.com"}, "not a configured service account"},
		{[]string{"--instance", "a,id=7", "--instance", "b,id=7"}, "already used"},
		{[]string{"--project-metadata", "novalue"}, "want KEY=VALUE"},
		{[]string{"--project-metadata", "bad key=1"}, "invalid key"},
		{[]string{"--grant", "a@example.com=vm"}, "want EMAIL=INSTANCE:ROLE"},
		{[]string{"--grant", "a@example.com=vm:login"}, "no instance vm"},
		{[]string{"--instance", "vm", "--grant", "a@example.com=vm:owner"}, `unknown role "owner"`},
		{[]string{"--instance", "vm", "--grant", "ghost@example.com=vm:login"}, "unknown account"},
		{[]string{"--instance", "vm", "--instance", "vm,zone=europe-west1-b", "--grant", "agent@emulator-project.iam.gserviceaccount.com=vm:login"}, "several zones"},
		{[]string{"--compute-viewer", "ghost@example.com"}, "unknown account"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var o, e bytes.Buffer
			code := run(context.Background(), append([]string{"--listen", "127.0.0.1:0"}, tc.args...), &o, &e, noEnv)
			if code != exitUsage || o.Len() != 0 || !strings.Contains(e.String(), tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, o.String(), e.String(), exitUsage, tc.want)
			}
		})
	}
}
