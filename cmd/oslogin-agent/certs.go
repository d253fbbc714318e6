package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/oauth2"

	"github.com/oslogin-agent/oslogin-agent/agent"
	"github.com/oslogin-agent/oslogin-agent/destination"
	"github.com/oslogin-agent/oslogin-agent/oslogin"
)

// How long the host key index is trusted. A hit older than indexTTL is
// rebuilt (switches and host keys may have changed); a miss rebuilds at
// most once per missTTL, so connections to hosts that are no VM of ours
// cost nothing after the first.
const (
	indexTTL = 5 * time.Minute
	missTTL  = 30 * time.Second
)

// parseCertMode reads --certificates.
func parseCertMode(s string) (agent.CertMode, error) {
	switch s {
	case "auto":
		return agent.CertAuto, nil
	case "always":
		return agent.CertAlways, nil
	case "never":
		return agent.CertNever, nil
	}
	return 0, fmt.Errorf("--certificates %q: want auto, always or never", s)
}

// certScope is one --certificates-for value: a whole project, or one
// instance NAME.ZONE.PROJECT.
type certScope struct {
	project string
	name    *destination.Name
}

func parseCertScopes(vals []string) ([]certScope, error) {
	var out []certScope
	for _, v := range vals {
		if !strings.Contains(v, ".") {
			out = append(out, certScope{project: v})
			continue
		}
		n, err := destination.Parse(v)
		if err != nil || n.Zone == "" || n.Project == "" {
			return nil, fmt.Errorf("--certificates-for %q: give a project ID or NAME.ZONE.PROJECT", v)
		}
		out = append(out, certScope{project: n.Project, name: &n})
	}
	return out, nil
}

// hostKeyIndex implements agent.Targets: it maps the host keys the VMs in
// scope published as guest attributes onto those VMs, read through the
// Compute API with the agent's credentials and kept in a destination.Cache.
type hostKeyIndex struct {
	res    *destination.Resolver
	cache  *destination.Cache
	scopes []certScope
	log    *slog.Logger

	build sync.Mutex // one rebuild at a time; later callers use its result

	mu    sync.Mutex
	index map[string]agent.Target
	built time.Time
}

// ByHostKey answers from the index, rebuilding it when it is old or when
// the key is unknown and the index was not rebuilt in the last missTTL.
func (h *hostKeyIndex) ByHostKey(ctx context.Context, hk ssh.PublicKey) (agent.Target, bool, error) {
	blob := string(hk.Marshal())
	t, ok, fresh := h.find(blob, time.Now())
	if fresh {
		return t, ok, nil
	}
	h.build.Lock()
	defer h.build.Unlock()
	if t, ok, fresh := h.find(blob, time.Now()); fresh {
		return t, ok, nil // rebuilt while this caller waited
	}
	if err := h.rebuild(ctx); err != nil {
		return agent.Target{}, false, err
	}
	t, ok, _ = h.find(blob, time.Now())
	return t, ok, nil
}

// find looks blob up; fresh says the answer may be used without a rebuild.
func (h *hostKeyIndex) find(blob string, now time.Time) (agent.Target, bool, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.index == nil {
		return agent.Target{}, false, false
	}
	t, ok := h.index[blob]
	age := now.Sub(h.built)
	return t, ok, (ok && age < indexTTL) || (!ok && age < missTTL)
}

// Forget implements agent.TargetForgetter: after t refused a certificate,
// the next lookup rebuilds the index from the Compute API (one list per
// project; host keys stay cached, they did not change), so a changed
// service account is seen at once instead of after indexTTL.
func (h *hostKeyIndex) Forget(t agent.Target) {
	h.mu.Lock()
	h.built = time.Time{}
	h.mu.Unlock()
	for _, s := range h.scopes {
		if s.name != nil && s.name.Project == t.Project && s.name.Zone == t.Zone && (s.name.Instance == t.Name || s.name.ID == t.ID) {
			h.cache.Forget() // a VM named by --certificates-for is read through the cache
			break
		}
	}
}

