package iaprelay_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

// dial opens a relay WebSocket the way gcloud does: subprotocol, Bearer
// token, Origin bot:iap-tunneler.
func dial(ctx context.Context, u, token string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{"Origin": {"bot:iap-tunneler"}}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		Subprotocols: []string{iaprelay.Subprotocol}, HTTPHeader: h})
	if ws != nil {
		ws.SetReadLimit(64 << 10)
	}
	return ws, resp, err
}

// connectURL is /v4/connect for instance:port.
func connectURL(base, instance string, port int) string {
	q := url.Values{"project": {project}, "port": {fmt.Sprint(port)}, "newWebsocket": {"True"},
		"zone": {zone}, "instance": {instance}, "interface": {"nic0"}}
	return base + "/connect?" + q.Encode()
}

// firstFrame reads the first message; a close becomes the error.
func firstFrame(ctx context.Context, ws *websocket.Conn) (iaprelay.Frame, error) {
	_, msg, err := ws.Read(ctx)
	if err != nil {
		return iaprelay.Frame{}, err
	}
	return iaprelay.DecodeFrame(msg)
}

// client is a careful test-side tunnel client: it keeps every byte it sent
// until the relay ACKs it, ACKs what it received (absolute, past 32 KiB
// and when a burst ends), and on a drop or 4004 reconnects with a fresh
// token, ack = bytes received, and resends everything after the relay's
// RECONNECT_SUCCESS_ACK. Received bytes come out of Read in order.
type client struct {
	base, zone string
	token      func() string
	ctx        context.Context
	cancel     context.CancelFunc
	pr         *io.PipeReader
	pw         *io.PipeWriter
	done       chan struct{}

	mu         sync.Mutex
	cond       *sync.Cond // unacked shrank, or the client ended
	ws         *websocket.Conn
	sid        string
	sent       uint64 // bytes registered for sending
	confirmed  uint64 // last ACK from the relay
	received   uint64
	acked      uint64 // last ACK we sent
	unacked    []byte // sent[confirmed:sent]
	err        error  // why the session ended; nil: closed 1000
	ended      bool
	reconnects int
}

const clientMaxUnacked = 4 << 20

// connect opens a session to instance:port and starts the client's reader.
func connect(ctx context.Context, base, instance string, port int, token func() string) (*client, error) {
	ws, _, err := dial(ctx, connectURL(base, instance, port), token())
	if err != nil {
		return nil, err
	}
	f, err := firstFrame(ctx, ws)
	if err != nil {
		ws.CloseNow()
		return nil, err
	}
	if f.Tag != iaprelay.TagConnectSuccessSID || f.SID == "" {
		ws.CloseNow()
		return nil, fmt.Errorf("first frame tag %d, want CONNECT_SUCCESS_SID", f.Tag)
	}
	c := &client{base: base, zone: zone, token: token, ws: ws, sid: f.SID, done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.pr, c.pw = io.Pipe()
	go c.loop()
	return c, nil
}

func (c *client) Read(p []byte) (int, error) { return c.pr.Read(p) }

// Write sends p in DATA frames of at most 16 KiB, each registered as sent
// before it is written, so a fast ACK or a resend finds it. A failed write
// is left to the reader's reconnect, which resends.
func (c *client) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		n := min(len(p), iaprelay.MaxDataLen)
		c.mu.Lock()
		for !c.ended && len(c.unacked) >= clientMaxUnacked {
			c.cond.Wait()
		}
		if c.ended {
			c.mu.Unlock()
			return total - len(p), fmt.Errorf("session ended: %v", c.err)
		}
		c.unacked = append(c.unacked, p[:n]...)
		c.sent += uint64(n)
		ws := c.ws
		c.mu.Unlock()
		_ = ws.Write(c.ctx, websocket.MessageBinary, iaprelay.AppendData(nil, p[:n]))
		p = p[n:]
	}
	return total, nil
}

// Wait returns once the session ended: nil after close 1000, else why.
func (c *client) Wait() error {
	<-c.done
	return c.err
}

// Close drops the session from the client side.
func (c *client) Close() {
	c.cancel()
	c.mu.Lock()
	c.ws.CloseNow()
	c.mu.Unlock()
	c.pr.Close()
	<-c.done
}

func (c *client) Reconnects() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reconnects
}

func (c *client) end(err error) {
	c.mu.Lock()
	c.err, c.ended = err, true
	c.cond.Broadcast()
	c.mu.Unlock()
	c.pw.CloseWithError(err) // nil: EOF
	close(c.done)
}

