package emulator_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	oslogin "google.golang.org/api/oslogin/v1"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// TestEveryMethod drives every implemented method through the generated Go
// client and checks what it decodes.
func TestEveryMethod(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	svc := serviceFor(t, srv, saEmail)
	sa := account(t, srv.Emulator, saEmail)
	user := "users/" + saEmail
	key := sshKey(t, 1, "alice@laptop")
	fp := fingerprint(key)

	// importSshPublicKey creates the POSIX account and stores the key.
	imp, err := svc.Users.ImportSshPublicKey(user, &oslogin.SshPublicKey{Key: key}).ProjectId(project).Do()
	if err != nil {
		t.Fatal(err)
	}
	prof := imp.LoginProfile
	if !regexp.MustCompile(`^1\d{20}$`).MatchString(prof.Name) || prof.Name != sa.UniqueID {
		t.Errorf("profile name %q, want the 21-digit unique id %s", prof.Name, sa.UniqueID)
	}
	if len(prof.PosixAccounts) != 1 {
		t.Fatalf("posix accounts %+v", prof.PosixAccounts)
	}
	pa := prof.PosixAccounts[0]
	wantUser := "sa_" + sa.UniqueID
	if pa.Username != wantUser || pa.HomeDirectory != "/home/"+wantUser || !pa.Primary ||
		pa.AccountId != project || pa.OperatingSystemType != "LINUX" || pa.Name != user+"/projects/"+project ||
		pa.Uid != pa.Gid || pa.Uid < 1000 || pa.Uid >= 1<<32 || pa.Shell != "" {
		t.Errorf("posix account %+v", pa)
	}
	got, ok := prof.SshPublicKeys[fp]
	if !ok || got.Key != key || got.Fingerprint != fp || got.Name != user+"/sshPublicKeys/"+fp || got.ExpirationTimeUsec != 0 {
		t.Errorf("imported key %+v (map %v)", got, prof.SshPublicKeys)
	}

	// getLoginProfile returns the same profile.
	lp, err := svc.Users.GetLoginProfile(user).ProjectId(project).Do()
	if err != nil {
		t.Fatal(err)
	}
	if lp.Name != prof.Name || len(lp.PosixAccounts) != 1 || lp.SshPublicKeys[fp].Key != key {
		t.Errorf("login profile %+v", lp)
	}

	// sshPublicKeys.get, then patch the expiry with and without a value.
	k, err := svc.Users.SshPublicKeys.Get(user + "/sshPublicKeys/" + fp).Do()
	if err != nil || k.Key != key || k.Fingerprint != fp {
		t.Fatalf("get: %+v, %v", k, err)
	}
	exp := time.Now().Add(time.Hour).UnixMicro()
	k, err = svc.Users.SshPublicKeys.Patch(user+"/sshPublicKeys/"+fp, &oslogin.SshPublicKey{Key: key, ExpirationTimeUsec: exp}).
		UpdateMask("expirationTimeUsec").Do()
	if err != nil || k.ExpirationTimeUsec != exp {
		t.Fatalf("patch expiry: %+v, %v", k, err)
	}
	if ks := srv.Emulator.Keys(saEmail); len(ks) != 1 || ks[0].Expiry.UnixMicro() != exp {
		t.Errorf("stored keys after patch %+v", ks)
	}
	k, err = svc.Users.SshPublicKeys.Patch(user+"/sshPublicKeys/"+fp, &oslogin.SshPublicKey{Key: key}).
		UpdateMask("expirationTimeUsec").Do()
	if err != nil || k.ExpirationTimeUsec != 0 {
		t.Fatalf("patch clearing expiry: %+v, %v", k, err)
	}
	if ks := srv.Emulator.Keys(saEmail); len(ks) != 1 || !ks[0].Expiry.IsZero() {
		t.Errorf("expiry not cleared: %+v", ks)
	}

	// sshPublicKeys.create stores a second key; creating it again conflicts.
	key2 := sshKey(t, 2, "")
	c, err := svc.Users.SshPublicKeys.Create(user, &oslogin.SshPublicKey{Key: key2, ExpirationTimeUsec: exp}).Do()
	if err != nil || c.Fingerprint != fingerprint(key2) || c.ExpirationTimeUsec != exp || c.Key != key2 {
		t.Fatalf("create: %+v, %v", c, err)
	}
	if _, err := svc.Users.SshPublicKeys.Create(user, &oslogin.SshPublicKey{Key: key2}).Do(); apiError(t, err).Code != 409 {
		t.Errorf("second create: %v", err)
	}

	// sshPublicKeys.delete removes it; unknown fingerprints answer 200 too.
	if _, err := svc.Users.SshPublicKeys.Delete(user + "/sshPublicKeys/" + c.Fingerprint).Do(); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Users.SshPublicKeys.Delete(user + "/sshPublicKeys/" + strings.Repeat("0", 64)).Do(); err != nil {
		t.Errorf("delete of unknown fingerprint: %v", err)
	}
	if _, err := svc.Users.SshPublicKeys.Get(user + "/sshPublicKeys/" + c.Fingerprint).Do(); apiError(t, err).Code != 404 {
		t.Errorf("get after delete: %v", err)
	}

	// provisionPosixAccount creates a second project's account; projects.delete removes it.
	p, err := svc.Users.Projects.ProvisionPosixAccount(user+"/projects/other-project",
		&oslogin.ProvisionPosixAccountRequest{Regions: []string{"us-central1"}}).Do()
	if err != nil || p.AccountId != "other-project" || p.Username != wantUser || p.Uid != pa.Uid {
		t.Fatalf("provision: %+v, %v", p, err)
	}
	if lp, _ := svc.Users.GetLoginProfile(user).ProjectId(project).Do(); len(lp.PosixAccounts) != 2 {
		t.Errorf("after provisioning: %+v", lp.PosixAccounts)
	}
	if _, err := svc.Users.Projects.Delete(user + "/projects/other-project").Do(); err != nil {
		t.Fatal(err)
	}
	if lp, _ := svc.Users.GetLoginProfile(user).ProjectId(project).Do(); len(lp.PosixAccounts) != 1 || lp.PosixAccounts[0].AccountId != project {
		t.Errorf("after projects.delete: %+v", lp.PosixAccounts)
	}

	want := map[string]int{
		"users.importSshPublicKey": 1, "users.getLoginProfile": 3, "users.sshPublicKeys.get": 2,
		"users.sshPublicKeys.patch": 2, "users.sshPublicKeys.create": 2, "users.sshPublicKeys.delete": 2,
		"users.projects.provisionPosixAccount": 1, "users.projects.delete": 1,
	}
	calls := srv.Emulator.Calls()
	for id, n := range want {
		if calls[id] != n {
			t.Errorf("calls[%s] = %d, want %d (all: %v)", id, calls[id], n, calls)
		}
	}
}

