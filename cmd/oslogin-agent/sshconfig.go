package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/oslogin-agent/oslogin-agent/destination"
)

const sshConfigUsage = `Usage:
  oslogin-agent ssh-config [--project P] [--zone Z] [INSTANCE...] >> ~/.ssh/config

prints ssh_config blocks for instances, named NAME.ZONE.PROJECT: HostKeyAlias
compute.<id>, host keys from guest attributes through known-hosts, checked
strictly, the agent as IdentityAgent, the OS Login username as User, and
the connection through 'oslogin-agent proxy'. Without INSTANCE it prints one
block matching every NAME.ZONE.PROJECT of the zone (or project), resolved
when ssh connects.

User is --user, else OSLOGIN_USER as the running agent exports it; it is
left out when neither is set. IdentityAgent is --socket, else SSH_AUTH_SOCK.
`

// runSSHConfig prints ssh_config for instances.
func runSSHConfig(args []string, stdout, stderr io.Writer) int {
	var (
		f                  destFlags
		user, socket       string
		direct, internalIP bool
	)
	fs := pflag.NewFlagSet("ssh-config", pflag.ContinueOnError)
	f.add(fs)
	fs.StringVar(&user, "user", os.Getenv("OSLOGIN_USER"), "POSIX `username` for User (default $OSLOGIN_USER)")
	fs.StringVar(&socket, "socket", os.Getenv("SSH_AUTH_SOCK"), "agent socket `path` for IdentityAgent (default $SSH_AUTH_SOCK)")
	fs.BoolVar(&direct, "direct", false, "connect straight to the instance's address, without the proxy")
	fs.BoolVar(&internalIP, "internal-ip", false, "use the instance's internal address")
	if ok, code := parseSubFlags(fs, args, sshConfigUsage, stdout, stderr); !ok {
		return code
	}
	exe, err := os.Executable()
	if err != nil {
		return helperFail(stderr, "ssh-config", fmt.Errorf("find this program's path for the config: %w", err))
	}
	if socket != "" {
		if socket, err = filepath.Abs(socket); err != nil {
			return helperFail(stderr, "ssh-config", err)
		}
	}
	c := destination.SSHConfig{Agent: exe, Socket: socket, User: user, Direct: direct, InternalIP: internalIP}
	ctx, cancel := context.WithTimeout(context.Background(), 2*helperTimeout)
	defer cancel()
	out, err := sshConfig(ctx, c, f, fs.Args())
	if err != nil {
		return helperFail(stderr, "ssh-config", err)
	}
	fmt.Fprint(stdout, out)
	return 0
}

func sshConfig(ctx context.Context, c destination.SSHConfig, f destFlags, names []string) (string, error) {
	var b strings.Builder
	b.WriteString("# Written by oslogin-agent ssh-config.\n")
	if c.User == "" {
		b.WriteString("# No User line: OSLOGIN_USER is not set; start the agent (eval \"$(oslogin-agent -s)\") or pass --user.\n")
	}
	if len(names) == 0 {
		if f.project == "" {
			return "", fmt.Errorf("name instances, or pass --project (and --zone) for a block matching NAME.ZONE.PROJECT")
		}
		block, err := c.PatternBlock(f.project, f.zone)
		if err != nil {
			return "", err
		}
		b.WriteString(block)
		return b.String(), nil
	}
	r, err := newResolver(ctx, f.project)
	if err != nil {
		return "", err
	}
	for _, s := range names {
		n, err := destination.Parse(s)
		if err != nil {
			return "", err
		}
		in, err := r.Lookup(ctx, n.WithDefaults(f.project, f.zone))
		if err != nil {
			return "", err
		}
		block, err := c.HostBlock(in)
		if err != nil {
			return "", err
		}
		b.WriteString("\n" + block)
	}
	return b.String(), nil
}
