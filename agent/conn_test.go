//go:build linux

package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/oslogin-agent/oslogin-agent/signer"
)

// listOne lists the agent's keys and expects exactly one.
func listOne(t *testing.T, c sshagent.ExtendedAgent) *sshagent.Key {
	t.Helper()
	keys, err := c.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(keys) != 1 {
		t.Fatalf("List returned %d keys, want 1", len(keys))
	}
	return keys[0]
}

func TestListAndSign(t *testing.T) {
	const (
		none = sshagent.SignatureFlags(0)
		s256 = sshagent.SignatureFlagRsaSha256
		s512 = sshagent.SignatureFlagRsaSha512
	)
	tests := []struct {
		kt     signer.KeyType
		flags  sshagent.SignatureFlags
		format string
	}{
		{signer.Ed25519, none, ssh.KeyAlgoED25519},
		{signer.Ed25519, s512, ssh.KeyAlgoED25519}, // flags only matter for RSA
		{signer.ECDSAP256, none, ssh.KeyAlgoECDSA256},
		{signer.ECDSAP384, s256, ssh.KeyAlgoECDSA384},
		{signer.RSA3072, none, ssh.KeyAlgoRSA},
		{signer.RSA3072, s256, ssh.KeyAlgoRSASHA256},
		{signer.RSA3072, s512, ssh.KeyAlgoRSASHA512},
		{signer.RSA3072, s256 | s512, ssh.KeyAlgoRSASHA256}, // as OpenSSH: SHA-256 wins
		{signer.RSA4096, s512, ssh.KeyAlgoRSASHA512},
		{signer.RSA4096, s256, ssh.KeyAlgoRSASHA256},
	}
	// One agent per key type, owned by the parent test so that it outlives
	// the subtests.
	paths := make(map[signer.KeyType]string)
	agents := make(map[signer.KeyType]*testAgent)
	for _, kt := range signer.KeyTypes() {
		ta := startTestAgent(t, Options{KeyType: kt})
		agents[kt], paths[kt] = ta, serve(t, ta.Agent)
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/flags=%d", tt.kt, tt.flags), func(t *testing.T) {
			ta := agents[tt.kt]
			c := client(t, paths[tt.kt])
			k := listOne(t, c)
			info := ta.Keys()[0]
			wantComment := fmt.Sprintf("oslogin-agent sa_1234567890 expires %s", info.Expiry.UTC().Format(time.RFC3339))
			if k.Comment != wantComment {
				t.Errorf("comment %q, want %q", k.Comment, wantComment)
			}
			if ssh.FingerprintSHA256(k) != info.Fingerprint {
				t.Errorf("listed %s, registered %s", ssh.FingerprintSHA256(k), info.Fingerprint)
			}
			pub, err := ssh.ParsePublicKey(k.Marshal())
			if err != nil {
				t.Fatal(err)
			}
			data := []byte("userauth request for " + tt.kt.String())
			sig, err := c.SignWithFlags(k, data, tt.flags)
			if err != nil {
				t.Fatalf("SignWithFlags: %v", err)
			}
			if sig.Format != tt.format {
				t.Errorf("signature format %q, want %q", sig.Format, tt.format)
			}
			if err := pub.Verify(data, sig); err != nil {
				t.Errorf("Verify: %v", err)
			}
			recs := ta.logs.find("signature")
			last := recs[len(recs)-1]
			if last.attrs["result"] != "ok" || last.attrs["fingerprint"] != info.Fingerprint || last.attrs["algorithm"] != tt.format {
				t.Errorf("signature record %v", last.attrs)
			}
			if last.attrs["peer.uid"] == nil || last.attrs["peer.pid"] == nil || last.attrs["latency"] == nil {
				t.Errorf("signature record lacks peer or latency: %v", last.attrs)
			}
		})
	}
}

func TestSignRefusals(t *testing.T) {
	ta := startTestAgent(t, Options{})
	c := client(t, serve(t, ta.Agent))
	k := listOne(t, c)

	other, err := signer.Generate(signer.Ed25519)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Destroy()
	if _, err := c.Sign(other.PublicKey(), []byte("x")); err == nil {
		t.Error("signed with a key the agent does not hold")
	}
	recs := ta.logs.find("signature")
	if len(recs) != 1 || recs[0].attrs["result"] != "error" || recs[0].attrs["fingerprint"] != other.Fingerprint() {
		t.Errorf("refused signature record %+v", recs)
	}
	if _, err := c.Sign(k, []byte("x")); err != nil {
		t.Errorf("Sign with the agent's key: %v", err)
	}
}

