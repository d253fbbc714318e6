package oslogin_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
	"github.com/oslogin-agent/oslogin-agent/oslogin"
)

// registerWith proves an identity's tokens are accepted by OS Login.
func registerWith(t *testing.T, srv *emulatortest.Server, id *oslogin.Identity) string {
	t.Helper()
	c, err := oslogin.New(context.Background(), oslogin.Options{
		Account: id.Account, Project: id.Project, TokenSource: id.TokenSource, Endpoint: srv.URL,
	})
	if err != nil {
		t.Fatal(err)
	}
	user, err := c.Register(context.Background(), line, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return user
}

func TestIdentityFromMetadataServer(t *testing.T) {
	cfg := emulator.DefaultConfig()
	srv := emulatortest.Start(t, cfg)
	t.Setenv("GCE_METADATA_HOST", srv.Host)
	id, err := oslogin.FindIdentity(context.Background(), oslogin.IdentityOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if id.Account != cfg.Accounts[0].Email || id.Project != cfg.ProjectID {
		t.Fatalf("identity %s in %s; want %s in %s", id.Account, id.Project, cfg.Accounts[0].Email, cfg.ProjectID)
	}
	if !strings.Contains(id.Source, "metadata") {
		t.Fatalf("source %q does not say metadata server", id.Source)
	}
	if user := registerWith(t, srv, id); !strings.HasPrefix(user, "sa_") {
		t.Fatalf("username %q", user)
	}
}

func TestIdentityFromServiceAccountKeyFile(t *testing.T) {
	cfg := emulator.DefaultConfig()
	srv := emulatortest.Start(t, cfg)
	b, err := srv.Emulator.ServiceAccountKeyJSON(cfg.Accounts[0].Email, srv.URL+"/token")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", path)
	id, err := oslogin.FindIdentity(context.Background(), oslogin.IdentityOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if id.Account != cfg.Accounts[0].Email || id.Project != cfg.ProjectID || !strings.Contains(id.Source, path) {
		t.Fatalf("identity %+v", id)
	}
	registerWith(t, srv, id)

	// Flags win over what the file says.
	id, err = oslogin.FindIdentity(context.Background(), oslogin.IdentityOptions{Project: "other-project"})
	if err != nil || id.Project != "other-project" {
		t.Fatalf("--project override: %+v, %v", id, err)
	}
}

func TestIdentityErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		return p
	}
	tests := []struct {
		name    string
		creds   string
		account string
		want    []string
	}{
		{"missing file", filepath.Join(dir, "nope.json"), "", []string{"GOOGLE_APPLICATION_CREDENTIALS", "no such file"}},
		{"a directory", dir, "", []string{"GOOGLE_APPLICATION_CREDENTIALS", "is a directory"}},
		{"not JSON", write("garbage.json", "hello"), "", []string{"not a credentials JSON file"}},
		{"wrong type", write("wrong.json", `{"type":"gdch_service_account"}`), "", []string{`type "gdch_service_account"`, "cannot be used with OS Login"}},
		{"no type", write("notype.json", `{"client_email":"a@b"}`), "", []string{`type ""`}},
		{"service account with a broken key", write("sa.json", `{"type":"service_account","client_email":"a@b.iam.gserviceaccount.com","private_`+`key":"not a key","token_uri":"http://127.0.0.1:1/token"}`), "", []string{"sa.json is broken", "private_key is not PEM-encoded", "nothing was sent"}},
		{"service account JSON without fields", write("empty-sa.json", `{"type":"service_account"}`), "", []string{"empty-sa.json is broken", "no client_email"}},
		{"token service unreachable", validKey(t, write, "unreachable.json", "http://127.0.0.1:1/token"), "", []string{"get a token with the credentials file", "cannot reach 127.0.0.1:1", "connection refused"}},
		{"token service refuses", validKey(t, write, "refused.json", refusingTokenService(t)), "", []string{"the token service refused the credentials file", "Invalid JWT Signature."}},
		{"federated principal", write("ext.json", `{"type":"external_account","audience":"//iam.googleapis.com/x","subject_token_type":"urn:ietf:params:oauth:token-type:jwt","token_url":"http://127.0.0.1:1/token","credential_source":{"file":"/dev/null"}}`), "", []string{"federated principal", "--account"}},
		{"account with a slash", "", "a/b@example.com", []string{"is not an account e-mail"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", tc.creds)
			_, err := oslogin.FindIdentity(context.Background(), oslogin.IdentityOptions{Account: tc.account})
			if err == nil {
				t.Fatal("FindIdentity succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "http://") || strings.Contains(err.Error(), "oslogin: ") {
				t.Fatalf("error %q shows a raw URL or a package prefix", err)
			}
		})
	}
}

func TestIdentityByImpersonation(t *testing.T) {
	cfg := emulator.DefaultConfig()
	source := cfg.Accounts[0].Email
	target := "deployer@emulator-project.iam.gserviceaccount.com"
	cfg.Accounts = append(cfg.Accounts, emulator.Account{Email: target, Login: true, TokenCreators: []string{source}})
	srv := emulatortest.Start(t, cfg)
	sourceKey, err := srv.Emulator.ServiceAccountKeyJSON(source, srv.URL+"/token")
	if err != nil {
		t.Fatal(err)
	}
	write := func(target string) string {
		creds := `{"type":"impersonated_service_account","service_account_impersonation_url":"` + srv.URL +
			`/v1/projects/-/serviceAccounts/` + target + `:generateAccessToken","source_credentials":` + string(sourceKey) + `}`
		path := filepath.Join(t.TempDir(), "imp.json")
		os.WriteFile(path, []byte(creds), 0o600)
		return path
	}

	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", write(target))
	id, err := oslogin.FindIdentity(context.Background(), oslogin.IdentityOptions{Project: "emulator-project"})
	if err != nil {
		t.Fatal(err)
	}
	if id.Account != target {
		t.Fatalf("account %q, want the impersonated %q", id.Account, target)
	}
	registerWith(t, srv, id) // the impersonated token manages the target's own profile
	if n := len(srv.Emulator.Keys(target)); n != 1 {
		t.Fatalf("%d keys on the impersonated account, want 1", n)
	}
	if srv.Emulator.Calls()["iamcredentials.generateAccessToken"] == 0 {
		t.Fatal("no token was generated through impersonation")
	}

	// Without roles/iam.serviceAccountTokenCreator the lookup fails early.
	other := "nobody-trusts-me@emulator-project.iam.gserviceaccount.com"
	if err := srv.Emulator.AddAccount(emulator.Account{Email: other}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", write(other))
	_, err = oslogin.FindIdentity(context.Background(), oslogin.IdentityOptions{Project: "emulator-project"})
	if err == nil || !strings.Contains(err.Error(), "getAccessToken") {
		t.Fatalf("error %v; want the refused impersonation", err)
	}
}

func TestIdentityFromUserCredentials(t *testing.T) {
	cfg := emulator.DefaultConfig()
	cfg.Accounts = append(cfg.Accounts, emulator.Account{Email: "dev.ops@example.com", Login: true})
	srv := emulatortest.Start(t, cfg)
	b, err := srv.Emulator.UserCredentialsJSON("dev.ops@example.com", srv.URL+"/token")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "adc.json")
	os.WriteFile(path, b, 0o600)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", path)
	id, err := oslogin.FindIdentity(context.Background(), oslogin.IdentityOptions{TokenInfoURL: srv.URL + "/tokeninfo"})
	if err != nil {
		t.Fatal(err)
	}
	if id.Account != "dev.ops@example.com" || id.Project != "emulator-project" {
		t.Fatalf("identity %s in %s; want dev.ops@example.com in emulator-project", id.Account, id.Project)
	}
	if user := registerWith(t, srv, id); user != "dev_ops_example_com" {
		t.Fatalf("username %q, want dev_ops_example_com", user)
	}
}

func TestIdentityWhenMetadataServerIsDown(t *testing.T) {
	// GCE_METADATA_HOST points at a closed port (TestMain): the lookup must
	// fail with a message, not hang or reach anywhere else.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := oslogin.FindIdentity(ctx, oslogin.IdentityOptions{})
	if err == nil || !strings.Contains(err.Error(), "metadata server") {
		t.Fatalf("error %v; want one naming the metadata server", err)
	}
}

// validKey writes a service-account key file with a well-formed key whose
// token endpoint is tokenURI.
func validKey(t *testing.T, write func(name, content string) string, name, tokenURI string) string {
	t.Helper()
	cfg := emulator.DefaultConfig()
	emu, err := emulator.New(emulator.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	b, err := emu.ServiceAccountKeyJSON(cfg.Accounts[0].Email, tokenURI)
	if err != nil {
		t.Fatal(err)
	}
	return write(name, string(b))
}

// refusingTokenService answers every token request as Google does a key
// it no longer knows.
func refusingTokenService(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/token"
}
