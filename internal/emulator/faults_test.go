package emulator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2/google"
	oslogin "google.golang.org/api/oslogin/v1"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

const quotaText = "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per user' of service 'oslogin.googleapis.com' for consumer 'project_number:"

// TestFaults injects each fault into importSshPublicKey and checks what the
// client sees and whether the key was stored.
func TestFaults(t *testing.T) {
	tests := []struct {
		name       string
		fault      emulator.Fault
		timeout    time.Duration // client deadline; 0: none
		wantCode   int           // googleapi error code; 0: success; -1: transport error
		wantStored bool
		check      func(t *testing.T, err error, resp *oslogin.ImportSshPublicKeyResponse, took time.Duration)
	}{
		{name: "status 503", fault: emulator.Fault{Methods: "write", Status: 503}, wantCode: 503,
			check: func(t *testing.T, err error, _ *oslogin.ImportSshPublicKeyResponse, _ time.Duration) {
				if g := apiError(t, err); g.Message != "The service is currently unavailable." || g.Errors[0].Reason != "backendError" {
					t.Errorf("503 envelope %+v", g)
				}
			}},
		{name: "status 500", fault: emulator.Fault{Methods: "all", Status: 500}, wantCode: 500},
		{name: "slow 502", fault: emulator.Fault{Methods: "write", Status: 502, Latency: 50 * time.Millisecond}, wantCode: 502,
			check: func(t *testing.T, _ error, _ *oslogin.ImportSshPublicKeyResponse, took time.Duration) {
				if took < 50*time.Millisecond {
					t.Errorf("answered after %v", took)
				}
			}},
		{name: "status 429 with Retry-After", fault: emulator.Fault{Methods: "users.importSshPublicKey", Status: 429, RetryAfter: 7 * time.Second}, wantCode: 429,
			check: func(t *testing.T, err error, _ *oslogin.ImportSshPublicKeyResponse, _ time.Duration) {
				g := apiError(t, err)
				if !strings.HasPrefix(g.Message, quotaText) || g.Errors[0].Reason != "rateLimitExceeded" || g.Header.Get("Retry-After") != "7" {
					t.Errorf("429: %q %+v %v", g.Message, g.Errors, g.Header)
				}
			}},
		{name: "dropped connection", fault: emulator.Fault{Methods: "write", Drop: true}, wantCode: -1},
		{name: "stall beyond the client's patience", fault: emulator.Fault{Methods: "write", Stall: 10 * time.Second}, timeout: 100 * time.Millisecond, wantCode: -1},
		{name: "short stall", fault: emulator.Fault{Methods: "write", Stall: 50 * time.Millisecond}, wantStored: true,
			check: func(t *testing.T, _ error, _ *oslogin.ImportSshPublicKeyResponse, took time.Duration) {
				if took < 50*time.Millisecond {
					t.Errorf("answered after %v", took)
				}
			}},
		{name: "latency beyond the client's patience", fault: emulator.Fault{Methods: "write", Latency: 300 * time.Millisecond}, timeout: 100 * time.Millisecond, wantCode: -1, wantStored: true},
		{name: "latency", fault: emulator.Fault{Methods: "write", Latency: 50 * time.Millisecond}, wantStored: true,
			check: func(t *testing.T, _ error, _ *oslogin.ImportSshPublicKeyResponse, took time.Duration) {
				if took < 50*time.Millisecond {
					t.Errorf("answered after %v", took)
				}
			}},
		{name: "policy blocks key management", fault: emulator.Fault{Methods: "write", BlockKeyManagement: true},
			check: func(t *testing.T, _ error, resp *oslogin.ImportSshPublicKeyResponse, _ time.Duration) {
				if len(resp.LoginProfile.SshPublicKeys) != 0 || len(resp.LoginProfile.PosixAccounts) != 1 {
					t.Errorf("blocked import answered %+v", resp.LoginProfile)
				}
			}},
		{name: "read faults spare writes", fault: emulator.Fault{Methods: "read", Status: 503}, wantStored: true},
		{name: "metadata faults spare the API", fault: emulator.Fault{Methods: "metadata", Status: 503}, wantStored: true},
		{name: "other method", fault: emulator.Fault{Methods: "users.sshPublicKeys.delete", Drop: true}, wantStored: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := emulatortest.Start(t, testConfig())
			svc := serviceFor(t, srv, saEmail)
			srv.Emulator.SetFault(tt.fault)
			key := sshKey(t, 80+i, "")
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			start := time.Now()
			resp, err := svc.Users.ImportSshPublicKey("users/"+saEmail, &oslogin.SshPublicKey{Key: key}).ProjectId(project).Context(ctx).Do()
			took := time.Since(start)
			switch {
			case tt.wantCode == 0 && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.wantCode == -1 && err == nil:
				t.Fatal("no transport error")
			case tt.wantCode > 0 && apiError(t, err).Code != tt.wantCode:
				t.Fatalf("error %v, want %d", err, tt.wantCode)
			}
			if tt.check != nil {
				tt.check(t, err, resp, took)
			}
			// Latency lets the write finish after the client gave up.
			deadline := time.Now().Add(time.Second)
			for tt.wantStored && len(srv.Emulator.Keys(saEmail)) == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if stored := len(srv.Emulator.Keys(saEmail)) == 1; stored != tt.wantStored {
				t.Errorf("key stored: %t, want %t", stored, tt.wantStored)
			}
			if n := srv.Emulator.Calls()["users.importSshPublicKey"]; n != 1 {
				t.Errorf("import counted %d times", n)
			}
		})
	}
}

