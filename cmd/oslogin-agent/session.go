package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
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

// startSession opens the socket, finds the credentials, registers the
// first key and only then serves the socket, so that a client that can
// connect can also log in. The socket is opened first so that a path that
// cannot be used costs no import and delete at OS Login. Every step is
// bounded by --start-timeout and ends when ctx does (a signal).
func startSession(ctx context.Context, cfg *config, log *slog.Logger) (_ *session, err error) {
	agent.Harden(log)
	startCtx, cancelStart := context.WithTimeout(ctx, cfg.startTime)
	defer cancelStart()
	defer func() {
		if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("no key registered within --start-timeout %v; the last error: %w", cfg.startTime, err)
		}
	}()
	// The socket first: a path that cannot be served must not cost a key
	// registration and a delete.
	ln := cfg.activated
	if ln == nil {
		if ln, err = agent.Listen(cfg.socket); err != nil { // "" means Listen's private default directory
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			ln.Close()
		}
	}()
	socket := ln.Addr().String()
	if emu := cfg.endpoints.Emulator; emu != "" {
		// Say so plainly when the emulator is not there, rather than as a
		// failed token request.
		c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(startCtx, "tcp", emu)
		if err != nil {
			return nil, fmt.Errorf("nothing answers at %s=%s: start oslogin-emulator (it prints the address to use) or correct the variable",
				oslogin.EmulatorHostEnv, emu)
		}
		c.Close()
	}
	id, err := bounded(startCtx, func() (*oslogin.Identity, error) {
		return oslogin.FindIdentity(startCtx, oslogin.IdentityOptions{
			Account: cfg.account, Project: cfg.project,
			TokenInfoURL: cfg.endpoints.TokenInfo, HTTPClient: cfg.endpoints.HTTPClient(),
		})
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
	certs, err := certOptions(cfg, id, client, log)
	if err != nil {
		return nil, err
	}
	dests, err := newDestService(cfg.endpoints, id, log)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	a, err := agent.New(agent.Options{
		Certificates: certs,
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
	if err := a.Start(startCtx); err != nil { // every call in it is bounded by startCtx
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
			if errors.Is(err, agent.ErrSocketLost) {
				// The agent has deleted its keys; stop the process the
				// way every mode already handles.
				syscall.Kill(os.Getpid(), syscall.SIGTERM)
			}
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

// bounded runs a start-up step that may not watch its context all the way
// down (credential discovery asks the metadata server through clients
// that ignore it) and returns when ctx ends even if the step has not. The
// step's goroutine then finishes on its own, bounded by its HTTP clients'
// timeouts; nothing waits for it, as start-up has failed and the process
// is about to exit.
func bounded[T any](ctx context.Context, step func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1) // never blocks the step
	go func() {
		v, err := step()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("start-up interrupted: %w", ctx.Err())
	}
}

func closeAgent(a *agent.Agent) error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return a.Close(ctx)
}
