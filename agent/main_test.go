//go:build linux

package agent

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	sshagent "golang.org/x/crypto/ssh/agent"
	"golang.org/x/sys/unix"

	"github.com/oslogin-agent/oslogin-agent/internal/testenv"
)

// childEnv switches the test binary into a helper mode when it is
// re-executed by a test, for things that need a separate process: a
// different uid, or process-wide hardening.
const childEnv = "OSLOGIN_AGENT_TEST_CHILD"

func TestMain(m *testing.M) {
	cleanup, err := testenv.Isolate()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	exit := func(code int) {
		cleanup()
		os.Exit(code)
	}
	switch os.Getenv(childEnv) {
	case "":
	case "connect":
		exit(childConnect(os.Getenv("OSLOGIN_AGENT_TEST_SOCKET")))
	case "harden":
		exit(childHarden())
	case "flood":
		exit(childFlood(os.Getenv("OSLOGIN_AGENT_TEST_SOCKET")))
	default:
		fmt.Fprintf(os.Stderr, "unknown %s mode %q\n", childEnv, os.Getenv(childEnv))
		exit(2)
	}
	// x/crypto's ServeAgent reports handler errors through the standard
	// logger; the tests check the agent's own slog records instead.
	log.SetOutput(io.Discard)
	exit(m.Run())
}

// childConnect connects to the agent socket and asks for the key list.
// It prints "refused" and exits 0 if the agent closes the connection
// without answering, and exits 3 if it answers.
func childConnect(path string) int {
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Printf("dial: %v\n", err)
		return 4
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte{0, 0, 0, 1, 11})
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		fmt.Println("refused")
		return 0
	}
	fmt.Println("answered")
	return 3
}

// childFlood opens as many connections to the agent as it can (up to
// 2,000), sends half a frame on each, prints how many it opened, and holds
// them until its stdin closes: a client exhausting the agent's descriptors.
func childFlood(path string) int {
	var conns []net.Conn
	for range 2000 {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err != nil {
			break
		}
		c.Write([]byte{0, 0, 0, 100, 13})
		conns = append(conns, c)
	}
	fmt.Printf("%d\n", len(conns))
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// childHarden runs Harden and reports the resulting process state.
func childHarden() int {
	Harden(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	dumpable, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		fmt.Printf("prctl: %v\n", err)
		return 4
	}
	var core unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &core); err != nil {
		fmt.Printf("getrlimit: %v\n", err)
		return 4
	}
	// Allocate afterwards to show the runtime survives.
	buf := make([]byte, 64<<20)
	buf[len(buf)-1] = 1
	fmt.Printf("dumpable=%d core=%d/%d vmlck=%s\n", dumpable, core.Cur, core.Max, vmLck())
	return 0
}

// record is one captured slog record with its attributes flattened to
// dotted keys ("peer.uid").
type record struct {
	level slog.Level
	msg   string
	attrs map[string]any
}

// recorder is a slog.Handler that keeps records for assertions.
type recorder struct {
	mu     *sync.Mutex
	recs   *[]record
	attrs  []slog.Attr
	prefix string
}

func newRecorder() *recorder {
	return &recorder{mu: new(sync.Mutex), recs: new([]record)}
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	m := make(map[string]any)
	for _, a := range r.attrs {
		flatten(m, "", a)
	}
	rec.Attrs(func(a slog.Attr) bool {
		flatten(m, r.prefix, a)
		return true
	})
	r.mu.Lock()
	*r.recs = append(*r.recs, record{level: rec.Level, msg: rec.Message, attrs: m})
	r.mu.Unlock()
	return nil
}

func flatten(m map[string]any, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix + a.Key + "."
		if a.Key == "" {
			p = prefix
		}
		for _, g := range v.Group() {
			flatten(m, p, g)
		}
		return
	}
	m[prefix+a.Key] = v.Any()
}

func (r *recorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *r
	n.attrs = append(append([]slog.Attr(nil), r.attrs...), prefixed(r.prefix, attrs)...)
	return &n
}

func prefixed(prefix string, attrs []slog.Attr) []slog.Attr {
	if prefix == "" {
		return attrs
	}
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = slog.Attr{Key: prefix + a.Key, Value: a.Value}
	}
	return out
}

func (r *recorder) WithGroup(name string) slog.Handler {
	n := *r
	n.prefix = r.prefix + name + "."
	return &n
}

// find returns the records whose message contains msg.
func (r *recorder) find(msg string) []record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []record
	for _, rec := range *r.recs {
		if strings.Contains(rec.msg, msg) {
			out = append(out, rec)
		}
	}
	return out
}

// testAgent bundles an agent with its fake registrar and log recorder.
type testAgent struct {
	*Agent
	reg  *fakeRegistrar
	logs *recorder
}

// newTestAgent creates an agent with a fake registrar and recorded logs,
// and closes it when the test ends. Zero fields in opts get test defaults.
func newTestAgent(t testing.TB, opts Options) *testAgent {
	t.Helper()
	reg, _ := opts.Registrar.(*fakeRegistrar)
	if reg == nil {
		reg = newFakeRegistrar()
		opts.Registrar = reg
	}
	logs := newRecorder()
	if opts.Logger == nil {
		opts.Logger = slog.New(logs)
	}
	a, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	a.unlockDelayStep = 10 * time.Millisecond
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.Close(ctx)
	})
	return &testAgent{Agent: a, reg: reg, logs: logs}
}

// startTestAgent is newTestAgent followed by a successful Start.
func startTestAgent(t testing.TB, opts Options) *testAgent {
	t.Helper()
	ta := newTestAgent(t, opts)
	if err := ta.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return ta
}

// runLease runs the lease loop until the test ends.
func runLease(t testing.TB, a *Agent) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// shortTempDir returns a fresh directory with a short path, since Unix
// socket paths are limited to 107 bytes and t.TempDir paths can be long.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "oa")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serve listens on a fresh socket and serves a until the test ends. It
// returns the socket path.
func serve(t testing.TB, a *Agent) string {
	t.Helper()
	path := shortTempDir(t) + "/agent.sock"
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

// dial connects to the agent socket; the connection is closed when the
// test ends.
func dial(t testing.TB, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// client returns an x/crypto agent client on a new connection.
func client(t testing.TB, path string) sshagent.ExtendedAgent {
	t.Helper()
	return sshagent.NewClient(dial(t, path))
}

// frame prefixes msg with its length.
func frame(msg []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)
}

// readFrame reads one length-prefixed reply.
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	_, err := io.ReadFull(r, body)
	return body, err
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// vmLck is the VmLck value of /proc/self/status in kB, "?" if unreadable.
func vmLck() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmLck:"); ok {
			return strings.TrimSuffix(strings.TrimSpace(v), " kB")
		}
	}
	return "?"
}
