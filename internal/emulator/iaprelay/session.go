package iaprelay

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/bytering"
)

// session is one tunnel: a backend TCP connection and the byte accounting
// that lets successive WebSockets (links) resume it. It lives until the
// backend ends and everything was delivered, a protocol error, the grace
// period after a drop, or Relay.Close.
type session struct {
	r       *Relay
	sid     string
	target  Target
	email   string
	backend net.Conn
	done    chan struct{} // closed by finish
	wake    chan struct{} // cap 1: room in buf, for the backend reader

	mu       sync.Mutex
	closed   bool
	link     *link // the attached WebSocket, nil while detached
	grace    *time.Timer
	graceGen int

	// backend → client. buf holds every byte not yet ACKed by the client;
	// buf[0] is at absolute position acked.
	buf        bytering.Ring
	acked      uint64
	sentMax    uint64 // highest position written to any WebSocket
	backendErr error  // why the backend read side ended (io.EOF: cleanly)

	// client → backend.
	received uint64 // client bytes written to the backend
	ackSent  uint64 // last ACK (or RECONNECT_SUCCESS_ACK) value sent
}

func newSession(r *Relay, t Target, email string, backend net.Conn) *session {
	return &session{r: r, sid: newSID(), target: t, email: email, backend: backend,
		done: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// readBackend fills buf from the backend until it ends, stopping while buf
// is full so a slow client slows the backend instead of growing memory.
func (s *session) readBackend() {
	defer s.r.wg.Done()
	chunk := make([]byte, MaxDataLen)
	limit := s.r.opts.MaxUnacked
	for {
		s.mu.Lock()
		for !s.closed && s.buf.Len() >= limit {
			s.mu.Unlock()
			select {
			case <-s.wake:
			case <-s.done:
			}
			s.mu.Lock()
		}
		if s.closed {
			s.mu.Unlock()
			return
		}
		n := min(limit-s.buf.Len(), len(chunk))
		s.mu.Unlock()

		k, err := s.backend.Read(chunk[:n])
		s.mu.Lock()
		s.buf.Write(chunk[:k], limit)
		if err != nil {
			s.backendErr = err
		}
		l := s.link
		s.mu.Unlock()
		if k > 0 {
			s.r.bytesDown.Add(int64(k))
		}
		if l != nil {
			l.kick()
		}
		if err != nil {
			return
		}
	}
}

// endCode is the close code once the backend ended and all its bytes were
// written: 1000 for a clean EOF, 4010 for a read error.
func (s *session) endCode() CloseCode {
	if errors.Is(s.backendErr, io.EOF) {
		return CloseNormal
	}
	return CloseDestinationReadFailed
}

// ackFromClient applies a client ACK (absolute). It must neither go back
// (4005) nor cover bytes this link has not sent (4006).
func (s *session) ackFromClient(l *link, ack uint64) CloseCode {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case ack < s.acked:
		return CloseBadAck
	case ack > l.sentPos:
		return CloseInvalidAck
	}
	s.trimLocked(ack)
	return 0
}

// trimLocked drops buffered bytes up to ack and wakes the backend reader.
func (s *session) trimLocked(ack uint64) {
	s.buf.Discard(int(ack - s.acked))
	s.acked = ack
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// attach makes l the session's WebSocket for a reconnect with the client's
// ack (bytes it received). An older link is dropped first: a client that
// reconnects has given it up, even if the relay has not noticed yet. It
// returns the RECONNECT_SUCCESS_ACK value, or the close code when the sid
// is dead (4001) or ack cannot be resumed from (4074; the session is lost).
func (s *session) attach(l *link, ack uint64) (uint64, CloseCode) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return 0, CloseSIDUnknown
		}
		if s.link == nil {
			break
		}
		old := s.link
		s.mu.Unlock()
		old.end(0, true)
		<-old.detached
	}
	if ack < s.acked || ack > s.sentMax {
		s.mu.Unlock()
		s.finish(CloseFailedToRewind)
		return 0, CloseFailedToRewind
	}
	s.trimLocked(ack)
	l.sentPos = ack
	s.link = l
	s.graceGen++
	if s.grace != nil {
		s.grace.Stop()
	}
	s.ackSent = s.received
	recv := s.received
	s.mu.Unlock()
	return recv, 0
}

// detach is called when l's goroutines are done. The session then waits
// Grace for a reconnect.
func (s *session) detach(l *link) {
	s.mu.Lock()
	if s.link == l {
		s.link = nil
		if !s.closed {
			s.graceGen++
			gen := s.graceGen
			s.grace = time.AfterFunc(s.r.opts.Grace, func() { s.expire(gen) })
		}
	}
	s.mu.Unlock()
	close(l.detached)
}

func (s *session) expire(gen int) {
	s.mu.Lock()
	stale := s.closed || s.link != nil || s.graceGen != gen
	s.mu.Unlock()
	if !stale {
		s.r.log.Info("iap session expired after grace", "sid", s.sid)
		s.finish(CloseErrorUnknown)
	}
}

// finish ends the session: the backend is closed, the sid forgotten, and an
// attached WebSocket is closed with code.
func (s *session) finish(code CloseCode) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	l := s.link
	if s.grace != nil {
		s.grace.Stop()
	}
	s.mu.Unlock()
	s.r.mu.Lock()
	delete(s.r.sessions, s.sid) // the sid is dead before the backend sees EOF
	s.r.mu.Unlock()
	close(s.done)
	s.backend.Close() // unblocks the backend reader; its error is moot
	if l != nil {
		l.end(code, false)
	}
	s.r.log.Debug("iap session finished", "sid", s.sid, "code", int(code))
}
