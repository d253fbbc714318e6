package iaptunnel

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
)

// corkConn lets the sender gather several WebSocket frames into one socket
// write. coder/websocket writes through a 4 KiB bufio.Writer and, as a
// client, masks the payload in that buffer, so one 16 KiB DATA message
// became five write syscalls: bulk transfer was bound by syscalls, not
// bytes. While corked, writes are appended to buf; Uncork writes them
// at once. Uncorked it passes writes straight through, so the handshake,
// pongs and close frames from other goroutines are never held back
// beyond the sender's next Uncork.
type corkConn struct {
	net.Conn

	mu     sync.Mutex
	corked bool
	buf    []byte
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// Cork starts gathering writes. A nil corkConn (an HTTP client whose
// connections cannot be wrapped) does nothing.
func (c *corkConn) Cork() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// Uncork writes what was gathered and passes later writes through.
func (c *corkConn) Uncork() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

func (c *corkConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	if err != nil {
		return fmt.Errorf("writing to the IAP WebSocket: %w", err)
	}
	return nil
}

// corkingClient returns an HTTP client like hc whose next dialled
// connection is wrapped in a corkConn, stored in *cc. It copies hc's
// *http.Transport (proxy, TLS settings and all); under TLS the cork sits
// below the records, so it saves syscalls there too. Any other transport,
// or one with its own TLS dialer, is used unchanged and *cc stays nil.
func corkingClient(hc *http.Client, cc **corkConn) *http.Client {
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	t, ok := rt.(*http.Transport)
	//lint:ignore SA1019 a caller's own (deprecated) TLS dialer must be respected, not bypassed
	if !ok || t.DialTLSContext != nil || t.DialTLS != nil {
		return hc
	}
	t = t.Clone()
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	var mu sync.Mutex // the transport may dial concurrently in principle
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		w := &corkConn{Conn: conn}
		mu.Lock()
		*cc = w
		mu.Unlock()
		return w, nil
	}
	c := *hc
	c.Transport = t
	return &c
}
