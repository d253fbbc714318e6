package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/oslogin-agent/oslogin-agent/agent"
	"github.com/oslogin-agent/oslogin-agent/destination"
	"github.com/oslogin-agent/oslogin-agent/iaptunnel"
)

// Defaults for the zero values of Options.
const (
	DefaultDialTimeout = 20 * time.Second
	DefaultMaxTunnels  = 256
)

// Options configure a Service.
type Options struct {
	// Source answers lookups; the agent gives a *destination.Cache so
	// that a burst of connections costs one Compute call. Required.
	Source destination.Source
	// IAP configures tunnels: its TokenSource (required for the IAP
	// route), URL, HTTPClient and Account. Logger and timeouts default.
	IAP iaptunnel.Options
	// DialTimeout bounds a direct TCP connect.
	DialTimeout time.Duration
	// MaxTunnels bounds the IAP tunnels relayed at once.
	MaxTunnels int
	// Logger gets debug records of every dial; nil discards them.
	Logger *slog.Logger
}

// Service looks destinations up and connects to them. Create it with
// NewService and stop it with Close, which ends every relayed tunnel.
type Service struct {
	opts   Options
	log    *slog.Logger
	ctx    context.Context // done at Close: ends every relay
	cancel context.CancelFunc
	wg     sync.WaitGroup
	slots  chan struct{} // one per relayed tunnel
}

var _ agent.Destinations = (*Service)(nil)

// NewService checks opts and returns a running Service.
func NewService(opts Options) (*Service, error) {
	if opts.Source == nil {
		return nil, errors.New("proxy: no destination source given")
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.MaxTunnels <= 0 {
		opts.MaxTunnels = DefaultMaxTunnels
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.IAP.Logger == nil {
		opts.IAP.Logger = opts.Logger
	}
	s := &Service{opts: opts, log: opts.Logger, slots: make(chan struct{}, opts.MaxTunnels)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Close ends every relayed tunnel and waits for their goroutines.
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

// Lookup implements agent.Destinations over JSON.
func (s *Service) Lookup(ctx context.Context, req []byte) ([]byte, error) {
	var r LookupRequest
	if err := json.Unmarshal(req, &r); err != nil {
		return nil, fmt.Errorf("destination-lookup: malformed request: %w", err)
	}
	return json.Marshal(s.Find(ctx, r))
}

// Dial implements agent.Destinations over JSON.
func (s *Service) Dial(ctx context.Context, req []byte) ([]byte, *os.File, error) {
	var r DialRequest
	if err := json.Unmarshal(req, &r); err != nil {
		return nil, nil, fmt.Errorf("destination-dial: malformed request: %w", err)
	}
	reply, f := s.Connect(ctx, r)
	b, err := json.Marshal(reply)
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, nil, err
	}
	return b, f, nil
}

// name parses a request's destination.
func name(n, project, zone string) (destination.Name, error) {
	d, err := destination.Parse(n)
	if err != nil {
		return d, err
	}
	return d.WithDefaults(project, zone), nil
}

// Find looks an instance up and, when asked, reads its host keys.
func (s *Service) Find(ctx context.Context, r LookupRequest) LookupReply {
	n, err := name(r.Name, r.Project, r.Zone)
	if err != nil {
		return LookupReply{Error: err.Error()}
	}
	in, err := s.opts.Source.Lookup(ctx, n)
	if err != nil {
		return LookupReply{Error: err.Error()}
	}
	reply := LookupReply{Instance: in}
	if r.HostKeys {
		hk, err := s.opts.Source.HostKeys(ctx, in)
		if err != nil {
			return LookupReply{Instance: in, Error: err.Error()}
		}
		for _, k := range hk.Keys {
			reply.HostKeys = append(reply.HostKeys, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))))
		}
	}
	return reply
}

// Connect resolves r's instance and connects to it. The returned file, nil
// when the reply carries an Error, belongs to the caller.
func (s *Service) Connect(ctx context.Context, r DialRequest) (DialReply, *os.File) {
	fail := func(err error) (DialReply, *os.File) { return DialReply{Error: err.Error()}, nil }
	if r.Port < 1 || r.Port > 65535 {
		return fail(fmt.Errorf("port %d is not a TCP port", r.Port))
	}
	n, err := name(r.Name, r.Project, r.Zone)
	if err != nil {
		return fail(err)
	}
	in, err := s.opts.Source.Lookup(ctx, n)
	if err != nil {
		return fail(err)
	}
	route := r.Route
	if route == RouteAuto {
		route = RouteIAP
		if in.ExternalIP != "" {
			route = RouteExternal
		}
	}
	start := time.Now()
	var f *os.File
	reply := DialReply{Route: route}
	switch route {
	case RouteExternal, RouteInternal:
		addr := in.ExternalIP
		if route == RouteInternal {
			addr = in.InternalIP
		}
		if addr == "" {
			return fail(fmt.Errorf("%s has no %s address; connect through IAP instead (--iap)", in, route))
		}
		reply.Addr = net.JoinHostPort(addr, strconv.Itoa(r.Port))
		f, err = s.direct(ctx, in, reply.Addr)
	case RouteIAP:
		f, err = s.iap(ctx, in, r.Port)
	default:
		return fail(fmt.Errorf("unknown route %q: want external, internal or iap", route))
	}
	if err != nil {
		s.log.Debug("dial failed", "instance", in.Name, "route", route, "error", err)
		return fail(err)
	}
	s.log.Debug("dialled", "instance", in.Name, "zone", in.Zone, "route", route, "addr", reply.Addr, "latency", time.Since(start))
	return reply, f
}

// direct opens a TCP connection and returns its descriptor: the helper (or
// ssh, with fdpass) then talks to the VM with no process in between.
func (s *Service) direct(ctx context.Context, in *destination.Instance, addr string) (*os.File, error) {
	d := net.Dialer{Timeout: s.opts.DialTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, dialError(in, addr, err)
	}
	defer c.Close()
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		return nil, fmt.Errorf("connected to %s, but cannot hand the connection on: %w", addr, err)
	}
	return f, nil
}

// dialError says what a failed direct connect means for the user.
func dialError(in *destination.Instance, addr string, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s refused the connection to %s: nothing listens on that port (is sshd running, is the instance up?)", in, addr)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("connecting to %s of %s timed out: a firewall may drop it, or the instance is stopped (status %s); try --iap", addr, in, in.Status)
	}
	return fmt.Errorf("cannot connect to %s of %s: %w", addr, in, err)
}
