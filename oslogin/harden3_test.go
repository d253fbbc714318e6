package oslogin_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
	"github.com/oslogin-agent/oslogin-agent/oslogin"
)

// TestRetriesEndWithTheContext is issue 12 item 9: the client had its own
// cap of 8 attempts, so start-up gave up after 20-40 s whatever
// --start-timeout said, with an error that did not say the deadline had
// passed. The caller's context is now the only bound.
func TestRetriesEndWithTheContext(t *testing.T) {
	f := newFixture(t, nil) // backoff 10ms..200ms: 8 attempts take well under a second
	f.srv.Emulator.SetFault(emulator.Fault{Methods: "write", Status: 503})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := f.client.Register(ctx, line, time.Now().Add(time.Minute))
	if took := time.Since(start); took < 1900*time.Millisecond || took > 2500*time.Millisecond {
		t.Fatalf("Register returned after %v (%v); want it to retry until its 2s deadline, and no longer", took, err)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("error %v; want the last 503 and the deadline", err)
	}
}

// TestRegisterSaysWhenNothingWasStored lets the agent skip the delete of
// a key OS Login refused or never received (issue 12 item 9: start-up
// spent 20 s deleting keys that were never registered).
func TestRegisterSaysWhenNothingWasStored(t *testing.T) {
	notStored := func(err error) bool {
		var ns interface{ NotRegistered() bool }
		return errors.As(err, &ns) && ns.NotRegistered()
	}
	f := newFixture(t, nil)
	// Retry-After beyond the deadline: the deadline ends the wait between
	// attempts, never an attempt in flight (whose outcome is unknown, so a
	// deadline that cut one would rightly not say "not stored").
	f.srv.Emulator.SetFault(emulator.Fault{Methods: "write", Status: 503, RetryAfter: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := f.client.Register(ctx, line, time.Now().Add(time.Minute)); !notStored(err) {
		t.Fatalf("503s: error %v does not say the key was not stored", err)
	}
	f.srv.Emulator.SetFault(emulator.Fault{Methods: "write", Status: 403})
	if _, err := f.client.Register(context.Background(), line, time.Now().Add(time.Minute)); !notStored(err) {
		t.Fatalf("403: error %v does not say the key was not stored", err)
	}
	f.srv.Emulator.SetFault(emulator.Fault{Methods: "write", Drop: true})
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := f.client.Register(ctx, line, time.Now().Add(time.Minute)); err == nil || notStored(err) {
		t.Fatalf("dropped connections: error %v; the key may have been stored", err)
	}
}

// Test401RefreshesTheToken is issue 12 item 10: a 401 never refreshed the
// cached token, so renewals and the delete at exit failed for the token's
// remaining life. Now the client fetches a new token and tries once more.
func Test401RefreshesTheToken(t *testing.T) {
	cfg := emulator.DefaultConfig()
	srv := emulatortest.Start(t, cfg)
	id := identityFromKeyFile(t, srv, cfg.Accounts[0].Email)
	c, err := oslogin.New(context.Background(), oslogin.Options{
		Account: id.Account, Project: id.Project, TokenSource: id.TokenSource, Endpoint: srv.URL,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Emulator.SetFault(emulator.Fault{Methods: "write", Status: 401, Times: 1})
	tokens := srv.Emulator.Calls()["oauth2.token"]
	if _, err := c.Register(context.Background(), line, time.Now().Add(time.Minute)); err != nil {
		t.Fatalf("one 401, then a fresh token: %v", err)
	}
	if n := srv.Emulator.Calls()["oauth2.token"]; n != tokens+1 {
		t.Fatalf("%d new tokens fetched after a 401; want 1", n-tokens)
	}
	srv.Emulator.SetFault(emulator.Fault{Methods: "write", Status: 401})
	err = c.Revoke(context.Background(), line)
	if !errors.Is(err, oslogin.ErrUnauthenticated) {
		t.Fatalf("401 after a fresh token: error %v; want ErrUnauthenticated", err)
	}
	if n := srv.Emulator.Calls()["users.sshPublicKeys.delete"]; n != 2 {
		t.Fatalf("%d delete attempts under a lasting 401; want 2 (one with a fresh token)", n)
	}
}

func identityFromKeyFile(t *testing.T, srv *emulatortest.Server, email string) *oslogin.Identity {
	t.Helper()
	b, err := srv.Emulator.ServiceAccountKeyJSON(email, srv.URL+"/token")
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
	return id
}

// TestCredentialReadsCannotBlock is issue 12 items 5 and 10: a FIFO that
// nobody writes held the agent in open(2) forever, deaf to SIGTERM, and
// an endless source (/dev/zero) was read until memory ran out. Only a
// regular file of bounded size is read.
func TestCredentialReadsCannotBlock(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "creds.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, make([]byte, 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"fifo nobody writes", fifo, "not a regular file"},
		{"endless device", "/dev/zero", "not a regular file"}, // not run on the old code: it ate all memory
		{"huge file", big, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", tc.path)
			done := make(chan error, 1)
			go func() {
				_, err := oslogin.FindIdentity(context.Background(), oslogin.IdentityOptions{})
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "GOOGLE_APPLICATION_CREDENTIALS") {
					t.Fatalf("error %v; want one naming GOOGLE_APPLICATION_CREDENTIALS and %q", err, tc.want)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("reading the credentials blocked")
			}
		})
	}
}