// TestFaultRateAndTimes: Rate draws from the injected source; Times counts down.
func TestFaultRateAndTimes(t *testing.T) {
	draws := []float64{0.9, 0.1, 0.6, 0.4}
	srv := emulatortest.StartWithOptions(t, emulator.Options{Config: testConfig(), Rand: func() float64 {
		d := draws[0]
		draws = draws[1:]
		return d
	}})
	svc := serviceFor(t, srv, saEmail)
	srv.Emulator.SetFault(emulator.Fault{Methods: "read", Rate: 0.5, Status: 503})
	var got []bool
	for range 4 {
		got = append(got, getProfile(svc, saEmail) == nil)
	}
	if want := []bool{true, false, true, false}; !equalBools(got, want) {
		t.Errorf("successes %v, want %v", got, want)
	}

	srv.Emulator.ClearFaults()
	srv.Emulator.SetFault(emulator.Fault{Methods: "users.getLoginProfile", Status: 500, Times: 2})
	srv.Emulator.SetFault(emulator.Fault{Methods: "all", Status: 503}) // less specific: not used for getLoginProfile
	got = got[:0]
	for range 3 {
		got = append(got, getProfile(svc, saEmail) == nil)
	}
	if !equalBools(got, []bool{false, false, false}) {
		t.Errorf("successes %v", got)
	}
	if err := getProfile(svc, saEmail); apiError(t, err).Code != 503 {
		t.Errorf("after the method fault ran out the 'all' fault applies: %v", err)
	}
	if fs := srv.Emulator.Faults(); len(fs) != 1 || fs[0].Methods != "all" {
		t.Errorf("faults left %+v", fs)
	}
	srv.Emulator.ClearFaults()
	if err := getProfile(svc, saEmail); err != nil {
		t.Errorf("after ClearFaults: %v", err)
	}
	srv.Emulator.SetFault(emulator.Fault{Methods: "read", Status: 200}) // invalid: ignored
	if len(srv.Emulator.Faults()) != 0 {
		t.Error("invalid fault installed")
	}
}

// TestMetadataFault: the metadata client retries 5xx, so two failures are
// absorbed and the token still arrives.
func TestMetadataFault(t *testing.T) {
	srv := emulatortest.Start(t, testConfig())
	t.Setenv("GCE_METADATA_HOST", srv.Host)
	srv.Emulator.SetFault(emulator.Fault{Methods: "metadata.token", Status: 503, Times: 2})
	ts := google.ComputeTokenSource("", emulator.ScopeCloudPlatform)
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if err := getProfile(service(t, srv, tok.AccessToken), saEmail); err != nil {
		t.Error(err)
	}
	if n := srv.Emulator.Calls()["metadata.token"]; n != 3 {
		t.Errorf("token requests %d, want 3", n)
	}
}

