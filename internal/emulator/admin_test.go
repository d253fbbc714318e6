package emulator_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// TestAdminClient drives every admin route through AdminClient, as a test
// against a separate emulator process would.
func TestAdminClient(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	ctx := context.Background()
	admin := emulator.NewAdminClient(srv.Host) // host:port as the binary prints it

	// Accounts: add a service account and a user with a custom username.
	robot, err := admin.AddAccount(ctx, emulator.Account{Email: "robot@emulator-project.iam.gserviceaccount.com"})
	if err != nil || !robot.ServiceAccount || len(robot.UniqueID) != 21 || robot.UID < 1000 {
		t.Fatalf("add robot: %+v, %v", robot, err)
	}
	if _, err := admin.AddAccount(ctx, emulator.Account{Email: "plus+user@example.com", Username: "plus"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddAccount(ctx, emulator.Account{Email: saEmail}); err == nil {
		t.Error("duplicate account accepted")
	}
	accounts, err := admin.Accounts(ctx)
	if err != nil || len(accounts) != 5 || accounts[0].Email != saEmail {
		t.Errorf("accounts %+v, %v", accounts, err)
	}

	// Tokens minted over the admin API work on the API.
	tok, err := admin.MintToken(ctx, "plus+user@example.com")
	if err != nil {
		t.Fatal(err)
	}
	key := sshKey(t, 130, "admin")
	if err := importKey(key)(service(t, srv, tok), "plus+user@example.com"); err != nil {
		t.Fatal(err)
	}
	keys, err := admin.Keys(ctx, "plus+user@example.com")
	if err != nil || len(keys) != 1 || keys[0].Key != key || keys[0].Fingerprint != fingerprint(key) || !keys[0].Expiry.IsZero() {
		t.Errorf("keys %+v, %v", keys, err)
	}
	if _, err := admin.Keys(ctx, "ghost@example.com"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown account: %v", err)
	}

	// State shows the POSIX account and key.
	st, err := admin.State(ctx)
	if err != nil || st.ProjectID != project {
		t.Fatal(st, err)
	}
	var plus *emulator.AccountState
	for i := range st.Accounts {
		if st.Accounts[i].Email == "plus+user@example.com" {
			plus = &st.Accounts[i]
		}
	}
	if plus == nil || len(plus.PosixAccounts) != 1 || plus.PosixAccounts[0].Username != "plus" || len(plus.Keys) != 1 {
		t.Errorf("state %+v", plus)
	}

	// Calls, clock, grants.
	calls, err := admin.Calls(ctx)
	if err != nil || calls["users.importSshPublicKey"] != 1 {
		t.Errorf("calls %v, %v", calls, err)
	}
	if err := admin.ResetCalls(ctx); err != nil {
		t.Fatal(err)
	}
	if calls, _ := admin.Calls(ctx); len(calls) != 0 {
		t.Errorf("after reset %v", calls)
	}
	before, _ := admin.Now(ctx)
	after, err := admin.Advance(ctx, 90*time.Second)
	if err != nil || after.Sub(before) < 90*time.Second || after.Sub(before) > 95*time.Second {
		t.Errorf("advance: %v → %v, %v", before, after, err)
	}
	if _, err := admin.Advance(ctx, -time.Second); err == nil {
		t.Error("clock moved backwards")
	}
	if err := admin.SetGrant(ctx, "plus+user@example.com", true, true); err != nil {
		t.Fatal(err)
	}
	if _, _, body := mdGet(t, srv, "oslogin/authorize?email=plus%2Buser%40example.com&policy=adminLogin"); body != `{"success":true}` {
		t.Errorf("grant not applied: %s", body)
	}

	// Faults and quota.
	if err := admin.SetFault(ctx, emulator.Fault{Methods: "read", Status: 503, Latency: 10 * time.Millisecond, Times: 1}); err != nil {
		t.Fatal(err)
	}
	fs, err := admin.Faults(ctx)
	if err != nil || len(fs) != 1 || fs[0].Latency != 10*time.Millisecond || fs[0].Status != 503 {
		t.Errorf("faults %+v, %v", fs, err)
	}
	if err := getProfile(service(t, srv, tok), "plus+user@example.com"); apiError(t, err).Code != 503 {
		t.Errorf("fault not applied: %v", err)
	}
	if err := admin.SetFault(ctx, emulator.Fault{Methods: "read", Rate: 2}); err == nil {
		t.Error("invalid fault accepted")
	}
	if err := admin.ClearFaults(ctx); err != nil {
		t.Fatal(err)
	}
	if err := admin.SetWriteQuota(ctx, 1); err != nil {
		t.Fatal(err)
	}
	svc := service(t, srv, tok)
	if err := importKey(sshKey(t, 131, ""))(svc, "plus+user@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := importKey(sshKey(t, 132, ""))(svc, "plus+user@example.com"); apiError(t, err).Code != 429 {
		t.Errorf("quota: %v", err)
	}

	// A key file from the admin API points at the emulator's own /token.
	kf, err := admin.ServiceAccountKeyJSON(ctx, robot.Email, "")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(kf, &m); err != nil || m["token_uri"] != srv.TokenURI() || m["client_email"] != robot.Email {
		t.Errorf("key file %s, %v", kf, err)
	}
	if _, err := admin.ServiceAccountKeyJSON(ctx, "plus+user@example.com", ""); err == nil {
		t.Error("key for a user account")
	}
}

func TestAdminLoopbackOnly(t *testing.T) {
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, remote := range []string{"10.1.2.3:5555", "[2001:db8::1]:5555"} {
		req := httptest.NewRequest(http.MethodGet, "/emulator/v1/state", nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		emu.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("%s: %d", remote, rec.Code)
		}
	}
	req := httptest.NewRequest(http.MethodGet, "/emulator/v1/state", nil)
	req.RemoteAddr = "[::1]:5555"
	rec := httptest.NewRecorder()
	emu.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("[::1]: %d", rec.Code)
	}
}
