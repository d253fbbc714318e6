package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	sshagent "golang.org/x/crypto/ssh/agent"
)

// Serve accepts connections on ln and serves the agent protocol on each, in
// its own goroutine, until ctx is done. Then it closes ln (for a listener
// from Listen that removes the socket file) and every connection, waits
// for the connection goroutines to finish, and returns nil. It returns an
// error only when accepting fails permanently.
//
// ln must be a Unix socket listener (from Listen, or inherited through
// systemd socket activation): each connection's peer credentials are read
// with SO_PEERCRED, and the peer must run as the agent's user or as root.
// Other connections are closed at once and logged at Warn.
//
// For a listener from Listen, Serve checks every second that the socket
// path still leads to its socket. If someone removed or replaced it, no
// client can reach the agent any more, and an agent nobody can reach must
// not keep a key alive: Serve logs an error, closes the agent (its keys are
// revoked and destroyed, Run returns) and returns an error wrapping
// ErrSocketLost.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(nil)
	// The listener is closed when ctx ends (to wake Accept) and, at the
	// latest, before Serve returns: Accept can also return for its
	// deadline just as ctx ends, before the AfterFunc has run.
	context.AfterFunc(ctx, func() { ln.Close() })
	defer ln.Close()
	sl, _ := ln.(*socketListener)
	maxConns := a.maxConns
	if maxConns == 0 {
		maxConns = defaultMaxConns()
	}
	table := newConnTable(maxConns)

	var delay time.Duration
	for {
		if sl != nil {
			// Accept wakes up every socketCheck to check the path.
			sl.SetDeadline(time.Now().Add(a.socketCheck))
		}
		nc, err := ln.Accept()
		if sl != nil && err != nil && errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
			if lost := sl.bound(); lost != nil {
				a.socketLost(ctx, sl, lost)
				cancel(lost)
				return lost
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				if cause := context.Cause(ctx); errors.Is(cause, ErrSocketLost) {
					return cause
				}
				return nil
			}
			if !temporaryAcceptError(err) {
				return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
			}
			// Out of descriptors or similar: wait and retry, as
			// net/http does, rather than spin or give up.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			a.log.Warn("accept failed; retrying", "retry_in", delay, "error", err)
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		delay = 0
		wg.Go(func() { a.handleConn(ctx, nc, table) })
	}
}

// socketLost logs that the socket at sl's path is gone and closes the
// agent, revoking and destroying its keys.
func (a *Agent) socketLost(ctx context.Context, sl *socketListener, err error) {
	a.log.Error("agent socket was removed or replaced: no client can reach this agent any more; shutting down and deleting its keys (start a new agent)",
		"socket", sl.path, "error", err)
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if cerr := a.Close(closeCtx); cerr != nil {
		a.log.Error("could not delete every key; they expire by their TTL", "error", cerr)
	}
}

func temporaryAcceptError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// handleConn checks the peer and serves one connection until the client
// hangs up, a request is too large, or ctx is done.
func (a *Agent) handleConn(ctx context.Context, nc net.Conn, table *connTable) {
	defer nc.Close()
	peer, err := peerCredentials(nc)
	if err != nil {
		a.log.Warn("connection refused: cannot identify the peer", "error", err)
		return
	}
	if !a.peerAllowed(peer) {
		a.log.Warn("connection refused: peer runs as another user", peer.attr(), "agent_uid", a.uid)
		return
	}
	lc := newLimitedConn(nc, peer.pid, a.idleTimeout)
	victim, report := table.add(lc)
	defer table.remove(lc)
	if victim != nil {
		victim.Close()
		if report {
			a.log.Warn("too many client connections: closing the longest idle connection of the process holding the most to make room; reported at most once a minute",
				"limit", table.max, "per_process_limit", table.perPeer, "closed_pid", victim.pid)
		}
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	c := a.newConn(ctx, peer)
	if uc, ok := nc.(*net.UnixConn); ok {
		c.fdw = &fdWriter{w: lc, uc: uc}
	}
	a.serveConn(c, lc)
}

// serveConn runs the protocol on rw for c until ServeAgent returns.
func (a *Agent) serveConn(c *conn, rw io.ReadWriter) {
	c.log.Debug("connection accepted")
	var w io.Writer = rw
	if c.fdw != nil {
		w = c.fdw
		defer c.fdw.drop()
	}
	err := sshagent.ServeAgent(c, struct {
		io.Reader
		io.Writer
	}{newFrameGuard(rw), w})
	switch {
	case errors.Is(err, errFrameTooLarge):
		c.log.Warn("connection closed: request larger than 256 KiB")
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Debug("connection closed: idle too long")
	case c.ctx.Err() != nil:
		c.log.Debug("connection closed")
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.log.Debug("connection closed")
		c.certUnused()
	default:
		c.log.Debug("connection closed", "error", err)
	}
}
