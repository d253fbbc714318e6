package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/oslogin-agent/oslogin-agent/agent"
	"github.com/oslogin-agent/oslogin-agent/oslogin"
	"github.com/oslogin-agent/oslogin-agent/proxy"
)

// closeTimeout bounds the deletion of keys at exit. A key that cannot be
// deleted in that time still dies by its TTL.
const closeTimeout = 20 * time.Second

// session is one running agent: its key registered, its socket serving.
type session struct {
	agent    *agent.Agent
	dests    *proxy.Service // the destination cache and tunnels helpers use
	ln       net.Listener
	socket   string
	account  string
	username string
	log      *slog.Logger
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// startSession finds the credentials, registers the first key and only then
// opens the socket, so that a client that can connect can also log in.
func startSession(ctx context.Context, cfg *config, log *slog.Logger) (*session, error) {
	agent.Harden(log)
	socket := cfg.socket
	if socket == "" && cfg.activation.fds == 0 {
		var err error
		if socket, err = agent.DefaultSocketPath(); err != nil {
			return nil, err
		}
	}
	startCtx, cancelStart := context.WithTimeout(ctx, cfg.startTime)
	defer cancelStart()
	id, err := oslogin.FindIdentity(startCtx, oslogin.IdentityOptions{
		Account: cfg.account, Project: cfg.project,
		TokenInfoURL: cfg.endpoints.TokenInfo, HTTPClient: cfg.endpoints.HTTPClient(),
	})
	if err != nil {
		return nil, err
	}
	client, err := oslogin.New(ctx, oslogin.Options{
		Account: id.Account, Project: id.Project, TokenSource: id.TokenSource,
		Endpoint: cfg.endpoints.OSLogin, Transport: cfg.endpoints.HTTPTransport(),
		Regions: cfg.regions, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	dests, err := newDestService(cfg.endpoints, id, log)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	a, err := agent.New(agent.Options{
		Destinations: dests,
		Registrar:    client,
		KeyType:      cfg.keyType,
		TTL:          cfg.ttl,
		Rotate:       cfg.rotate,
		Propagation:  cfg.propagation,
		Comment:      "oslogin-agent@" + host,
		Logger:       log,
	})
	if err != nil {
		dests.Close()
		return nil, err
	}
	if err := a.Start(startCtx); err != nil {
		dests.Close()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("%w (no key registered within --start-timeout %v)", err, cfg.startTime)
		}
		return nil, errors.Join(err, closeAgent(a))
	}
	var ln net.Listener
	if cfg.activation.fds > 0 {
		ln, err = cfg.activation.listener()
		if err == nil {
			socket = ln.Addr().String()
		}
	} else {
		ln, err = agent.Listen(socket)
	}
	if err != nil {
		dests.Close()
		return nil, errors.Join(err, closeAgent(a))
	}
	runCtx, cancel := context.WithCancel(ctx)
	s := &session{agent: a, dests: dests, ln: ln, socket: socket, account: id.Account, username: a.Username(), log: log, cancel: cancel}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := a.Serve(runCtx, ln); err != nil && runCtx.Err() == nil {
			log.Error("agent socket failed", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := a.Run(runCtx); err != nil && runCtx.Err() == nil {
			log.Error("key lease loop failed", "err", err)
		}
	}()
	attrs := []any{"socket", socket, "pid", os.Getpid(), "account", id.Account, "project", id.Project,
		"username", s.username, "credentials", id.Source}
	if cfg.endpoints.Emulator != "" {
		attrs = append(attrs, "emulator", cfg.endpoints.Emulator)
	}
	for _, k := range a.Keys() {
		attrs = append(attrs, "key", k.Fingerprint, "expires", k.Expiry.UTC().Format(time.RFC3339))
	}
	log.Info("oslogin-agent ready", attrs...)
	return s, nil
}

// stop closes the socket, stops renewing and deletes every key from OS Login.
func (s *session) stop() error {
	s.cancel()
	s.wg.Wait()
	s.ln.Close() // removes the socket file; Serve may have closed it already
	s.dests.Close()
	err := closeAgent(s.agent)
	if err != nil {
		s.log.Error("could not delete every key from OS Login; they expire by their TTL", "err", err)
	} else {
		s.log.Info("keys deleted from OS Login; agent stopped")
	}
	return err
}

func closeAgent(a *agent.Agent) error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return a.Close(ctx)
}
