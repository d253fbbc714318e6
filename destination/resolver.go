package destination

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Source answers the two questions a connection asks about a destination.
// A Resolver asks the Compute API every time; a Cache remembers answers for
// a while. Both are safe for concurrent use.
type Source interface {
	// Lookup finds the instance a name stands for.
	Lookup(ctx context.Context, n Name) (*Instance, error)
	// HostKeys reads and verifies the instance's published host keys. It
	// returns a *NoHostKeysError when there are none to trust.
	HostKeys(ctx context.Context, in *Instance) (HostKeys, error)
}

// Options configure a Resolver.
type Options struct {
	// HTTPClient carries every call and adds the credentials, such as an
	// oauth2.Transport over Endpoints.HTTPTransport. Required.
	HTTPClient *http.Client
	// ComputeURL is the Compute API v1 base, Endpoints.Compute. Required.
	ComputeURL string
	// Project is used for names that do not carry one.
	Project string
}

// Resolver looks destinations up through the Compute API.
type Resolver struct {
	api     computeClient
	project string
}

var _ Source = (*Resolver)(nil)

// NewResolver checks the options; it makes no network call.
func NewResolver(opts Options) (*Resolver, error) {
	if opts.HTTPClient == nil {
		return nil, errors.New("destination: no HTTP client given")
	}
	if opts.ComputeURL == "" {
		return nil, errors.New("destination: no Compute API URL given")
	}
	base := strings.TrimSuffix(opts.ComputeURL, "/") + "/"
	return &Resolver{api: computeClient{hc: opts.HTTPClient, base: base}, project: opts.Project}, nil
}

// Lookup finds the instance n names. A name without a zone is searched in
// every zone (one aggregatedList call); one that matches in several zones
// is an *AmbiguousError. The project's common metadata is read only when
// the instance does not set every switch itself.
func (r *Resolver) Lookup(ctx context.Context, n Name) (*Instance, error) {
	n = n.WithDefaults(r.project, "")
	if n.Project == "" {
		return nil, fmt.Errorf("%s names no project; write NAME.ZONE.PROJECT or pass --project", n)
	}
	if err := n.check(); err != nil {
		return nil, err
	}
	var (
		j   *instanceJSON
		err error
	)
	if n.Zone != "" {
		ref := n.Instance
		if ref == "" {
			ref = n.ID
		}
		j, err = r.api.instance(ctx, n.Project, n.Zone, ref)
	} else {
		j, err = r.search(ctx, n)
	}
	if err != nil {
		return nil, explain(err, n)
	}
	in, err := instanceFrom(n.Project, j)
	if err != nil {
		return nil, err
	}
	// Compute accepts an id where a name goes; the answer must be the
	// instance asked for, never one whose id merely starts the same.
	if (n.ID != "" && in.ID != n.ID) || (n.Instance != "" && in.Name != n.Instance) {
		return nil, fmt.Errorf("asked the Compute API for %s, it described instance %s (id %s); not using it", n, in.Name, in.ID)
	}
	var proj metadataJSON
	if j.Metadata.needsProject() {
		p, err := r.api.project(ctx, n.Project)
		if err != nil {
			return nil, fmt.Errorf("read project %s's common instance metadata: %w", n.Project, explain(err, n))
		}
		proj = p.CommonInstanceMetadata
	}
	in.Switches = effectiveSwitches(j.Metadata, proj)
	return in, nil
}

// search finds an instance in any zone by name or id.
func (r *Resolver) search(ctx context.Context, n Name) (*instanceJSON, error) {
	filter := fmt.Sprintf("name = %q", n.Instance)
	if n.ID != "" {
		filter = "id = " + n.ID
	}
	list, err := r.api.aggregated(ctx, n.Project, filter)
	if err != nil {
		return nil, err
	}
	var found []*instanceJSON
	var zones []*Instance
	for i := range list {
		j := &list[i]
		// The filter is the server's business; the match is checked here.
		if (n.ID != "" && j.ID == n.ID) || (n.Instance != "" && j.Name == n.Instance) {
			found = append(found, j)
			zones = append(zones, &Instance{Zone: lastSegment(j.Zone)})
		}
	}
	switch len(found) {
	case 0:
		return nil, &NotFoundError{Name: n}
	case 1:
		return found[0], nil
	}
	return nil, &AmbiguousError{Name: n, Zones: zonesOf(zones)}
}

// HostKeys reads the hostkeys/ guest attributes of in, by id so that a VM
// recreated under the same name meanwhile is never mistaken for it.
func (r *Resolver) HostKeys(ctx context.Context, in *Instance) (HostKeys, error) {
	if _, err := strconv.ParseUint(in.ID, 10, 64); err != nil {
		return HostKeys{}, fmt.Errorf("%s has no usable id", in)
	}
	attrs, err := r.api.guestAttributes(ctx, in.Project, in.Zone, in.ID, hostKeyQuery)
	var aerr *APIError
	if errors.As(err, &aerr) && aerr.Code == http.StatusNotFound {
		// Google's answer when nothing is published under hostkeys/ (and
		// when the instance is gone; its record says it existed a moment
		// ago, and either way there is nothing to trust).
		return HostKeys{}, &NoHostKeysError{Instance: in}
	}
	if err != nil {
		return HostKeys{}, fmt.Errorf("read the host keys of %s: %w", in, explain(err, in.Destination()))
	}
	hk := ParseHostKeys(attrs)
	if len(hk.Keys) == 0 {
		return hk, &NoHostKeysError{Instance: in, Rejected: hk.Rejected}
	}
	return hk, nil
}