// TestFingerprintRule: the id is SHA-256 of the exact string; comment and
// trailing newline are part of it and the string is stored byte for byte.
func TestFingerprintRule(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	svc := serviceFor(t, srv, saEmail)
	base := sshKey(t, 3, "")
	tests := []struct{ name, key string }{
		{"bare", base},
		{"comment", base + " bob@host"},
		{"newline", base + "\n"},
		{"comment and newline", base + " bob@host\n"},
		{"comment with spaces", base + " Bob Smith  <b@x>"},
		{"crlf", base + " c\r\n"},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := svc.Users.ImportSshPublicKey("users/"+saEmail, &oslogin.SshPublicKey{Key: tt.key}).ProjectId(project).Do()
			if err != nil {
				t.Fatal(err)
			}
			fp := fingerprint(tt.key)
			if fp != emulator.Fingerprint(tt.key) {
				t.Fatalf("emulator.Fingerprint disagrees")
			}
			k, ok := resp.LoginProfile.SshPublicKeys[fp]
			if !ok || k.Key != tt.key || k.Fingerprint != fp {
				t.Fatalf("key %q not stored under %s: %+v", tt.key, fp, resp.LoginProfile.SshPublicKeys)
			}
			seen[fp] = true
		})
	}
	if got := len(srv.Emulator.Keys(saEmail)); got != len(tests) || len(seen) != len(tests) {
		t.Errorf("%d stored keys, want %d distinct entries", got, len(tests))
	}
}

