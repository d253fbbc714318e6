package iaptunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// Serve pumps a tunnel to a ProxyCommand's stdio: stdin to conn, conn to
// stdout, writing every received chunk straight through (stdout must not
// be buffered: it is the SSH stream). It returns when the far end closes
// (nil), stdin ends (conn is flushed and closed normally, nil), ctx ends,
// or either side fails. conn is closed on return.
//
// The stdin reader cannot be interrupted in general; if stdin has
// SetReadDeadline (an *os.File pipe does), it is used so Serve leaves no
// goroutine behind.
func Serve(ctx context.Context, conn net.Conn, stdin io.Reader, stdout io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	upErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, stdin)
		upErr <- err
	}()
	downErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(stdout, conn) // io.Copy writes each Read at once
		downErr <- err
	}()
	var err error
	upDone := false
	select {
	case err = <-upErr:
		upDone = true
		// stdin ended: the protocol has no half-close, so flush and close
		// (as gcloud does); the far end's remaining output is lost.
		conn.Close()
		<-downErr
	case err = <-downErr:
		conn.Close()
	case <-ctx.Done():
		err = ctx.Err()
		conn.Close()
		<-downErr
	}
	if !upDone {
		if d, ok := stdin.(interface{ SetReadDeadline(time.Time) error }); ok {
			if d.SetReadDeadline(time.Now()) == nil {
				<-upErr
			}
		}
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
		err = nil
	}
	return err
}
