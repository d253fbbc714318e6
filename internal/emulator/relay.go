package emulator

import (
	"fmt"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

// relayBackend gives the IAP relay (package iaprelay) the emulator's issued
// tokens, instances and IAP grants, so the relay face shares one state and
// one clock with every other face.
type relayBackend struct{ e *Emulator }

// Authenticate accepts only tokens the emulator issued and that are still
// valid by the emulator clock; IAP takes any scope that covers
// cloud-platform, as gcloud and IAP Desktop ask for.
func (b relayBackend) Authenticate(token string) (string, time.Time, error) {
	e := b.e
	e.mu.Lock()
	defer e.mu.Unlock()
	at := e.tokens[token]
	if at == nil || !e.nowLocked().Before(at.expiry) {
		return "", time.Time{}, fmt.Errorf("unknown or expired access token: %w", iaprelay.ErrUnauthenticated)
	}
	return at.email, at.expiry, nil
}

// Resolve finds an instance by project id (or number), zone and name; only
// nic0 exists.
func (b relayBackend) Resolve(project, zone, name, iface string) (iaprelay.Target, error) {
	e := b.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if project != e.cfg.ProjectID && project != e.cfg.ProjectNumber {
		return iaprelay.Target{}, fmt.Errorf("project %q: %w", project, iaprelay.ErrNotFound)
	}
	if iface == "" {
		iface = "nic0"
	}
	in := e.instanceLocked(zone, name)
	if zone == "" || in == nil || iface != "nic0" {
		return iaprelay.Target{}, fmt.Errorf("instance %s/%s interface %s: %w", zone, name, iface, iaprelay.ErrNotFound)
	}
	return iaprelay.Target{Project: e.cfg.ProjectID, Zone: in.Zone, Name: in.Name, ID: in.ID,
		Addr: in.NetworkIP, Running: in.Status == "RUNNING"}, nil
}

// MayTunnel is iap.tunnelInstances.accessViaIAP on the project or instance.
func (b relayBackend) MayTunnel(email string, t iaprelay.Target) bool {
	e := b.e
	e.mu.Lock()
	defer e.mu.Unlock()
	a, in := e.lookupLocked(email), e.instanceLocked(t.Zone, t.ID)
	return a != nil && in != nil && e.mayTunnelLocked(a, in)
}