// TestWireShapes checks the raw JSON: int64 as strings, unset fields
// omitted, numbers accepted on input, e-mails with '+' unescaped in paths,
// alt/prettyPrint/fields ignored.
func TestWireShapes(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	tok, _ := srv.Emulator.MintToken(userEmail)
	key := sshKey(t, 4, "c")
	body := `{"key":` + strconv.Quote(key) + `,"expirationTimeUsec":4102444800000000}`
	code, _, raw := do(t, http.MethodPost, srv.URL+"/v1/users/"+userEmail+":importSshPublicKey?alt=json&prettyPrint=false&fields=loginProfile&projectId="+project, tok, strings.NewReader(body), nil)
	if code != 200 {
		t.Fatalf("import: %d %s", code, raw)
	}
	var generic map[string]any
	if err := json.Unmarshal([]byte(raw), &generic); err != nil {
		t.Fatal(err)
	}
	lp := generic["loginProfile"].(map[string]any)
	pa := lp["posixAccounts"].([]any)[0].(map[string]any)
	for _, f := range []string{"uid", "gid"} {
		if _, ok := pa[f].(string); !ok {
			t.Errorf("posixAccounts[0].%s = %#v, want a JSON string", f, pa[f])
		}
	}
	for _, f := range []string{"shell", "gecos", "systemId"} {
		if _, ok := pa[f]; ok {
			t.Errorf("unset field %s emitted", f)
		}
	}
	if _, ok := generic["details"]; ok {
		t.Error("empty details emitted")
	}
	if pa["username"] != "first_last_tag_example_com" || pa["name"] != "users/"+userEmail+"/projects/"+project {
		t.Errorf("posix account %v", pa)
	}
	k := lp["sshPublicKeys"].(map[string]any)[fingerprint(key)].(map[string]any)
	if k["expirationTimeUsec"] != "4102444800000000" || k["key"] != key {
		t.Errorf("key %v", k)
	}

	// A string int64 is accepted as well; a key without expiry has no field.
	key2 := sshKey(t, 5, "")
	body = `{"key":` + strconv.Quote(key2) + `,"expirationTimeUsec":"0"}`
	code, _, raw = do(t, http.MethodPost, srv.URL+"/v1/users/"+strings.Replace(userEmail, "+", "%2B", 1)+"/sshPublicKeys", tok, strings.NewReader(body), nil)
	if code != 200 || strings.Contains(raw, "expirationTimeUsec") || !strings.Contains(raw, `"fingerprint":"`+fingerprint(key2)+`"`) {
		t.Errorf("create: %d %s", code, raw)
	}

	// Delete answers {} and the profile of a user who never imported is just its name.
	code, _, raw = do(t, http.MethodDelete, srv.URL+"/v1/users/"+userEmail+"/sshPublicKeys/"+fingerprint(key2), tok, nil, nil)
	if code != 200 || strings.TrimSpace(raw) != "{}" {
		t.Errorf("delete: %d %q", code, raw)
	}
	denied, _ := srv.Emulator.MintToken("denied@example.com")
	code, _, raw = do(t, http.MethodGet, srv.URL+"/v1/users/denied@example.com/loginProfile?projectId="+project, denied, nil, nil)
	want := `{"name":"` + account(t, srv.Emulator, "denied@example.com").UniqueID + `"}`
	if code != 200 || strings.TrimSpace(raw) != want {
		t.Errorf("empty profile: %d %s, want %s", code, raw, want)
	}

	// Bad input.
	for _, b := range []string{`{"key":`, `{"key":"k","expirationTimeUsec":"soon"}`, `{"key":"not a key"}`} {
		if code, _, raw := do(t, http.MethodPost, srv.URL+"/v1/users/"+userEmail+":importSshPublicKey", tok, strings.NewReader(b), nil); code != 400 || !strings.Contains(raw, `"reason":"badRequest"`) {
			t.Errorf("body %s: %d %s", b, code, raw)
		}
	}
	// Unknown routes are 404 in the envelope.
	if code, _, raw := do(t, http.MethodGet, srv.URL+"/v1/users/"+userEmail+":frobnicate", tok, nil, nil); code != 404 || !strings.Contains(raw, `"status":"NOT_FOUND"`) {
		t.Errorf("unknown route: %d %s", code, raw)
	}
}