func (c *client) loop() {
	for {
		c.mu.Lock()
		ws := c.ws
		c.mu.Unlock()
		_, msg, err := ws.Read(c.ctx)
		if err != nil {
			switch code := websocket.CloseStatus(err); {
			case code == websocket.StatusNormalClosure:
				c.end(nil)
				return
			case c.ctx.Err() != nil:
				c.end(c.ctx.Err())
				return
			case code == -1 || code == websocket.StatusCode(iaprelay.CloseReauthenticationRequired):
				if err := c.resume(); err != nil {
					c.end(err)
					return
				}
				continue
			default:
				c.end(err)
				return
			}
		}
		if short(msg) {
			// The library can hand over a message cut short by the relay
			// dropping the connection (io.EOF between two payload reads)
			// as complete: it is a drop, resumed like any other.
			ws.CloseNow()
			if err := c.resume(); err != nil {
				c.end(err)
				return
			}
			continue
		}
		if err := c.handle(ws, msg); err != nil {
			ws.CloseNow()
			c.end(err)
			return
		}
	}
}

func (c *client) handle(ws *websocket.Conn, msg []byte) error {
	f, err := iaprelay.DecodeFrame(msg)
	if err != nil {
		return err
	}
	switch f.Tag {
	case iaprelay.TagData:
		if len(f.Data) == 0 || len(f.Data) > iaprelay.MaxDataLen {
			return fmt.Errorf("DATA of %d bytes", len(f.Data))
		}
		if _, err := c.pw.Write(f.Data); err != nil {
			return err
		}
		c.mu.Lock()
		c.received += uint64(len(f.Data))
		var ack []byte
		// Past 32 KiB like gcloud, and when a burst ends (a short frame),
		// standing in for gcloud's idle flush.
		if c.received-c.acked > 2*iaprelay.MaxDataLen || len(f.Data) < iaprelay.MaxDataLen {
			c.acked = c.received
			ack = iaprelay.AppendAck(nil, c.received)
		}
		c.mu.Unlock()
		if ack != nil {
			_ = ws.Write(c.ctx, websocket.MessageBinary, ack)
		}
	case iaprelay.TagAck:
		c.mu.Lock()
		defer c.mu.Unlock()
		if f.Ack < c.confirmed || f.Ack > c.sent || f.Ack == 0 {
			return fmt.Errorf("relay ACK %d outside [%d, %d]", f.Ack, c.confirmed, c.sent)
		}
		c.unacked = c.unacked[f.Ack-c.confirmed:]
		c.confirmed = f.Ack
		c.cond.Broadcast()
	case iaprelay.TagConnectSuccessSID, iaprelay.TagReconnectSuccessAck:
		return fmt.Errorf("unexpected tag %d mid-session", f.Tag)
	}
	return nil
}

// errTerminal marks reconnect answers that end the session.
var errTerminal = errors.New("reconnect impossible")

// resume reconnects with a fresh token and resends after the relay's ack.
func (c *client) resume() error {
	c.mu.Lock()
	c.ws.CloseNow()
	c.mu.Unlock()
	var last error
	for attempt := 0; attempt < 100; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(20 * time.Millisecond):
			case <-c.ctx.Done():
				return c.ctx.Err()
			}
		}
		c.mu.Lock()
		q := url.Values{"sid": {c.sid}, "ack": {fmt.Sprint(c.received)}, "zone": {c.zone}, "newWebsocket": {"True"}}
		c.mu.Unlock()
		ws, _, err := dial(c.ctx, c.base+"/reconnect?"+q.Encode(), c.token())
		if err != nil {
			last = err
			continue
		}
		f, err := firstFrame(c.ctx, ws)
		if err != nil {
			ws.CloseNow()
			if code := websocket.CloseStatus(err); code >= 4000 && code != websocket.StatusCode(iaprelay.CloseReauthenticationRequired) {
				return fmt.Errorf("%w: %w", errTerminal, err)
			}
			last = err
			continue
		}
		if f.Tag != iaprelay.TagReconnectSuccessAck {
			ws.CloseNow()
			return fmt.Errorf("first frame after reconnect has tag %d", f.Tag)
		}
		c.mu.Lock()
		if f.Ack < c.confirmed || f.Ack > c.sent {
			c.mu.Unlock()
			ws.CloseNow()
			return fmt.Errorf("RECONNECT_SUCCESS_ACK %d outside [%d, %d]", f.Ack, c.confirmed, c.sent)
		}
		c.unacked = c.unacked[f.Ack-c.confirmed:]
		c.confirmed = f.Ack
		c.acked = c.received
		c.ws = ws
		c.reconnects++
		// Resend under the lock, so Write's new frames follow.
		for p := c.unacked; len(p) > 0; {
			n := min(len(p), iaprelay.MaxDataLen)
			if err := ws.Write(c.ctx, websocket.MessageBinary, iaprelay.AppendData(nil, p[:n])); err != nil {
				break // the loop sees the failure and resumes again
			}
			p = p[n:]
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		return nil
	}
	return fmt.Errorf("reconnect: %w", last)
}

// short reports a DATA or ACK message shorter than its frame says.
func short(msg []byte) bool {
	if len(msg) < 2 {
		return true
	}
	switch binary.BigEndian.Uint16(msg) {
	case iaprelay.TagData:
		return len(msg) < 6 || uint64(binary.BigEndian.Uint32(msg[2:])) > uint64(len(msg)-6)
	case iaprelay.TagAck:
		return len(msg) < 10
	}
	return false
}
