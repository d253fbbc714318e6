package emulator_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/compute/metadata"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"
	oslogin "google.golang.org/api/oslogin/v1"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

const deployer = "deployer@emulator-project.iam.gserviceaccount.com"

func withDeployer() emulator.Config {
	c := testConfig()
	c.Accounts = append(c.Accounts, emulator.Account{Email: deployer})
	return c
}

// TestADCFromMetadata: x/oauth2/google finds the metadata face through
// GCE_METADATA_HOST, and the API accepts the token it gets.
func TestADCFromMetadata(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	t.Setenv("GCE_METADATA_HOST", srv.Host)
	ctx := context.Background()

	tests := []struct {
		name      string
		scopes    []string
		wantWrite int // 0: import works, else the HTTP code
	}{
		{"compute scope", []string{emulator.ScopeCompute}, 0},
		{"oslogin defaults", []string{emulator.ScopeCloudPlatform, emulator.ScopeCloudPlatformReadOnly, emulator.ScopeCompute, emulator.ScopeComputeReadOnly}, 0},
		{"read-only scope", []string{emulator.ScopeComputeReadOnly}, 403},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.Emulator.ResetCalls()
			creds, err := google.FindDefaultCredentials(ctx, tt.scopes...)
			if err != nil {
				t.Fatal(err)
			}
			if creds.JSON != nil || creds.ProjectID != project {
				t.Errorf("credentials not from metadata: project %q json %q", creds.ProjectID, creds.JSON)
			}
			email, err := metadata.EmailWithContext(ctx, "default")
			if err != nil || email != saEmail {
				t.Fatalf("email %q, %v", email, err)
			}
			svc, err := oslogin.NewService(ctx, option.WithEndpoint(srv.APIEndpoint()), option.WithTokenSource(creds.TokenSource))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := svc.Users.GetLoginProfile("users/" + email).ProjectId(project).Do(); err != nil {
				t.Errorf("read: %v", err)
			}
			err = importKey(sshKey(t, 20+i, ""))(svc, email)
			if tt.wantWrite == 0 && err != nil {
				t.Errorf("write: %v", err)
			}
			if tt.wantWrite != 0 && apiError(t, err).Code != tt.wantWrite {
				t.Errorf("write: %v, want %d", err, tt.wantWrite)
			}
			if n := srv.Emulator.Calls()["metadata.token"]; n != 1 {
				t.Errorf("metadata.token calls %d, want 1", n)
			}
		})
	}

	// Tokens of another emulator mean nothing here.
	other := emulatortest.Start(t, testConfig())
	tok, _ := other.Emulator.MintToken(saEmail)
	if err := getProfile(service(t, srv, tok), saEmail); apiError(t, err).Code != 401 {
		t.Errorf("foreign emulator's token: %v", err)
	}
}

