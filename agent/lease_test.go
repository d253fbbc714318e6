//go:build linux

package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/oslogin-agent/oslogin-agent/signer"
)

func TestNewValidation(t *testing.T) {
	reg := newFakeRegistrar()
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"no registrar", Options{}, "Registrar is required"},
		{"ttl too short", Options{Registrar: reg, TTL: 500 * time.Millisecond}, "too short"},
		{"rotate below half ttl", Options{Registrar: reg, TTL: 10 * time.Minute, Rotate: 4 * time.Minute}, "shorter than half the TTL"},
		{"propagation too long", Options{Registrar: reg, TTL: 10 * time.Minute, Propagation: 5 * time.Minute}, "propagation delay"},
		{"propagation negative", Options{Registrar: reg, Propagation: -time.Second}, "negative"},
		{"bad key type", Options{Registrar: reg, KeyType: signer.KeyType(99)}, "invalid key type"},
		{"comment with newline", Options{Registrar: reg, Comment: "a\nb"}, "non-printable"},
		{"comment too long", Options{Registrar: reg, Comment: strings.Repeat("x", 300)}, "limit is 256"},
		{"retry bounds", Options{Registrar: reg, RetryMin: time.Second, RetryMax: time.Millisecond}, "retry bounds"},
		{"short test durations", Options{Registrar: reg, TTL: 2 * time.Second, Rotate: time.Second, Propagation: 500 * time.Millisecond}, ""},
		{"minimum ttl", Options{Registrar: reg, TTL: MinTTL}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	a, err := New(Options{Registrar: newFakeRegistrar()})
	if err != nil {
		t.Fatal(err)
	}
	if a.keyType != signer.Ed25519 || a.ttl != DefaultTTL || a.rotate != DefaultRotate || a.propagation != DefaultPropagation {
		t.Errorf("defaults: key %v ttl %v rotate %v propagation %v", a.keyType, a.ttl, a.rotate, a.propagation)
	}
	if a.retryMin != time.Second || a.retryMax != 30*time.Second {
		t.Errorf("retry defaults %v..%v", a.retryMin, a.retryMax)
	}
	if a.retireMargin != time.Minute {
		t.Errorf("retire margin %v, want TTL/10", a.retireMargin)
	}
	// With a short TTL the default propagation shrinks to what fits.
	a, err = New(Options{Registrar: newFakeRegistrar(), TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if want := 4 * time.Second; a.propagation != want {
		t.Errorf("propagation for TTL 10s = %v, want %v", a.propagation, want)
	}
}

func TestStartRegistersBeforeReturning(t *testing.T) {
	now := time.Date(2026, 11, 22, 7, 0, 0, 0, time.UTC)
	ta := newTestAgent(t, Options{Now: func() time.Time { return now }, Comment: "oslogin-agent@build-1"})
	if got := ta.offered(now); len(got) != 0 {
		t.Fatalf("offered %d keys before Start", len(got))
	}
	if err := ta.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	calls := ta.reg.callsFor("", "")
	if len(calls) != 1 || calls[0].op != "Register" {
		t.Fatalf("registrar calls = %+v, want one Register", calls)
	}
	wantExpiry := now.Add(DefaultTTL)
	if !calls[0].expiry.Equal(wantExpiry) {
		t.Errorf("registered expiry %v, want now+TTL %v", calls[0].expiry, wantExpiry)
	}
	line := calls[0].line
	if !strings.HasPrefix(line, "ssh-ed25519 AAAA") || !strings.HasSuffix(line, " oslogin-agent@build-1") || strings.ContainsAny(line, "\r\n") {
		t.Errorf("registered line %q", line)
	}
	if exp, ok := ta.reg.registered()[line]; !ok || !exp.Equal(wantExpiry) {
		t.Errorf("registrar state %v", ta.reg.registered())
	}
	keys := ta.Keys()
	if len(keys) != 1 || keys[0].AuthorizedKey != line || !keys[0].Expiry.Equal(wantExpiry) || !keys[0].Registered.Equal(now) {
		t.Fatalf("Keys() = %+v", keys)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if keys[0].Fingerprint != ssh.FingerprintSHA256(pub) {
		t.Errorf("fingerprint %s does not match the registered line", keys[0].Fingerprint)
	}
	if got := ta.Username(); got != "sa_1234567890" {
		t.Errorf("Username() = %q", got)
	}
	if got := ta.offered(now); len(got) != 1 {
		t.Errorf("offered %d keys after Start", len(got))
	}
	if recs := ta.logs.find("key registered"); len(recs) != 1 || recs[0].attrs["username"] != "sa_1234567890" {
		t.Errorf("startup record %+v", recs)
	}
	if err := ta.Start(context.Background()); err == nil {
		t.Error("second Start succeeded")
	}
}

func TestStartFailureLeavesNothing(t *testing.T) {
	tests := []struct {
		name           string
		setup          func(*fakeRegistrar)
		wantErr        string
		wantUnderlying error
	}{
		{"registrar down", func(f *fakeRegistrar) { f.fail("Register", errUnavailable) }, "register key SHA256:", errUnavailable},
		{"stored but reply lost", func(f *fakeRegistrar) { f.fail("Register", errUnavailable); f.storeThenFail = true }, "register key", errUnavailable},
		{"no username", func(f *fakeRegistrar) { f.username = "" }, "no POSIX username", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ta := newTestAgent(t, Options{})
			tt.setup(ta.reg)
			var generated []*signer.Key
			ta.genKey = func(kt signer.KeyType) (*signer.Key, error) {
				k, err := signer.Generate(kt)
				generated = append(generated, k)
				return k, err
			}
			err := ta.Start(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Start error = %v, want %q", err, tt.wantErr)
			}
			if tt.wantUnderlying != nil && !errors.Is(err, tt.wantUnderlying) {
				t.Errorf("Start error %v does not wrap %v", err, tt.wantUnderlying)
			}
			if n := len(ta.reg.registered()); n != 0 {
				t.Errorf("%d keys left registered", n)
			}
			if len(ta.reg.callsFor("Revoke", "")) != 1 {
				t.Error("no revoke after the failed registration")
			}
			if len(generated) != 1 || !generated[0].Destroyed() {
				t.Error("key not destroyed after the failed registration")
			}
			if len(ta.Keys()) != 0 || len(ta.offered(time.Now())) != 0 {
				t.Error("agent holds a key after the failed Start")
			}
			if err := ta.Run(context.Background()); err == nil {
				t.Error("Run after a failed Start succeeded")
			}
		})
	}
}

func TestOfferedOrder(t *testing.T) {
	ta := newTestAgent(t, Options{TTL: 10 * time.Minute, Propagation: 30 * time.Second})
	t0 := time.Date(2026, 11, 22, 7, 0, 0, 0, time.UTC)
	mk := func(name string, registered time.Time, expiry time.Time) *leasedKey {
		k, err := signer.Generate(signer.Ed25519)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Destroy)
		lk := newLeasedKey(k, name)
		lk.registered, lk.expiry = registered, expiry
		return lk
	}
	// a was registered first; b replaced it at t0; c is newer still.
	a := mk("a", t0.Add(-time.Hour), t0.Add(6*time.Minute))
	b := mk("b", t0, t0.Add(10*time.Minute))
	c := mk("c", t0.Add(time.Minute), t0.Add(11*time.Minute))
	names := map[*signer.Key]string{a.key: "a", b.key: "b", c.key: "c"}

	tests := []struct {
		name string
		keys []*leasedKey
		now  time.Time
		want string
	}{
		{"none", nil, t0, ""},
		{"single", []*leasedKey{b}, t0.Add(time.Second), "b"},
		{"single expired", []*leasedKey{b}, t0.Add(10 * time.Minute), ""},
		{"new key propagating: previous first", []*leasedKey{a, b}, t0, "a,b"},
		{"end of propagation window", []*leasedKey{a, b}, t0.Add(30*time.Second - time.Nanosecond), "a,b"},
		{"propagated: newest first", []*leasedKey{a, b}, t0.Add(30 * time.Second), "b,a"},
		{"previous expired", []*leasedKey{a, b}, t0.Add(6 * time.Minute), "b"},
		{"current expired during outage", []*leasedKey{a, b}, t0.Add(10*time.Minute + time.Second), ""},
		{"never more than two", []*leasedKey{a, b, c}, t0.Add(2 * time.Minute), "c,b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ta.mu.Lock()
			ta.keys = tt.keys
			ta.mu.Unlock()
			var got []string
			for _, o := range ta.offered(tt.now) {
				got = append(got, names[o.key])
			}
			if s := strings.Join(got, ","); s != tt.want {
				t.Errorf("offered = %q, want %q", s, tt.want)
			}
			// Same input, same answer: the order is stable.
			if again := ta.offered(tt.now); len(again) != len(got) {
				t.Error("order not stable")
			}
		})
	}
	ta.mu.Lock()
	ta.keys = nil
	ta.mu.Unlock()
}

