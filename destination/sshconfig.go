package destination

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
)

// SSHConfig writes ssh_config blocks that make stock ssh reach instances
// the way this project does: host keys from guest attributes through
// `oslogin-agent known-hosts`, checked strictly, keys from the agent, and
// the connection through `oslogin-agent proxy` unless Direct.
type SSHConfig struct {
	// Agent is the absolute path of the oslogin-agent binary, run by ssh.
	Agent string
	// Socket is the agent's socket for IdentityAgent; empty leaves ssh's
	// default (SSH_AUTH_SOCK).
	Socket string
	// User is the POSIX username OS Login gives the account; empty leaves
	// the User line out.
	User string
	// Direct connects straight to the instance's address instead of
	// through the ProxyCommand.
	Direct bool
	// InternalIP uses nic0's internal address rather than the external one.
	InternalIP bool
}

// HostBlock is the block for one instance, named NAME.ZONE.PROJECT. Its
// HostKeyAlias is compute.<id>, so a recreated VM (a new id) is never
// mistaken for the old one, and a renamed one keeps its identity.
func (c SSHConfig) HostBlock(in *Instance) (string, error) {
	addr := in.ExternalIP
	if c.InternalIP || addr == "" && !c.Direct {
		addr = in.InternalIP
	}
	if addr == "" {
		return "", fmt.Errorf("%s has no external address; use --internal-ip, or the proxy (leave out --direct)", in)
	}
	lines := [][2]string{
		{"HostName", addr},
		{"HostKeyAlias", in.Alias()},
	}
	kh, err := c.knownHostsCommand("--project", in.Project, "--zone", in.Zone, "%H", "%I")
	if err != nil {
		return "", err
	}
	lines = append(lines, [2]string{"KnownHostsCommand", kh})
	return c.block(in.Destination().String(), lines)
}

// PatternBlock covers every instance of a zone (or, with zone empty, of a
// project) by name, NAME.ZONE.PROJECT, resolved when ssh connects. It
// needs the proxy: the address is not known when the config is written.
func (c SSHConfig) PatternBlock(project, zone string) (string, error) {
	if c.Direct {
		return "", fmt.Errorf("a pattern for every instance needs the proxy; name instances to connect to them directly")
	}
	if !projectRE.MatchString(project) || zone != "" && !zoneRE.MatchString(zone) {
		return "", fmt.Errorf("%q and %q are not a project id and zone", project, zone)
	}
	pattern := "*.*." + project
	if zone != "" {
		pattern = "*." + zone + "." + project
	}
	// No HostKeyAlias: %H is then the name typed, NAME.ZONE.PROJECT, which
	// known-hosts resolves and answers for.
	kh, err := c.knownHostsCommand("%H", "%I")
	if err != nil {
		return "", err
	}
	return c.block(pattern, [][2]string{{"KnownHostsCommand", kh}})
}

func (c SSHConfig) block(host string, lines [][2]string) (string, error) {
	if !filepath.IsAbs(c.Agent) {
		return "", fmt.Errorf("the oslogin-agent path %q is not absolute", c.Agent)
	}
	// Host keys come from the Compute API only: checked strictly, never
	// learnt from the server into the user's known_hosts files.
	lines = append(lines, [2]string{"StrictHostKeyChecking", "yes"}, [2]string{"CheckHostIP", "no"},
		[2]string{"UpdateHostKeys", "no"})
	if c.Socket != "" {
		s, err := configWord(c.Socket)
		if err != nil {
			return "", fmt.Errorf("agent socket: %w", err)
		}
		lines = append(lines, [2]string{"IdentityAgent", s})
	}
	if c.User != "" {
		if !usernameRE.MatchString(c.User) {
			return "", fmt.Errorf("%q is not a POSIX username OS Login gives out", c.User)
		}
		lines = append(lines, [2]string{"User", c.User})
	}
	if !c.Direct {
		if strings.ContainsAny(c.Agent, "'\n") {
			return "", fmt.Errorf("the oslogin-agent path %q cannot be written into a ProxyCommand", c.Agent)
		}
		// ssh runs ProxyCommand through the shell. With fdpass the proxy
		// hands ssh the connection the agent made and exits, so no
		// process sits between ssh and a directly reachable VM.
		lines = append(lines, [2]string{"ProxyCommand", "exec '" + escapePercent(c.Agent) + "' proxy --fdpass %n %p"},
			[2]string{"ProxyUseFdpass", "yes"})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Host %s\n", host)
	for _, l := range lines {
		fmt.Fprintf(&b, "    %s %s\n", l[0], l[1])
	}
	return b.String(), nil
}

// knownHostsCommand is the KnownHostsCommand line. ssh splits it into
// words itself (no shell) and expands % tokens in every word.
func (c SSHConfig) knownHostsCommand(args ...string) (string, error) {
	agent, err := configWord(c.Agent)
	if err != nil {
		return "", fmt.Errorf("oslogin-agent path: %w", err)
	}
	return agent + " known-hosts " + strings.Join(args, " "), nil
}

// configWord makes s one ssh_config word: %-escaped, double-quoted when it
// has spaces. Quotes and control characters cannot be written safely.
func configWord(s string) (string, error) {
	if s == "" || strings.ContainsAny(s, "\"\\\n\r\t") {
		return "", fmt.Errorf("%q cannot be written into ssh_config", s)
	}
	s = escapePercent(s)
	if strings.ContainsAny(s, " #'") {
		s = `"` + s + `"`
	}
	return s, nil
}

// usernameRE is the guest's rule for OS Login usernames.
var usernameRE = regexp.MustCompile(`^[a-zA-Z0-9._][a-zA-Z0-9._-]{0,31}$`)

func escapePercent(s string) string { return strings.ReplaceAll(s, "%", "%%") }
