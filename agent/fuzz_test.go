//go:build linux

package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"io"
	"log/slog"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// expectedReplies counts the complete frames the agent must answer before
// the stream ends or a frame makes it close the connection: a zero length,
// or one over maxFrameLen.
func expectedReplies(in []byte) int {
	n := 0
	for len(in) >= 4 {
		l := binary.BigEndian.Uint32(in)
		if l == 0 || l > maxFrameLen || uint64(len(in)-4) < uint64(l) {
			break
		}
		n++
		in = in[4+l:]
	}
	return n
}

// countReplies splits the agent's output into reply frames.
func countReplies(t *testing.T, out []byte) int {
	n := 0
	for len(out) > 0 {
		if len(out) < 4 {
			t.Fatalf("truncated reply header %x", out)
		}
		l := binary.BigEndian.Uint32(out)
		if l == 0 || uint64(len(out)-4) < uint64(l) {
			t.Fatalf("malformed reply frame of length %d with %d bytes left", l, len(out)-4)
		}
		n++
		out = out[4+l:]
	}
	return n
}

func (l *lockState) resetForTest() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.salt, l.hash, l.failures = nil, nil, 0
	l.locked.Store(false)
}

// FuzzServeConn feeds arbitrary bytes to the per-connection handler, the
// code behind every accepted socket, and checks that it never panics, that
// every complete frame of at most 256 KiB gets exactly one reply, and that
// a zero-length or oversize frame ends the connection.
func FuzzServeConn(f *testing.F) {
	// Each execution must be fast and the same every time, or the fuzzer
	// spends its time waiting: no unlock delay, a cheap Argon2id (the
	// lock logic is the same, only the hash's memory cost differs; with
	// 19 MiB every lock or unlock frame costs tens of milliseconds, and
	// minimizing an input that holds some runs thousands of them), and
	// logs formatted but not kept (the test recorder would grow by a
	// record per signature for the whole run).
	ta := startTestAgent(f, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ta.unlockDelayStep = 0
	ta.lock.kdfMemKiB = 8
	blob := ta.current().blob
	host := newHostKey(f, "ed25519")
	msg := func(v any) []byte { return frame(ssh.Marshal(v)) }
	ext := func(name string, contents []byte) []byte {
		return msg(struct {
			Type     byte
			Name     string
			Contents []byte `ssh:"rest"`
		}{27, name, contents})
	}
	type signReq struct {
		Type  byte
		Blob  []byte
		Data  []byte
		Flags uint32
	}
	type passReq struct {
		Type byte
		Pass []byte
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	var (
		list        = frame([]byte{11})
		sign        = msg(signReq{13, blob, []byte("session data"), 0})
		signRSAFlag = msg(signReq{13, blob, []byte("x"), 4})
		lock        = msg(passReq{22, []byte("pw")})
		unlockWrong = msg(passReq{23, []byte("nope")})
		unlock      = msg(passReq{23, []byte("pw")})
		bind        = ext(extSessionBind, bindRequest(f, host, sid(1, 32), sid(1, 32), false))
		badBind     = ext(extSessionBind, bindRequest(f, host, sid(1, 32), sid(2, 32), false))
		query       = ext(extQuery, nil)
		unknownExt  = ext("unknown@example.com", []byte{1, 2, 3})
		add         = msg(struct {
			Type     byte
			KeyType  string
			Pub      []byte
			Priv     []byte
			Comments string
		}{17, ssh.KeyAlgoED25519, pub, priv, "c"})
		removeAll = frame([]byte{19})
		unknown   = frame([]byte{200, 0, 1})
		truncated = frame([]byte{13, 0, 0, 0, 40, 1, 2})
		oversize  = binary.BigEndian.AppendUint32(nil, maxFrameLen+1)
		zero      = []byte{0, 0, 0, 0}
	)
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	for _, seed := range [][]byte{
		list, sign, signRSAFlag, lock, unlock, bind, query, add, removeAll, unknown, truncated,
		cat(list, sign, lock, list, sign, unlockWrong, unlock, sign),
		cat(bind, sign, badBind, query, unknownExt, list),
		cat(unknown, truncated, list, oversize, list),
		cat(list, zero, list),
		cat(sign[:len(sign)-3]),
		[]byte("SSH-2.0-OpenSSH_9.2\r\n"),
		{0xff, 0xff, 0xff, 0xff, 11},
	} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, in []byte) {
		ta.lock.resetForTest()
		// The connection is the input followed by end of file, and a
		// buffer for the replies: serveConn needs nothing more than an
		// io.ReadWriter. A socket pair with a writer goroutine made each
		// execution depend on the scheduler (partial writes, EAGAIN,
		// EPIPE once the agent hangs up early), so the same input covered
		// different code from run to run, the fuzzer kept taking that for
		// new coverage, and it spent most of its time minimizing inputs
		// that did not reproduce: 0 execs/s for about half of all ticks.
		var out bytes.Buffer
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(in), &out}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			ta.serveConn(ta.newConn(ctx, peerCred{pid: 1}), rw)
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("agent did not finish the input")
		}
		if got, want := countReplies(t, out.Bytes()), expectedReplies(in); got != want {
			t.Fatalf("%d replies to %d complete frames", got, want)
		}
	})
}
