package iaptunnel

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/oslogin-agent/oslogin-agent/internal/bytering"
)

// Conn is a TCP stream through IAP. It implements net.Conn. Writes are
// buffered until the relay acknowledges them, so a dropped WebSocket is
// resumed without losing or repeating a byte; Close flushes them.
//
// One goroutine (run) owns the WebSocket: it reads frames and resumes the
// session; while a WebSocket is up, a second one (send) writes DATA and
// ACK frames. Both end by Close or when the session ends.
type Conn struct {
	target Target
	opts   Options
	log    interface {
		Debug(string, ...any)
		Info(string, ...any)
	}

	ctx    context.Context // cancelled by Close: ends every goroutine
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned

	closeOnce sync.Once
	rdl, wdl  deadline

	tokenFetches atomic.Int64
	reconnects   atomic.Int64

	mu sync.Mutex
	// changed is closed on the next state change; nil while nobody waits,
	// so the hot paths (every Write, Read, frame and ACK) neither allocate
	// nor wake anyone when no goroutine is blocked.
	changed chan struct{}
	ws      *websocket.Conn
	sid     string
	closing bool
	err     error // why the session ended (io.EOF: the far end closed)

	// client → VM: out holds bytes [confirmed, sent); wsSent is how far the
	// current WebSocket got, sentMax the furthest any got.
	out             bytering.Ring
	confirmed, sent uint64
	wsSent, sentMax uint64
	// VM → client: in holds received bytes not yet Read.
	in                  bytering.Ring
	received, ackedSent uint64
}

// Dial opens a tunnel to t and waits until IAP reports the session open.
func Dial(ctx context.Context, t Target, opts Options) (*Conn, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	c := &Conn{target: t, opts: opts, log: opts.Logger, done: make(chan struct{})}
	c.rdl.init()
	c.wdl.init()
	ws, cork, f, err := c.open(ctx, c.connectURL(), false)
	if err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.ws, c.sid = ws, f.sid
	c.log.Debug("iap tunnel open", "instance", t.Instance, "port", t.Port)
	go c.run(ws, cork)
	return c, nil
}

// broadcastLocked wakes everyone waiting on a state change.
func (c *Conn) broadcastLocked() {
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
}

// waitChLocked returns a channel closed by the next broadcastLocked.
func (c *Conn) waitChLocked() <-chan struct{} {
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	return c.changed
}

// Reconnects is how many times the session was resumed on a new WebSocket.
func (c *Conn) Reconnects() int { return int(c.reconnects.Load()) }

// TokenFetches is how many access tokens the Conn has taken.
func (c *Conn) TokenFetches() int { return int(c.tokenFetches.Load()) }

// Read reads tunnelled bytes. After the far end closes it returns io.EOF
// once everything received was read; a session error comes after the data
// too.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		if c.in.Len() > 0 {
			n := c.in.Read(p)
			c.broadcastLocked()
			c.mu.Unlock()
			return n, nil
		}
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			if c.closing && err != io.EOF {
				err = net.ErrClosed
			}
			return 0, err
		}
		if len(p) == 0 {
			c.mu.Unlock()
			return 0, nil
		}
		ch := c.waitChLocked()
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.rdl.wait():
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// Write queues p for the relay, blocking while the unacknowledged buffer
// is full. Bytes are registered before any frame carrying them is written,
// so an ACK can never arrive for bytes the Conn does not know it sent.
func (c *Conn) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			return written, net.ErrClosed
		}
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			if err == io.EOF {
				err = fmt.Errorf("writing to the IAP tunnel: %w", io.ErrClosedPipe)
			}
			return written, err
		}
		if n := c.out.Write(p[written:], c.opts.MaxUnacked); n > 0 {
			c.sent += uint64(n)
			written += n
			c.broadcastLocked()
			c.mu.Unlock()
			continue
		}
		ch := c.waitChLocked()
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.wdl.wait():
			return written, os.ErrDeadlineExceeded
		}
	}
	return written, nil
}

// Close sends what was written (waiting up to CloseTimeout), closes the
// WebSocket with a normal close and waits for the Conn's goroutines.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.broadcastLocked()
		c.mu.Unlock()
		timer := time.NewTimer(c.opts.CloseTimeout)
		defer timer.Stop()
		for {
			c.mu.Lock()
			ended := c.err != nil
			flushed := ended || (c.ws != nil && c.wsSent == c.sent)
			ws, ch := c.ws, c.waitChLocked()
			c.mu.Unlock()
			if flushed {
				if ws != nil && !ended {
					// Waits (bounded by the library) for the relay's reply,
					// which run's read loop receives.
					ws.Close(websocket.StatusNormalClosure, "")
				}
				break
			}
			select {
			case <-ch:
				continue
			case <-timer.C:
			}
			break
		}
		c.cancel()
		<-c.done
	})
	return nil
}

// fail ends the session with err (the first reason wins).
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.ws = nil
	c.broadcastLocked()
	c.mu.Unlock()
}

func (c *Conn) LocalAddr() net.Addr { return addr("iap-tunnel-local") }
func (c *Conn) RemoteAddr() net.Addr {
	return addr(fmt.Sprintf("%s/%s/%s:%d", c.target.Project, c.target.Zone, c.target.Instance, c.target.Port))
}

func (c *Conn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}
func (c *Conn) SetReadDeadline(t time.Time) error  { c.rdl.set(t); return nil }
func (c *Conn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

// addr names the tunnel ends; there are no IP addresses to report.
type addr string

func (a addr) Network() string { return "iap" }
func (a addr) String() string  { return string(a) }
