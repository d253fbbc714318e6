package iaptunnel_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/oslogin-agent/oslogin-agent/iaptunnel"
)

// rawRelay is a hand-driven WebSocket peer (only for this test): it answers
// the upgrade, sends CONNECT_SUCCESS_SID, then one DATA message whose
// bytes stop part-way before it closes the TCP connection, as a relay whose
// connection breaks mid-write does. Reconnects are counted and refused.
type rawRelay struct {
	ln         net.Listener
	cut        int // bytes of the DATA message sent before the connection dies
	reconnects atomic.Int32
}

func newRawRelay(t *testing.T, cut int) *rawRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &rawRelay{ln: ln, cut: cut}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return r
}

func (r *rawRelay) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if strings.HasSuffix(req.URL.Path, "/reconnect") {
		r.reconnects.Add(1)
		c.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"))
		return
	}
	sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n" +
		"Sec-WebSocket-Protocol: " + iaptunnel.Subprotocol + "\r\n\r\n"))
	sid := []byte{0, 1, 0, 0, 0, 3, 's', 'i', 'd'}
	c.Write(append([]byte{0x82, byte(len(sid))}, sid...))
	// DATA of 16384 bytes in a 16390-byte binary message; only part of it
	// is sent before the connection dies.
	const n = 16384
	hdr := []byte{0x82, 126, 0, 0}
	binary.BigEndian.PutUint16(hdr[2:], n+6)
	body := make([]byte, 6+n)
	binary.BigEndian.PutUint16(body, 4)
	binary.BigEndian.PutUint32(body[2:], n)
	c.Write(hdr)
	c.Write(body[:r.cut])
	time.Sleep(200 * time.Millisecond) // the client reads what came, then waits
}

// TestTruncatedMessageIsADrop: a WebSocket message cut short by a broken
// connection is a drop to resume from, not a relay protocol violation.
// (The WebSocket library reports a message as complete, io.EOF, when the
// connection ends where a read of the payload begins: right after the
// frame header, or between two reads; the frame's own length gives it
// away.)
func TestTruncatedMessageIsADrop(t *testing.T) {
	for _, cut := range []int{0, 4096} {
		t.Run(strconv.Itoa(cut), func(t *testing.T) { truncatedIsADrop(t, cut) })
	}
}

func truncatedIsADrop(t *testing.T, cut int) {
	r := newRawRelay(t, cut)
	c, err := iaptunnel.Dial(context.Background(), iaptunnel.Target{Project: "p", Zone: "us-central1-a", Instance: "vm1", Port: 22},
		iaptunnel.Options{TokenSource: staticTokens{}, URL: "ws://" + r.ln.Addr().String() + "/v4",
			ConnectTimeout: 5 * time.Second, ReconnectWindow: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1)
	_, err = c.Read(buf)
	var pe *iaptunnel.ProtocolError
	if errors.As(err, &pe) {
		t.Fatalf("a message cut short by the connection was taken for a protocol violation: %v", err)
	}
	t.Logf("read error: %v, reconnects %d", err, r.reconnects.Load())
	if r.reconnects.Load() == 0 {
		t.Errorf("no reconnect attempted after the connection broke mid-message (read error %v)", err)
	}
}

type staticTokens struct{}

func (staticTokens) Token() (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: "test-token", TokenType: "Bearer"}, nil
}
