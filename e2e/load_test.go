package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"
	"golang.org/x/oauth2"

	"github.com/oslogin-agent/oslogin-agent/agent"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/oslogin"
)

// keyLife is what the emulator's own state says about one key over time.
type keyLife struct {
	registered time.Time // a moment the key was certainly stored (before its import was answered)
	deleted    time.Time // the start of the request that removed it; zero while stored
	// expiries are lower bounds of the key's stored expiry: at time at,
	// the expiry was exp (it only ever moves forward).
	expiries []struct{ at, exp time.Time }
}

// expiryAt is the stored expiry at t as far as the observations show: the
// last one made at or before t. The second result is false if there is none.
func (l *keyLife) expiryAt(t time.Time) (time.Time, bool) {
	i := sort.Search(len(l.expiries), func(i int) bool { return l.expiries[i].at.After(t) })
	if i == 0 {
		return time.Time{}, false
	}
	return l.expiries[i-1].exp, true
}

// keyTimeline watches every OS Login write the emulator serves and records,
// from the emulator's stored state right before the request is handled and
// right before its answer leaves, when each key was stored, until when it
// was valid, and when it was deleted. The agent learns of a registration
// only after the answer, so "registered" is never later than the agent
// could have offered the key; "deleted" is never earlier than the key was
// really gone.
type keyTimeline struct {
	emu   *emulator.Emulator
	email string
	mu    sync.Mutex
	keys  map[string]*keyLife // by public key blob
	order []string            // blobs in registration order
}

func newKeyTimeline(emu *emulator.Emulator, email string) *keyTimeline {
	return &keyTimeline{emu: emu, email: email, keys: map[string]*keyLife{}}
}

// snapshot is the stored keys by blob, with their expiries.
func (tl *keyTimeline) snapshot() map[string]time.Time {
	m := map[string]time.Time{}
	for _, k := range tl.emu.Keys(tl.email) {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.Key))
		if err != nil {
			continue
		}
		m[string(pub.Marshal())] = k.Expiry
	}
	return m
}

func (tl *keyTimeline) observe(before, after map[string]time.Time, start, answered time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for blob, exp := range after {
		l := tl.keys[blob]
		if l == nil {
			l = &keyLife{registered: answered}
			tl.keys[blob] = l
			tl.order = append(tl.order, blob)
		}
		if exp.IsZero() {
			exp = time.Unix(1<<40, 0) // never expires
		}
		if prev, ok := before[blob]; ok && !prev.IsZero() {
			l.expiries = append(l.expiries, struct{ at, exp time.Time }{start, prev})
		}
		l.expiries = append(l.expiries, struct{ at, exp time.Time }{answered, exp})
	}
	for blob := range before {
		if _, ok := after[blob]; !ok {
			if l := tl.keys[blob]; l != nil && l.deleted.IsZero() {
				l.deleted = start
			}
		}
	}
}

// handler wraps the emulator: writes to OS Login are observed.
func (tl *keyTimeline) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/users/") || r.Method == http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		before := tl.snapshot()
		ow := &observingWriter{ResponseWriter: w, answer: func() {
			tl.observe(before, tl.snapshot(), start, time.Now())
		}}
		next.ServeHTTP(ow, r)
		ow.once.Do(ow.answer)
	})
}

// observingWriter runs answer once, before the first byte of the answer.
type observingWriter struct {
	http.ResponseWriter
	once   sync.Once
	answer func()
}

func (o *observingWriter) WriteHeader(code int) {
	o.once.Do(o.answer)
	o.ResponseWriter.WriteHeader(code)
}

func (o *observingWriter) Write(b []byte) (int, error) {
	o.once.Do(o.answer)
	return o.ResponseWriter.Write(b)
}

func (o *observingWriter) Unwrap() http.ResponseWriter { return o.ResponseWriter }

// signed is one signature a client got: with which key, and the window
// from before it asked for the key list to after the signature arrived;
// listed is when the list that offered the key arrived.
type signed struct {
	blob               string
	start, listed, end time.Time
}

// quietSignatures drops the per-signature records (thousands per second
// here) and keeps the lease's.
type quietSignatures struct{ slog.Handler }

func (q quietSignatures) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "signature" {
		return nil
	}
	return q.Handler.Handle(ctx, r)
}

func (q quietSignatures) WithAttrs(as []slog.Attr) slog.Handler {
	return quietSignatures{q.Handler.WithAttrs(as)}
}

func (q quietSignatures) WithGroup(name string) slog.Handler {
	return quietSignatures{q.Handler.WithGroup(name)}
}

