//go:build linux

package agent

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
	"github.com/oslogin-agent/oslogin-agent/oslogin"
)

// stepClock is a clock that moves only when told; the agent, its OS Login
// client and the emulator all read it, the emulator with its own offset.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestOSLoginClockAhead runs the lease against the emulator whose clock is
// ahead of the agent's host, and checks from the VM's side (the guest's
// authorized-keys lookup, filtering by OS Login's clock) that the key the
// agent offers first is accepted throughout, and that a key that arrived
// already expired is never reported renewed.
func TestOSLoginClockAhead(t *testing.T) {
	const ttl = 20 * time.Second
	for _, ahead := range []time.Duration{15 * time.Second, 25 * time.Second} {
		t.Run(fmt.Sprintf("ahead %v", ahead), func(t *testing.T) {
			ta, clk, srv := startAgainstEmulator(t, ttl, ahead)
			emu := srv.Emulator
			first := ta.Keys()[0].Fingerprint
			ctx := context.Background()
			for i := 0; i < 240; i++ { // two minutes, two rotations
				if i > 0 {
					if _, ok := ta.step(ctx); !ok {
						t.Fatal("agent closed")
					}
				}
				offers := ta.offered(clk.Now())
				if len(offers) == 0 {
					t.Fatalf("at +%v the agent offers no key", time.Duration(i)*500*time.Millisecond)
				}
				keys, err := emulator.AuthorizedKeys(ctx, emulator.AuthorizedKeysOptions{MetadataHost: srv.Host, Now: emu.Now}, ta.Username())
				if err != nil {
					t.Fatal(err)
				}
				want := authorizedLine(offers[0].key.PublicKey(), "")
				if !slices.ContainsFunc(keys, func(k string) bool { return k == want || len(k) > len(want) && k[:len(want)+1] == want+" " }) {
					t.Fatalf("at +%v (OS Login time %v) the VM does not accept the key the agent offers first, %s (expiry by the agent %v); it serves %d keys",
						time.Duration(i)*500*time.Millisecond, emu.Now().UTC(), offers[0].key.Fingerprint(), offers[0].expiry.UTC(), len(keys))
				}
				clk.advance(500 * time.Millisecond)
			}
			warns := ta.logs.find("clock differs from OS Login's")
			if len(warns) != 1 || warns[0].level != slog.LevelWarn {
				t.Errorf("clock difference warnings: %+v, want exactly one WARN", warns)
			}
			// Whatever the agent logged renewed was valid at OS Login then.
			for _, r := range ta.logs.find("key renewed") {
				if r.attrs["oslogin_expiry"] == nil {
					t.Errorf("renewal logged without the expiry in OS Login's clock: %v", r.attrs)
				}
			}
			doa := ta.logs.find("arrived already expired")
			if ahead > ttl {
				if len(doa) != 1 || doa[0].level != slog.LevelError {
					t.Fatalf("records for the key that arrived expired: %+v, want one ERROR", doa)
				}
				dead := doa[0].attrs["fingerprint"]
				if dead == first {
					t.Errorf("the agent kept the key that arrived expired, %s", dead)
				}
				for _, r := range ta.logs.find("key renewed") {
					if r.attrs["fingerprint"] == dead {
						t.Errorf("key %s arrived expired at OS Login but was logged renewed: %v", dead, r.attrs)
					}
				}
			} else if len(doa) != 0 {
				t.Errorf("keys reported dead on arrival with OS Login %v ahead and TTL %v: %+v", ahead, ttl, doa)
			}
		})
	}
}

// startAgainstEmulator starts an agent with the given TTL whose Registrar
// is an oslogin.Client talking to the emulator, whose clock is ahead of the
// agent's by ahead. All clocks move only with clk.advance and Emulator.Advance.
func startAgainstEmulator(t *testing.T, ttl, ahead time.Duration) (*testAgent, *stepClock, *emulatortest.Server) {
	t.Helper()
	clk := &stepClock{t: time.Date(2031, 3, 4, 5, 6, 7, 300e6, time.UTC)}
	cfg := emulator.DefaultConfig()
	cfg.PurgeDelay = -1 // like OS Login: expired keys linger, and can be patched
	srv := emulatortest.StartWithOptions(t, emulator.Options{Config: cfg, Clock: clk})
	emu := srv.Emulator
	emu.Advance(ahead)
	email := cfg.Accounts[0].Email
	tok, err := emu.MintToken(email, "https://www.googleapis.com/auth/cloud-platform")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := oslogin.New(context.Background(), oslogin.Options{
		Account: email, Project: cfg.ProjectID, Endpoint: srv.URL,
		TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok}),
		Backoff:     oslogin.Backoff{Initial: time.Millisecond, Max: time.Millisecond, Attempts: 1},
		Now:         clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := newRecorder()
	a, err := New(Options{Registrar: reg, TTL: ttl, Rotate: 45 * time.Second,
		Propagation: 2 * time.Second, Now: clk.Now, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	if err := a.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return &testAgent{Agent: a, logs: logs}, clk, srv
}

// TestOSLoginClockJumps moves OS Login's clock more than a TTL ahead while
// the agent runs, so that the current key expires there without the agent
// knowing until its next call. The renewal that then comes too late must
// not be logged as a renewal; the agent replaces the key and the VM
// accepts the offered key again.
func TestOSLoginClockJumps(t *testing.T) {
	const ttl = 20 * time.Second
	ta, clk, srv := startAgainstEmulator(t, ttl, 0)
	emu := srv.Emulator
	ctx := context.Background()
	renewalsSeen := 0
	for i := 0; i < 80; i++ { // 40 s
		if i == 6 {
			emu.Advance(ttl + 10*time.Second)
		}
		if _, ok := ta.step(ctx); !ok {
			t.Fatal("agent closed")
		}
		renewed := ta.logs.find("key renewed")
		for _, r := range renewed[renewalsSeen:] {
			exp, _ := r.attrs["oslogin_expiry"].(time.Time)
			if !exp.After(emu.Now()) {
				t.Errorf("logged renewed with expiry %v, already past at OS Login (%v): %v", exp, emu.Now().UTC(), r.attrs)
			}
		}
		renewalsSeen = len(renewed)
		clk.advance(500 * time.Millisecond)
	}
	if doa := ta.logs.find("arrived already expired"); len(doa) != 1 || doa[0].level != slog.LevelError {
		t.Errorf("records for the renewal that came too late: %+v, want one ERROR", doa)
	}
	if len(ta.logs.find("clock differs from OS Login's")) != 1 {
		t.Error("clock jump not warned about exactly once")
	}
	offers := ta.offered(clk.Now())
	keys, err := emulator.AuthorizedKeys(ctx, emulator.AuthorizedKeysOptions{MetadataHost: srv.Host, Now: emu.Now}, ta.Username())
	if err != nil || len(offers) == 0 || !slices.Contains(keys, authorizedLine(offers[0].key.PublicKey(), "")) {
		t.Errorf("after the jump the VM serves %q (%v); the agent offers %d keys", keys, err, len(offers))
	}
}
