package iaprelay

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// link is one WebSocket attached to a session. The handler goroutine reads
// client frames; one writer goroutine, owned by the handler, sends backend
// bytes and ACKs. Both end with the WebSocket; the session survives.
type link struct {
	s        *session
	ws       *websocket.Conn
	ctx      context.Context // relay-wide: cancelled only by Relay.Close
	kickc    chan struct{}   // cap 1: something for the writer to do
	stop     chan struct{}   // closed by end
	detached chan struct{}   // closed once both goroutines are done
	once     sync.Once
	code     CloseCode // close code, set by end before stop closes
	path     string    // "connect" or "reconnect", for fault selectors
	expiry   *time.Timer
	expires  time.Time // the token's expiry by Options.Now; zero: never

	sentPos    uint64       // absolute position written to ws; guarded by s.mu
	up, down   atomic.Int64 // DATA payload bytes each way on this link, for faults
	stallUntil atomic.Int64 // unix nanos; forwarding waits until then
	fired      map[int]bool // once-per-link faults already applied; guarded by r.mu
}

func newLink(ctx context.Context, s *session, ws *websocket.Conn, path string) *link {
	return &link{s: s, ws: ws, ctx: ctx, path: path, kickc: make(chan struct{}, 1),
		stop: make(chan struct{}), detached: make(chan struct{}), fired: map[int]bool{}}
}

func (l *link) kick() {
	select {
	case l.kickc <- struct{}{}:
	default:
	}
}

// end stops the link once: with a close code (the writer sends the close
// frame after anything it is writing), or by dropping the connection
// without a close frame, as a network failure would.
func (l *link) end(code CloseCode, drop bool) {
	l.once.Do(func() {
		l.code = code
		close(l.stop)
		if drop {
			l.ws.CloseNow() // also unblocks a stuck Read or Write
		}
	})
}

func (l *link) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// sleep waits d unless the link stops first; it reports whether it waited.
func (l *link) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.stop:
	case <-l.ctx.Done():
	}
	return false
}

// applyFaults runs the fault effects for one DATA frame of n bytes going
// dir. It reports false when the link was dropped and the frame is lost.
func (l *link) applyFaults(dir direction, n int) bool {
	a := l.s.r.frameFaults(l, dir, n)
	if a.drop {
		l.s.r.log.Info("iap fault: dropping websocket", "sid", l.s.sid, "dir", dir.String())
		l.s.r.count(func(st *Stats) { st.Drops++ })
		l.end(0, true)
		return false
	}
	if a.stall > 0 {
		l.stallUntil.Store(time.Now().Add(a.stall).UnixNano())
	}
	if until := time.Unix(0, l.stallUntil.Load()); time.Now().Before(until) {
		if !l.sleep(time.Until(until)) {
			return false
		}
	}
	if !l.sleep(a.latency) {
		return false
	}
	if a.throttle > 0 {
		return l.sleep(time.Duration(float64(n) / float64(a.throttle) * float64(time.Second)))
	}
	return true
}

// write is the writer goroutine: resends/sends backend bytes from sentPos
// in DATA frames of at most 16 KiB, sends ACKs for client data (at the
// threshold or after AckFlush idle), and closes the WebSocket when the link
// ends, or ends the session once the backend ended and all was sent.
func (l *link) write(done chan<- struct{}) {
	defer close(done)
	s, opts := l.s, l.s.r.opts
	var flush *time.Timer
	var flushC <-chan time.Time
	flushDue := false
	wbuf := make([]byte, 0, 6+MaxDataLen) // reused: Write returns once sent
	defer func() {
		if flush != nil {
			flush.Stop()
		}
	}()
	for !l.stopped() {
		s.mu.Lock()
		var msg []byte
		var n int
		resent := false
		end := s.acked + uint64(s.buf.Len())
		pending := s.received - s.ackSent
		finish := false
		switch {
		case pending > 0 && (pending >= uint64(opts.AckThreshold) || flushDue):
			msg = AppendAck(wbuf[:0], s.received)
			s.ackSent = s.received
			pending, flushDue = 0, false
		case l.sentPos < end:
			// A frame ends early where the ring wraps; frames may be short.
			p := s.buf.Peek(int(l.sentPos-s.acked), MaxDataLen)
			n = len(p)
			msg = AppendData(wbuf[:0], p)
			resent = l.sentPos < s.sentMax
			// Registered as sent before the write, so a fast ACK is valid.
			l.sentPos += uint64(n)
			s.sentMax = max(s.sentMax, l.sentPos)
		case s.backendErr != nil:
			finish = true
		}
		s.mu.Unlock()

		if finish {
			s.finish(s.endCode())
			break
		}
		if pending > 0 && flushC == nil {
			flush = time.NewTimer(opts.AckFlush)
			flushC = flush.C
		}
		if msg == nil {
			select {
			case <-l.kickc:
			case <-flushC:
				flushC, flushDue = nil, true
			case <-l.stop:
			}
			continue
		}
		if n > 0 && !l.applyFaults(down, n) {
			break
		}
		if resent {
			s.r.count(func(st *Stats) { st.BytesResent += int64(n) })
		}
		if err := l.ws.Write(context.Background(), websocket.MessageBinary, msg); err != nil {
			l.end(0, true)
			break
		}
	}
	<-l.stop
	if l.code != 0 {
		// Waits (bounded by the library) for the client's close frame,
		// which the handler's read loop receives.
		l.ws.Close(websocket.StatusCode(l.code), l.code.Reason())
	} else {
		l.ws.CloseNow()
	}
}