func TestKeyManagementRefused(t *testing.T) {
	ta := startTestAgent(t, Options{})
	c := client(t, serve(t, ta.Agent))
	k := listOne(t, c)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	ops := map[string]func() error{
		"add":        func() error { return c.Add(sshagent.AddedKey{PrivateKey: priv, Comment: "intruder"}) },
		"add-timed":  func() error { return c.Add(sshagent.AddedKey{PrivateKey: priv, LifetimeSecs: 60}) },
		"remove":     func() error { return c.Remove(k) },
		"remove-all": func() error { return c.RemoveAll() },
	}
	for name, op := range ops {
		if err := op(); err == nil {
			t.Errorf("%s succeeded", name)
		}
	}
	if got := listOne(t, c); !bytes.Equal(got.Blob, k.Blob) {
		t.Error("key list changed")
	}
	if n := len(ta.logs.find(managedKeys)); n != len(ops) {
		t.Errorf("%d explanatory log records, want %d", n, len(ops))
	}
}

func TestLockUnlock(t *testing.T) {
	ta := startTestAgent(t, Options{})
	path := serve(t, ta.Agent)
	c := client(t, path)
	k := listOne(t, c)

	if err := c.Lock(nil); err == nil {
		t.Fatal("locked with an empty passphrase")
	}
	if err := c.Unlock([]byte("pw")); err == nil {
		t.Fatal("unlocked an agent that is not locked")
	}
	if err := c.Lock([]byte("correct horse")); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if keys, err := c.List(); err != nil || len(keys) != 0 {
		t.Errorf("locked List = %d keys, %v; want none", len(keys), err)
	}
	if _, err := c.Sign(k, []byte("x")); err == nil {
		t.Error("signed while locked")
	}
	if err := c.Lock([]byte("other")); err == nil {
		t.Error("Lock while locked succeeded")
	}
	if _, err := c.Extension(extQuery, nil); err == nil {
		t.Error("query answered while locked")
	}
	// The passphrase is kept only as a salted hash.
	ta.lock.mu.Lock()
	if bytes.Contains(ta.lock.hash, []byte("correct horse")) || len(ta.lock.salt) != lockSaltLen || len(ta.lock.hash) != lockHashLen {
		t.Error("lock state is not a salted hash")
	}
	ta.lock.mu.Unlock()

	// Each wrong passphrase waits one step longer.
	step := ta.unlockDelayStep
	for i := 1; i <= 3; i++ {
		start := time.Now()
		if err := c.Unlock([]byte("wrong")); err == nil {
			t.Fatal("unlocked with a wrong passphrase")
		}
		if d := time.Since(start); d < time.Duration(i)*step {
			t.Errorf("failure %d answered after %v, want at least %v", i, d, time.Duration(i)*step)
		}
	}
	if err := c.Unlock([]byte("correct horse")); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	listOne(t, c)
	if _, err := c.Sign(k, []byte("x")); err != nil {
		t.Errorf("Sign after unlock: %v", err)
	}
	// Four failures: unlocking an unlocked agent, then three wrong passphrases.
	if recs := ta.logs.find("unlock failed"); len(recs) != 4 || recs[3].attrs["failures"] != int64(3) {
		t.Errorf("unlock failure records %+v", recs)
	}
	// The failure count starts over after a successful unlock.
	if err := c.Lock([]byte("pw2")); err != nil {
		t.Fatal(err)
	}
	ta.lock.mu.Lock()
	failures := ta.lock.failures
	ta.lock.mu.Unlock()
	if failures != 0 {
		t.Errorf("failure count %d after a successful unlock", failures)
	}
}

