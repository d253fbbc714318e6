package oslogin_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
	"github.com/oslogin-agent/oslogin-agent/oslogin"
)

const (
	writeScope = "https://www.googleapis.com/auth/cloud-platform"
	line       = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl oslogin-agent@test"
)

// fixture is an emulator and a client acting as its attached service account.
type fixture struct {
	srv    *emulatortest.Server
	email  string
	client *oslogin.Client
}

func newFixture(t *testing.T, mutate func(*emulator.Config), scopes ...string) *fixture {
	t.Helper()
	cfg := emulator.DefaultConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	srv := emulatortest.Start(t, cfg)
	email := cfg.Accounts[0].Email
	if len(scopes) == 0 {
		scopes = []string{writeScope}
	}
	tok, err := srv.Emulator.MintToken(email, scopes...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := oslogin.New(context.Background(), oslogin.Options{
		Account: email, Project: cfg.ProjectID, Endpoint: srv.URL,
		TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok}),
		Backoff:     oslogin.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: srv, email: email, client: c}
}

func (f *fixture) keys() []emulator.Key { return f.srv.Emulator.Keys(f.email) }

func TestRegisterExtendRevoke(t *testing.T) {
	f := newFixture(t, func(c *emulator.Config) { c.Accounts[0].UniqueID = "123456789012345678901" })
	ctx := context.Background()
	expiry := time.Now().Add(10 * time.Minute).Truncate(time.Microsecond)

	user, err := f.client.Register(ctx, line, expiry)
	if err != nil {
		t.Fatal(err)
	}
	if user != "sa_123456789012345678901" {
		t.Fatalf("username %q, want sa_123456789012345678901", user)
	}
	keys := f.keys()
	if len(keys) != 1 || keys[0].Key != line || !keys[0].Expiry.Equal(expiry) {
		t.Fatalf("OS Login holds %+v; want exactly %q expiring %v", keys, line, expiry)
	}
	if keys[0].Fingerprint != oslogin.Fingerprint(line) {
		t.Fatalf("emulator fingerprint %s, local %s", keys[0].Fingerprint, oslogin.Fingerprint(line))
	}

	later := expiry.Add(5 * time.Minute)
	if err := f.client.Extend(ctx, line, later); err != nil {
		t.Fatal(err)
	}
	if keys := f.keys(); len(keys) != 1 || !keys[0].Expiry.Equal(later) {
		t.Fatalf("after Extend OS Login holds %+v; want expiry %v", keys, later)
	}
	if n := f.srv.Emulator.Calls()["users.sshPublicKeys.patch"]; n != 1 {
		t.Fatalf("Extend made %d patch calls, want 1", n)
	}

	if err := f.client.Revoke(ctx, line); err != nil {
		t.Fatal(err)
	}
	if keys := f.keys(); len(keys) != 0 {
		t.Fatalf("after Revoke OS Login holds %+v", keys)
	}
	if err := f.client.Revoke(ctx, line); err != nil {
		t.Fatalf("revoking a key that is gone: %v", err)
	}
}

// TestExtendDoesNotReimportAVanishedKey: a key deleted behind the agent's
// back (perhaps an admin revoking it) is reported as fs.ErrNotExist and
// stays deleted; the agent replaces it with a fresh key.
func TestExtendDoesNotReimportAVanishedKey(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	expiry := time.Now().Add(time.Minute).Truncate(time.Microsecond)
	if _, err := f.client.Register(ctx, line, expiry); err != nil {
		t.Fatal(err)
	}
	if err := f.client.Revoke(ctx, line); err != nil { // someone deletes it behind the agent's back
		t.Fatal(err)
	}
	if err := f.client.Extend(ctx, line, expiry.Add(time.Minute)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Extend of a deleted key: %v, want an error wrapping fs.ErrNotExist", err)
	}
	if keys := f.keys(); len(keys) != 0 {
		t.Fatalf("OS Login holds %+v after extending a deleted key; it must stay deleted", keys)
	}
}

func TestRegisterRefusals(t *testing.T) {
	ctx := context.Background()
	expiry := time.Now().Add(time.Minute)
	tests := []struct {
		name    string
		setup   func(f *fixture)
		scopes  []string
		want    error
		wantMsg string
	}{
		{
			name: "policy blocks key management",
			setup: func(f *fixture) {
				f.srv.Emulator.SetFault(emulator.Fault{Methods: "users.importSshPublicKey", BlockKeyManagement: true})
			},
			want:    oslogin.ErrKeyManagementBlocked,
			wantMsg: "administrator policy",
		},
		{
			name:    "token without a write scope",
			scopes:  []string{"https://www.googleapis.com/auth/compute.readonly"},
			want:    oslogin.ErrScopes,
			wantMsg: "cloud-platform",
		},
		{
			name:    "permanent 403",
			setup:   func(f *fixture) { f.srv.Emulator.SetFault(emulator.Fault{Methods: "write", Status: 403}) },
			want:    oslogin.ErrPermission,
			wantMsg: "roles/compute.osLogin",
		},
		{
			name:    "bad request",
			setup:   func(f *fixture) { f.srv.Emulator.SetFault(emulator.Fault{Methods: "write", Status: 400}) },
			wantMsg: "OS Login answered 400 Bad Request: ",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, tc.scopes...)
			if tc.setup != nil {
				tc.setup(f)
			}
			_, err := f.client.Register(ctx, line, expiry)
			if err == nil {
				t.Fatal("Register succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v; want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q does not mention %q", err, tc.wantMsg)
			}
			if n := f.srv.Emulator.Calls()["users.importSshPublicKey"]; n != 1 {
				t.Fatalf("%d import attempts; a refusal must not be retried", n)
			}
			if keys := f.keys(); len(keys) != 0 {
				t.Fatalf("a refused registration left keys behind: %+v", keys)
			}
		})
	}
}

