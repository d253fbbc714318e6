package main

import (
	"context"
	"log/slog"
	"net/http"

	"golang.org/x/oauth2"

	"github.com/oslogin-agent/oslogin-agent/destination"
	"github.com/oslogin-agent/oslogin-agent/iaptunnel"
	"github.com/oslogin-agent/oslogin-agent/oslogin"
	"github.com/oslogin-agent/oslogin-agent/proxy"
)

// newDestService builds what answers destination requests: a cache over
// the Compute API and an IAP dialer, sharing one token source so that a
// token is fetched once per lifetime, not once per connection. The agent
// runs one for its helpers; a helper that finds no agent runs its own.
func newDestService(ep oslogin.Endpoints, id *oslogin.Identity, log *slog.Logger) (*proxy.Service, error) {
	ts := oauth2.ReuseTokenSource(nil, id.TokenSource)
	hc := &http.Client{
		Transport: &oauth2.Transport{Source: ts, Base: ep.HTTPTransport()},
		Timeout:   helperTimeout,
	}
	r, err := destination.NewResolver(destination.Options{HTTPClient: hc, ComputeURL: ep.Compute, Project: id.Project})
	if err != nil {
		return nil, err
	}
	return proxy.NewService(proxy.Options{
		Source: destination.NewCache(r, destination.CacheOptions{}),
		IAP: iaptunnel.Options{
			TokenSource: ts,
			URL:         ep.IAPRelay,
			HTTPClient:  &http.Client{Transport: ep.HTTPTransport()},
			Account:     id.Account,
			Logger:      log,
		},
		Logger: log,
	})
}

// localDestService is a helper's own service when no agent answers: the
// credentials found the way the agent finds them, nothing kept after exit.
func localDestService(ctx context.Context, project string, log *slog.Logger) (*proxy.Service, error) {
	ep, id, err := helperIdentity(ctx, project)
	if err != nil {
		return nil, err
	}
	return newDestService(ep, id, log)
}
