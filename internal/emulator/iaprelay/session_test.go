package iaprelay_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

// rawSession connects and returns the WebSocket and sid, for tests that
// speak frames directly.
func rawSession(t *testing.T, e *env, port int) (*websocket.Conn, string) {
	t.Helper()
	ctx := testCtx(t)
	ws, _, err := dial(ctx, connectURL(e.base, "vm1", port), e.be.token(user, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	f, err := firstFrame(ctx, ws)
	if err != nil || f.Tag != iaprelay.TagConnectSuccessSID {
		t.Fatalf("first frame %+v, %v", f, err)
	}
	return ws, f.SID
}

func reconnectURL(base, sid string, ack uint64, z string) string {
	q := url.Values{"sid": {sid}, "ack": {fmt.Sprint(ack)}, "zone": {z}, "newWebsocket": {"True"}}
	return base + "/reconnect?" + q.Encode()
}

// readData reads frames until n DATA bytes arrived, skipping ACKs.
func readData(t *testing.T, ws *websocket.Conn, n int) []byte {
	t.Helper()
	var got []byte
	for len(got) < n {
		f, err := firstFrame(testCtx(t), ws)
		if err != nil {
			t.Fatalf("after %d bytes: %v", len(got), err)
		}
		if f.Tag == iaprelay.TagData {
			got = append(got, f.Data...)
		}
	}
	return got
}

// TestReconnectResendsAfterAck: the relay keeps unacked bytes and resends
// everything after the client's ack, and reports what it received.
func TestReconnectResendsAfterAck(t *testing.T) {
	e := newEnv(t, iaprelay.Options{})
	e.be.addInstance("vm1", "127.0.0.1", true)
	ws, sid := rawSession(t, e, echoServer(t))
	ctx := testCtx(t)
	if err := ws.Write(ctx, websocket.MessageBinary, iaprelay.AppendData(nil, []byte("hello world"))); err != nil {
		t.Fatal(err)
	}
	if got := readData(t, ws, 11); string(got) != "hello world" {
		t.Fatalf("echo %q", got)
	}
	ws.CloseNow() // as if the network died; the client kept only "hello"
	ws2, _, err := dial(ctx, reconnectURL(e.base, sid, 5, zone), e.be.token(user, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.CloseNow()
	f, err := firstFrame(ctx, ws2)
	if err != nil || f.Tag != iaprelay.TagReconnectSuccessAck || f.Ack != 11 {
		t.Fatalf("first frame %+v, %v; want RECONNECT_SUCCESS_ACK(11)", f, err)
	}
	if got := readData(t, ws2, 6); string(got) != " world" {
		t.Fatalf("resent %q, want %q", got, " world")
	}
	if st := e.relay.Stats(); st.Reconnects != 1 || st.BytesResent != 6 || st.SessionsOpen != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestImpossibleResumes: dead sids are 4001, acks the relay cannot replay
// from are 4074 (and lose the session), another zone is 4051.
func TestImpossibleResumes(t *testing.T) {
	e := newEnv(t, iaprelay.Options{})
	e.be.addInstance("vm1", "127.0.0.1", true)
	port := echoServer(t)
	tests := []struct {
		name string
		ack  uint64
		ackd uint64 // client ACKs this much first
		sid  string
		zone string
		want iaprelay.CloseCode
	}{
		{name: "unknown sid", sid: "no-such-sid", zone: zone, want: iaprelay.CloseSIDUnknown},
		{name: "ack beyond sent", ack: 1000, zone: zone, want: iaprelay.CloseFailedToRewind},
		{name: "ack before acked", ack: 2, ackd: 4, zone: zone, want: iaprelay.CloseFailedToRewind},
		{name: "other zone", ack: 4, zone: "us-east1-b", want: iaprelay.CloseLookupFailedReconnect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			ws, sid := rawSession(t, e, port)
			ws.Write(ctx, websocket.MessageBinary, iaprelay.AppendData(nil, []byte("abcd")))
			readData(t, ws, 4)
			if tt.ackd > 0 {
				ws.Write(ctx, websocket.MessageBinary, iaprelay.AppendAck(nil, tt.ackd))
				time.Sleep(50 * time.Millisecond)
			}
			ws.CloseNow()
			if tt.sid != "" {
				sid = tt.sid
			}
			ws2, _, err := dial(ctx, reconnectURL(e.base, sid, tt.ack, tt.zone), e.be.token(user, time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			defer ws2.CloseNow()
			_, err = firstFrame(ctx, ws2)
			closeErr(t, err, tt.want)
			if tt.want == iaprelay.CloseFailedToRewind {
				ws3, _, err := dial(ctx, reconnectURL(e.base, sid, 4, zone), e.be.token(user, time.Hour))
				if err != nil {
					t.Fatal(err)
				}
				defer ws3.CloseNow()
				_, err = firstFrame(ctx, ws3)
				closeErr(t, err, iaprelay.CloseSIDUnknown)
			}
		})
	}
}

// TestProtocolErrors: malformed or misplaced client frames close the
// WebSocket with the reference's codes; unknown tags are ignored.
func TestProtocolErrors(t *testing.T) {
	e := newEnv(t, iaprelay.Options{})
	e.be.addInstance("vm1", "127.0.0.1", true)
	port := echoServer(t)
	big := make([]byte, iaprelay.MaxDataLen+1)
	tests := []struct {
		name string
		typ  websocket.MessageType
		msg  []byte
		want iaprelay.CloseCode
	}{
		{"text message", websocket.MessageText, []byte("hi"), iaprelay.CloseInvalidWebsocketOpcode},
		{"empty DATA", websocket.MessageBinary, iaprelay.AppendData(nil, nil), iaprelay.CloseInvalidData},
		{"oversized DATA", websocket.MessageBinary, iaprelay.AppendData(nil, big), iaprelay.CloseInvalidData},
		{"truncated DATA", websocket.MessageBinary, iaprelay.AppendData(nil, []byte("abc"))[:7], iaprelay.CloseInvalidData},
		{"trailing bytes", websocket.MessageBinary, append(iaprelay.AppendData(nil, []byte("abc")), 0), iaprelay.CloseInvalidData},
		{"one byte", websocket.MessageBinary, []byte{0}, iaprelay.CloseInvalidData},
		{"ACK beyond sent", websocket.MessageBinary, iaprelay.AppendAck(nil, 5), iaprelay.CloseInvalidAck},
		{"SID from client", websocket.MessageBinary, iaprelay.AppendConnectSuccessSID(nil, "x"), iaprelay.CloseInvalidTag},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			ws, _ := rawSession(t, e, port)
			// An unknown tag first: ignored, the session goes on.
			ws.Write(ctx, websocket.MessageBinary, []byte{0x10, 0x00, 1, 2, 3})
			ws.Write(ctx, websocket.MessageBinary, iaprelay.AppendData(nil, []byte("ok")))
			if got := readData(t, ws, 2); string(got) != "ok" {
				t.Fatalf("echo %q", got)
			}
			ws.Write(ctx, tt.typ, tt.msg)
			for {
				_, err := firstFrame(ctx, ws)
				if err != nil {
					closeErr(t, err, tt.want)
					break
				}
			}
		})
	}
	t.Run("ACK going back", func(t *testing.T) {
		ctx := testCtx(t)
		ws, _ := rawSession(t, e, port)
		ws.Write(ctx, websocket.MessageBinary, iaprelay.AppendData(nil, []byte("abcd")))
		readData(t, ws, 4)
		ws.Write(ctx, websocket.MessageBinary, iaprelay.AppendAck(nil, 3))
		ws.Write(ctx, websocket.MessageBinary, iaprelay.AppendAck(nil, 3)) // repeating is fine
		ws.Write(ctx, websocket.MessageBinary, iaprelay.AppendAck(nil, 2))
		for {
			if _, err := firstFrame(ctx, ws); err != nil {
				closeErr(t, err, iaprelay.CloseBadAck)
				break
			}
		}
	})
}

// transfer sends n bytes of stream(1) through c to a sink that sends n
// bytes of stream(2) back, and checks both directions byte for byte.
func transfer(t *testing.T, c *client, n int64, sink <-chan sinkResult) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	var writeErr error
	go func() {
		defer wg.Done()
		_, writeErr = io.CopyN(c, stream(1), n)
	}()
	h := sha256.New()
	got, err := io.Copy(h, c)
	wg.Wait()
	if err != nil || writeErr != nil {
		t.Fatalf("read %d bytes: %v; write: %v", got, err, writeErr)
	}
	if got != n {
		t.Fatalf("received %d bytes, want %d", got, n)
	}
	if want := streamSum(n, 2); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Errorf("relay→client SHA-256 differs")
	}
	select {
	case res := <-sink:
		if want := streamSum(n, 1); res.upErr != nil || res.upSum != want {
			t.Errorf("client→backend: err %v, SHA-256 match %v", res.upErr, res.upSum == want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sink did not finish")
	}
	if err := c.Wait(); err != nil {
		t.Errorf("session ended with %v, want close 1000", err)
	}
}

// TestTransferSurvivesDrops: 16 MiB each way while faults drop the
// WebSocket several times; the client resumes and every byte arrives
// exactly once.
func TestTransferSurvivesDrops(t *testing.T) {
	const size = 16 << 20
	tests := []struct {
		name      string
		fault     iaprelay.Fault
		wantDrops int
	}{
		{"no faults", iaprelay.Fault{}, 0},
		{"after bytes up", iaprelay.Fault{Drop: true, Direction: iaprelay.DirUp, AfterBytes: 3 << 20, Times: 3}, 3},
		{"after bytes down", iaprelay.Fault{Drop: true, Direction: iaprelay.DirDown, AfterBytes: 3<<20 + 777, Times: 3}, 3},
		{"after bytes either", iaprelay.Fault{Drop: true, AfterBytes: 5 << 20, Times: 4}, 4},
		{"random", iaprelay.Fault{Drop: true, Rate: 0.005, Times: 5}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, iaprelay.Options{})
			port, sink := sinkServer(t, size)
			e.be.addInstance("vm1", "127.0.0.1", true)
			if tt.wantDrops > 0 {
				if err := e.relay.SetFault(tt.fault); err != nil {
					t.Fatal(err)
				}
			}
			c, err := connect(testCtx(t), e.base, "vm1", port, func() string { return e.be.token(user, time.Hour) })
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			transfer(t, c, size, sink)
			st := e.relay.Stats()
			// Random drops fire per frame with a rate, so a run may end
			// before all of them fired; at least one must, and every drop
			// must have been resumed.
			lo := tt.wantDrops
			if tt.fault.Rate > 0 {
				lo = 1
			}
			if st.Drops < lo || st.Drops > tt.wantDrops || c.Reconnects() != st.Drops || st.Reconnects != st.Drops {
				t.Errorf("drops %d, client reconnects %d, relay reconnects %d; want %d..%d, each resumed", st.Drops, c.Reconnects(), st.Reconnects, lo, tt.wantDrops)
			}
			if st.BytesUp != size || st.BytesDown != size {
				t.Errorf("bytes up %d down %d, want %d each", st.BytesUp, st.BytesDown, size)
			}
			t.Logf("stats %+v", st)
		})
	}
}

// TestReauthenticationMidSession: the token expires during a transfer, the
// relay closes with 4004, and the client resumes with a fresh token.
func TestReauthenticationMidSession(t *testing.T) {
	const size = 1 << 20
	e := newEnv(t, iaprelay.Options{})
	port, sink := sinkServer(t, size)
	e.be.addInstance("vm1", "127.0.0.1", true)
	var minted atomic.Int32
	token := func() string {
		minted.Add(1)
		return e.be.token(user, 400*time.Millisecond)
	}
	c, err := connect(testCtx(t), e.base, "vm1", port, token)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Throttle so the transfer outlives a few tokens.
	if err := e.relay.SetFault(iaprelay.Fault{Throttle: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	transfer(t, c, size, sink)
	if c.Reconnects() < 1 || minted.Load() < 2 {
		t.Errorf("reconnects %d with %d tokens; want a 4004 resume", c.Reconnects(), minted.Load())
	}
}

// TestReauthenticationClose: an idle session's token expiry closes the
// WebSocket with 4004 and its reason text; the session stays resumable.
func TestReauthenticationClose(t *testing.T) {
	e := newEnv(t, iaprelay.Options{})
	e.be.addInstance("vm1", "127.0.0.1", true)
	ctx := testCtx(t)
	ws, _, err := dial(ctx, connectURL(e.base, "vm1", echoServer(t)), e.be.token(user, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	f, err := firstFrame(ctx, ws)
	if err != nil {
		t.Fatal(err)
	}
	_, err = firstFrame(ctx, ws)
	closeErr(t, err, iaprelay.CloseReauthenticationRequired)
	ws2, _, err := dial(ctx, reconnectURL(e.base, f.SID, 0, zone), e.be.token(user, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.CloseNow()
	if f, err := firstFrame(ctx, ws2); err != nil || f.Tag != iaprelay.TagReconnectSuccessAck {
		t.Fatalf("resume: %+v, %v", f, err)
	}
}

// TestGraceExpiry: a session nobody resumes ends after the grace period;
// its backend connection is closed and its sid is dead.
func TestGraceExpiry(t *testing.T) {
	e := newEnv(t, iaprelay.Options{Grace: 200 * time.Millisecond})
	e.be.addInstance("vm1", "127.0.0.1", true)
	backendEOF := make(chan struct{})
	port := listen(t, func(c net.Conn) {
		io.Copy(io.Discard, c)
		close(backendEOF)
	})
	ws, sid := rawSession(t, e, port)
	ws.CloseNow()
	select {
	case <-backendEOF:
	case <-time.After(5 * time.Second):
		t.Fatal("backend connection not closed after grace")
	}
	ctx := testCtx(t)
	ws2, _, err := dial(ctx, reconnectURL(e.base, sid, 0, zone), e.be.token(user, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.CloseNow()
	_, err = firstFrame(ctx, ws2)
	closeErr(t, err, iaprelay.CloseSIDUnknown)
	if st := e.relay.Stats(); st.SessionsOpen != 0 {
		t.Errorf("%d sessions open", st.SessionsOpen)
	}
}

// TestFlowControl: a client that does not read stops the relay reading the
// backend once MaxUnacked bytes wait for its ACK.
func TestFlowControl(t *testing.T) {
	const limit = 64 << 10
	e := newEnv(t, iaprelay.Options{MaxUnacked: limit})
	e.be.addInstance("vm1", "127.0.0.1", true)
	port := listen(t, func(c net.Conn) { io.Copy(c, stream(3)) }) // endless
	ws, _ := rawSession(t, e, port)
	time.Sleep(300 * time.Millisecond)
	if got := e.relay.Stats().BytesDown; got > limit {
		t.Fatalf("relay read %d backend bytes with nothing ACKed, limit %d", got, limit)
	}
	// ACKing lets it go on.
	ctx := testCtx(t)
	got := readData(t, ws, limit)
	ws.Write(ctx, websocket.MessageBinary, iaprelay.AppendAck(nil, uint64(len(got))))
	readData(t, ws, limit)
	if got := e.relay.Stats().BytesDown; got <= limit {
		t.Fatalf("relay stuck at %d bytes after the ACK", got)
	}
}

// TestCloseEndsGoroutines: after Close every relay goroutine is gone.
func TestCloseEndsGoroutines(t *testing.T) {
	port := echoServer(t)
	base := runtime.NumGoroutine()
	e := newEnv(t, iaprelay.Options{})
	e.be.addInstance("vm1", "127.0.0.1", true)
	var clients []*client
	for range 5 {
		c, err := connect(testCtx(t), e.base, "vm1", port, func() string { return e.be.token(user, time.Hour) })
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		go io.Copy(io.Discard, c) // ends with the client
		c.Write([]byte("x"))
	}
	// One detached session waiting in its grace period too.
	ws, _ := rawSession(t, e, port)
	ws.CloseNow()
	if st := e.relay.Stats(); st.SessionsOpen != 6 {
		t.Fatalf("%d sessions open, want 6", st.SessionsOpen)
	}
	e.relay.Close()
	for _, c := range clients {
		if err := c.Wait(); websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Errorf("client ended with %v, want 1001", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base+2 && time.Now().Before(deadline) { // +2: the httptest server
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base+2 {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines, baseline %d:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}