func TestUsernames(t *testing.T) {
	cfg := emulator.Config{Accounts: []emulator.Account{
		{Email: "robot@p.iam.gserviceaccount.com", UniqueID: "112233445566778899001"},
		{Email: "Alex.Per-Recovery@Gmail.com"},
		{Email: "custom@example.com", Username: "jdoe", UID: 424242},
	}}
	srv := emulatortest.Start(t, cfg)
	tests := []struct{ email, username string }{
		{"robot@p.iam.gserviceaccount.com", "sa_112233445566778899001"},
		{"Alex.Per-Recovery@Gmail.com", "alex_per_recovery_gmail_com"},
		{"custom@example.com", "jdoe"},
	}
	for _, tt := range tests {
		t.Run(tt.email, func(t *testing.T) {
			svc := serviceFor(t, srv, tt.email)
			pa, err := svc.Users.Projects.ProvisionPosixAccount("users/"+tt.email+"/projects/"+project, &oslogin.ProvisionPosixAccountRequest{}).Do()
			if err != nil {
				t.Fatal(err)
			}
			if pa.Username != tt.username || pa.HomeDirectory != "/home/"+tt.username {
				t.Errorf("username %q home %q, want %q", pa.Username, pa.HomeDirectory, tt.username)
			}
			if tt.username == "jdoe" && pa.Uid != 424242 {
				t.Errorf("configured uid ignored: %d", pa.Uid)
			}
		})
	}
}

// TestAPIErrors checks code, message and reason as googleapi.Error sees them.
func TestAPIErrors(t *testing.T) {
	clock := &fixedClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	srv := emulatortest.StartWithOptions(t, emulator.Options{Config: testConfig(), Clock: clock})
	key := sshKey(t, 6, "")
	mint := func(email string, scopes ...string) string {
		tok, err := srv.Emulator.MintToken(email, scopes...)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	expired := mint(saEmail)
	srv.Emulator.Advance(2 * time.Hour)
	big := strings.Repeat("x", 20000)
	if _, err := srv.Emulator.ImportKey(userEmail, "", sshKey(t, 7, big), time.Time{}); err != nil {
		t.Fatal(err)
	}

	const (
		missing = "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
		invalid = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
		tooBig  = "Login profile size exceeds 32 KiB. Delete profile values to make additional space."
	)
	tests := []struct {
		name          string
		token         string
		user          string
		call          func(svc *oslogin.Service, user string) error
		code          int
		message       string
		reason        string
		wantErrString string
	}{
		{name: "no token", token: "", user: saEmail, call: importKey(key), code: 401, message: missing, reason: "required"},
		{name: "foreign token", token: "ya29.not-from-here", user: saEmail, call: importKey(key), code: 401, message: invalid, reason: "authError"},
		{name: "expired token", token: expired, user: saEmail, call: getProfile, code: 401, message: invalid, reason: "authError"},
		{name: "read-only scope writing", token: mint(saEmail, emulator.ScopeCloudPlatformReadOnly), user: saEmail, call: importKey(key),
			code: 403, message: "Request had insufficient authentication scopes.", reason: "insufficientPermissions"},
		{name: "unrelated scope reading", token: mint(saEmail, "https://www.googleapis.com/auth/devstorage.read_only"), user: saEmail, call: getProfile,
			code: 403, message: "Request had insufficient authentication scopes.", reason: "insufficientPermissions"},
		{name: "read-only scope reading", token: mint(saEmail, emulator.ScopeComputeReadOnly), user: saEmail, call: getProfile},
		{name: "compute scope writing", token: mint(saEmail, emulator.ScopeCompute), user: saEmail, call: importKey(key)},
		{name: "other account's profile", token: mint(saEmail), user: userEmail, call: getProfile, code: 403, message: "The caller does not have permission", reason: "forbidden"},
		{name: "unknown account", token: mint(saEmail), user: "nobody@example.com", call: getProfile, code: 403, message: "The caller does not have permission", reason: "forbidden"},
		{name: "profile too large", token: mint(userEmail), user: userEmail, call: importKey(sshKey(t, 8, big)), code: 400, message: tooBig, reason: "badRequest",
			wantErrString: "googleapi: Error 400: " + tooBig + ", badRequest"},
		{name: "malformed key", token: mint(userEmail), user: userEmail, call: importKey("ssh-ed25519 !!!"), code: 400, message: "Request contains an invalid argument.", reason: "badRequest"},
		{name: "unknown fingerprint", token: mint(userEmail), user: userEmail, call: func(svc *oslogin.Service, user string) error {
			_, err := svc.Users.SshPublicKeys.Get("users/" + user + "/sshPublicKeys/" + strings.Repeat("a", 64)).Do()
			return err
		}, code: 404, message: "Requested entity was not found.", reason: "notFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(service(t, srv, tt.token), tt.user)
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			gerr := apiError(t, err)
			if gerr.Code != tt.code || gerr.Message != tt.message || len(gerr.Errors) != 1 || gerr.Errors[0].Reason != tt.reason {
				t.Errorf("got %d %q %+v, want %d %q %s", gerr.Code, gerr.Message, gerr.Errors, tt.code, tt.message, tt.reason)
			}
			if tt.wantErrString != "" && gerr.Error() != tt.wantErrString {
				t.Errorf("Error() = %q, want %q", gerr.Error(), tt.wantErrString)
			}
		})
	}
	// The refused import did not change the profile.
	if n := len(srv.Emulator.Keys(userEmail)); n != 1 {
		t.Errorf("%d keys after refused import", n)
	}
}

