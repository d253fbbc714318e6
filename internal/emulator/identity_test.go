package emulator_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

func postForm(t *testing.T, u string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("%d %s: %v", resp.StatusCode, b, err)
	}
	return resp.StatusCode, body
}

// TestUserCredentialsAndTokenInfo: a refresh token from an authorized_user
// file buys access tokens, and tokeninfo reveals their owner only with the
// userinfo.email scope.
func TestUserCredentialsAndTokenInfo(t *testing.T) {
	cfg := emulator.DefaultConfig()
	cfg.Accounts = append(cfg.Accounts, emulator.Account{Email: "dev@example.com", Login: true})
	srv := emulatortest.Start(t, cfg)
	b, err := srv.Emulator.UserCredentialsJSON("dev@example.com", srv.URL+"/token")
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]string
	json.Unmarshal(b, &file)
	if file["type"] != "authorized_user" || file["refresh_token"] == "" || file["token_uri"] != srv.URL+"/token" {
		t.Fatalf("credentials file %s", b)
	}

	code, tok := postForm(t, srv.URL+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {file["refresh_token"]}})
	if code != 200 || tok["access_token"] == "" {
		t.Fatalf("refresh grant: %d %v", code, tok)
	}
	code, info := postForm(t, srv.URL+"/tokeninfo", url.Values{"access_token": {tok["access_token"].(string)}})
	if code != 200 || info["email"] != "dev@example.com" || !strings.Contains(info["scope"].(string), emulator.ScopeUserinfoEmail) {
		t.Fatalf("tokeninfo: %d %v", code, info)
	}

	code, _ = postForm(t, srv.URL+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"1//forged"}})
	if code != 400 {
		t.Fatalf("forged refresh token: %d, want 400", code)
	}
	code, _ = postForm(t, srv.URL+"/tokeninfo", url.Values{"access_token": {"ya29.forged"}})
	if code != 400 {
		t.Fatalf("tokeninfo of a forged token: %d, want 400", code)
	}
	sa, _ := srv.Emulator.MintToken(cfg.Accounts[0].Email) // cloud-platform only
	if code, info = postForm(t, srv.URL+"/tokeninfo", url.Values{"access_token": {sa}}); code != 200 || info["email"] != nil {
		t.Fatalf("tokeninfo without the email scope revealed %v", info["email"])
	}
}

// TestGenerateAccessToken: the IAM Credentials API mints a token for a
// service account only for its token creators, and the token acts as it.
func TestGenerateAccessToken(t *testing.T) {
	cfg := emulator.DefaultConfig()
	source := cfg.Accounts[0].Email
	cfg.Accounts = append(cfg.Accounts,
		emulator.Account{Email: "target@emulator-project.iam.gserviceaccount.com", TokenCreators: []string{source}},
		emulator.Account{Email: "closed@emulator-project.iam.gserviceaccount.com"})
	srv := emulatortest.Start(t, cfg)
	srcTok, _ := srv.Emulator.MintToken(source)
	call := func(target, token, body string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/projects/-/serviceAccounts/"+target+":generateAccessToken", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	body := `{"scope":["` + emulator.ScopeCloudPlatform + `"],"lifetime":"3600s"}`
	code, out := call("target@emulator-project.iam.gserviceaccount.com", srcTok, body)
	if code != 200 || out["accessToken"] == "" || out["expireTime"] == "" {
		t.Fatalf("generateAccessToken: %d %v", code, out)
	}
	if err := getProfile(service(t, srv, out["accessToken"].(string)), "target@emulator-project.iam.gserviceaccount.com"); err != nil {
		t.Fatalf("the impersonated token cannot read the target's own profile: %v", err)
	}
	tests := []struct {
		name, target, token, body string
		want                      int
	}{
		{"not a token creator", "closed@emulator-project.iam.gserviceaccount.com", srcTok, body, 403},
		{"unknown account", "ghost@emulator-project.iam.gserviceaccount.com", srcTok, body, 404},
		{"no bearer token", "target@emulator-project.iam.gserviceaccount.com", "", body, 401},
		{"no scopes asked", "target@emulator-project.iam.gserviceaccount.com", srcTok, `{}`, 400},
	}
	for _, tc := range tests {
		if code, out := call(tc.target, tc.token, tc.body); code != tc.want {
			t.Errorf("%s: %d %v, want %d", tc.name, code, out, tc.want)
		}
	}
	if n := srv.Emulator.Calls()["iamcredentials.generateAccessToken"]; n != 5 {
		t.Errorf("%d generateAccessToken calls counted, want 5", n)
	}
}
