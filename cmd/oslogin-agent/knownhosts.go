package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/oslogin-agent/oslogin-agent/destination"
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
	fs := pflag.NewFlagSet("known-hosts", pflag.ContinueOnError)
	f.add(fs)
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
	lines, err := knownHostsLines(ctx, n, alias)
	if err != nil {
		return helperFail(stderr, "known-hosts", err)
	}
	fmt.Fprint(stdout, lines)
	return 0
}

// knownHostsLines looks n up and answers with its verified host keys under
// alias, the name ssh searches for.
func knownHostsLines(ctx context.Context, n destination.Name, alias string) (string, error) {
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
	lines := destination.KnownHostsLines(alias, hk.Keys)
	if lines == "" {
		return "", fmt.Errorf("%q cannot be a known_hosts name", alias)
	}
	return lines, nil
}
