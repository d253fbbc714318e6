package iaptunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/coder/websocket"
)

// run owns the WebSocket: it serves one at a time and resumes the session
// on a new one after a drop or a 4004, until the session ends or Close.
func (c *Conn) run(ws *websocket.Conn, cork *corkConn) {
	defer close(c.done)
	for {
		err := c.serveLink(ws, cork)
		c.mu.Lock()
		c.ws = nil
		closing := c.closing
		c.mu.Unlock()
		if closing || c.ctx.Err() != nil {
			c.fail(net.ErrClosed)
			return
		}
		code := int(websocket.CloseStatus(err))
		var pe *ProtocolError
		switch {
		case errors.As(err, &pe):
			c.fail(err)
			return
		case isEOFCode(code):
			c.log.Debug("iap tunnel closed by the far end", "code", code)
			c.fail(io.EOF)
			return
		case !isResumableCode(code):
			c.fail(c.closeError(code, closeReason(err)))
			return
		}
		c.log.Info("iap tunnel dropped, resuming", "code", code, "err", err)
		if ws, cork, err = c.resume(); err != nil {
			c.fail(err)
			return
		}
	}
}

// resume reconnects with backoff within ReconnectWindow. A close code that
// says the session is gone ends the attempts at once.
func (c *Conn) resume() (*websocket.Conn, *corkConn, error) {
	deadline := time.Now().Add(c.opts.ReconnectWindow)
	backoff := 100 * time.Millisecond
	var last error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			wait := min(backoff, time.Until(deadline))
			if wait <= 0 {
				return nil, nil, fmt.Errorf("IAP tunnel to instance %q could not be resumed within %v: %w", c.target.Instance, c.opts.ReconnectWindow, last)
			}
			select {
			case <-time.After(wait):
			case <-c.ctx.Done():
				return nil, nil, net.ErrClosed
			}
			backoff = min(backoff*3/2, 5*time.Second)
		}
		c.mu.Lock()
		sid, received := c.sid, c.received
		c.mu.Unlock()
		ctx, cancel := context.WithDeadline(c.ctx, deadline)
		ws, cork, f, err := c.open(ctx, c.reconnectURL(sid, received), true)
		cancel()
		if err == nil {
			c.mu.Lock()
			err = c.resumeAtLocked(f.ack)
			if err == nil {
				c.ws = ws
				c.broadcastLocked()
			}
			c.mu.Unlock()
			if err != nil {
				ws.Close(websocket.StatusProtocolError, "protocol violation")
				return nil, nil, err
			}
			c.reconnects.Add(1)
			c.log.Info("iap tunnel resumed", "ack", f.ack, "received", received)
			return ws, cork, nil
		}
		if c.ctx.Err() != nil {
			return nil, nil, net.ErrClosed
		}
		var ce *CloseError
		var he *HandshakeError
		if errors.As(err, &ce) && !isResumableCode(ce.Code) {
			return nil, nil, err
		}
		if errors.As(err, &he) && he.Status < 500 && he.Status != 429 && he.Status != 401 {
			return nil, nil, err
		}
		last = err
		c.log.Info("iap tunnel resume failed, retrying", "err", err)
	}
}

// resumeAtLocked applies RECONNECT_SUCCESS_ACK(ack): drop what the relay
// has, resend everything after it before new data.
func (c *Conn) resumeAtLocked(ack uint64) error {
	if ack < c.confirmed || ack > c.sentMax {
		return &ProtocolError{Msg: fmt.Sprintf("resume position %d outside [%d, %d]", ack, c.confirmed, c.sentMax)}
	}
	c.trimLocked(ack)
	c.wsSent = ack
	c.ackedSent = c.received
	return nil
}

func (c *Conn) trimLocked(ack uint64) {
	c.out.Discard(int(ack - c.confirmed))
	c.confirmed = ack
}

// serveLink reads ws until it ends while a sender goroutine writes to it.
// The error is the one that explains the end: the relay's close frame if
// there is one.
//
// The WebSocket calls themselves get context.Background: the library arms
// a context.AfterFunc for every Read and Write given a cancellable context,
// which per 16 KiB frame costs more than the frame's bookkeeping. The link
// context instead closes the socket once, which unblocks both calls the
// same way.
func (c *Conn) serveLink(ws *websocket.Conn, cork *corkConn) error {
	ctx, cancel := context.WithCancel(c.ctx)
	stop := context.AfterFunc(ctx, func() { ws.CloseNow() })
	defer stop()
	sendErr := make(chan error, 1)
	go func() {
		err := c.send(ctx, ws, cork)
		cancel() // unblocks the reader
		sendErr <- err
	}()
	err := c.readLoop(ctx, ws)
	cancel()
	serr := <-sendErr
	ws.CloseNow()
	if websocket.CloseStatus(err) == -1 && serr != nil && !errors.Is(serr, context.Canceled) {
		var pe *ProtocolError
		if !errors.As(err, &pe) {
			err = serr
		}
	}
	return err
}