// TestEnvelope checks the raw error JSON once.
func TestEnvelope(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	tok, _ := srv.Emulator.MintToken(saEmail, emulator.ScopeCloudPlatformReadOnly)
	code, h, raw := do(t, http.MethodPost, srv.URL+"/v1/users/"+saEmail+":importSshPublicKey", tok, strings.NewReader(`{}`), nil)
	var env struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Status  string `json:"status"`
			Errors  []struct {
				Message, Domain, Reason string
			} `json:"errors"`
			Details []map[string]any `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(raw), &env); err != nil {
		t.Fatal(err)
	}
	e := env.Error
	if code != 403 || e.Code != 403 || e.Status != "PERMISSION_DENIED" || len(e.Errors) != 1 ||
		e.Errors[0].Domain != "global" || e.Errors[0].Message != e.Message || e.Errors[0].Reason != "insufficientPermissions" ||
		len(e.Details) != 1 || e.Details[0]["reason"] != "ACCESS_TOKEN_SCOPE_INSUFFICIENT" {
		t.Errorf("envelope %d %s", code, raw)
	}
	if !strings.Contains(h.Get("Www-Authenticate"), `error="insufficient_scope"`) || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		t.Errorf("headers %v", h)
	}
}

// TestProfileLimitBoundary: the sum of key lengths may reach the limit but
// not exceed it; re-importing a stored key costs nothing.
func TestProfileLimitBoundary(t *testing.T) {
	k1, k2 := sshKey(t, 9, ""), sshKey(t, 10, "")
	cfg := testConfig()
	cfg.ProfileLimit = len(k1) + len(k2)
	srv := emulatortest.Start(t, cfg)
	svc := serviceFor(t, srv, saEmail)
	for _, k := range []string{k1, k2, k1} {
		if err := importKey(k)(svc, saEmail); err != nil {
			t.Fatalf("import within limit: %v", err)
		}
	}
	err := importKey(sshKey(t, 11, ""))(svc, saEmail)
	if gerr := apiError(t, err); gerr.Code != 400 || !strings.HasPrefix(gerr.Message, "Login profile size exceeds 32 KiB") {
		t.Errorf("over limit: %v", err)
	}
}

func importKey(key string) func(*oslogin.Service, string) error {
	return func(svc *oslogin.Service, user string) error {
		_, err := svc.Users.ImportSshPublicKey("users/"+user, &oslogin.SshPublicKey{Key: key}).ProjectId(project).Do()
		return err
	}
}

func getProfile(svc *oslogin.Service, user string) error {
	_, err := svc.Users.GetLoginProfile("users/" + user).ProjectId(project).Do()
	return err
}

// fixedClock is an injected clock that only moves via Emulator.Advance.
type fixedClock struct{ t time.Time }

func (c *fixedClock) Now() time.Time { return c.t }

// TestDateHeaderFromClock checks that API answers carry the emulator's
// clock, Advance included, in their Date header, as Google's answers carry
// Google's: clients measure their clock difference with it.
func TestDateHeaderFromClock(t *testing.T) {
	clock := &fixedClock{t: time.Date(2030, 1, 2, 3, 4, 5, 700e6, time.UTC)}
	srv := emulatortest.StartWithOptions(t, emulator.Options{Config: testConfig(), Clock: clock})
	srv.Emulator.Advance(15 * time.Second)
	for _, path := range []string{"/v1/users/" + saEmail + "/loginProfile", "/v1/nowhere"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got, want := resp.Header.Get("Date"), "Wed, 02 Jan 2030 03:04:20 GMT"; got != want {
			t.Errorf("GET %s (%s): Date %q, want %q", path, resp.Status, got, want)
		}
	}
}