// TestUnlockDelayDoesNotBlock checks that a connection waiting out an
// unlock penalty holds no lock that List needs: others are answered
// meanwhile. (Unlocks themselves take turns; see TestUnlockGuessesSerialized.)
func TestUnlockDelayDoesNotBlock(t *testing.T) {
	ta := startTestAgent(t, Options{})
	ta.unlockDelayStep = 2 * time.Second
	path := serve(t, ta.Agent)
	c := client(t, path)
	if err := c.Lock([]byte("pw")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- client(t, path).Unlock([]byte("wrong")) }()
	time.Sleep(300 * time.Millisecond) // let the bad unlock reach its delay
	start := time.Now()
	if keys, err := c.List(); err != nil || len(keys) != 0 {
		t.Errorf("List = %v, %v", keys, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("List waited %v behind an unlock penalty", d)
	}
	if err := <-done; err == nil {
		t.Error("wrong passphrase accepted")
	}
	if err := c.Unlock([]byte("pw")); err != nil {
		t.Errorf("good unlock after the penalty: %v", err)
	}
}

// TestUnlockGuessesSerialized: wrong unlocks sent on many connections at
// once take turns, each waiting out its growing delay, so N connections
// guess no faster than one (before, each connection waited only for its
// own delay, and the Argon2 hashes, 19 MiB each, all ran at once).
func TestUnlockGuessesSerialized(t *testing.T) {
	ta := startTestAgent(t, Options{})
	const step, n = 200 * time.Millisecond, 6
	ta.unlockDelayStep = step
	path := serve(t, ta.Agent)
	if err := client(t, path).Lock([]byte("pw")); err != nil {
		t.Fatal(err)
	}
	clients := make([]sshagent.ExtendedAgent, n)
	for i := range clients {
		clients[i] = client(t, path)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			if err := c.Unlock([]byte("guess")); err == nil {
				t.Error("wrong passphrase accepted")
			}
		})
	}
	wg.Wait()
	// The k-th guess waits k steps: 1+2+...+n steps in all.
	if got, want := time.Since(start), step*n*(n+1)/2; got < want {
		t.Errorf("%d wrong unlocks on %d connections took %v; taking turns they need at least %v", n, n, got, want)
	}
	if err := client(t, path).Unlock([]byte("pw")); err != nil {
		t.Errorf("good unlock: %v", err)
	}
}

// bindRequest builds the contents of a session-bind@openssh.com request.
func bindRequest(t testing.TB, host ssh.Signer, sessionID []byte, signed []byte, forwarding bool) []byte {
	t.Helper()
	sig, err := host.Sign(rand.Reader, signed)
	if err != nil {
		t.Fatal(err)
	}
	return ssh.Marshal(struct {
		HostKey    []byte
		SessionID  []byte
		Signature  []byte
		Forwarding bool
	}{host.PublicKey().Marshal(), sessionID, ssh.Marshal(sig), forwarding})
}

