// Package destination owns the VMs that ssh connects to: it turns the names
// people and ssh_config use (NAME, NAME.ZONE.PROJECT, compute.ID) into
// instance records read from the Compute Engine API, and reads each VM's SSH
// host keys from its guest attributes so that ssh can verify the host
// without trusting it on first use.
//
// It talks to the few Compute REST methods it needs directly, over the
// authenticated http.Client the agent already builds, rather than through
// google.golang.org/api/compute/v1: that generated client is large and the
// agent is meant to stay small (see BENCHMARKS.md for the numbers).
//
// Nothing here keeps process-wide state. A Resolver holds its HTTP client,
// endpoint and clock; a Cache wraps any Source with bounded lifetimes, so a
// long-lived agent can hold one and answer short-lived helpers from it.
package destination
