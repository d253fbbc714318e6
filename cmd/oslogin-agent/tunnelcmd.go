package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/spf13/pflag"

	"github.com/oslogin-agent/oslogin-agent/proxy"
)

const tunnelUsage = `Usage:
  oslogin-agent tunnel [flags] NAME PORT

Listens on --local-host-port (default 127.0.0.1:0) and connects every
accepted connection to PORT of the instance NAME, like
'gcloud compute start-iap-tunnel NAME PORT --local-host-port'. The port it
listens on is printed on stdout, alone on a line. The route is chosen as
for 'oslogin-agent proxy'. It runs until interrupted.
`

// runTunnel is the local-port mode.
func runTunnel(args []string, stdout, stderr io.Writer) int {
	var f helperFlags
	var listen string
	fs := pflag.NewFlagSet("tunnel", pflag.ContinueOnError)
	f.add(fs)
	fs.StringVar(&listen, "local-host-port", "127.0.0.1:0", "listen on `HOST:PORT` (port 0: any free port)")
	if ok, code := parseSubFlags(fs, args, tunnelUsage, stdout, stderr); !ok {
		return code
	}
	req, code := dialRequest(fs, &f, stderr)
	if code != 0 {
		return code
	}
	log, err := f.logger(stderr)
	if err != nil {
		return helperUsage(stderr, "tunnel", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return helperFail(stderr, "tunnel", fmt.Errorf("listen on %s: %w", listen, err))
	}
	ctx, stop := helperContext()
	defer stop()
	context.AfterFunc(ctx, func() { ln.Close() })
	fmt.Fprintln(stdout, ln.Addr().(*net.TCPAddr).Port)

	d := &destDialer{client: proxy.Client{Socket: f.agentSocket()}, project: f.project, log: log}
	var mu sync.Mutex // d is shared by the connections
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		d.close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return 0
			}
			return helperFail(stderr, "tunnel", fmt.Errorf("accept: %w", err))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			dialCtx, cancel := context.WithTimeout(ctx, helperTimeout)
			mu.Lock()
			_, f, _, err := d.dial(dialCtx, req)
			mu.Unlock()
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					helperFail(stderr, "tunnel", err)
				}
				return
			}
			nc, err := net.FileConn(f)
			f.Close()
			if err != nil {
				helperFail(stderr, "tunnel", err)
				return
			}
			proxy.Join(ctx, c, nc)
		}()
	}
}