func TestRegisterWithAnotherAccountsToken(t *testing.T) {
	cfg := emulator.DefaultConfig()
	other := emulator.Account{Email: "other@emulator-project.iam.gserviceaccount.com", ServiceAccount: true, Login: true}
	cfg.Accounts = append(cfg.Accounts, other)
	srv := emulatortest.Start(t, cfg)
	tok, err := srv.Emulator.MintToken(other.Email, writeScope)
	if err != nil {
		t.Fatal(err)
	}
	c, err := oslogin.New(context.Background(), oslogin.Options{
		Account: cfg.Accounts[0].Email, Project: cfg.ProjectID, Endpoint: srv.URL,
		TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok}),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Register(context.Background(), line, time.Now().Add(time.Minute))
	if !errors.Is(err, oslogin.ErrPermission) {
		t.Fatalf("error %v; want ErrPermission", err)
	}
}

func TestUnknownTokenIsUnauthenticated(t *testing.T) {
	srv := emulatortest.Start(t, emulator.DefaultConfig())
	c, err := oslogin.New(context.Background(), oslogin.Options{
		Account: emulator.DefaultConfig().Accounts[0].Email, Project: "emulator-project", Endpoint: srv.URL,
		TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "ya29.not-issued-by-anyone"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Register(context.Background(), line, time.Now().Add(time.Minute))
	if !errors.Is(err, oslogin.ErrUnauthenticated) {
		t.Fatalf("error %v; want ErrUnauthenticated", err)
	}
}

func TestTransientFaultsAreRetried(t *testing.T) {
	tests := []struct {
		name  string
		fault emulator.Fault
	}{
		{"503", emulator.Fault{Methods: "write", Status: 503}},
		{"500", emulator.Fault{Methods: "write", Status: 500}},
		{"429", emulator.Fault{Methods: "write", Status: 429}},
		{"dropped connection", emulator.Fault{Methods: "write", Drop: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.srv.Emulator.SetFault(tc.fault)
			go func() {
				time.Sleep(150 * time.Millisecond)
				f.srv.Emulator.ClearFaults()
			}()
			if _, err := f.client.Register(context.Background(), line, time.Now().Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			if n := f.srv.Emulator.Calls()["users.importSshPublicKey"]; n < 2 {
				t.Fatalf("%d import attempts; want retries", n)
			}
			if len(f.keys()) != 1 {
				t.Fatal("the key is not registered after the retries")
			}
		})
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	f := newFixture(t, nil)
	f.srv.Emulator.SetFault(emulator.Fault{Methods: "write", Status: 429, RetryAfter: time.Second})
	go func() {
		time.Sleep(50 * time.Millisecond)
		f.srv.Emulator.ClearFaults()
	}()
	start := time.Now()
	if _, err := f.client.Register(context.Background(), line, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Fatalf("retried after %v; the server asked for 1s", waited)
	}
}

func TestRetryStopsWithTheContext(t *testing.T) {
	f := newFixture(t, nil)
	f.srv.Emulator.SetFault(emulator.Fault{Methods: "write", Status: 503})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := f.client.Register(ctx, line, time.Now().Add(time.Minute))
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("error %v; want the last 503", err)
	}
	if ctx.Err() == nil {
		t.Fatal("Register gave up before its context ended")
	}
}

func TestProfileFullPrunesExpiredKeys(t *testing.T) {
	// Room for exactly eight old keys: the new one does not fit beside them.
	oldLen := len(fmt.Sprintf("%s-old-%d", line, 0))
	f := newFixture(t, func(c *emulator.Config) {
		c.ProfileLimit = 8 * oldLen
		c.PurgeDelay = time.Hour
	})
	ctx := context.Background()
	past := time.Now().Add(-time.Minute)
	for i := 0; i < 8; i++ {
		old := fmt.Sprintf("%s-old-%d", line, i)
		if _, err := f.client.Register(ctx, old, past); err != nil {
			t.Fatal(err)
		}
	}
	f.srv.Emulator.ResetCalls()
	if _, err := f.client.Register(ctx, line, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	keys := f.keys()
	if len(keys) != 1 || keys[0].Key != line {
		t.Fatalf("after pruning OS Login holds %d keys; want only the new one", len(keys))
	}
	calls := f.srv.Emulator.Calls()
	if calls["users.sshPublicKeys.delete"] != 8 || calls["users.importSshPublicKey"] != 2 {
		t.Fatalf("calls %v; want 8 deletes and one retried import", calls)
	}
}

func TestProfileFullOfPermanentKeys(t *testing.T) {
	f := newFixture(t, func(c *emulator.Config) { c.ProfileLimit = 300 })
	ctx := context.Background()
	// A key without expiry, as a person might have added by hand.
	if _, err := f.client.Register(ctx, line+"-permanent-1", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Register(ctx, line+"-permanent-2", time.Time{}); err != nil {
		t.Fatal(err)
	}
	_, err := f.client.Register(ctx, line, time.Now().Add(time.Minute))
	if err == nil || !strings.Contains(err.Error(), "32 KiB") || !strings.Contains(err.Error(), "no expired keys") {
		t.Fatalf("error %v; want the profile-full message", err)
	}
	if n := len(f.keys()); n != 2 {
		t.Fatalf("%d keys; the permanent ones must be left alone", n)
	}
}

// TestAnswersAUserCanRead: whatever comes back, the error names the status
// and a reason, never the request's URL.
func TestAnswersAUserCanRead(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"404 with no body", 404, "", "OS Login answered 404 Not Found: no reason given"},
		{"404 HTML page", 404, "<!DOCTYPE html><html><head><title>Error 404 (Not Found)!!1</title></head></html>", "404 Not Found: Error 404 (Not Found)!!1"},
		{"plain text", 400, "bad things\nmore", "400 Bad Request: bad things"},
		{"Google's JSON", 403, `{"error":{"code":403,"message":"The caller does not have permission","status":"PERMISSION_DENIED"}}`, "The caller does not have permission"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			c, err := oslogin.New(context.Background(), oslogin.Options{
				Account: "a@example.com", Project: "p", Endpoint: srv.URL,
				TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "t"}),
				Backoff:     oslogin.Backoff{Attempts: 1},
			})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Revoke(context.Background(), line)
			if tc.status == 404 {
				if err != nil {
					t.Fatalf("a 404 on delete means deleted; got %v", err)
				}
				_, err = c.Register(context.Background(), line, time.Now().Add(time.Minute))
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), srv.URL) || strings.Contains(err.Error(), "googleapi") {
				t.Fatalf("error %q shows the request URL or a package name", err)
			}
		})
	}
	t.Run("nothing listening", func(t *testing.T) {
		c, err := oslogin.New(context.Background(), oslogin.Options{
			Account: "a@example.com", Project: "p", Endpoint: "http://127.0.0.1:1",
			TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "t"}),
			Backoff:     oslogin.Backoff{Attempts: 1},
		})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Revoke(context.Background(), line)
		if err == nil || !strings.Contains(err.Error(), "delete key: cannot reach 127.0.0.1:1: ") || strings.Contains(err.Error(), "http://") {
			t.Fatalf("error %v; want the host it could not reach, without the URL", err)
		}
	})
}

