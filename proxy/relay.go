package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/oslogin-agent/oslogin-agent/destination"
	"github.com/oslogin-agent/oslogin-agent/iaptunnel"
)

// drainTimeout bounds how long a relay waits, after one direction ended,
// for the other to notice.
const drainTimeout = 10 * time.Second

// iap opens a tunnel and returns one end of a socketpair whose other end
// the Service relays to it until either side closes or Close.
func (s *Service) iap(ctx context.Context, in *destination.Instance, port int) (*os.File, error) {
	if s.opts.IAP.TokenSource == nil {
		return nil, errors.New("no credentials for IAP tunnels")
	}
	select {
	case s.slots <- struct{}{}:
	default:
		return nil, fmt.Errorf("already relaying %d IAP tunnels, the limit; close some connections", cap(s.slots))
	}
	// The dial stops with the request or with the Service.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	tc, err := iaptunnel.Dial(ctx, iaptunnel.Target{Project: in.Project, Zone: in.Zone, Instance: in.Name, Port: port}, s.opts.IAP)
	if err != nil {
		<-s.slots
		return nil, err
	}
	mine, theirs, err := socketpair()
	if err != nil {
		tc.Close()
		<-s.slots
		return nil, err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.slots }()
		Join(s.ctx, mine, tc)
	}()
	return theirs, nil
}

// socketpair returns a connected pair: a net.Conn kept here and a file to
// hand on.
func socketpair() (net.Conn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	f := os.NewFile(uintptr(fds[0]), "relay")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return c, os.NewFile(uintptr(fds[1]), "relay-peer"), nil
}

// Join copies between a and b until both directions end or ctx is done,
// then closes both. When one side stops sending, the other is told with a
// half-close where it has one; an IAP tunnel has none, so closing it
// (which flushes what was written) is its end of input.
func Join(ctx context.Context, a, b net.Conn) {
	stop := context.AfterFunc(ctx, func() { a.Close(); b.Close() })
	defer stop()
	defer a.Close()
	defer b.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go pipe(b, a)
	go pipe(a, b)
	<-done
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	a.Close()
	b.Close()
	<-done
}
