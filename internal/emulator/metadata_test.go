package emulator_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/compute/metadata"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

func TestMetadataPaths(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	c := srv.Emulator.Config()
	tests := []struct {
		path, body, contentType string
		code                    int
	}{
		{"project/project-id", project, "application/text", 200},
		{"project/numeric-project-id", c.ProjectNumber, "application/text", 200},
		{"instance/id", c.InstanceID, "application/text", 200},
		{"instance/name", "emulator-vm", "application/text", 200},
		{"instance/zone", "projects/" + c.ProjectNumber + "/zones/us-central1-a", "application/text", 200},
		{"project/attributes/enable-oslogin", "TRUE", "application/text", 200},
		{"instance/service-accounts/", "default/\n" + saEmail + "/\n", "application/text", 200},
		{"instance/service-accounts/default/email", saEmail, "application/text", 200},
		{"instance/service-accounts/" + saEmail + "/email", saEmail, "application/text", 200},
		{"instance/service-accounts/default/scopes", emulator.ScopeCloudPlatform + "\n", "application/text", 200},
		{"instance/service-accounts/someone@else.com/email", "", "", 404},
		{"universe/universe-domain", "", "", 404},
		{"instance/no-such-thing", "", "", 404},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, h, body := mdGet(t, srv, tt.path)
			if code != tt.code || h.Get("Metadata-Flavor") != "Google" {
				t.Fatalf("%d %v %q", code, h, body)
			}
			if tt.code == 200 && (body != tt.body || h.Get("Content-Type") != tt.contentType) {
				t.Errorf("body %q (%s), want %q (%s)", body, h.Get("Content-Type"), tt.body, tt.contentType)
			}
		})
	}
}

func TestMetadataRefusals(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	tests := []struct {
		name   string
		header map[string]string
		want   string
	}{
		{"no flavor", nil, "Missing Metadata-Flavor:Google header."},
		{"wrong flavor", map[string]string{"Metadata-Flavor": "Amazon"}, "Missing Metadata-Flavor:Google header."},
		{"forwarded", map[string]string{"Metadata-Flavor": "Google", "X-Forwarded-For": "10.0.0.1"}, "X-Forwarded-For"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, h, body := do(t, http.MethodGet, srv.URL+"/computeMetadata/v1/instance/service-accounts/default/token", "", nil, tt.header)
			if code != 403 || h.Get("Metadata-Flavor") != "Google" || !strings.Contains(body, tt.want) ||
				!strings.Contains(body, "Your client does not have permission to get URL <code>/computeMetadata/v1/instance/service-accounts/default/token</code> from this server.") {
				t.Errorf("%d %q", code, body)
			}
		})
	}
	// The root answers probes that send no flavor header.
	if code, h, _ := do(t, http.MethodGet, srv.URL+"/", "", nil, nil); code != 200 || h.Get("Metadata-Flavor") != "Google" {
		t.Errorf("GET /: %d %v", code, h)
	}
	if n := srv.Emulator.Calls()["metadata.token"]; n != 3 {
		t.Errorf("refused token requests counted %d, want 3", n)
	}
}

// TestMetadataToken: ?scopes= decides the token's scopes, expires_in is the
// remaining lifetime, and the token is reused while it lives long enough.
func TestMetadataToken(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	get := func(query string) (string, int) {
		code, h, body := mdGet(t, srv, "instance/service-accounts/default/token"+query)
		var tok struct {
			AccessToken string `json:"access_token"`
			ExpiresIn   int    `json:"expires_in"`
			TokenType   string `json:"token_type"`
		}
		if err := json.Unmarshal([]byte(body), &tok); err != nil || code != 200 || tok.TokenType != "Bearer" || h.Get("Content-Type") != "application/json" {
			t.Fatalf("%d %s %v", code, body, err)
		}
		return tok.AccessToken, tok.ExpiresIn
	}
	ro, exp := get("?scopes=" + emulator.ScopeComputeReadOnly + "," + emulator.ScopeCloudPlatformReadOnly)
	if exp < 3590 || exp > 3600 {
		t.Errorf("expires_in %d", exp)
	}
	if err := getProfile(service(t, srv, ro), saEmail); err != nil {
		t.Errorf("read with read-only token: %v", err)
	}
	if err := importKey(sshKey(t, 40, ""))(service(t, srv, ro), saEmail); apiError(t, err).Code != 403 {
		t.Errorf("write with read-only token: %v", err)
	}
	def, _ := get("")
	if err := importKey(sshKey(t, 41, ""))(service(t, srv, def), saEmail); err != nil {
		t.Errorf("write with the instance's default scopes: %v", err)
	}
	if again, _ := get(""); again != def {
		t.Error("a fresh token was minted while the cached one had an hour left")
	}
	srv.Emulator.Advance(57 * time.Minute)
	if again, exp := get(""); again == def || exp < 3590 {
		t.Errorf("token with 3 minutes left was handed out again (expires_in %d)", exp)
	}
}

// TestMetadataTokenScopesAreTheVMs: a VM whose access scopes are read-only
// cannot get a write token by asking for one, as on GCE.
func TestMetadataTokenScopesAreTheVMs(t *testing.T) {
	cfg := testConfig()
	cfg.InstanceScopes = []string{emulator.ScopeComputeReadOnly}
	srv := emulatortest.Start(t, cfg)
	_, _, body := mdGet(t, srv, "instance/service-accounts/default/token?scopes="+emulator.ScopeCloudPlatform)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(body), &tok); err != nil {
		t.Fatal(err)
	}
	if err := importKey(sshKey(t, 42, ""))(service(t, srv, tok.AccessToken), saEmail); apiError(t, err).Code != 403 {
		t.Errorf("write with a token from a read-only VM: %v", err)
	}
	if err := getProfile(service(t, srv, tok.AccessToken), saEmail); err != nil {
		t.Errorf("read with the VM's read-only scope: %v", err)
	}
}

// TestMetadataClient uses cloud.google.com/go/compute/metadata itself.
func TestMetadataClient(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	t.Setenv("GCE_METADATA_HOST", srv.Host)
	ctx := context.Background()
	c := metadata.NewClient(&http.Client{})
	cfg := srv.Emulator.Config()
	checks := []struct {
		name string
		get  func() (string, error)
		want string
	}{
		{"project id", func() (string, error) { return c.ProjectIDWithContext(ctx) }, project},
		{"numeric project id", func() (string, error) { return c.NumericProjectIDWithContext(ctx) }, cfg.ProjectNumber},
		{"instance id", func() (string, error) { return c.InstanceIDWithContext(ctx) }, cfg.InstanceID},
		{"instance name", func() (string, error) { return c.InstanceNameWithContext(ctx) }, cfg.InstanceName},
		{"zone", func() (string, error) { return c.ZoneWithContext(ctx) }, "us-central1-a"},
		{"email", func() (string, error) { return c.EmailWithContext(ctx, "default") }, saEmail},
	}
	for _, ck := range checks {
		if got, err := ck.get(); err != nil || got != ck.want {
			t.Errorf("%s: %q, %v; want %q", ck.name, got, err, ck.want)
		}
	}
	scopes, err := c.ScopesWithContext(ctx, "default")
	if err != nil || len(scopes) != 1 || scopes[0] != emulator.ScopeCloudPlatform {
		t.Errorf("scopes %v, %v", scopes, err)
	}
	_, err = c.GetWithContext(ctx, "universe/universe-domain")
	var nd metadata.NotDefinedError
	if !errors.As(err, &nd) {
		t.Errorf("universe domain: %v, want NotDefinedError", err)
	}
}
