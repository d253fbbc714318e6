package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/oslogin-agent/oslogin-agent/proxy"
)

// helperFlags are the flags the connecting helpers (proxy, tunnel) share.
type helperFlags struct {
	destFlags
	socket             string
	internal, iap, ext bool
	verbose            bool
	logLevel           string
}

func (f *helperFlags) add(fs *pflag.FlagSet) {
	f.destFlags.add(fs)
	fs.StringVarP(&f.socket, "socket", "a", "", "the agent's socket `PATH` (default: $SSH_AUTH_SOCK)")
	fs.BoolVar(&f.internal, "internal-ip", false, "connect to nic0's internal address")
	fs.BoolVar(&f.iap, "iap", false, "connect through IAP even when the instance has an external address")
	fs.BoolVar(&f.ext, "external-ip", false, "connect to the external address, never through IAP")
	fs.BoolVarP(&f.verbose, "verbose", "v", false, "log what happens on stderr (debug level)")
	fs.StringVar(&f.logLevel, "log-level", "", "stderr log `LEVEL`: debug, info, warn or error (default: errors only, printed once)")
}

// route is the route the flags ask for; at most one may be given.
func (f *helperFlags) route() (proxy.Route, error) {
	var picked []proxy.Route
	for _, r := range []struct {
		set   bool
		route proxy.Route
	}{{f.internal, proxy.RouteInternal}, {f.iap, proxy.RouteIAP}, {f.ext, proxy.RouteExternal}} {
		if r.set {
			picked = append(picked, r.route)
		}
	}
	if len(picked) > 1 {
		return "", errors.New("give at most one of --internal-ip, --iap and --external-ip")
	}
	if len(picked) == 0 {
		return proxy.RouteAuto, nil
	}
	return picked[0], nil
}

// logger is quiet by default: ssh shows the helper's stderr to the user,
// and stdout is never written to except for data.
func (f *helperFlags) logger(stderr io.Writer) (*slog.Logger, error) {
	level := slog.Level(100) // nothing: the final error is printed by the caller
	if f.verbose {
		level = slog.LevelDebug
	}
	if f.logLevel != "" {
		if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
			return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)
		}
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})), nil
}

func (f *helperFlags) agentSocket() string {
	if f.socket != "" {
		return f.socket
	}
	return os.Getenv("SSH_AUTH_SOCK")
}

// helperContext ends on SIGHUP (ssh sends it on exit), SIGINT, SIGTERM and
// SIGPIPE. Catching SIGPIPE also turns a write to a closed stdout into an
// ordinary error instead of killing the process.
func helperContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE)
}

// destDialer gets a helper its connections: from the running agent, which
// caches lookups and tokens, or, when no agent answers, from a service of
// its own over its own credentials.
type destDialer struct {
	client  proxy.Client
	project string
	log     *slog.Logger
	local   *proxy.Service // nil until the agent did not answer
}

// dial returns the connection's descriptor and whether it came from this
// process's own service (whose IAP relays live only as long as it does).
func (d *destDialer) dial(ctx context.Context, req proxy.DialRequest) (proxy.DialReply, *os.File, bool, error) {
	if d.local == nil {
		reply, f, err := d.client.Dial(ctx, req)
		switch {
		case err == nil && reply.Error != "":
			return reply, nil, false, errors.New(reply.Error)
		case err == nil:
			d.log.Debug("connected by the agent", "route", reply.Route, "addr", reply.Addr)
			return reply, f, false, nil
		case !errors.Is(err, proxy.ErrNoAgent):
			return reply, nil, false, err
		}
		d.log.Debug("no agent answered; using this process's own credentials", "reason", err)
		svc, err := localDestService(ctx, d.project, d.log)
		if err != nil {
			return proxy.DialReply{}, nil, true, err
		}
		d.local = svc
	}
	reply, f := d.local.Connect(ctx, req)
	if reply.Error != "" {
		return reply, nil, true, errors.New(reply.Error)
	}
	return reply, f, true, nil
}

func (d *destDialer) close() {
	if d.local != nil {
		d.local.Close()
	}
}
