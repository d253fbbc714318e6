package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// Names of the destination extensions. The helpers that ssh starts
// (ProxyCommand, KnownHostsCommand, the local-port tunnel) ask the running
// agent instead of Google, so that instance records, host keys and access
// tokens are fetched once per agent rather than once per connection.
const (
	ExtDestinationLookup = "destination-lookup@oslogin-agent"
	ExtDestinationDial   = "destination-dial@oslogin-agent"
)

// Destinations answers the destination extensions. The requests and
// replies are opaque here (package proxy defines them), so the agent keeps
// knowing nothing about Compute Engine or IAP. A returned error means the
// request itself was unusable; what went wrong with the destination (not
// found, denied) belongs in the reply, where the helper can print it.
type Destinations interface {
	// Lookup answers a request for an instance record and host keys.
	Lookup(ctx context.Context, req []byte) ([]byte, error)
	// Dial connects to a destination and returns a descriptor of the
	// connection, which the agent passes to the helper and then closes; a
	// nil file means the reply explains why there is none.
	Dial(ctx context.Context, req []byte) ([]byte, *os.File, error)
}

// Refusals of the destination extensions. They are logged at Warn: a
// legitimate helper never sees them.
var (
	errDestDisabled  = errors.New("this agent does not serve destinations")
	errDestForwarded = errors.New("destination requests are refused on a connection that carried a session-bind (a forwarded agent)")
	errDestPeer      = errors.New("destination requests are answered only for this agent's own binary run by its own user")
)

// destExtension is Extension's hook for the destination extensions: the
// policy check, then the call into Destinations. The reply is the
// SSH_AGENT_EXTENSION_RESPONSE, the extension name and the payload; a
// dial's descriptor rides on the reply's first write (fdWriter).
func (c *conn) destExtension(name string, contents []byte) ([]byte, error) {
	if err := c.destAllowed(); err != nil {
		c.log.Warn("destination request refused", "extension", name, "error", err)
		return nil, err
	}
	var (
		payload []byte
		f       *os.File
		err     error
	)
	switch name {
	case ExtDestinationLookup:
		payload, err = c.a.dests.Lookup(c.ctx, contents)
	case ExtDestinationDial:
		if c.fdw == nil || c.fdw.uc == nil {
			return nil, errors.New("destination-dial needs a Unix socket connection to pass the descriptor on")
		}
		payload, f, err = c.a.dests.Dial(c.ctx, contents)
	}
	if err != nil {
		c.log.Warn("destination request failed", "extension", name, "error", err)
		return nil, err
	}
	if f != nil {
		c.fdw.pending = f
	}
	reply := []byte{agentExtensionResponse}
	return append(reply, ssh.Marshal(struct {
		Name    string
		Payload []byte
	}{name, payload})...), nil
}

// destAllowed is the policy for forwarded agents and foreign peers.
//
// Nothing the destination extensions hand out is a credential, but a dial
// reaches machines on the user's behalf, so it must not be reachable from
// a remote host through `ssh -A`: ssh binds every agent connection it
// authenticates or forwards with session-bind@openssh.com, and a forwarded
// connection carries the remote's binds, so any bind at all refuses. A
// client too old to bind (before OpenSSH 8.9) is still refused, because
// the peer of a forwarded connection is the ssh client, and only this
// agent's own executable, run by the agent's user, is answered. The
// descriptor a dial returns could not cross an ssh channel anyway.
func (c *conn) destAllowed() error {
	switch {
	case c.a.dests == nil:
		return errDestDisabled
	case c.a.lock.isLocked():
		return errLocked
	case len(c.binds) > 0:
		return errDestForwarded
	case int64(c.peer.uid) != int64(c.a.uid) || c.a.helperExe == "" || !sameFile(c.peer.exe, c.a.helperExe):
		return errDestPeer
	}
	return nil
}

// sameFile compares the peer's /proc/PID/exe with the allowed executable:
// by path, then by device and inode, so that a symlinked install matches.
func sameFile(exe, allowed string) bool {
	if exe == "" {
		return false
	}
	if filepath.Clean(exe) == filepath.Clean(allowed) {
		return true
	}
	a, err1 := os.Stat(exe)
	b, err2 := os.Stat(allowed)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// resolveHelperExe is Options.HelperExecutable, defaulting to the agent's
// own binary, with symlinks resolved as /proc/PID/exe resolves them.
func resolveHelperExe(opt string) string {
	if opt == "" {
		var err error
		if opt, err = os.Executable(); err != nil {
			return ""
		}
	}
	if p, err := filepath.EvalSymlinks(opt); err == nil {
		return p
	}
	return opt
}

// fdWriter is the writer ServeAgent replies through. When a dial left a
// descriptor pending, the next write (the reply's length prefix, which
// ServeAgent writes first) carries it as SCM_RIGHTS, so the helper
// receives the descriptor with the first bytes of the reply. The agent's
// copy is closed once sent or once the write failed.
type fdWriter struct {
	w       io.Writer
	uc      *net.UnixConn // nil when the connection is not a Unix socket
	pending *os.File
}

func (w *fdWriter) Write(p []byte) (int, error) {
	f := w.pending
	if f == nil {
		return w.w.Write(p)
	}
	w.pending = nil
	defer f.Close()
	raw, err := f.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("pass descriptor: %w", err)
	}
	var n int
	var werr error
	if err := raw.Control(func(fd uintptr) {
		n, _, werr = w.uc.WriteMsgUnix(p, unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return 0, fmt.Errorf("pass descriptor: %w", err)
	}
	return n, werr
}

// drop closes a descriptor that was never sent.
func (w *fdWriter) drop() {
	if w != nil && w.pending != nil {
		w.pending.Close()
		w.pending = nil
	}
}