func newHostKey(t testing.TB, kind string) ssh.Signer {
	t.Helper()
	var (
		s   ssh.Signer
		err error
	)
	switch kind {
	case "ed25519":
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		s, err = ssh.NewSignerFromKey(priv)
	case "ecdsa":
		priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		s, err = ssh.NewSignerFromKey(priv)
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sid(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func TestSessionBind(t *testing.T) {
	host := newHostKey(t, "ed25519")
	host2 := newHostKey(t, "ecdsa")
	type step struct {
		req    func(t *testing.T) []byte
		wantOK bool
	}
	bind := func(h ssh.Signer, s []byte, fwd bool) func(*testing.T) []byte {
		return func(t *testing.T) []byte { return bindRequest(t, h, s, s, fwd) }
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"valid ed25519", []step{{bind(host, sid(1, 32), false), true}}},
		{"valid ecdsa", []step{{bind(host2, sid(1, 64), false), true}}},
		{"signature over other data", []step{{func(t *testing.T) []byte { return bindRequest(t, host, sid(1, 32), sid(2, 32), false) }, false}}},
		{"session id too long", []step{{bind(host, sid(1, 129), false), false}}},
		{"session id at limit", []step{{bind(host, sid(1, 128), false), true}}},
		{"malformed", []step{{func(*testing.T) []byte { return []byte{0, 0, 0, 9, 1} }, false}}},
		{"trailing data", []step{{func(t *testing.T) []byte { return append(bindRequest(t, host, sid(1, 32), sid(1, 32), false), 0) }, false}}},
		{"garbage host key", []step{{func(t *testing.T) []byte {
			return ssh.Marshal(struct {
				A, B, C []byte
				D       bool
			}{[]byte("junk"), sid(1, 32), []byte("sig"), false})
		}, false}}},
		{"rebind after auth bind", []step{
			{bind(host, sid(1, 32), false), true},
			{bind(host2, sid(2, 32), true), false},
		}},
		{"forwarding chain", []step{
			{bind(host, sid(1, 32), true), true},
			{bind(host2, sid(2, 32), true), true},
			{bind(host2, sid(2, 32), true), true}, // the same bind again is accepted
			{bind(host, sid(2, 32), true), false}, // same session, other host key
			{bind(host, sid(3, 32), false), true}, // the final, authenticating hop
			{bind(host, sid(4, 32), false), false},
		}},
	}
	ta := startTestAgent(t, Options{})
	path := serve(t, ta.Agent)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := client(t, path)
			for i, s := range tt.steps {
				reply, err := c.Extension(extSessionBind, s.req(t))
				if s.wantOK && (err != nil || !bytes.Equal(reply, []byte{6})) {
					t.Fatalf("step %d: reply %v, %v; want SUCCESS", i, reply, err)
				}
				if !s.wantOK && err == nil {
					t.Fatalf("step %d: accepted, want failure", i)
				}
			}
			listOne(t, c) // the connection still works
		})
	}

	t.Run("limit of 16 binds", func(t *testing.T) {
		c := client(t, path)
		for i := range maxSessionBinds {
			if _, err := c.Extension(extSessionBind, bindRequest(t, host, sid(byte(i), 32), sid(byte(i), 32), true)); err != nil {
				t.Fatalf("bind %d: %v", i, err)
			}
		}
		if _, err := c.Extension(extSessionBind, bindRequest(t, host, sid(200, 32), sid(200, 32), true)); err == nil {
			t.Fatal("17th bind accepted")
		}
	})

	t.Run("signature logs the bound host key", func(t *testing.T) {
		c := client(t, path)
		if _, err := c.Extension(extSessionBind, bindRequest(t, host2, sid(9, 32), sid(9, 32), false)); err != nil {
			t.Fatal(err)
		}
		k := listOne(t, c)
		if _, err := c.Sign(k, []byte("x")); err != nil {
			t.Fatal(err)
		}
		recs := ta.logs.find("signature")
		last := recs[len(recs)-1]
		if last.attrs["host_key"] != ssh.FingerprintSHA256(host2.PublicKey()) || last.attrs["forwarded"] != false {
			t.Errorf("signature record %v lacks the bound host key", last.attrs)
		}
		if len(ta.logs.find("session bound")) == 0 {
			t.Error("no debug record for the bind")
		}
	})

	t.Run("bind works while locked", func(t *testing.T) {
		c := client(t, path)
		if err := c.Lock([]byte("pw")); err != nil {
			t.Fatal(err)
		}
		defer c.Unlock([]byte("pw"))
		if _, err := c.Extension(extSessionBind, bindRequest(t, host, sid(7, 32), sid(7, 32), false)); err != nil {
			t.Errorf("bind while locked: %v", err)
		}
	})
}

// parseStrings splits SSH strings.
func parseStrings(b []byte) ([]string, error) {
	var out []string
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("short length")
		}
		n := binary.BigEndian.Uint32(b)
		if uint32(len(b)-4) < n {
			return nil, errors.New("short string")
		}
		out = append(out, string(b[4:4+n]))
		b = b[4+n:]
	}
	return out, nil
}

func TestExtensions(t *testing.T) {
	ta := startTestAgent(t, Options{})
	c := client(t, serve(t, ta.Agent))
	reply, err := c.Extension(extQuery, nil)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	if reply[0] != agentExtensionResponse {
		t.Fatalf("query reply type %d, want SSH_AGENT_EXTENSION_RESPONSE", reply[0])
	}
	names, err := parseStrings(reply[1:])
	if err != nil {
		t.Fatalf("query reply %q: %v", reply, err)
	}
	if len(names) < 1 || names[0] != extQuery {
		t.Fatalf("query reply does not echo the extension name: %q", names)
	}
	got := strings.Join(names[1:], ",")
	if got != extQuery+","+extSessionBind {
		t.Errorf("supported extensions %q", got)
	}
	if _, err := c.Extension("restrict-destination-v00@openssh.com", []byte("x")); !errors.Is(err, sshagent.ErrExtensionUnsupported) {
		t.Errorf("unknown extension: err = %v, want SSH_AGENT_FAILURE", err)
	}
	listOne(t, c)
}

