package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	context.AfterFunc(ctx, func() { ln.Close() })

	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
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
		wg.Go(func() { a.handleConn(ctx, nc) })
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
func (a *Agent) handleConn(ctx context.Context, nc net.Conn) {
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
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	c := a.newConn(ctx, peer)
	if uc, ok := nc.(*net.UnixConn); ok {
		c.fdw = &fdWriter{w: nc, uc: uc}
	}
	a.serveConn(c, nc)
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
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), c.ctx.Err() != nil:
		c.log.Debug("connection closed")
	default:
		c.log.Debug("connection closed", "error", err)
	}
}
