package iaptunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// ListenAndForward is the local-port mode of `gcloud compute
// start-iap-tunnel --local-host-port`: every connection accepted on ln gets
// its own tunnel to t. It returns when ctx ends (nil) or Accept fails,
// after closing ln and every connection and waiting for their goroutines.
// A connection whose tunnel cannot be opened is closed and the error
// logged; the listener keeps serving.
func ListenAndForward(ctx context.Context, ln net.Listener, t Target, opts Options) error {
	if err := t.validate(); err != nil {
		return err
	}
	if err := opts.defaults(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	for {
		local, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accepting connections to forward through IAP: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer local.Close()
			if err := forward(ctx, local, t, opts); err != nil {
				opts.Logger.Warn("iap forwarding failed", "client", local.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// forward joins one local connection to a new tunnel until either ends.
func forward(ctx context.Context, local net.Conn, t Target, opts Options) error {
	stop := context.AfterFunc(ctx, func() { local.Close() })
	defer stop()
	conn, err := Dial(ctx, t, opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	up := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, local)
		up <- err
	}()
	down := make(chan error, 1)
	go func() {
		_, err := io.Copy(local, conn)
		down <- err
	}()
	// No half-close in the protocol: whichever side ends first ends both,
	// the tunnel with a flush and a normal close.
	var uerr, derr error
	select {
	case uerr = <-up:
		conn.Close()
		local.Close()
		derr = <-down
	case derr = <-down:
		local.Close()
		conn.Close()
		uerr = <-up
	}
	if ctx.Err() != nil {
		return nil
	}
	for _, e := range []error{derr, uerr} {
		if e != nil && !errors.Is(e, net.ErrClosed) {
			return e
		}
	}
	return nil
}