func TestFraming(t *testing.T) {
	ta := startTestAgent(t, Options{})
	path := serve(t, ta.Agent)
	list := frame([]byte{11})

	expectReply := func(t *testing.T, c net.Conn, want byte) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		rep, err := readFrame(c)
		if err != nil {
			t.Fatalf("reading reply: %v", err)
		}
		if len(rep) == 0 || rep[0] != want {
			t.Fatalf("reply %v, want type %d", rep, want)
		}
	}
	expectClosed := func(t *testing.T, c net.Conn) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		rep, err := readFrame(c)
		closed := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
		if !closed {
			t.Fatalf("got reply %v, %v; want the connection closed", rep, err)
		}
	}

	t.Run("unknown message type", func(t *testing.T) {
		c := dial(t, path)
		for _, typ := range []byte{0, 3, 20, 21, 26, 30, 200, 255} {
			c.Write(frame([]byte{typ, 1, 2, 3}))
			expectReply(t, c, 5) // SSH_AGENT_FAILURE
		}
		c.Write(list)
		expectReply(t, c, 12) // the connection still works
	})
	t.Run("truncated message", func(t *testing.T) {
		c := dial(t, path)
		c.Write(frame([]byte{13, 0, 0, 0, 50, 1})) // sign request cut short
		expectReply(t, c, 5)
		c.Write(list)
		expectReply(t, c, 12)
	})
	t.Run("largest frame is served", func(t *testing.T) {
		c := dial(t, path)
		msg := make([]byte, maxFrameLen)
		msg[0] = 200
		go c.Write(frame(msg))
		expectReply(t, c, 5)
		c.Write(list)
		expectReply(t, c, 12)
	})
	t.Run("oversize frame closes", func(t *testing.T) {
		c := dial(t, path)
		c.Write(binary.BigEndian.AppendUint32(nil, maxFrameLen+1))
		c.Write([]byte{11, 0, 0, 0})
		expectClosed(t, c)
		if len(ta.logs.find("larger than 256 KiB")) == 0 {
			t.Error("oversize frame not logged")
		}
	})
	t.Run("zero-length frame closes", func(t *testing.T) {
		c := dial(t, path)
		c.Write([]byte{0, 0, 0, 0})
		expectClosed(t, c)
	})
	t.Run("garbage", func(t *testing.T) {
		for i := range 20 {
			c := dial(t, path)
			junk := make([]byte, 64+i*37)
			rand.Read(junk)
			c.Write(junk)
			c.Close()
		}
		// The agent still serves new connections.
		c := dial(t, path)
		c.Write(list)
		expectReply(t, c, 12)
	})
}

func TestConcurrentSigning(t *testing.T) {
	ta := startTestAgent(t, Options{KeyType: signer.ECDSAP256})
	path := serve(t, ta.Agent)
	const conns, perConn = 24, 10
	var wg sync.WaitGroup
	errs := make(chan error, conns*perConn)
	for i := range conns {
		c := client(t, path)
		wg.Go(func() {
			keys, err := c.List()
			if err != nil || len(keys) != 1 {
				errs <- fmt.Errorf("List: %v, %v", keys, err)
				return
			}
			for j := range perConn {
				data := []byte(fmt.Sprintf("%d/%d", i, j))
				sig, err := c.Sign(keys[0], data)
				if err == nil {
					err = keys[0].Verify(data, sig)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(ta.logs.find("signature")); n != conns*perConn {
		t.Errorf("%d signature records, want one per signature (%d)", n, conns*perConn)
	}
}

func TestServeStops(t *testing.T) {
	ta := startTestAgent(t, Options{})
	path := shortTempDir(t) + "/agent.sock"
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ta.Serve(ctx, ln) }()
	c := dial(t, path)
	c.Write(frame([]byte{11}))
	if _, err := readFrame(c); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := readFrame(c); err == nil {
		t.Error("open connection not closed")
	}
	if _, err := net.Dial("unix", path); err == nil {
		t.Error("socket still accepting after Serve returned")
	}
}

func TestPeerAllowed(t *testing.T) {
	a := &Agent{uid: 1000}
	tests := []struct {
		uid  uint32
		want bool
	}{{1000, true}, {0, true}, {1001, false}, {65534, false}}
	for _, tt := range tests {
		if got := a.peerAllowed(peerCred{uid: tt.uid}); got != tt.want {
			t.Errorf("peerAllowed(uid %d) = %v, want %v", tt.uid, got, tt.want)
		}
	}
}