// rebuild reads every VM in scope and its host keys. A VM without usable
// host keys is left out (it can still be reached with the plain key); a
// failure to list a project fails the rebuild, and is reported.
func (h *hostKeyIndex) rebuild(ctx context.Context) error {
	start := time.Now()
	var ins []*destination.Instance
	for _, s := range h.scopes {
		if s.name != nil {
			in, err := h.cache.Lookup(ctx, *s.name)
			if err != nil {
				h.log.Warn("certificates: cannot look up instance", "instance", s.name.String(), "error", err.Error())
				continue
			}
			ins = append(ins, in)
			continue
		}
		list, err := h.res.List(ctx, s.project)
		if err != nil {
			// Not again for missTTL: every connection would wait for it.
			h.mu.Lock()
			if h.index == nil {
				h.index = map[string]agent.Target{}
			}
			h.built = time.Now()
			h.mu.Unlock()
			return fmt.Errorf("find the VMs whose host keys select certificates (needs compute.instances.list, "+
				"roles/compute.viewer; or name VMs with --certificates-for, or --certificates never): %w", err)
		}
		ins = append(ins, list...)
	}
	index := map[string]agent.Target{}
	for _, in := range ins {
		hk, err := h.cache.HostKeys(ctx, in)
		if err != nil {
			h.log.Debug("certificates: no host keys for instance", "instance", in.Name, "error", err.Error())
			continue
		}
		t := agent.Target{Project: in.Project, Zone: in.Zone, Name: in.Name, ID: in.ID,
			ServiceAccount: in.ServiceAccount, CertificateRequired: in.Switches.OSLoginCertificates}
		for _, k := range hk.Keys {
			index[string(k.Marshal())] = t
		}
	}
	h.mu.Lock()
	h.index, h.built = index, time.Now()
	h.mu.Unlock()
	h.log.Debug("certificates: host key index rebuilt", "instances", len(ins), "host_keys", len(index), "latency", time.Since(start))
	return nil
}

// certifier adapts oslogin.Client to agent.Certifier.
type certifier struct{ c *oslogin.Client }

func (c certifier) Certify(ctx context.Context, t agent.Target, line string) (*ssh.Certificate, error) {
	return c.c.SignCertificate(ctx, oslogin.CertificateRequest{PublicKey: line, Project: t.Project, Zone: t.Zone,
		InstanceID: t.ID, ServiceAccount: t.ServiceAccount})
}

// certOptions builds the agent's certificate options from the flags.
func certOptions(cfg *config, id *oslogin.Identity, client *oslogin.Client, log *slog.Logger) (agent.CertOptions, error) {
	if cfg.certMode == agent.CertNever {
		return agent.CertOptions{Mode: agent.CertNever}, nil
	}
	if cfg.endpoints.OSLogin != oslogin.DefaultOSLoginURL && cfg.endpoints.Compute == oslogin.DefaultComputeURL {
		// --endpoint moved OS Login elsewhere (a test or a private
		// endpoint) but the Compute API is still Google's: mixing the two
		// would send this agent's token to a service it was not meant for.
		log.Info("certificates off: --endpoint points OS Login away from Google while the Compute API is still Google's; " +
			"set OSLOGIN_EMULATOR_HOST to move both")
		return agent.CertOptions{Mode: agent.CertNever}, nil
	}
	scopes := cfg.certScopes
	if len(scopes) == 0 {
		scopes = []certScope{{project: id.Project}}
	}
	hc := &http.Client{Transport: &oauth2.Transport{Source: oauth2.ReuseTokenSource(nil, id.TokenSource),
		Base: cfg.endpoints.HTTPTransport()}, Timeout: helperTimeout}
	res, err := destination.NewResolver(destination.Options{HTTPClient: hc, ComputeURL: cfg.endpoints.Compute, Project: id.Project})
	if err != nil {
		return agent.CertOptions{}, err
	}
	idx := &hostKeyIndex{res: res, cache: destination.NewCache(res, destination.CacheOptions{}), scopes: scopes, log: log}
	return agent.CertOptions{Mode: cfg.certMode, Targets: idx, Certifier: certifier{client}}, nil
}