// TestServerTime checks that the client reports OS Login's clock as of its
// last answer, so the agent can compute expiries in that clock.
func TestServerTime(t *testing.T) {
	f := newFixture(t, nil)
	if _, _, ok := f.client.ServerTime(); ok {
		t.Fatal("ServerTime reported a time before any answer")
	}
	f.srv.Emulator.Advance(15 * time.Second)
	before := time.Now()
	if _, err := f.client.Register(context.Background(), line, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	server, local, ok := f.client.ServerTime()
	if !ok {
		t.Fatal("no server time after an answer")
	}
	if local.Before(before) || local.After(time.Now()) {
		t.Errorf("local receive time %v not during the call", local)
	}
	// The Date header has whole seconds; ServerTime takes the middle.
	if skew := server.Sub(local); skew < 14*time.Second || skew > 16*time.Second {
		t.Errorf("measured skew %v, want 15s ± 1s", skew)
	}
}

// TestPruneExpiredInServerClock checks that PruneExpired judges expiry by
// OS Login's clock: with OS Login 50 minutes ahead, a key whose expiry is
// still ahead by this host's clock is already expired there.
func TestPruneExpiredInServerClock(t *testing.T) {
	f := newFixture(t, func(c *emulator.Config) { c.PurgeDelay = -1 })
	f.srv.Emulator.Advance(50 * time.Minute) // within the token's hour
	ctx := context.Background()
	if _, err := f.client.Register(ctx, line, time.Now().Add(20*time.Minute)); err != nil {
		t.Fatal(err)
	}
	n, err := f.client.PruneExpired(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || len(f.keys()) != 0 {
		t.Errorf("PruneExpired deleted %d keys, left %+v; want the key expired at OS Login deleted", n, f.keys())
	}
}
