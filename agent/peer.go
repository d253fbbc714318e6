package agent

import "log/slog"

// peerCred is what the kernel says about the process at the other end of a
// connection, as of the moment it connected.
type peerCred struct {
	pid int32
	uid uint32
	gid uint32
	exe string // /proc/<pid>/exe, "" when unreadable
}

// attr is the peer as a log attribute group.
func (p peerCred) attr() slog.Attr {
	return slog.Group("peer",
		slog.Int("pid", int(p.pid)),
		slog.Int("uid", int(p.uid)),
		slog.Int("gid", int(p.gid)),
		slog.String("exe", p.exe))
}

// peerAllowed applies OpenSSH's rule (ssh-agent.c, handle_socket_read):
// only the agent's own user and root may use it. The socket's mode already
// says so; this check also holds when the mode or directory was loosened.
func (a *Agent) peerAllowed(p peerCred) bool {
	return p.uid == 0 || int64(p.uid) == int64(a.uid)
}
