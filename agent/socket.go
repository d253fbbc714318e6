package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// maxSocketPath is the longest path a Unix socket address can hold
// (sun_path is 108 bytes on Linux, including the terminating NUL).
const maxSocketPath = 107

// DefaultSocketPath returns where the agent listens when not told otherwise:
//
//	$XDG_RUNTIME_DIR/oslogin-agent/agent.<pid>.sock
//
// when XDG_RUNTIME_DIR is set, absolute, and owned by this user (a
// per-login tmpfs that systemd removes at logout), else
//
//	<os.TempDir()>/oslogin-agent-<uid>/agent.<pid>.sock
//
// The pid in the name lets several agents (say, one per CI job or account)
// run side by side, as ssh-agent's random names do; the path reaches
// clients through SSH_AUTH_SOCK. Listen creates and checks the directory.
func DefaultSocketPath() (string, error) {
	dir := ""
	if xdg := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(xdg) {
		if st, err := os.Stat(xdg); err == nil && st.IsDir() && ownedByMe(st) {
			dir = filepath.Join(xdg, "oslogin-agent")
		}
	}
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("oslogin-agent-%d", os.Geteuid()))
	}
	p := filepath.Join(dir, fmt.Sprintf("agent.%d.sock", os.Getpid()))
	if len(p) > maxSocketPath {
		return "", fmt.Errorf("default socket path %s is longer than %d bytes; choose a shorter one", p, maxSocketPath)
	}
	return p, nil
}

// Listen listens on a Unix socket at path, safely:
//
//   - The directory is created with mode 0700 if missing. If it exists it
//     must belong to this user and not be writable by group or others, or
//     be a sticky directory of root's such as /tmp; otherwise someone else
//     could replace the socket.
//   - A socket left by a dead agent (connecting is refused) is replaced. A
//     live one is not: "another agent is listening on PATH". Anything that
//     is not a socket is never touched.
//   - The socket is chmod'ed to 0600 explicitly rather than trusting the
//     umask. Until then the private directory keeps others out.
//
// Closing the listener removes the socket file, but only if it is still
// the one this listener created (same device and inode).
func Listen(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("empty socket path")
	}
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("socket path %s is %d bytes long; Unix sockets allow at most %d", path, len(path), maxSocketPath)
	}
	path = filepath.Clean(path)
	if err := privateDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		os.Remove(path)
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fail(fmt.Errorf("chmod socket: %w", err))
	}
	st, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("stat socket: %w", err))
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fail(fmt.Errorf("stat socket: no device and inode for %s", path))
	}
	return &socketListener{UnixListener: ln, path: path, dev: uint64(sys.Dev), ino: uint64(sys.Ino)}, nil
}

// privateDir makes sure dir exists, belongs to this user and is not
// writable by anyone else.
func privateDir(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create socket directory: %w", err)
		}
		// The umask can only have removed bits; make the mode exact.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("chmod socket directory: %w", err)
		}
		st, err = os.Stat(dir)
	}
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("socket directory %s is not a directory", dir)
	}
	// A sticky directory of root's, like /tmp, is safe too: nobody else may
	// remove or replace an entry there, and the socket's own mode and the
	// peer check on every connection keep other users out.
	sharedTmp := st.Mode()&fs.ModeSticky != 0 && ownedBy(st, 0)
	if !ownedByMe(st) && !sharedTmp {
		return fmt.Errorf("socket directory %s belongs to uid %d, not to this user (uid %d); use a directory of your own", dir, st.Sys().(*syscall.Stat_t).Uid, os.Geteuid())
	}
	if perm := st.Mode().Perm(); perm&0o022 != 0 && !sharedTmp {
		return fmt.Errorf("socket directory %s is writable by group or others (mode %04o); use a private directory", dir, perm)
	}
	return nil
}

func ownedBy(st fs.FileInfo, uid int) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && int64(sys.Uid) == int64(uid)
}

func ownedByMe(st fs.FileInfo) bool { return ownedBy(st, os.Geteuid()) }

// removeStale removes a socket at path that nobody listens on any more.
func removeStale(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket path: %w", err)
	}
	if st.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another agent is listening on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot tell whether %s is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// socketListener removes its socket file on Close if the file is still the
// one it created.
type socketListener struct {
	*net.UnixListener
	path     string
	dev, ino uint64

	once     sync.Once
	closeErr error
}

func (l *socketListener) Close() error {
	l.once.Do(func() {
		l.closeErr = l.UnixListener.Close()
		st, err := os.Lstat(l.path)
		if err != nil {
			return
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && uint64(sys.Dev) == l.dev && uint64(sys.Ino) == l.ino {
			os.Remove(l.path)
		}
	})
	return l.closeErr
}
