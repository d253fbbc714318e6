//go:build linux

package agent

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"
)

// observer is a well-behaved client that lists and signs on its own
// connection, over and over, while hostile clients do their worst. Each
// request must be answered within a generous deadline: this checks that
// the agent keeps serving, not how fast.
type observer struct {
	ok   atomic.Int64
	conn net.Conn
	stop chan struct{}
	done chan struct{}
	err  error // set before done is closed
}

func startObserver(t *testing.T, path string, pub ssh.PublicKey) *observer {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	o := &observer{conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	c := sshagent.NewClient(conn)
	data := []byte("observer")
	go func() {
		defer close(o.done)
		for n := 0; ; n++ {
			select {
			case <-o.stop:
				return
			default:
			}
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			keys, err := c.List()
			if err == nil && len(keys) != 1 {
				err = fmt.Errorf("list returned %d keys, want 1", len(keys))
			}
			if err != nil {
				o.err = fmt.Errorf("request %d: list: %w", n, err)
				return
			}
			sig, err := c.Sign(pub, data)
			if err == nil {
				err = pub.Verify(data, sig)
			}
			if err != nil {
				o.err = fmt.Errorf("request %d: sign: %w", n, err)
				return
			}
			o.ok.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return o
}

// progress waits until the observer completed n more request pairs.
func (o *observer) progress(t *testing.T, n int64, during string) {
	t.Helper()
	want := o.ok.Load() + n
	deadline := time.After(30 * time.Second)
	for o.ok.Load() < want {
		select {
		case <-o.done:
			t.Fatalf("the well-behaved client failed %s: %v", during, o.err)
		case <-deadline:
			t.Fatalf("the well-behaved client made no progress %s (%d requests answered)", during, o.ok.Load())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (o *observer) close(t *testing.T) {
	t.Helper()
	close(o.stop)
	<-o.done
	o.conn.Close()
	if o.err != nil {
		t.Fatalf("the well-behaved client failed: %v", o.err)
	}
}

// waitGoroutines waits for the goroutine count to come back to base.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines, %d before the hostile clients: leak\n%s", runtime.NumGoroutine(), base, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAbandonedConnections: 1,000 clients connect, send part of a frame and
// stop, holding their connections open, and later hang up without finishing.
// No partial frame gets an answer, the agent serves another client
// throughout and accepts new ones afterwards, and every goroutine it started
// for the abandoned connections ends.
func TestAbandonedConnections(t *testing.T) {
	ta := startTestAgent(t, Options{})
	// This test is about abandoned connections, not the connection
	// limits (TestConnectionFlood): room for all of them.
	ta.maxConns = 8000
	path := serve(t, ta.Agent)
	pub := ta.current().key.PublicKey()
	base := runtime.NumGoroutine()
	obs := startObserver(t, path, pub)
	obs.progress(t, 1, "before the hostile clients")
	// The observer: its loop, its client's reader, the agent's goroutine
	// for its connection.
	const observerGoroutines = 3

	sign := frame(ssh.Marshal(struct {
		Type  byte
		Blob  []byte
		Data  []byte
		Flags uint32
	}{13, pub.Marshal(), []byte("abandoned"), 0}))
	partial := [][]byte{
		{0, 0},                      // half a length prefix
		{0, 0, 0, 100, 13, 1, 2, 3}, // a length, then a few bytes of the body
		sign[:len(sign)/2],          // half a real sign request
		append(binary.BigEndian.AppendUint32(nil, maxFrameLen), make([]byte, 1024)...), // the largest allowed frame, barely begun
	}
	const n = 1000
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				c, err := net.Dial("unix", path)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
				if _, err := c.Write(partial[i%len(partial)]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	close(errs)
	for err := range errs {
		t.Fatalf("hostile client: %v", err)
	}
	// Every abandoned connection has its own goroutine in the agent, and
	// the agent still answers.
	waitFor(t, 20*time.Second, "the agent to accept all connections", func() bool {
		return runtime.NumGoroutine() >= base+observerGoroutines+n
	})
	obs.progress(t, 20, "while 1,000 connections hang mid-frame")
	for i := range partial {
		c := conns[i]
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if k, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("an incomplete frame (%d bytes) got %d bytes back, err %v; want no answer", len(partial[i]), k, err)
		}
	}

	for _, c := range conns {
		c.Close()
	}
	obs.progress(t, 20, "after 1,000 connections were abandoned")
	fresh, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := sshagent.NewClient(fresh).List()
	fresh.Close()
	if err != nil || len(keys) != 1 {
		t.Fatalf("new connection after the abandoned ones: %d keys, %v", len(keys), err)
	}
	obs.close(t)
	waitGoroutines(t, base)
}

// TestSlowLoris: clients that send their requests one byte every 100 ms get
// their answers in the end, and meanwhile do not hold up anyone else; once
// they hang up, no goroutine is left.
func TestSlowLoris(t *testing.T) {
	ta := startTestAgent(t, Options{})
	path := serve(t, ta.Agent)
	pub := ta.current().key.PublicKey()
	base := runtime.NumGoroutine()
	obs := startObserver(t, path, pub)

	data := []byte("s")
	msg := append(frame([]byte{11}), frame(ssh.Marshal(struct {
		Type  byte
		Blob  []byte
		Data  []byte
		Flags uint32
	}{13, pub.Marshal(), data, 0}))...)
	const clients = 32
	const interval = 100 * time.Millisecond
	var sent atomic.Int64 // clients that finished writing
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Go(func() {
			c, err := net.Dial("unix", path)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for i := range msg {
				if _, err := c.Write(msg[i : i+1]); err != nil {
					errs <- fmt.Errorf("write byte %d: %w", i, err)
					return
				}
				time.Sleep(interval)
			}
			sent.Add(1)
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			list, err := readFrame(c)
			if err != nil || len(list) == 0 || list[0] != 12 {
				errs <- fmt.Errorf("list reply %x, %v; want SSH_AGENT_IDENTITIES_ANSWER", list, err)
				return
			}
			reply, err := readFrame(c)
			if err != nil || len(reply) == 0 || reply[0] != 14 {
				errs <- fmt.Errorf("sign reply %x, %v; want SSH_AGENT_SIGN_RESPONSE", reply, err)
				return
			}
			var resp struct{ Sig []byte }
			var sig ssh.Signature
			if err := ssh.Unmarshal(reply[1:], &resp); err != nil {
				errs <- err
				return
			}
			if err := ssh.Unmarshal(resp.Sig, &sig); err != nil {
				errs <- err
				return
			}
			if err := pub.Verify(data, &sig); err != nil {
				errs <- fmt.Errorf("slow client's signature: %w", err)
			}
		})
	}
	// The slow clients need len(msg) intervals to send their requests;
	// the observer must be served meanwhile, not only afterwards.
	obs.progress(t, 50, "while slow clients trickle their requests")
	if sent.Load() == clients {
		t.Fatal("the slow clients finished before the check; the test did not overlap them")
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	obs.progress(t, 5, "after the slow clients")
	obs.close(t)
	waitGoroutines(t, base)
}

// TestConnectionFlood: another process opens 2,000 connections and holds
// them. The agent's descriptor limit is lowered to 256 for the test, so
// that accepting them all would leave it none for OS Login. The agent must
// keep serving a connected client, accept a fresh ssh-add, and still be
// able to open a connection of its own (as a renewal would). Before the
// limits it accepted until EMFILE, and then could neither accept nor dial.
func TestConnectionFlood(t *testing.T) {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = 256
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &old)

	ta := startTestAgent(t, Options{})
	path := serve(t, ta.Agent)
	pub := ta.current().key.PublicKey()
	obs := startObserver(t, path, pub)
	obs.progress(t, 1, "before the flood")
	// A stand-in for OS Login on loopback.
	osl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer osl.Close()

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=flood", "OSLOGIN_AGENT_TEST_SOCKET="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("the flooding process: %v", err)
	}
	t.Logf("the flooding process opened %s connections", strings.TrimSpace(line))

	obs.progress(t, 20, "during the flood")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addOut, err := openSSHContext(ctx, t, path, "ssh-add", "-l")
	if err != nil || !strings.Contains(addOut, "ED25519") {
		t.Errorf("ssh-add -l during the flood: %v\n%s", err, addOut)
	}
	c, err := net.Dial("tcp", osl.Addr().String())
	if err != nil {
		t.Fatalf("the agent cannot open a connection of its own during the flood: %v", err)
	}
	c.Close()
	if recs := ta.logs.find("too many client connections"); len(recs) != 1 || recs[0].level != slog.LevelWarn {
		t.Errorf("%d limit records, want one warning", len(recs))
	}
	obs.close(t)
}
