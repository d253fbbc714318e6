package iaptunnel_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/iaptunnel"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

func dial(t testing.TB, e *env, port int) *iaptunnel.Conn {
	t.Helper()
	c, err := iaptunnel.Dial(context.Background(), target("vm1", port), e.opts(t))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestEcho(t *testing.T) {
	e := newEnv(t, iaprelay.Options{})
	c := dial(t, e, echoServer(t))
	for _, msg := range []string{"hello", "SSH-2.0-test\r\n", string(bytes.Repeat([]byte("x"), 40000))} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != msg {
			t.Fatalf("echo of %d bytes differs", len(msg))
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
}

// transfer sends n bytes of stream(1) up and reads n bytes of the sink's
// stream(2) down at the same time, and checks both SHA-256 sums.
func transfer(t *testing.T, e *env, n int64) *iaptunnel.Conn {
	t.Helper()
	port, upSums := sinkServer(t, n, 2)
	c := dial(t, e, port)
	writeErr := make(chan error, 1)
	go func() {
		_, err := io.CopyN(c, stream(1), n)
		writeErr <- err
	}()
	h := sha256.New()
	if _, err := io.CopyN(h, c, n); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if !bytes.Equal(h.Sum(nil), func() []byte { s := streamSum(n, 2); return s[:] }()) {
		t.Fatal("bytes received differ from what the VM sent")
	}
	select {
	case up := <-upSums:
		if up != streamSum(n, 1) {
			t.Fatal("bytes the VM received differ from what was written")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the VM did not receive all bytes")
	}
	// The sink closed: the far end's close arrives as EOF after the data.
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("Read after the VM closed: %v, want EOF", err)
	}
	return c
}

// TestTransferWithFaults moves 16 MiB each way while the relay drops the
// WebSocket (at byte counts and at random), stalls, delays and throttles:
// the sums must match, so no byte was lost or duplicated.
func TestTransferWithFaults(t *testing.T) {
	const n = 16 << 20
	tests := []struct {
		name     string
		faults   []iaprelay.Fault
		minDrops int
		slow     bool
	}{
		{name: "clean"},
		{name: "drop up after 3 MiB, 3 times", faults: []iaprelay.Fault{{Drop: true, Direction: iaprelay.DirUp, AfterBytes: 3 << 20, Times: 3}}, minDrops: 3},
		{name: "drop down after 2 MiB, 3 times", faults: []iaprelay.Fault{{Drop: true, Direction: iaprelay.DirDown, AfterBytes: 2 << 20, Times: 3}}, minDrops: 3},
		{name: "random drops", faults: []iaprelay.Fault{{Drop: true, Rate: 0.003, Times: 5}}, minDrops: 1},
		{name: "stall and latency", faults: []iaprelay.Fault{
			{Stall: 700 * time.Millisecond, AfterBytes: 1 << 20, Times: 2},
			{Latency: time.Millisecond, Direction: iaprelay.DirDown, Times: 300}}},
		{name: "throttle", faults: []iaprelay.Fault{{Throttle: 24 << 20}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, iaprelay.Options{})
			for _, f := range tt.faults {
				if err := e.relay.SetFault(f); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			c := transfer(t, e, n)
			st := e.relay.Stats()
			t.Logf("%v; drops %d, reconnects %d, resent %d bytes by the relay, tokens %d",
				time.Since(start).Round(time.Millisecond), st.Drops, c.Reconnects(), st.BytesResent, c.TokenFetches())
			if st.Drops < tt.minDrops {
				t.Errorf("relay dropped %d WebSockets, want at least %d", st.Drops, tt.minDrops)
			}
			if c.Reconnects() != st.Reconnects || c.Reconnects() < st.Drops-1 {
				t.Errorf("client resumed %d times, relay counted %d reconnects and %d drops", c.Reconnects(), st.Reconnects, st.Drops)
			}
			if c.TokenFetches() != 1+c.Reconnects() {
				t.Errorf("took %d tokens for 1 connect and %d reconnects", c.TokenFetches(), c.Reconnects())
			}
		})
	}
}

// TestTokenExpiry: tokens live 1.5 s, so the relay closes with 4004
// mid-session and the client must resume with a fresh token each time.
func TestTokenExpiry(t *testing.T) {
	e := newEnv(t, iaprelay.Options{})
	e.ttl = 1500 * time.Millisecond
	c := dial(t, e, echoServer(t))
	deadline := time.Now().Add(4 * time.Second)
	var sent, got bytes.Buffer
	buf := make([]byte, 64)
	for i := 0; time.Now().Before(deadline); i++ {
		msg := []byte{byte(i), byte(i >> 8), 'p', 'i', 'n', 'g'}
		sent.Write(msg)
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		got.Write(buf[:len(msg)])
		time.Sleep(50 * time.Millisecond)
	}
	if !bytes.Equal(sent.Bytes(), got.Bytes()) {
		t.Fatal("echo across token expiry differs")
	}
	if c.Reconnects() < 2 {
		t.Errorf("resumed %d times in 4 s with 1.5 s tokens, want at least 2", c.Reconnects())
	}
	if got := e.fetches.Load(); got != int64(1+c.Reconnects()) {
		t.Errorf("token source called %d times for 1 connect and %d resumes", got, c.Reconnects())
	}
	t.Logf("resumed %d times, %d tokens", c.Reconnects(), e.fetches.Load())
}

// TestGoroutinesEnd: after Close (and the servers' shutdown) the goroutine
// count is back to the baseline.
func TestGoroutinesEnd(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Run("session", func(t *testing.T) {
		e := newEnv(t, iaprelay.Options{})
		e.relay.SetFault(iaprelay.Fault{Drop: true, AfterBytes: 100 << 10, Times: 1})
		c := dial(t, e, echoServer(t))
		msg := bytes.Repeat([]byte("g"), 300<<10)
		go c.Write(msg)
		if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines, baseline %d:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

func TestDeadline(t *testing.T) {
	e := newEnv(t, iaprelay.Options{})
	c := dial(t, e, echoServer(t))
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past deadline: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	c.Write([]byte("ok"))
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatalf("Read after clearing the deadline: %v", err)
	}
}

// TestCloseEndsRelaySession: a client's normal close ends the session at
// the relay at once (its backend connection closed, its sid dead) instead
// of being taken for a network drop kept open for the grace period.
func TestCloseEndsRelaySession(t *testing.T) {
	e := newEnv(t, iaprelay.Options{})
	backendClosed := make(chan struct{})
	port := listen(t, func(c net.Conn) {
		io.Copy(io.Discard, c)
		close(backendClosed)
	})
	c := dial(t, e, port)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-backendClosed:
	case <-time.After(5 * time.Second):
		t.Fatalf("backend still open 5 s after a normal close; relay stats %+v", e.relay.Stats())
	}
	if open := e.relay.Stats().SessionsOpen; open != 0 {
		t.Errorf("%d sessions open after a normal close", open)
	}
}