// TestWriteQuota: 60-second windows by the emulator clock, per user, writes only.
func TestWriteQuota(t *testing.T) {
	clock := &fixedClock{t: time.Date(2030, 1, 1, 12, 0, 30, 0, time.UTC)}
	srv := emulatortest.StartWithOptions(t, emulator.Options{Config: testConfig(), Clock: clock})
	srv.Emulator.SetWriteQuota(3)
	sa, user := serviceFor(t, srv, saEmail), serviceFor(t, srv, userEmail)
	for i := range 3 {
		if err := importKey(sshKey(t, 100+i, ""))(sa, saEmail); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	err := importKey(sshKey(t, 103, ""))(sa, saEmail)
	g := apiError(t, err)
	if g.Code != 429 || !strings.HasPrefix(g.Message, quotaText+srv.Emulator.Config().ProjectNumber+"'.") ||
		g.Errors[0].Reason != "rateLimitExceeded" || g.Header.Get("Retry-After") != "" {
		t.Errorf("over quota: %v %v", err, g.Header)
	}
	if err := getProfile(sa, saEmail); err != nil {
		t.Errorf("reads are not limited: %v", err)
	}
	if err := importKey(sshKey(t, 104, ""))(user, userEmail); err != nil {
		t.Errorf("another user's quota: %v", err)
	}
	srv.Emulator.Advance(29 * time.Second) // 12:00:59, same window
	if err := importKey(sshKey(t, 105, ""))(sa, saEmail); err == nil {
		t.Error("quota reset inside the window")
	}
	srv.Emulator.Advance(time.Second) // 12:01:00, next window
	if err := importKey(sshKey(t, 106, ""))(sa, saEmail); err != nil {
		t.Errorf("next window: %v", err)
	}
	srv.Emulator.SetWriteQuota(0)
	for i := range 5 {
		if err := importKey(sshKey(t, 110+i, ""))(sa, saEmail); err != nil {
			t.Fatalf("quota off: %v", err)
		}
	}
}

// TestPurge: an expired key stays until PurgeDelay has passed, by the clock.
func TestPurge(t *testing.T) {
	for _, tt := range []struct {
		name  string
		delay time.Duration
		kept  []time.Duration // offsets after expiry at which the key is still stored
		gone  time.Duration   // offset at which it is purged; 0: never
	}{
		{"default delay", 0, []time.Duration{0, time.Minute, 5 * time.Minute}, 5*time.Minute + time.Microsecond},
		{"at once", time.Nanosecond, []time.Duration{0}, time.Microsecond},
		{"never", -1, []time.Duration{0, 24 * time.Hour}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.PurgeDelay = tt.delay
			clock := &fixedClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
			srv := emulatortest.StartWithOptions(t, emulator.Options{Config: cfg, Clock: clock})
			svc := serviceFor(t, srv, saEmail)
			expiry := srv.Emulator.Now().Add(time.Minute)
			if _, err := svc.Users.ImportSshPublicKey("users/"+saEmail, &oslogin.SshPublicKey{Key: sshKey(t, 120, ""), ExpirationTimeUsec: expiry.UnixMicro()}).ProjectId(project).Do(); err != nil {
				t.Fatal(err)
			}
			at := func(off time.Duration) int {
				srv.Emulator.Advance(expiry.Add(off).Sub(srv.Emulator.Now()))
				lp, err := serviceFor(t, srv, saEmail).Users.GetLoginProfile("users/" + saEmail).ProjectId(project).Do()
				if err != nil {
					t.Fatal(err)
				}
				if len(srv.Emulator.Keys(saEmail)) != len(lp.SshPublicKeys) {
					t.Fatal("Keys and the API disagree")
				}
				return len(lp.SshPublicKeys)
			}
			for _, off := range tt.kept {
				if at(off) != 1 {
					t.Errorf("purged at expiry+%v", off)
				}
			}
			if tt.gone != 0 && at(tt.gone) != 0 {
				t.Errorf("not purged at expiry+%v", tt.gone)
			}
		})
	}
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