// TestADCFromKeyFile: a key file written by the emulator drives the
// JWT-bearer grant against its /token endpoint.
func TestADCFromKeyFile(t *testing.T) {
	srv := emulatortest.Start(t, withDeployer())
	path := srv.WriteKeyFile(t, deployer)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", path)
	ctx := context.Background()

	creds, err := google.FindDefaultCredentials(ctx, emulator.ScopeCloudPlatform)
	if err != nil {
		t.Fatal(err)
	}
	var kf map[string]string
	if err := json.Unmarshal(creds.JSON, &kf); err != nil {
		t.Fatal(err)
	}
	if kf["type"] != "service_account" || kf["client_email"] != deployer || kf["token_uri"] != srv.TokenURI() ||
		kf["project_id"] != project || kf["client_id"] != account(t, srv.Emulator, deployer).UniqueID || len(kf["private_key_id"]) != 40 {
		t.Errorf("key file %v", kf)
	}
	if _, err := privateKey(t, creds.JSON); err != nil {
		t.Fatal(err)
	}

	// A failing token endpoint surfaces as an error; the next fetch succeeds.
	srv.Emulator.SetFault(emulator.Fault{Methods: "oauth2.token", Status: 503, Times: 1})
	if _, err := creds.TokenSource.Token(); err == nil {
		t.Error("token endpoint fault not seen")
	}
	svc, err := oslogin.NewService(ctx, option.WithEndpoint(srv.APIEndpoint()), option.WithTokenSource(creds.TokenSource))
	if err != nil {
		t.Fatal(err)
	}
	key := sshKey(t, 30, "deployer")
	if err := importKey(key)(svc, deployer); err != nil {
		t.Fatal(err)
	}
	if ks := srv.Emulator.Keys(deployer); len(ks) != 1 || ks[0].Key != key {
		t.Errorf("keys %+v", ks)
	}
	if err := getProfile(svc, saEmail); apiError(t, err).Code != 403 {
		t.Errorf("deployer reading the agent's profile: %v", err)
	}
	if n := srv.Emulator.Calls()["oauth2.token"]; n != 2 {
		t.Errorf("oauth2.token calls %d, want 2 (one refused, then the token is reused)", n)
	}
	if _, err := srv.Emulator.ServiceAccountKeyJSON(userEmail, srv.TokenURI()); err == nil {
		t.Error("a user account got a service-account key")
	}
}

// TestTokenEndpoint checks the JWT-bearer grant's refusals.
func TestTokenEndpoint(t *testing.T) {
	srv := emulatortest.Start(t, withDeployer())
	kf, err := srv.Emulator.ServiceAccountKeyJSON(deployer, srv.TokenURI())
	if err != nil {
		t.Fatal(err)
	}
	priv, err := privateKey(t, kf)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]string
	_ = json.Unmarshal(kf, &meta)
	kid := meta["private_key_id"]
	stranger, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	now := srv.Emulator.Now().Unix()
	claims := func(edit func(map[string]any)) map[string]any {
		c := map[string]any{"iss": deployer, "aud": srv.TokenURI(), "scope": emulator.ScopeCloudPlatform, "iat": now - 10, "exp": now + 3590}
		if edit != nil {
			edit(c)
		}
		return c
	}
	good := signJWT(t, priv, "RS256", kid, claims(nil))

	tests := []struct {
		name      string
		form      url.Values
		code      int
		wantError string
		wantDesc  string
	}{
		{"valid", grant(good), 200, "", ""},
		{"valid without kid", grant(signJWT(t, priv, "RS256", "", claims(nil))), 200, "", ""},
		{"wrong grant type", url.Values{"grant_type": {"client_credentials"}, "assertion": {good}}, 400, "unsupported_grant_type", "Invalid grant_type: client_credentials"},
		{"no assertion", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}}, 400, "invalid_request", "Missing required parameter: assertion"},
		{"garbage", grant("not.a.jwt"), 400, "invalid_grant", "Invalid JWT Signature."},
		{"unknown issuer", grant(signJWT(t, priv, "RS256", kid, claims(func(c map[string]any) { c["iss"] = "ghost@x.iam.gserviceaccount.com" }))), 400, "invalid_grant", "Invalid grant: account not found"},
		{"foreign key", grant(signJWT(t, stranger, "RS256", kid, claims(nil))), 400, "invalid_grant", "Invalid JWT Signature."},
		{"wrong kid", grant(signJWT(t, priv, "RS256", "0000", claims(nil))), 400, "invalid_grant", "Invalid JWT Signature."},
		{"alg none", grant(signJWT(t, priv, "none", kid, claims(nil))), 400, "invalid_grant", "Invalid JWT Signature."},
		{"wrong audience", grant(signJWT(t, priv, "RS256", kid, claims(func(c map[string]any) { c["aud"] = "https://oauth2.googleapis.com/token" }))), 400, "invalid_grant", "Invalid JWT: Failed audience check."},
		{"expired", grant(signJWT(t, priv, "RS256", kid, claims(func(c map[string]any) { c["iat"], c["exp"] = now-7200, now-3600 }))), 400, "invalid_grant", "Invalid JWT: Token must be a short-lived token"},
		{"too long", grant(signJWT(t, priv, "RS256", kid, claims(func(c map[string]any) { c["exp"] = now + 7200 }))), 400, "invalid_grant", "Invalid JWT: Token must be a short-lived token"},
		{"issued in the future", grant(signJWT(t, priv, "RS256", kid, claims(func(c map[string]any) { c["iat"], c["exp"] = now+1800, now+3600 }))), 400, "invalid_grant", "Invalid JWT: Token must be a short-lived token"},
		{"no scope", grant(signJWT(t, priv, "RS256", kid, claims(func(c map[string]any) { delete(c, "scope") }))), 400, "invalid_scope", "Invalid OAuth scope or ID token audience provided."},
		{"impersonating sub", grant(signJWT(t, priv, "RS256", kid, claims(func(c map[string]any) { c["sub"] = userEmail }))), 400, "unauthorized_client", "Client is unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := do(t, http.MethodPost, srv.TokenURI(), "", strings.NewReader(tt.form.Encode()),
				map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
			var resp struct {
				AccessToken string `json:"access_token"`
				ExpiresIn   int    `json:"expires_in"`
				TokenType   string `json:"token_type"`
				Error       string `json:"error"`
				Desc        string `json:"error_description"`
			}
			if err := json.Unmarshal([]byte(body), &resp); err != nil {
				t.Fatalf("%d %s: %v", code, body, err)
			}
			if code != tt.code || resp.Error != tt.wantError || !strings.HasPrefix(resp.Desc, tt.wantDesc) {
				t.Fatalf("got %d %s", code, body)
			}
			if code == 200 {
				if resp.TokenType != "Bearer" || resp.ExpiresIn < 3598 || resp.ExpiresIn > 3600 || resp.AccessToken == "" {
					t.Errorf("token %s", body)
				}
				if err := getProfile(service(t, srv, resp.AccessToken), deployer); err != nil {
					t.Errorf("API refused the minted token: %v", err)
				}
			}
		})
	}
	if code, _, _ := do(t, http.MethodGet, srv.TokenURI(), "", nil, nil); code != 405 {
		t.Errorf("GET /token: %d", code)
	}
}

