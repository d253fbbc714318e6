package iaptunnel_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	osuser "os/user"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/oslogin-agent/oslogin-agent/iaptunnel"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

const (
	project  = "tunnel-project"
	zone     = "europe-west1-b"
	user     = "tunnel.user@example.com"
	outsider = "no.iam@example.com"
)

// backend is the relay's view of the cloud: tokens, instances (real
// loopback servers) and who may tunnel.
type backend struct {
	mu        sync.Mutex
	tokens    map[string]tokenInfo
	instances map[string]iaprelay.Target
	seq       int
}

type tokenInfo struct {
	email  string
	expiry time.Time
}

func (b *backend) mint(email string, ttl time.Duration) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	tok := fmt.Sprintf("ya29.test-%d-%d", b.seq, rand.Int64())
	b.tokens[tok] = tokenInfo{email: email, expiry: time.Now().Add(ttl)}
	return tok
}

func (b *backend) addInstance(name string, running bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.instances[name] = iaprelay.Target{Project: project, Zone: zone, Name: name,
		ID: fmt.Sprint(1000 + len(b.instances)), Addr: "127.0.0.1", Running: running}
}

func (b *backend) Authenticate(token string) (string, time.Time, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ti, ok := b.tokens[token]
	if !ok || !time.Now().Before(ti.expiry) {
		return "", time.Time{}, fmt.Errorf("token: %w", iaprelay.ErrUnauthenticated)
	}
	return ti.email, ti.expiry, nil
}

func (b *backend) Resolve(p, z, instance, iface string) (iaprelay.Target, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.instances[instance]
	if p != project || z != zone || !ok || iface != "nic0" {
		return iaprelay.Target{}, fmt.Errorf("%s/%s/%s/%s: %w", p, z, instance, iface, iaprelay.ErrNotFound)
	}
	return t, nil
}

func (b *backend) MayTunnel(email string, _ iaprelay.Target) bool { return email == user }

// env is a real relay on an httptest server, its backend and a counting
// token source.
type env struct {
	relay   *iaprelay.Relay
	be      *backend
	url     string // ws://127.0.0.1:port/v4
	fetches atomic.Int64
	ttl     time.Duration // of minted tokens
	email   string
}

func newEnv(t testing.TB, ropts iaprelay.Options) *env {
	t.Helper()
	e := &env{be: &backend{tokens: map[string]tokenInfo{}, instances: map[string]iaprelay.Target{}},
		ttl: time.Hour, email: user}
	ropts.Backend = e.be
	if ropts.Logger == nil && testing.Verbose() {
		ropts.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	e.relay = iaprelay.New(ropts)
	srv := httptest.NewServer(e.relay)
	t.Cleanup(func() {
		e.relay.Close()
		srv.Close()
	})
	e.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/v4"
	e.be.addInstance("vm1", true)
	return e
}

// Token makes env an oauth2.TokenSource minting a fresh token per call.
func (e *env) Token() (*oauth2.Token, error) {
	e.fetches.Add(1)
	return &oauth2.Token{AccessToken: e.be.mint(e.email, e.ttl), TokenType: "Bearer"}, nil
}

func (e *env) opts(t testing.TB) iaptunnel.Options {
	o := iaptunnel.Options{TokenSource: e, URL: e.url, Account: e.email,
		ConnectTimeout: 5 * time.Second, ReconnectWindow: 20 * time.Second, CloseTimeout: 5 * time.Second}
	if testing.Verbose() {
		o.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return o
}

func target(instance string, port int) iaptunnel.Target {
	return iaptunnel.Target{Project: project, Zone: zone, Instance: instance, Port: port}
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// listen serves every connection on a loopback port until the test ends.
func listen(t testing.TB, serve func(net.Conn)) int {
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

func echoServer(t testing.TB) int {
	return listen(t, func(c net.Conn) { io.Copy(c, c) })
}

// sinkServer reads n bytes per connection and reports their SHA-256, while
// it writes n bytes of stream(seed); then it closes.
func sinkServer(t testing.TB, n int64, seed uint64) (int, <-chan [32]byte) {
	sums := make(chan [32]byte, 4)
	port := listen(t, func(c net.Conn) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.CopyN(c, stream(seed), n)
		}()
		h := sha256.New()
		io.CopyN(h, c, n)
		<-done
		var s [32]byte
		copy(s[:], h.Sum(nil))
		sums <- s
	})
	return port, sums
}

func stream(seed uint64) io.Reader {
	return rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 42})
}

func streamSum(n int64, seed uint64) [32]byte {
	h := sha256.New()
	io.CopyN(h, stream(seed), n)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

func closedPort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// osPipe is an os.Pipe closed at the end of the test.
func osPipe(t testing.TB) (*os.File, *os.File, error) {
	r, w, err := os.Pipe()
	if err == nil {
		t.Cleanup(func() { r.Close(); w.Close() })
	}
	return r, w, err
}

func run(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
}

func currentUser(t testing.TB) string {
	u, err := osuser.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// syncWriter lets a process write a buffer the test reads meanwhile.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}