func TestRenewAtHalfTTL(t *testing.T) {
	const ttl = 2 * time.Second
	ta := startTestAgent(t, Options{TTL: ttl, Rotate: time.Hour})
	start := ta.Keys()[0].Registered
	line := ta.Keys()[0].AuthorizedKey
	runLease(t, ta.Agent)
	waitFor(t, 4*time.Second, "two renewals", func() bool { return len(ta.reg.callsFor("Extend", line)) >= 2 })
	ext := ta.reg.callsFor("Extend", line)
	for i, c := range ext[:2] {
		want := start.Add(time.Duration(i+1) * ttl / 2)
		if d := c.at.Sub(want); d < -50*time.Millisecond || d > 400*time.Millisecond {
			t.Errorf("renewal %d at %v, want about %v (off by %v)", i+1, c.at, want, d)
		}
		if d := c.expiry.Sub(c.at.Add(ttl)); d < -100*time.Millisecond || d > 100*time.Millisecond {
			t.Errorf("renewal %d sets expiry %v, want call time + TTL (%v)", i+1, c.expiry, c.at.Add(ttl))
		}
		if c.err != nil {
			t.Errorf("renewal %d failed: %v", i+1, c.err)
		}
	}
	if got := ta.Keys()[0].Expiry; got.Before(ext[1].expiry) {
		t.Errorf("agent expiry %v not updated to %v", got, ext[1].expiry)
	}
	if n := len(ta.reg.callsFor("Register", "")); n != 1 {
		t.Errorf("%d Register calls; renewal must extend, not re-register", n)
	}
}