// TestTokenLifetime: tokens die by the emulator clock.
func TestTokenLifetime(t *testing.T) {
	cfg := testConfig()
	cfg.TokenLifetime = 10 * time.Minute
	srv := emulatortest.Start(t, cfg)
	tok, _ := srv.Emulator.MintToken(saEmail)
	svc := service(t, srv, tok)
	if err := getProfile(svc, saEmail); err != nil {
		t.Fatal(err)
	}
	srv.Emulator.Advance(10 * time.Minute)
	if err := getProfile(svc, saEmail); apiError(t, err).Code != 401 {
		t.Errorf("after lifetime: %v", err)
	}
	if _, err := srv.Emulator.MintToken("nobody@example.com"); err == nil {
		t.Error("minted a token for an unknown account")
	}
}

func grant(assertion string) url.Values {
	return url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}}
}

func privateKey(t testing.TB, keyFile []byte) (*rsa.PrivateKey, error) {
	t.Helper()
	var kf struct {
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal(keyFile, &kf); err != nil {
		return nil, err
	}
	block, _ := pem.Decode([]byte(kf.PrivateKey))
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("private_key is not a PKCS#8 PEM block: %q", kf.PrivateKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	return k.(*rsa.PrivateKey), nil
}

func signJWT(t testing.TB, priv *rsa.PrivateKey, alg, kid string, claims map[string]any) string {
	t.Helper()
	h := map[string]string{"alg": alg, "typ": "JWT"}
	if kid != "" {
		h["kid"] = kid
	}
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(h) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, priv, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}