// TestRotationUnderLoad: 64 connections sign continuously while the agent,
// with the real OS Login client against the emulator, renews and rotates
// its key more than 20 times. Not one request may fail, and every signature
// must be made with a key that, by the emulator's own state, was registered
// and unexpired at some moment of the request (in fact throughout it).
func TestRotationUnderLoad(t *testing.T) {
	cfg := emulator.DefaultConfig()
	emu, err := emulator.New(emulator.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	email := cfg.Accounts[0].Email
	tl := newKeyTimeline(emu, email)
	srv := httptest.NewServer(tl.handler(emu.Handler()))
	t.Cleanup(func() { emu.Close(); srv.Close() })

	tok, err := emu.MintToken(email)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	reg, err := oslogin.New(ctx, oslogin.Options{
		Account: email, Project: cfg.ProjectID, Endpoint: srv.URL,
		TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok}),
		Backoff:     oslogin.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	const (
		ttl       = 2 * time.Second
		rotate    = time.Second
		rotations = 20
		clients   = 64
	)
	a, err := agent.New(agent.Options{
		Registrar: reg, TTL: ttl, Rotate: rotate, Propagation: 300 * time.Millisecond,
		Comment: "load@test",
		Logger:  slog.New(quietSignatures{slog.NewTextHandler(&logs, nil)}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := agent.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bg.Go(func() {
		if err := a.Serve(runCtx, ln); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	bg.Go(func() {
		if err := a.Run(runCtx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	defer func() {
		stop()
		bg.Wait()
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := a.Close(cctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if n := len(emu.Keys(email)); n != 0 {
			t.Errorf("%d keys left at OS Login after Close", n)
		}
	}()

	// The load: each client lists the keys and signs with the first one,
	// as ssh does, back to back, on its own connection.
	var (
		done     atomic.Bool
		failures atomic.Int64
		mu       sync.Mutex
		failMsgs []string
		results  = make([][]signed, clients)
		wg       sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		failures.Add(1)
		mu.Lock()
		defer mu.Unlock()
		if len(failMsgs) < 20 {
			failMsgs = append(failMsgs, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
		}
	}
	for i := range clients {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := sshagent.NewClient(conn)
		data := []byte(fmt.Sprintf("client %d session data", i))
		wg.Go(func() {
			for !done.Load() {
				start := time.Now()
				keys, err := c.List()
				listed := time.Now()
				if err != nil || len(keys) == 0 {
					fail("client %d: list: %d keys, %v", i, len(keys), err)
					continue
				}
				pub, err := ssh.ParsePublicKey(keys[0].Blob)
				if err != nil {
					fail("client %d: listed key: %v", i, err)
					continue
				}
				sig, err := c.Sign(pub, data)
				end := time.Now()
				if err != nil {
					fail("client %d: sign with %s: %v", i, ssh.FingerprintSHA256(pub), err)
					continue
				}
				if err := pub.Verify(data, sig); err != nil {
					fail("client %d: signature does not verify: %v", i, err)
					continue
				}
				results[i] = append(results[i], signed{blob: string(keys[0].Blob), start: start, listed: listed, end: end})
			}
		})
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		tl.mu.Lock()
		n := len(tl.keys)
		tl.mu.Unlock()
		if n > rotations {
			// One more interval, so the last rotation's key is used too.
			time.Sleep(rotate)
			break
		}
		if time.Now().After(deadline) {
			done.Store(true)
			wg.Wait()
			t.Fatalf("only %d keys registered in 90s; want %d rotations", n, rotations)
		}
		time.Sleep(50 * time.Millisecond)
	}
	done.Store(true)
	wg.Wait()

	if n := failures.Load(); n > 0 {
		t.Fatalf("%d requests failed across rotations; first ones:\n%s", n, strings.Join(failMsgs, "\n"))
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	total := 0
	used := map[string]int{}
	for _, rs := range results {
		for _, r := range rs {
			total++
			used[r.blob]++
			l := tl.keys[r.blob]
			fp := fingerprint(r.blob) // formats lazily, for failures only
			switch {
			case l == nil:
				t.Fatalf("signature with %s, which the emulator never stored", fp)
			case l.registered.After(r.listed):
				t.Fatalf("%s was offered at %s, before OS Login answered its registration (%s)",
					fp, r.listed.Format(time.StampMicro), l.registered.Format(time.StampMicro))
			case !l.deleted.IsZero() && !l.deleted.After(r.start):
				t.Fatalf("signature with %s requested at %s, after the key was deleted (%s)",
					fp, r.start.Format(time.StampMicro), l.deleted.Format(time.StampMicro))
			}
			from := r.start
			if l.registered.After(from) {
				from = l.registered
			}
			exp, ok := l.expiryAt(from)
			if !ok || !exp.After(r.end) {
				t.Fatalf("signature with %s in [%s, %s]: the key's stored expiry then was %s",
					fp, r.start.Format(time.StampMicro), r.end.Format(time.StampMicro), exp.Format(time.StampMicro))
			}
		}
	}
	t.Logf("%d signatures by %d clients with %d of %d registered keys; %d rotations; calls %v",
		total, clients, len(used), len(tl.order), len(tl.order)-1, emu.Calls())
	if len(used) < rotations {
		t.Fatalf("the clients used only %d keys across %d rotations; the load did not follow the rotations", len(used), len(tl.order)-1)
	}
	if total < 20*clients {
		t.Fatalf("only %d signatures; the test did not load the agent", total)
	}
}

// fingerprint prints a key blob as its SHA256 fingerprint.
type fingerprint string

func (f fingerprint) String() string {
	pub, err := ssh.ParsePublicKey([]byte(f))
	if err != nil {
		return fmt.Sprintf("<unparsable key %x>", string(f))
	}
	return ssh.FingerprintSHA256(pub)
}