// TestNoRenewalAtRotation: when a rotation and a renewal fall due together
// (TTL 2s, Rotate 1s), the key about to be replaced is not renewed: it
// outlives the new key's propagation window anyway.
func TestNoRenewalAtRotation(t *testing.T) {
	ta := startTestAgent(t, Options{TTL: 2 * time.Second, Rotate: time.Second, Propagation: 200 * time.Millisecond})
	first := ta.Keys()[0].AuthorizedKey
	runLease(t, ta.Agent)
	waitFor(t, 4*time.Second, "a rotation", func() bool { return len(ta.reg.callsFor("Register", "")) >= 2 })
	if ext := ta.reg.callsFor("Extend", first); len(ext) != 0 {
		t.Fatalf("the key being rotated out was renewed %d times", len(ext))
	}
	if got := ta.Keys(); len(got) != 2 || got[1].AuthorizedKey != first {
		t.Fatalf("after the rotation the agent holds %d keys, want the new one and the old one", len(got))
	}
}

// TestRotation follows one rotation on the wall clock. With TTL 2s,
// Rotate 2.5s and Propagation 0.5s: key A is registered at t0 and renewed
// at t0+1 and t0+2 (expiry t0+4); key B is registered at t0+2.5; A is
// listed first until t0+3, B after that; A is revoked at t0+3.8, TTL/10
// before its expiry, and destroyed.
func TestRotation(t *testing.T) {
	const (
		ttl         = 2 * time.Second
		rotate      = 2500 * time.Millisecond
		propagation = 500 * time.Millisecond
		tolerance   = 100 * time.Millisecond
	)
	ta := newTestAgent(t, Options{TTL: ttl, Rotate: rotate, Propagation: propagation})
	var mu sync.Mutex
	var generated []*signer.Key
	ta.genKey = func(kt signer.KeyType) (*signer.Key, error) {
		k, err := signer.Generate(kt)
		mu.Lock()
		generated = append(generated, k)
		mu.Unlock()
		return k, err
	}
	if err := ta.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	keyA := ta.Keys()[0]
	path := serve(t, ta.Agent)
	c := client(t, path)
	runLease(t, ta.Agent)

	type sample struct {
		before, after time.Time
		fps           []string
	}
	var samples []sample
	deadline := keyA.Registered.Add(4200 * time.Millisecond)
	for time.Now().Before(deadline) {
		s := sample{before: time.Now()}
		keys, err := c.List()
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		s.after = time.Now()
		for _, k := range keys {
			s.fps = append(s.fps, ssh.FingerprintSHA256(k))
		}
		samples = append(samples, s)
		time.Sleep(20 * time.Millisecond)
	}

	infos := ta.Keys()
	if len(infos) != 1 || infos[0].Fingerprint == keyA.Fingerprint {
		t.Fatalf("after the rotation Keys() = %+v, want only the new key", infos)
	}
	keyB := infos[0]
	revokes := ta.reg.callsFor("Revoke", keyA.AuthorizedKey)
	if len(revokes) != 1 {
		t.Fatalf("key A revoked %d times, want once", len(revokes))
	}
	aExpiry := ta.reg.callsFor("Extend", keyA.AuthorizedKey)
	lastExpiry := aExpiry[len(aExpiry)-1].expiry
	if at := revokes[0].at; !at.Before(lastExpiry) || at.Before(lastExpiry.Add(-ttl/10-tolerance)) {
		t.Errorf("key A revoked at %v; want shortly before its expiry %v (margin %v)", at, lastExpiry, ttl/10)
	}
	// The new key was registered before it was offered.
	regB := ta.reg.callsFor("Register", keyB.AuthorizedKey)
	if len(regB) != 1 {
		t.Fatalf("key B registered %d times", len(regB))
	}
	if d := regB[0].at.Sub(keyA.Registered.Add(rotate)); d < -tolerance || d > 3*tolerance {
		t.Errorf("rotation at %v, %v off schedule", regB[0].at, d)
	}

	sawBoth := map[string]bool{}
	for _, s := range samples {
		if len(s.fps) > 2 {
			t.Fatalf("offered %d keys", len(s.fps))
		}
		switch {
		case s.after.Before(regB[0].at):
			if len(s.fps) != 1 || s.fps[0] != keyA.Fingerprint {
				t.Errorf("before rotation offered %v", s.fps)
			}
		case s.before.After(keyB.Registered) && s.after.Before(keyB.Registered.Add(propagation-tolerance)):
			if len(s.fps) != 2 || s.fps[0] != keyA.Fingerprint || s.fps[1] != keyB.Fingerprint {
				t.Errorf("during propagation offered %v, want A then B", s.fps)
			}
			sawBoth["A first"] = true
		case s.before.After(keyB.Registered.Add(propagation+tolerance)) && s.after.Before(revokes[0].at.Add(-ttl/10)):
			if len(s.fps) != 2 || s.fps[0] != keyB.Fingerprint || s.fps[1] != keyA.Fingerprint {
				t.Errorf("after propagation offered %v, want B then A", s.fps)
			}
			sawBoth["B first"] = true
		case s.before.After(revokes[0].at.Add(tolerance)):
			if len(s.fps) != 1 || s.fps[0] != keyB.Fingerprint {
				t.Errorf("after retiring A offered %v", s.fps)
			}
			sawBoth["B only"] = true
		}
	}
	for _, phase := range []string{"A first", "B first", "B only"} {
		if !sawBoth[phase] {
			t.Errorf("no sample in phase %q", phase)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	if len(generated) != 2 || !generated[0].Destroyed() || generated[1].Destroyed() {
		t.Errorf("want the retired key destroyed and the new one alive")
	}
	// Signing with the retired key fails, with the new one works.
	pubA, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(keyA.AuthorizedKey))
	if _, err := c.Sign(pubA, []byte("x")); err == nil {
		t.Error("signed with the retired key")
	}
	pubB, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(keyB.AuthorizedKey))
	sig, err := c.Sign(pubB, []byte("x"))
	if err != nil {
		t.Fatalf("Sign with the new key: %v", err)
	}
	if err := pubB.Verify([]byte("x"), sig); err != nil {
		t.Error(err)
	}
	if len(ta.logs.find("key rotated")) != 1 || len(ta.logs.find("key revoked")) != 1 {
		t.Error("missing rotation or revocation log record")
	}
}

