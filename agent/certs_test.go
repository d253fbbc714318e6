//go:build linux

package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"
)

// fakeTargets maps host keys onto VMs.
type fakeTargets map[string]Target

func (f fakeTargets) ByHostKey(_ context.Context, hk ssh.PublicKey) (Target, bool, error) {
	t, ok := f[string(hk.Marshal())]
	return t, ok, nil
}

// fakeCertifier is a CA that signs with the agent's clock and counts calls.
type fakeCertifier struct {
	ca       ssh.Signer
	now      func() time.Time
	lifetime time.Duration
	delay    time.Duration
	calls    atomic.Int32
	err      error
}

func (f *fakeCertifier) Certify(ctx context.Context, t Target, line string) (*ssh.Certificate, error) {
	f.calls.Add(1)
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.err != nil {
		return nil, f.err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, err
	}
	now := f.now()
	c := &ssh.Certificate{Key: pub, CertType: ssh.UserCert, KeyId: "sa_1234567890", ValidPrincipals: []string{"sa_1234567890"},
		ValidAfter: uint64(now.Add(-30 * time.Second).Unix()), ValidBefore: uint64(now.Add(f.lifetime).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{"fingerprint@google.com=" + t.ID: ""}}}
	if err := c.SignCert(rand.Reader, f.ca); err != nil {
		return nil, err
	}
	return c, nil
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// certEnv is an agent with certificates on, serving on a real socket, and
// three VMs: "cert" requires certificates, "keys" does not, and "stranger"'s
// host key is unknown.
type certEnv struct {
	ta    *testAgent
	path  string
	ca    *fakeCertifier
	clk   *clock
	hosts map[string]ssh.Signer
}

func newCertEnv(t *testing.T, mode CertMode) *certEnv {
	t.Helper()
	clk := &clock{t: time.Now()}
	ca := &fakeCertifier{ca: newHostKey(t, "ed25519"), now: clk.now, lifetime: 5 * time.Minute}
	env := &certEnv{ca: ca, clk: clk, hosts: map[string]ssh.Signer{}}
	targets := fakeTargets{}
	for i, name := range []string{"cert", "keys", "stranger"} {
		env.hosts[name] = newHostKey(t, "ed25519")
		if name != "stranger" {
			targets[string(env.hosts[name].PublicKey().Marshal())] = Target{Project: "p", Zone: "z-a", Name: name,
				ID: string(rune('1' + i)), CertificateRequired: name == "cert"}
		}
	}
	env.ta = startTestAgent(t, Options{Now: clk.now, Certificates: CertOptions{Mode: mode, Targets: targets, Certifier: ca}})
	env.path = serve(t, env.ta.Agent)
	return env
}

// connect opens a connection bound as ssh binds it: each hop's host key in
// order, all but the last as forwarding hops (forwardedOnly makes the last
// one a forwarding hop too).
func (e *certEnv) connect(t *testing.T, forwardedOnly bool, hops ...string) sshagent.ExtendedAgent {
	t.Helper()
	c := client(t, e.path)
	for i, h := range hops {
		fwd := i < len(hops)-1 || forwardedOnly
		id := sid(byte(i+1), 32)
		if _, err := c.Extension(extSessionBind, bindRequest(t, e.hosts[h], id, id, fwd)); err != nil {
			t.Fatalf("bind %s: %v", h, err)
		}
	}
	return c
}

func formats(keys []*sshagent.Key) []string {
	var out []string
	for _, k := range keys {
		if _, err := ssh.ParsePublicKey(k.Blob); err != nil {
			out = append(out, "unparsable")
			continue
		}
		if strings.HasSuffix(k.Format, certSuffix) {
			out = append(out, "cert")
		} else {
			out = append(out, "key")
		}
	}
	return out
}

// TestCertIdentities checks what each kind of connection is offered and
// how many certificates that costs.
func TestCertIdentities(t *testing.T) {
	tests := []struct {
		name      string
		mode      CertMode
		before    []string // a direct connection to this host first
		hops      []string
		fwdOnly   bool
		want      []string
		wantCalls int32
	}{
		{name: "no session-bind (old client)", hops: nil, want: []string{"key"}},
		{name: "certificate-only VM", hops: []string{"cert"}, want: []string{"cert", "key"}, wantCalls: 1},
		{name: "VM that takes keys", hops: []string{"keys"}, want: []string{"key"}},
		{name: "unknown host key", hops: []string{"stranger"}, want: []string{"key"}},
		{name: "always: VM that takes keys", mode: CertAlways, hops: []string{"keys"}, want: []string{"cert", "key"}, wantCalls: 1},
		{name: "never", mode: CertNever, hops: []string{"cert"}, want: []string{"key"}},
		{name: "forwarded, nothing held", hops: []string{"keys", "cert"}, want: []string{"key"}},
		{name: "forwarded, held from a direct connection", before: []string{"cert"}, hops: []string{"keys", "cert"},
			want: []string{"cert", "key"}, wantCalls: 1},
		{name: "forwarding bind only", hops: []string{"cert"}, fwdOnly: true, want: []string{"key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newCertEnv(t, tt.mode)
			if tt.before != nil {
				if _, err := env.connect(t, false, tt.before...).List(); err != nil {
					t.Fatal(err)
				}
			}
			keys, err := env.connect(t, tt.fwdOnly, tt.hops...).List()
			if err != nil {
				t.Fatal(err)
			}
			if got := formats(keys); !equalStrings(got, tt.want) {
				t.Errorf("listed %v, want %v", got, tt.want)
			}
			if got := env.ca.calls.Load(); got != tt.wantCalls {
				t.Errorf("%d signing calls, want %d", got, tt.wantCalls)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
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

// TestCertSign signs with a listed certificate as ssh does: the request
// names the certificate, the signature is the certified key's and the log
// record names the certificate. Certificates the agent does not hold are
// refused.
func TestCertSign(t *testing.T) {
	env := newCertEnv(t, CertAuto)
	c := env.connect(t, false, "cert")
	keys, err := c.List()
	if err != nil || len(keys) != 2 {
		t.Fatalf("list: %v, %d keys", err, len(keys))
	}
	pub, err := ssh.ParsePublicKey(keys[0].Blob)
	if err != nil {
		t.Fatal(err)
	}
	cert := pub.(*ssh.Certificate)
	data := []byte("session data")
	sig, err := c.Sign(cert, data)
	if err != nil {
		t.Fatalf("sign with the certificate: %v", err)
	}
	if err := cert.Key.Verify(data, sig); err != nil {
		t.Fatalf("signature does not verify with the certified key: %v", err)
	}
	recs := env.ta.logs.find("signature")
	if len(recs) == 0 || recs[len(recs)-1].attrs["certificate.instance"] != "cert" {
		t.Fatalf("signature record does not name the certificate: %+v", recs)
	}
	if signed := env.ta.logs.find("certificate signed"); len(signed) != 1 || signed[0].attrs["instance"] != "cert" {
		t.Fatalf("certificate records: %+v", signed)
	}

	// A certificate of the same key that this agent did not obtain.
	other := *cert
	other.Serial++
	if err := other.SignCert(rand.Reader, env.ca.ca); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sign(&other, data); err == nil {
		t.Fatal("signed with a certificate the agent does not hold")
	}
}

// TestCertSharedAndRefreshed: concurrent connections to one VM share one
// signing call; the certificate is reused until shortly before it expires,
// then a new connection gets a fresh one; a rotated key is certified anew.
func TestCertSharedAndRefreshed(t *testing.T) {
	env := newCertEnv(t, CertAuto)
	env.ca.delay = 200 * time.Millisecond
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys, err := env.connect(t, false, "cert").List()
			if err == nil && len(keys) != 2 {
				err = errors.New("no certificate listed")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := env.ca.calls.Load(); n != 1 {
		t.Fatalf("20 concurrent connections made %d signing calls, want 1", n)
	}
	env.ca.delay = 0
	list := func() []*sshagent.Key {
		keys, err := env.connect(t, false, "cert").List()
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	first := list()[0].Blob
	env.clk.advance(4 * time.Minute) // validity 5m30s, refreshed 30s before the end
	if string(list()[0].Blob) != string(first) || env.ca.calls.Load() != 1 {
		t.Fatalf("certificate not reused within its life (%d calls)", env.ca.calls.Load())
	}
	env.clk.advance(31 * time.Second)
	if string(list()[0].Blob) == string(first) || env.ca.calls.Load() != 2 {
		t.Fatalf("certificate not renewed near its expiry (%d calls)", env.ca.calls.Load())
	}
}

// TestCertRefused: a refused signing leaves the plain key listed and a
// warning that says why.
func TestCertRefused(t *testing.T) {
	env := newCertEnv(t, CertAuto)
	env.ca.err = errors.New("permission denied: needs roles/compute.osLogin")
	keys, err := env.connect(t, false, "cert").List()
	if err != nil {
		t.Fatal(err)
	}
	if got := formats(keys); !equalStrings(got, []string{"key"}) {
		t.Fatalf("listed %v", got)
	}
	if recs := env.ta.logs.find("certificate refused"); len(recs) != 1 {
		t.Fatalf("no warning for the refusal: %+v", recs)
	}
}

// forgettingTargets records which VMs the agent told it to forget.
type forgettingTargets struct {
	fakeTargets
	mu     sync.Mutex
	forgot []string
}

func (f *forgettingTargets) Forget(t Target) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgot = append(f.forgot, t.Name)
}

// TestCertUnusedDropped: a connection that was listed a certificate and
// hangs up without any signature (ssh asked sshd about every identity and
// none was accepted: the VM refused the certificate) drops the
// certificate, warns once saying what to check, and makes the Targets
// re-read the VM; the next connection gets a new certificate. A
// connection that signed keeps it.
func TestCertUnusedDropped(t *testing.T) {
	env := newCertEnv(t, CertAuto)
	targets := &forgettingTargets{fakeTargets: fakeTargets{}}
	for _, name := range []string{"cert", "keys"} {
		hk := string(env.hosts[name].PublicKey().Marshal())
		targets.fakeTargets[hk] = Target{Project: "p", Zone: "z-a", Name: name, ID: name + "-id",
			ServiceAccount: "old@p.iam.gserviceaccount.com", CertificateRequired: name == "cert"}
	}
	env.ta.certs.opts.Targets = targets
	// session opens a bound connection to host, lists, signs with the
	// first identity if sign is set, and hangs up.
	session := func(host string, sign bool) []*sshagent.Key {
		t.Helper()
		nc := dial(t, env.path)
		c := sshagent.NewClient(nc)
		id := sid(1, 32)
		if _, err := c.Extension(extSessionBind, bindRequest(t, env.hosts[host], id, id, false)); err != nil {
			t.Fatal(err)
		}
		keys, err := c.List()
		if err != nil {
			t.Fatal(err)
		}
		if sign {
			if _, err := c.Sign(keys[0], []byte("session")); err != nil {
				t.Fatal(err)
			}
		}
		nc.Close()
		return keys
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	const warning = "the VM most likely refused the certificate"

	first := session("cert", true)
	again := session("cert", true)
	if string(first[0].Blob) != string(again[0].Blob) || env.ca.calls.Load() != 1 {
		t.Fatalf("a certificate that was used is not reused (%d calls)", env.ca.calls.Load())
	}
	session("keys", false) // no certificate listed: nothing to drop
	session("cert", false) // refused
	waitFor("the refusal warning", func() bool { return len(env.ta.logs.find(warning)) == 1 })
	rec := env.ta.logs.find(warning)[0]
	if rec.attrs["instance"] != "cert" || rec.attrs["service_account"] != "old@p.iam.gserviceaccount.com" {
		t.Errorf("refusal record: %+v", rec.attrs)
	}
	for _, want := range []string{"service account", "roles/compute.osLogin", "clocks", "next connection"} {
		if !strings.Contains(rec.msg, want) {
			t.Errorf("refusal message lacks %q: %s", want, rec.msg)
		}
	}
	targets.mu.Lock()
	forgot := append([]string(nil), targets.forgot...)
	targets.mu.Unlock()
	if !equalStrings(forgot, []string{"cert"}) {
		t.Errorf("targets told to forget %v, want [cert]", forgot)
	}
	next := session("cert", true)
	if string(next[0].Blob) == string(first[0].Blob) || env.ca.calls.Load() != 2 {
		t.Fatalf("after the refusal the next connection got no new certificate (%d calls)", env.ca.calls.Load())
	}
	if n := len(env.ta.logs.find(warning)); n != 1 {
		t.Errorf("%d refusal warnings, want 1", n)
	}
}

// clockedRegistrar is a fake registrar whose service clock runs ahead of
// the agent's by a fixed amount, as OS Login's Date header would show.
type clockedRegistrar struct {
	*fakeRegistrar
	local func() time.Time
	ahead time.Duration
}

func (r clockedRegistrar) ServerTime() (server, local time.Time, ok bool) {
	l := r.local()
	return l.Add(r.ahead), l, true
}

// TestCertFreshnessInServiceClock: with OS Login's clock 2 minutes ahead of
// this host's, a certificate (valid in OS Login's clock) is renewed when
// it nears its end there, not 2 minutes later by the host's clock, when
// VMs would already refuse it.
func TestCertFreshnessInServiceClock(t *testing.T) {
	const ahead = 2 * time.Minute
	clk := &clock{t: time.Now()}
	service := func() time.Time { return clk.now().Add(ahead) }
	ca := &fakeCertifier{ca: newHostKey(t, "ed25519"), now: service, lifetime: 5 * time.Minute}
	host := newHostKey(t, "ed25519")
	targets := fakeTargets{string(host.PublicKey().Marshal()): {Project: "p", Zone: "z-a", Name: "cert", ID: "1", CertificateRequired: true}}
	a, err := New(Options{Registrar: clockedRegistrar{newFakeRegistrar(), clk.now, ahead}, Now: clk.now,
		Logger: slog.New(newRecorder()), Certificates: CertOptions{Mode: CertAuto, Targets: targets, Certifier: ca}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	path := serve(t, a)
	list := func() []byte {
		c := client(t, path)
		id := sid(1, 32)
		if _, err := c.Extension(extSessionBind, bindRequest(t, host, id, id, false)); err != nil {
			t.Fatal(err)
		}
		keys, err := c.List()
		if err != nil || len(keys) != 2 {
			t.Fatalf("list: %v %v", keys, err)
		}
		return keys[0].Blob
	}
	first := list()
	// The certificate is valid for 5 minutes (and 30 s back) in OS Login's
	// clock and is offered until 30 s before its end.
	clk.advance(4 * time.Minute)
	if string(list()) != string(first) {
		t.Fatalf("renewed too early (%d calls)", ca.calls.Load())
	}
	// 29 s left in OS Login's clock; by the host's clock, 2m29s.
	clk.advance(31 * time.Second)
	if string(list()) == string(first) || ca.calls.Load() != 2 {
		t.Fatalf("certificate with 29 s left in OS Login's clock still offered (%d signing calls); the host's clock is 2 minutes behind", ca.calls.Load())
	}
}
