package iaprelay_test

import (
	"crypto/sha256"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

const (
	project  = "relay-project"
	zone     = "europe-west1-b"
	user     = "tunnel.user@example.com"
	outsider = "no.iam@example.com"
)

// fakeBackend is the unit-level stand-in for the emulator's state: tokens,
// instances and who may tunnel. Instances point at real loopback servers.
type fakeBackend struct {
	mu        sync.Mutex
	tokens    map[string]tokenInfo
	instances map[string]iaprelay.Target // by name
	allowed   map[string]bool
	seq       int
}

type tokenInfo struct {
	email  string
	expiry time.Time
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{tokens: map[string]tokenInfo{}, instances: map[string]iaprelay.Target{},
		allowed: map[string]bool{user: true}}
}

// token mints a token for email valid for ttl.
func (b *fakeBackend) token(email string, ttl time.Duration) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	tok := fmt.Sprintf("ya29.test-%d-%d", b.seq, rand.Int64())
	b.tokens[tok] = tokenInfo{email: email, expiry: time.Now().Add(ttl)}
	return tok
}

// addInstance registers name at addr ("127.0.0.1").
func (b *fakeBackend) addInstance(name, addr string, running bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.instances[name] = iaprelay.Target{Project: project, Zone: zone, Name: name,
		ID: fmt.Sprint(1000 + len(b.instances)), Addr: addr, Running: running}
}

func (b *fakeBackend) Authenticate(token string) (string, time.Time, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ti, ok := b.tokens[token]
	if !ok || !time.Now().Before(ti.expiry) {
		return "", time.Time{}, fmt.Errorf("token: %w", iaprelay.ErrUnauthenticated)
	}
	return ti.email, ti.expiry, nil
}

func (b *fakeBackend) Resolve(p, z, instance, iface string) (iaprelay.Target, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.instances[instance]
	if p != project || z != zone || !ok || iface != "nic0" {
		return iaprelay.Target{}, fmt.Errorf("%s/%s/%s/%s: %w", p, z, instance, iface, iaprelay.ErrNotFound)
	}
	return t, nil
}

func (b *fakeBackend) MayTunnel(email string, t iaprelay.Target) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.allowed[email]
}

// env is one relay on an httptest server with its backend.
type env struct {
	relay *iaprelay.Relay
	be    *fakeBackend
	base  string // ws://127.0.0.1:port/v4 (wss:// for newTLSEnv)
	caPEM []byte // the server certificate of newTLSEnv
}

func newEnv(t *testing.T, opts iaprelay.Options) *env { return startEnv(t, opts, false) }

// newTLSEnv serves wss:// like the real relay; gcloud needs it, since its
// WebSocket code calls SSL-only socket methods.
func newTLSEnv(t *testing.T, opts iaprelay.Options) *env { return startEnv(t, opts, true) }

func startEnv(t *testing.T, opts iaprelay.Options, tls bool) *env {
	t.Helper()
	be := newFakeBackend()
	opts.Backend = be
	if opts.Logger == nil && testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	r := iaprelay.New(opts)
	srv := httptest.NewUnstartedServer(r)
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(func() {
		r.Close()
		srv.Close()
	})
	e := &env{relay: r, be: be, base: "ws" + strings.TrimPrefix(srv.URL, "http") + "/v4"}
	if tls {
		e.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	}
	return e
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// listen starts serve for every connection on a loopback port until the
// test ends, and returns the port.
func listen(t *testing.T, serve func(net.Conn)) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().(*net.TCPAddr).Port
}

// echoServer copies everything back.
func echoServer(t *testing.T) int {
	return listen(t, func(c net.Conn) { io.Copy(c, c) })
}

// sinkResult is what a sink connection saw.
type sinkResult struct {
	upSum [32]byte // SHA-256 of the n bytes the client sent
	upErr error
}

// sinkServer reads exactly n bytes per connection, hashing them, while it
// writes n bytes of the deterministic stream stream(2); then it closes.
func sinkServer(t *testing.T, n int64) (int, <-chan sinkResult) {
	results := make(chan sinkResult, 4)
	port := listen(t, func(c net.Conn) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.CopyN(c, stream(2), n)
		}()
		h := sha256.New()
		_, err := io.CopyN(h, c, n)
		<-done
		var res sinkResult
		copy(res.upSum[:], h.Sum(nil))
		res.upErr = err
		results <- res
	})
	return port, results
}

// stream is an endless deterministic byte stream.
func stream(seed uint64) io.Reader {
	return rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 42})
}

// streamSum is the SHA-256 of the first n bytes of stream(seed).
func streamSum(n int64, seed uint64) [32]byte {
	h := sha256.New()
	io.CopyN(h, stream(seed), n)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}
