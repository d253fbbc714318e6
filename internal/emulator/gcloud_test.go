package emulator_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// gcloud runs the installed Cloud SDK against the emulator's Compute face,
// isolated from the machine: a fresh configuration directory, an access
// token the emulator minted, no prompts, no metadata-server probe, no
// update check or usage report, and a proxy on a closed loopback port for
// every host but 127.0.0.1, so nothing leaves this machine even if gcloud
// tried.
func gcloud(t *testing.T, srv *emulatortest.Server, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("gcloud")
	if err != nil {
		t.Skip("gcloud is not installed; the Cloud SDK compatibility tests need it")
	}
	dir := t.TempDir()
	tok, err := srv.Emulator.MintToken(saEmail)
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"CLOUDSDK_CONFIG=" + filepath.Join(dir, "gcloud"),
		"CLOUDSDK_AUTH_ACCESS_TOKEN_FILE=" + tokFile,
		"CLOUDSDK_CORE_PROJECT=" + project,
		"CLOUDSDK_CORE_DISABLE_PROMPTS=1",
		"CLOUDSDK_CORE_CHECK_GCE_METADATA=false",
		"CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=true",
		"CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=true",
		"CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE=" + srv.URL + "/compute/v1/",
		"GCE_METADATA_HOST=127.0.0.1:1",
		"HTTPS_PROXY=http://127.0.0.1:1", "HTTP_PROXY=http://127.0.0.1:1",
		"https_proxy=http://127.0.0.1:1", "http_proxy=http://127.0.0.1:1",
		"NO_PROXY=127.0.0.1", "no_proxy=127.0.0.1",
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan struct{})
	timer := time.AfterFunc(2*time.Minute, func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill() // a hung gcloud must not hang the suite
		}
	})
	out, err := cmd.Output()
	close(done)
	timer.Stop()
	if err != nil {
		t.Fatalf("gcloud %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

func TestGcloudDescribe(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	a, err := srv.Emulator.LookupInstance("", "vm-a")
	if err != nil {
		t.Fatal(err)
	}
	out := gcloud(t, srv, "compute", "instances", "describe", "vm-a", "--zone", emulator.DefaultZone,
		"--project", project, "--format=json")
	var got struct {
		ID                string `json:"id"`
		Name              string `json:"name"`
		Status            string `json:"status"`
		NetworkInterfaces []struct {
			NetworkIP     string `json:"networkIP"`
			AccessConfigs []struct {
				NatIP string `json:"natIP"`
			} `json:"accessConfigs"`
		} `json:"networkInterfaces"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got.ID != a.ID || got.Name != "vm-a" || got.Status != "RUNNING" || len(got.NetworkInterfaces) != 1 ||
		got.NetworkInterfaces[0].NetworkIP != "127.0.0.2" || len(got.NetworkInterfaces[0].AccessConfigs) != 1 ||
		got.NetworkInterfaces[0].AccessConfigs[0].NatIP != "127.0.0.3" {
		t.Errorf("describe: %s", out)
	}
	if n := srv.Emulator.Calls()["compute.instances.get"]; n != 1 {
		t.Errorf("compute.instances.get called %d times, want 1", n)
	}
}

func TestGcloudGuestAttributes(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	const ed = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
	if err := srv.Emulator.PutGuestAttribute("", "vm-b", "hostkeys", "ssh-ed25519", ed); err != nil {
		t.Fatal(err)
	}
	out := gcloud(t, srv, "compute", "instances", "get-guest-attributes", "vm-b", "--zone", "europe-west1-b",
		"--query-path=hostkeys/", "--format=json")
	var items []struct{ Namespace, Key, Value string }
	if err := json.Unmarshal(out, &items); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(items) != 1 || items[0].Namespace != "hostkeys" || items[0].Key != "ssh-ed25519" || items[0].Value != ed {
		t.Errorf("guest attributes: %s", out)
	}
}

// TestGcloudList: gcloud lists through aggregatedList (includeAllScopes,
// returnPartialSuccess) and reads instances out of every zone's scope.
func TestGcloudList(t *testing.T) {
	srv := emulatortest.Start(t, fleetConfig())
	out := gcloud(t, srv, "compute", "instances", "list", "--format=json")
	var got []struct{ Name, Zone, Status string }
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	zones := map[string]string{}
	for _, in := range got {
		zones[in.Name] = in.Zone[strings.LastIndexByte(in.Zone, '/')+1:]
	}
	if len(got) != 3 || zones["vm-a"] != emulator.DefaultZone || zones["vm-b"] != "europe-west1-b" ||
		zones[emulator.DefaultInstanceName] != emulator.DefaultZone {
		t.Errorf("list: %s", out)
	}
	if n := srv.Emulator.Calls()["compute.instances.aggregatedList"]; n != 1 {
		t.Errorf("aggregatedList called %d times, want 1", n)
	}
}