// readLoop handles relay frames: DATA into the read buffer (pausing while
// it is full), ACKs validated and applied, unknown tags ignored.
func (c *Conn) readLoop(ctx context.Context, ws *websocket.Conn) error {
	buf := make([]byte, readLimit+1) // reused: DATA is copied out by deliver
	for {
		typ, msg, err := readMessage(ws, buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if typ != websocket.MessageBinary {
			return &ProtocolError{Msg: "text message"}
		}
		f, err := decodeFrame(msg)
		if errors.Is(err, errTruncated) {
			return fmt.Errorf("websocket message %v: the connection broke", err)
		}
		if err != nil {
			return &ProtocolError{Msg: err.Error()}
		}
		switch f.tag {
		case tagData:
			if len(f.data) == 0 || len(f.data) > MaxDataLen {
				return &ProtocolError{Msg: fmt.Sprintf("DATA frame of %d bytes", len(f.data))}
			}
			if err := c.deliver(ctx, f.data); err != nil {
				return err
			}
		case tagAck:
			if err := c.applyAck(f.ack); err != nil {
				return err
			}
		case tagConnectSuccessSID, tagReconnectSuccessAck:
			return &ProtocolError{Msg: fmt.Sprintf("unexpected frame tag %d mid-session", f.tag)}
		}
	}
}

// readMessage reads one message into buf, which must exceed the read
// limit; unlike ws.Read it allocates nothing per message.
func readMessage(ws *websocket.Conn, buf []byte) (websocket.MessageType, []byte, error) {
	typ, r, err := ws.Reader(context.Background())
	if err != nil {
		return 0, nil, err
	}
	n := 0
	for {
		if n == len(buf) {
			return 0, nil, &ProtocolError{Msg: fmt.Sprintf("message longer than %d bytes", len(buf))}
		}
		k, err := r.Read(buf[n:])
		n += k
		if err == io.EOF {
			return typ, buf[:n], nil
		}
		if err != nil {
			return 0, nil, err
		}
	}
}

// deliver appends DATA to the read buffer once there is room.
func (c *Conn) deliver(ctx context.Context, p []byte) error {
	c.mu.Lock()
	for c.in.Len() >= c.opts.MaxBuffered {
		ch := c.waitChLocked()
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
	}
	c.in.Write(p, c.in.Len()+len(p)) // may pass MaxBuffered by one frame
	c.received += uint64(len(p))
	c.broadcastLocked()
	c.mu.Unlock()
	return nil
}

// applyAck validates a relay ACK: not zero, not backwards, not beyond what
// was sent; then drops the acknowledged bytes.
func (c *Conn) applyAck(ack uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case ack == 0:
		return &ProtocolError{Msg: "ACK of zero"}
	case ack < c.confirmed:
		return &ProtocolError{Msg: fmt.Sprintf("ACK %d goes back from %d", ack, c.confirmed)}
	case ack > c.sentMax:
		return &ProtocolError{Msg: fmt.Sprintf("ACK %d beyond the %d bytes sent", ack, c.sentMax)}
	}
	c.trimLocked(ack)
	c.broadcastLocked()
	return nil
}

// send writes DATA from wsSent (≤ 16 KiB per frame, never empty) and ACKs
// what was received: past the threshold at once, otherwise after AckFlush.
//
// Frames written back to back are corked into one socket write of up to
// corkBytes; the cork is released before the sender waits, so a lone
// keystroke goes out at once.
func (c *Conn) send(ctx context.Context, ws *websocket.Conn, cork *corkConn) error {
	var flushC <-chan time.Time
	var flush *time.Timer
	corked := 0 // bytes written since Cork
	defer func() {
		if flush != nil {
			flush.Stop()
		}
		cork.Uncork() // the link is over; an error here is moot
	}()
	flushDue := false
	wbuf := make([]byte, 0, 6+MaxDataLen) // reused: Write returns once sent
	for {
		select {
		case <-flushC: // due even while data keeps the loop busy
			flushC, flushDue = nil, true
		default:
		}
		c.mu.Lock()
		var msg []byte
		pending := c.received - c.ackedSent
		sentData := false
		switch {
		case pending > 0 && (pending > ackThreshold || flushDue):
			msg = appendAck(wbuf[:0], c.received)
			c.ackedSent = c.received
			pending, flushDue = 0, false
		case c.wsSent < c.sent:
			// A frame ends early where the ring wraps; frames may be short.
			p := c.out.Peek(int(c.wsSent-c.confirmed), MaxDataLen)
			msg = appendData(wbuf[:0], p)
			c.wsSent += uint64(len(p))
			c.sentMax = max(c.sentMax, c.wsSent)
			sentData = true
		}
		var ch <-chan struct{}
		if msg == nil {
			ch = c.waitChLocked()
		}
		c.mu.Unlock()
		if pending > 0 && flushC == nil {
			flush = time.NewTimer(c.opts.AckFlush)
			flushC = flush.C
		}
		if msg == nil {
			if corked > 0 {
				corked = 0
				if err := cork.Uncork(); err != nil {
					return err
				}
				continue // state may have changed during the write
			}
			select {
			case <-ch:
			case <-flushC:
				flushC, flushDue = nil, true
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		if corked == 0 {
			cork.Cork()
		}
		if err := ws.Write(context.Background(), websocket.MessageBinary, msg); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if corked += len(msg); corked >= corkBytes {
			corked = 0
			if err := cork.Uncork(); err != nil {
				return err
			}
		}
		if sentData {
			c.mu.Lock()
			c.broadcastLocked() // Close waits for wsSent to reach sent
			c.mu.Unlock()
		}
	}
}
