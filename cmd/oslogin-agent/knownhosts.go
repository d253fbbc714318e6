package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"golang.org/x/crypto/ssh"

	"github.com/oslogin-agent/oslogin-agent/destination"
	"github.com/oslogin-agent/oslogin-agent/proxy"
)

const knownHostsUsage = `Usage:
  oslogin-agent known-hosts [--project P] [--zone Z] NAME [REASON]

For OpenSSH's KnownHostsCommand (OpenSSH 8.5 or later):

  KnownHostsCommand /path/to/oslogin-agent known-hosts %H %I

prints known_hosts lines for NAME from the instance's guest attributes
(hostkeys/), keyed by NAME exactly as given. NAME is compute.ID (the
HostKeyAlias), NAME.ZONE.PROJECT or an instance name. It fails closed: when
the instance publishes no usable host key it prints nothing, explains why on
stderr and exits 1, and ssh refuses the connection. With REASON ADDRESS
(a lookup by IP address) it prints nothing and succeeds, as it does for
REASON ORDER (key type preference) when NAME is not a destination name.
`

// runKnownHosts is the KnownHostsCommand.
func runKnownHosts(args []string, stdout, stderr io.Writer) int {
	var f destFlags
	var socket string
	var noCache bool
	fs := pflag.NewFlagSet("known-hosts", pflag.ContinueOnError)
	f.add(fs)
	fs.StringVarP(&socket, "socket", "a", "", "the agent's socket `PATH`, asked first (default: $SSH_AUTH_SOCK)")
	fs.BoolVar(&noCache, "no-cache", false, "ask the Compute API directly, not the agent's cache (as after a host key change)")
	if ok, code := parseSubFlags(fs, args, knownHostsUsage, stdout, stderr); !ok {
		return code
	}
	rest := fs.Args()
	if len(rest) < 1 || len(rest) > 2 {
		fmt.Fprintf(stderr, "oslogin-agent known-hosts: want NAME and at most a REASON, got %d arguments (run 'oslogin-agent known-hosts --help' for usage)\n", len(rest))
		return 2
	}
	if len(rest) == 2 && rest[1] == "ADDRESS" {
		return 0 // CheckHostIP: instances are known by name, not address
	}
	alias := rest[0]
	n, err := destination.Parse(alias)
	if err != nil {
		if len(rest) == 2 && rest[1] == "ORDER" {
			// OpenSSH 9.2 asks for the key order with the plain HostName
			// rather than the HostKeyAlias; the order is only a preference,
			// the HOSTNAME lookup that follows decides.
			return 0
		}
		return helperFail(stderr, "known-hosts", err)
	}
	n = n.WithDefaults(f.project, f.zone)
	ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
	defer cancel()
	if socket == "" {
		socket = os.Getenv("SSH_AUTH_SOCK")
	}
	if noCache {
		socket = ""
	}
	lines, err := knownHostsLines(ctx, proxy.Client{Socket: socket}, n, alias)
	if err != nil {
		return helperFail(stderr, "known-hosts", err)
	}
	fmt.Fprint(stdout, lines)
	return 0
}

// knownHostsLines looks n up and answers with its verified host keys under
// alias, the name ssh searches for. The running agent is asked first: it
// answers from its cache, so the three runs ssh may make per connection
// cost no Google call. Without an agent the Compute API is asked directly.
func knownHostsLines(ctx context.Context, agent proxy.Client, n destination.Name, alias string) (string, error) {
	reply, err := agent.Lookup(ctx, proxy.LookupRequest{Name: alias, Project: n.Project, Zone: n.Zone, HostKeys: true})
	switch {
	case err == nil && reply.Error != "":
		return "", errors.New(reply.Error)
	case err == nil:
		var keys []ssh.PublicKey
		for _, line := range reply.HostKeys {
			k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
			if err != nil {
				return "", fmt.Errorf("the agent sent an unusable host key: %w", err)
			}
			keys = append(keys, k)
		}
		return knownHostsFrom(alias, keys)
	case !errors.Is(err, proxy.ErrNoAgent):
		return "", err
	}
	r, err := newResolver(ctx, n.Project)
	if err != nil {
		return "", err
	}
	in, err := r.Lookup(ctx, n)
	if err != nil {
		return "", err
	}
	hk, err := r.HostKeys(ctx, in)
	if err != nil {
		return "", err
	}
	return knownHostsFrom(alias, hk.Keys)
}

func knownHostsFrom(alias string, keys []ssh.PublicKey) (string, error) {
	lines := destination.KnownHostsLines(alias, keys)
	if lines == "" {
		return "", fmt.Errorf("%q cannot be a known_hosts name", alias)
	}
	return lines, nil
}
