package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/oslogin-agent/oslogin-agent/iaptunnel"
	"github.com/oslogin-agent/oslogin-agent/proxy"
)

const proxyUsage = `Usage:
  oslogin-agent proxy [flags] NAME PORT

For OpenSSH's ProxyCommand, with the connection handed to ssh:

  ProxyCommand exec /path/to/oslogin-agent proxy --fdpass %n %p
  ProxyUseFdpass yes

or, without ProxyUseFdpass, carrying the bytes on stdin and stdout:

  ProxyCommand exec /path/to/oslogin-agent proxy %n %p

NAME is an instance name, NAME.ZONE.PROJECT or compute.ID. The instance is
found with the Compute API and reached at its external address when it has
one, otherwise through IAP. The running agent (SSH_AUTH_SOCK, or --socket)
does the lookup and the connecting, from its cache; without one the proxy
uses its own credentials. Nothing is written to stdout but the connection;
errors go to stderr once, and the status is then 1. SIGHUP, SIGPIPE and the
end of stdin end it cleanly.
`

// runProxy is the ProxyCommand.
func runProxy(args []string, stdout, stderr io.Writer) int {
	var f helperFlags
	var fdpass bool
	fs := pflag.NewFlagSet("proxy", pflag.ContinueOnError)
	f.add(fs)
	fs.BoolVar(&fdpass, "fdpass", false, "hand the connection to ssh (ProxyUseFdpass yes) and exit")
	if ok, code := parseSubFlags(fs, args, proxyUsage, stdout, stderr); !ok {
		return code
	}
	req, code := dialRequest(fs, &f, stderr)
	if code != 0 {
		return code
	}
	log, err := f.logger(stderr)
	if err != nil {
		return helperUsage(stderr, "proxy", err)
	}
	ctx, stop := helperContext()
	defer stop()
	d := &destDialer{client: proxy.Client{Socket: f.agentSocket()}, project: f.project, log: log}
	defer d.close()
	dialCtx, cancel := context.WithTimeout(ctx, helperTimeout)
	reply, conn, local, err := d.dial(dialCtx, req)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return 0 // ssh went away first
		}
		return helperFail(stderr, "proxy", err)
	}
	defer conn.Close()
	if fdpass {
		if local && reply.Route == proxy.RouteIAP {
			// This process relays the tunnel and ssh waits for it to
			// exit after a pass, so the bytes go through stdio instead.
			return helperFail(stderr, "proxy", fmt.Errorf("no running oslogin-agent answered, and without one an IAP connection cannot be handed to ssh; start the agent, or use ProxyUseFdpass no without --fdpass"))
		}
		if err := proxy.PassToSSH(os.Stdout, conn); err != nil {
			return helperFail(stderr, "proxy", err)
		}
		return 0
	}
	nc, err := net.FileConn(conn)
	if err != nil {
		return helperFail(stderr, "proxy", fmt.Errorf("use the connection: %w", err))
	}
	conn.Close()
	if err := iaptunnel.Serve(ctx, nc, os.Stdin, os.Stdout); err != nil && ctx.Err() == nil {
		return helperFail(stderr, "proxy", err)
	}
	return 0
}

// dialRequest reads NAME PORT and the route flags.
func dialRequest(fs *pflag.FlagSet, f *helperFlags, stderr io.Writer) (proxy.DialRequest, int) {
	rest := fs.Args()
	if len(rest) != 2 {
		return proxy.DialRequest{}, helperUsage(stderr, fs.Name(), fmt.Errorf("want NAME and PORT, got %d arguments", len(rest)))
	}
	port, err := strconv.Atoi(rest[1])
	if err != nil || port < 1 || port > 65535 {
		return proxy.DialRequest{}, helperUsage(stderr, fs.Name(), fmt.Errorf("%q is not a TCP port", rest[1]))
	}
	route, err := f.route()
	if err != nil {
		return proxy.DialRequest{}, helperUsage(stderr, fs.Name(), err)
	}
	return proxy.DialRequest{Name: rest[0], Project: f.project, Zone: f.zone, Port: port, Route: route}, 0
}

// helperUsage reports a command-line mistake.
func helperUsage(stderr io.Writer, name string, err error) int {
	fmt.Fprintf(stderr, "oslogin-agent %s: %v (run 'oslogin-agent %s --help' for usage)\n", name, err, name)
	return 2
}