// read is the handler's loop: it validates client frames, writes DATA to
// the backend and applies ACKs, until the WebSocket ends. After the link is
// stopped it keeps reading only to complete the close handshake.
func (l *link) read() {
	s := l.s
	buf := make([]byte, readLimit+1) // reused: DATA is written out before the next read
	for {
		typ, msg, err := readMessage(l.ws, buf)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusNormalClosure && !l.stopped() {
				// The client ended the session on purpose: unlike a drop,
				// nothing will resume it, so the backend is closed now
				// rather than held for the grace period.
				s.finish(CloseNormal)
			}
			l.end(0, true)
			return
		}
		if l.stopped() {
			continue
		}
		if !l.expires.IsZero() && !l.s.r.opts.Now().Before(l.expires) {
			// The timer measures real time; a clock that jumps (the
			// emulator's, moved by a test) is caught on the next frame.
			l.end(CloseReauthenticationRequired, false)
			continue
		}
		if typ != websocket.MessageBinary {
			l.end(CloseInvalidWebsocketOpcode, false)
			continue
		}
		f, err := DecodeFrame(msg)
		if err != nil {
			l.end(CloseInvalidData, false)
			continue
		}
		switch f.Tag {
		case TagData:
			if len(f.Data) == 0 || len(f.Data) > MaxDataLen || len(f.Rest) != 0 {
				l.end(CloseInvalidData, false)
				continue
			}
			if !l.applyFaults(up, len(f.Data)) {
				continue
			}
			if _, err := s.backend.Write(f.Data); err != nil {
				s.finish(CloseDestinationWriteFailed)
				continue
			}
			s.mu.Lock()
			s.received += uint64(len(f.Data))
			s.mu.Unlock()
			s.r.bytesUp.Add(int64(len(f.Data)))
			l.kick()
		case TagAck:
			if len(f.Rest) != 0 {
				l.end(CloseInvalidData, false)
				continue
			}
			if code := s.ackFromClient(l, f.Ack); code != 0 {
				l.end(code, false)
			}
		case TagConnectSuccessSID, TagReconnectSuccessAck, TagLongClose:
			// Server-to-client frames: a client sending them is broken.
			l.end(CloseInvalidTag, false)
		default:
			// Unknown tags are ignored, as the protocol requires of peers.
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
			return 0, nil, fmt.Errorf("message longer than %d bytes", len(buf))
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

// run serves the link until its WebSocket ends, then detaches it. The
// token's expiry closes it with 4004 so the client resumes with a fresh one.
//
// The WebSocket calls get context.Background: the library arms a
// context.AfterFunc per Read and Write given a cancellable context, a cost
// per 16 KiB frame. Relay.Close instead closes the socket once, through
// the relay context, which aborts a stuck Read or Write just the same.
func (l *link) run(expiry time.Time) {
	stop := context.AfterFunc(l.ctx, func() { l.ws.CloseNow() })
	defer stop()
	l.expires = expiry
	if !expiry.IsZero() {
		l.expiry = time.AfterFunc(expiry.Sub(l.s.r.opts.Now()), func() {
			l.end(CloseReauthenticationRequired, false)
		})
	}
	done := make(chan struct{})
	go l.write(done)
	l.read()
	<-done
	if l.expiry != nil {
		l.expiry.Stop()
	}
	l.s.detach(l)
}