func TestRegistrarOutage(t *testing.T) {
	const ttl = 2 * time.Second
	ta := startTestAgent(t, Options{TTL: ttl, Rotate: time.Hour, RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	info := ta.Keys()[0]
	path := serve(t, ta.Agent)
	c := client(t, path)
	ta.reg.fail("", errUnavailable)
	runLease(t, ta.Agent)

	// Until the registration expires the key stays offered and usable.
	for time.Now().Before(info.Expiry.Add(-100 * time.Millisecond)) {
		keys, err := c.List()
		if err != nil || len(keys) != 1 {
			t.Fatalf("during the outage List = %v, %v", keys, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if keys, _ := c.List(); len(keys) != 0 {
		t.Errorf("expired key still offered")
	}
	pub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(info.AuthorizedKey))
	if _, err := c.Sign(pub, []byte("x")); err == nil {
		t.Error("signed with an expired registration")
	}
	waitFor(t, time.Second, "an error record for the expired key", func() bool {
		return len(ta.logs.find("key registration expired")) > 0
	})
	attempts := ta.reg.callsFor("", info.AuthorizedKey)[1:] // after the initial Register
	if len(attempts) < 3 || len(attempts) > 40 {
		t.Errorf("%d renewal attempts in the outage; want retries with backoff", len(attempts))
	}
	for i, c := range attempts {
		if c.err == nil {
			t.Errorf("attempt %d succeeded during the outage", i)
		}
		if c.op != "Extend" {
			t.Errorf("retry %d used %s; the same key is never imported again (an admin may have deleted it), only extended", i, c.op)
		}
	}
	if len(ta.logs.find("cannot renew key registration")) == 0 {
		t.Error("no warning while the key was still valid")
	}
	if recs := ta.logs.find("key registration expired"); recs[0].level != slog.LevelError {
		t.Errorf("expired key logged at %v, want ERROR", recs[0].level)
	}

	ta.reg.fail("", nil)
	waitFor(t, 2*time.Second, "recovery", func() bool {
		keys, err := c.List()
		return err == nil && len(keys) == 1
	})
	exp, ok := ta.reg.registered()[info.AuthorizedKey]
	if !ok || exp.Before(time.Now().Add(ttl/2)) {
		t.Errorf("after recovery the registration expires at %v", exp)
	}
	if _, err := c.Sign(pub, []byte("x")); err != nil {
		t.Errorf("Sign after recovery: %v", err)
	}
	if recs := ta.logs.find("key renewed"); len(recs) == 0 || recs[len(recs)-1].attrs["recovered"] != true {
		t.Error("recovery not logged")
	}
}

func TestRotationRetriesWithSameKey(t *testing.T) {
	ta := startTestAgent(t, Options{TTL: 2 * time.Second, Rotate: time.Second, Propagation: 500 * time.Millisecond,
		RetryMin: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	first := ta.Keys()[0]
	ta.reg.fail("Register", errUnavailable)
	runLease(t, ta.Agent)
	waitFor(t, 3*time.Second, "failed rotations", func() bool { return len(ta.reg.callsFor("Register", "")) >= 4 })
	regs := ta.reg.callsFor("Register", "")[1:]
	for _, r := range regs {
		if r.line == first.AuthorizedKey {
			t.Fatal("rotation re-registered the current key")
		}
		if r.line != regs[0].line {
			t.Fatal("each rotation attempt generated a new key; the pending key must be reused")
		}
	}
	// The current key is still renewed and offered.
	waitFor(t, 2*time.Second, "renewal during failed rotation", func() bool {
		return len(ta.reg.callsFor("Extend", first.AuthorizedKey)) >= 1
	})
	if got := ta.offered(time.Now()); len(got) != 1 || !bytes.Equal(got[0].blob, ta.current().blob) {
		t.Errorf("offered %d keys during failed rotation", len(got))
	}
	ta.reg.fail("Register", nil)
	waitFor(t, 2*time.Second, "rotation after recovery", func() bool {
		k := ta.Keys()
		return len(k) == 2 && k[0].AuthorizedKey == regs[0].line
	})
}

func TestCloseRevokesAll(t *testing.T) {
	ta := startTestAgent(t, Options{TTL: 2 * time.Second, Rotate: time.Second, Propagation: 500 * time.Millisecond})
	var generated []*signer.Key
	var mu sync.Mutex
	ta.genKey = func(kt signer.KeyType) (*signer.Key, error) {
		k, err := signer.Generate(kt)
		mu.Lock()
		generated = append(generated, k)
		mu.Unlock()
		return k, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- ta.Run(ctx) }()
	waitFor(t, 3*time.Second, "a rotation", func() bool { return len(ta.Keys()) == 2 })
	lines := []string{ta.Keys()[0].AuthorizedKey, ta.Keys()[1].AuthorizedKey}

	closeCtx, closeCancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer closeCancel()
	if err := ta.Close(closeCtx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-runDone:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if n := len(ta.reg.registered()); n != 0 {
		t.Errorf("%d keys still registered after Close", n)
	}
	for _, l := range lines {
		if len(ta.reg.callsFor("Revoke", l)) != 1 {
			t.Errorf("key %s not revoked exactly once", l)
		}
	}
	mu.Lock()
	for _, k := range generated {
		if !k.Destroyed() {
			t.Errorf("key %v not destroyed", k)
		}
	}
	mu.Unlock()
	if len(ta.Keys()) != 0 || len(ta.offered(time.Now())) != 0 {
		t.Error("keys still held after Close")
	}
	if err := ta.Close(closeCtx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := ta.Start(context.Background()); err == nil {
		t.Error("Start after Close succeeded")
	}
	if err := ta.Run(context.Background()); err == nil {
		t.Error("Run after Close succeeded")
	}
}

// TestCloseCancelsHungCall checks that Close does not wait for a Registrar
// call of the lease loop that never returns.
func TestCloseCancelsHungCall(t *testing.T) {
	ta := startTestAgent(t, Options{TTL: 2 * time.Second})
	ta.callTimeout = time.Minute
	ta.reg.mu.Lock()
	ta.reg.hang = "Extend"
	ta.reg.mu.Unlock()
	runLease(t, ta.Agent)
	waitFor(t, 3*time.Second, "a hung renewal", func() bool { return ta.reg.hungCalls() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := ta.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v behind a hung Registrar call", d)
	}
	if n := len(ta.reg.registered()); n != 0 {
		t.Errorf("%d keys left registered", n)
	}
}

func TestCloseRetriesAndReports(t *testing.T) {
	ta := startTestAgent(t, Options{TTL: 2 * time.Second, RetryMin: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	info := ta.Keys()[0]
	ta.reg.fail("Revoke", errUnavailable)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := ta.Close(ctx)
	if err == nil || !errors.Is(err, errUnavailable) || !strings.Contains(err.Error(), info.Fingerprint) {
		t.Fatalf("Close error = %v, want the revoke failure naming the key", err)
	}
	if n := len(ta.reg.callsFor("Revoke", "")); n < 3 {
		t.Errorf("%d revoke attempts; want retries within the deadline", n)
	}
	ta.reg.fail("Revoke", nil)
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if err := ta.Close(ctx2); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := len(ta.reg.registered()); n != 0 {
		t.Errorf("%d keys registered after the second Close", n)
	}
}

func TestCloseRevokesUnconfirmedKey(t *testing.T) {
	ta := startTestAgent(t, Options{TTL: 2 * time.Second, Rotate: time.Second, RetryMin: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	ta.reg.fail("Register", errUnavailable)
	ta.reg.mu.Lock()
	ta.reg.storeThenFail = true
	ta.reg.mu.Unlock()
	runLease(t, ta.Agent)
	waitFor(t, 3*time.Second, "a failed rotation", func() bool { return len(ta.reg.callsFor("Register", "")) >= 2 })
	if n := len(ta.reg.registered()); n != 2 {
		t.Fatalf("%d keys stored by the fake, want 2", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := ta.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(ta.reg.registered()); n != 0 {
		t.Errorf("%d keys left registered; the key whose registration reply was lost must be revoked too", n)
	}
}

func TestRunPreconditions(t *testing.T) {
	ta := newTestAgent(t, Options{})
	if err := ta.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "before Start") {
		t.Errorf("Run before Start: %v", err)
	}
	if err := ta.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	runLease(t, ta.Agent)
	waitFor(t, time.Second, "Run to start", func() bool {
		ta.lease.mu.Lock()
		defer ta.lease.mu.Unlock()
		return ta.lease.running
	})
	if err := ta.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	now := time.Now()
	var prevCap time.Duration
	for i := range 8 {
		d := b.fail(now)
		capD := min(100*time.Millisecond<<i, time.Second)
		if d < capD/2 || d > capD {
			t.Errorf("failure %d: delay %v outside [%v, %v]", i+1, d, capD/2, capD)
		}
		if capD < prevCap {
			t.Error("cap decreased")
		}
		prevCap = capD
		if b.ready(now) || !b.ready(now.Add(d)) {
			t.Errorf("failure %d: ready() inconsistent with the delay", i+1)
		}
	}
	b.reset()
	if b.failures != 0 || !b.ready(now) {
		t.Error("reset did not clear the backoff")
	}
}

// TestDeletedKeyReplaced: someone deletes the agent's key from the
// profile (an admin revoking it). At the next renewal the agent logs it
// loudly and switches to a fresh key; it never imports the deleted key
// again (before, the failed Extend was followed by a silent re-import).
// ssh-add sees the new key.
func TestDeletedKeyReplaced(t *testing.T) {
	const ttl = 2 * time.Second
	ta := startTestAgent(t, Options{TTL: ttl, Rotate: time.Hour, RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	old := ta.Keys()[0]
	path := serve(t, ta.Agent)
	// The admin deletes the key.
	if err := ta.reg.Revoke(context.Background(), old.AuthorizedKey); err != nil {
		t.Fatal(err)
	}
	runLease(t, ta.Agent)
	waitFor(t, 10*time.Second, "a fresh key", func() bool {
		keys := ta.Keys()
		return len(keys) == 1 && keys[0].Fingerprint != old.Fingerprint
	})
	fresh := ta.Keys()[0]
	if _, ok := ta.reg.registered()[fresh.AuthorizedKey]; !ok {
		t.Error("the fresh key is not registered")
	}
	if _, ok := ta.reg.registered()[old.AuthorizedKey]; ok {
		t.Error("the deleted key was registered again")
	}
	if n := len(ta.reg.callsFor("Register", old.AuthorizedKey)); n != 1 {
		t.Errorf("the deleted key was imported %d times, want only the first", n)
	}
	recs := ta.logs.find("deleted from the login profile by someone else")
	if len(recs) != 1 || recs[0].level != slog.LevelError || recs[0].attrs["fingerprint"] != old.Fingerprint {
		t.Errorf("records %+v, want one error naming the deleted key", recs)
	}
	out, err := openSSH(t, path, nil, nil, "ssh-add", "-l")
	if err != nil || !strings.Contains(out, fresh.Fingerprint) || strings.Contains(out, old.Fingerprint) {
		t.Errorf("ssh-add -l: %v\n%s\nwant only %s", err, out, fresh.Fingerprint)
	}
}
