package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxSocketPath is the longest path a Unix socket address can hold
// (sun_path is 108 bytes on Linux, including the terminating NUL).
const maxSocketPath = 107

// ErrSocketLost is wrapped by the error Serve returns when the agent's
// socket file was removed or replaced while it served: no client can
// reach the agent any more.
var ErrSocketLost = errors.New("socket lost")

// SocketPath checks a socket path given by the user (ssh-agent's -a) and
// returns it absolute and clean, as clients must receive it in
// SSH_AUTH_SOCK. It refuses:
//
//   - a name starting with "@": Linux would put it in the abstract socket
//     namespace, which has no file permissions, so any local user could
//     connect (and only the peer check would stand in the way) or take the
//     name first;
//   - an empty path, a path with a NUL byte, and one longer than a Unix
//     socket address can hold.
//
// A relative path is made absolute against the working directory.
func SocketPath(path string) (string, error) {
	switch {
	case path == "":
		return "", errors.New("empty socket path")
	case strings.HasPrefix(path, "@"):
		return "", fmt.Errorf("socket path %q would name Linux's abstract socket namespace, which has no file permissions: any local user could connect to it or take the name first; give a file system path such as ./%s", path, path)
	case strings.ContainsRune(path, 0):
		return "", fmt.Errorf("socket path %q contains a NUL byte", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("socket path %s: %w", path, err)
	}
	if len(abs) > maxSocketPath {
		return "", fmt.Errorf("socket path %s is %d bytes long; Unix sockets allow at most %d", abs, len(abs), maxSocketPath)
	}
	if strings.HasSuffix(path, "/") {
		return "", fmt.Errorf("socket path %s names a directory; add a file name", path)
	}
	return abs, nil
}

// Listen listens on a Unix socket at path, safely. An empty path means the
// default location:
//
//	$XDG_RUNTIME_DIR/oslogin-agent/agent.<pid>.sock
//
// when XDG_RUNTIME_DIR is set, absolute, a real directory (not a symbolic
// link) and owned by this user, else a fresh directory with an
// unpredictable name, as OpenSSH's mkdtemp,
//
//	<os.TempDir()>/oslogin-agent-XXXXXXXX/agent.<pid>.sock
//
// that nobody else can have created first; Close removes it again. The
// listener's Addr is the path for SSH_AUTH_SOCK.
//
// Other paths go through SocketPath first. Then:
//
//   - The directory is opened without following a symbolic link
//     (O_DIRECTORY|O_NOFOLLOW) and created with mode 0700 if missing; the
//     opened directory must belong to this user and not be writable by
//     group or others, or be a sticky directory of root's such as /tmp.
//     Everything after that happens relative to the opened directory, so
//     nobody can swap it for another one underneath.
//   - An advisory lock (flock on PATH.lock, beside the socket) is held for
//     the listener's lifetime: of two agents starting on one path, one
//     gets the path and the other is told "another agent is listening on
//     PATH"; neither can remove the other's socket.
//   - The socket is bound under a temporary name, chmod'ed to 0600, and
//     renamed into place, so it never appears at PATH with another mode,
//     and a stale socket (nobody listening) is replaced in one step. A live
//     one (of an agent without the lock) is not touched, nor anything that
//     is not a socket.
//
// Closing the listener removes the socket file, but only if it is still
// the one this listener created (same device and inode).
func Listen(path string) (net.Listener, error) {
	var (
		dir, name string
		created   bool
		err       error
	)
	if path == "" {
		if dir, created, err = defaultDir(); err != nil {
			return nil, err
		}
		name = fmt.Sprintf("agent.%d.sock", os.Getpid())
		path = filepath.Join(dir, name)
		if len(path) > maxSocketPath {
			os.Remove(dir)
			return nil, fmt.Errorf("default socket path %s is longer than %d bytes; set TMPDIR to a shorter directory or choose a socket with -a", path, maxSocketPath)
		}
	} else {
		if path, err = SocketPath(path); err != nil {
			return nil, err
		}
		dir, name = filepath.Split(path)
		dir = filepath.Clean(dir)
	}
	ln, err := listenIn(dir, name)
	if err != nil {
		if created {
			os.Remove(dir)
		}
		return nil, err
	}
	if created {
		ln.removeDir = dir
	}
	return ln, nil
}

// defaultDir returns the directory of the default socket and whether it
// was created (and so must be removed at Close).
func defaultDir() (string, bool, error) {
	if xdg := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(xdg) {
		if st, err := os.Lstat(xdg); err == nil && st.IsDir() && ownedByMe(st) && st.Mode().Perm()&0o022 == 0 {
			return filepath.Join(xdg, "oslogin-agent"), false, nil
		}
	}
	dir, err := os.MkdirTemp("", "oslogin-agent-")
	if err != nil {
		return "", false, fmt.Errorf("create a private socket directory under %s: %w", os.TempDir(), err)
	}
	return dir, true, nil
}

// listenIn does the work of Listen in the directory dir.
func listenIn(dir, name string) (*socketListener, error) {
	path := filepath.Join(dir, name)
	dfd, err := openPrivateDir(dir)
	if err != nil {
		return nil, err
	}
	l := &socketListener{path: path, name: name, dirfd: dfd, lockfd: -1}
	fail := func(err error) (*socketListener, error) {
		l.release()
		return nil, err
	}
	if err := l.lock(); err != nil {
		return fail(err)
	}
	if err := checkStale(dfd, dirRef(dfd, dir), name, path); err != nil {
		return fail(err)
	}
	// Bind under a random temporary name in the opened directory, reached
	// through /proc/self/fd so that the path cannot lead elsewhere.
	var tmp string
	var ln *net.UnixListener
	for attempt := 0; ; attempt++ {
		var rnd [6]byte
		rand.Read(rnd[:])
		tmp = "." + name + "." + hex.EncodeToString(rnd[:])
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: dirRef(dfd, dir) + "/" + tmp, Net: "unix"})
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EADDRINUSE) || attempt >= 3 {
			return fail(fmt.Errorf("listen on %s: %w", path, err))
		}
	}
	ln.SetUnlinkOnClose(false)
	l.UnixListener = ln
	if err := unix.Fchmodat(dfd, tmp, 0o600, 0); err != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return fail(fmt.Errorf("chmod socket: %w", err))
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, tmp, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return fail(fmt.Errorf("stat socket: %w", err))
	}
	if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return fail(fmt.Errorf("move socket into place at %s: %w", path, err))
	}
	l.dev, l.ino = uint64(st.Dev), uint64(st.Ino)
	return l, nil
}

// dirRef is a path that reaches the already opened directory dfd and no
// other: /proc/self/fd/N where /proc is mounted (always on Linux), else the
// directory's own path.
func dirRef(dfd int, dir string) string {
	p := fmt.Sprintf("/proc/self/fd/%d", dfd)
	var a, b unix.Stat_t
	if unix.Stat(p, &a) == nil && unix.Fstat(dfd, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino {
		return p
	}
	return dir
}

// openPrivateDir opens dir without following a symbolic link, creating it
// with mode 0700 if missing, and checks on the opened directory that it
// belongs to this user and is not writable by anyone else.
func openPrivateDir(dir string) (int, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Open(dir, flags, 0)
	if errors.Is(err, unix.ENOENT) {
		if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
			return -1, fmt.Errorf("create socket directory: %w", err)
		}
		if err := unix.Mkdir(dir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("create socket directory %s: %w", dir, err)
		}
		fd, err = unix.Open(dir, flags, 0)
	}
	if errors.Is(err, unix.ENOTDIR) {
		if st, lerr := os.Lstat(dir); lerr == nil && st.Mode().Type() == fs.ModeSymlink {
			err = unix.ELOOP
		}
	}
	switch {
	case errors.Is(err, unix.ELOOP):
		return -1, fmt.Errorf("socket directory %s is a symbolic link; refusing to follow it (someone else may control where it points): use a directory of your own", dir)
	case errors.Is(err, unix.ENOTDIR):
		return -1, fmt.Errorf("socket directory %s is not a directory", dir)
	case err != nil:
		return -1, fmt.Errorf("open socket directory %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("stat socket directory %s: %w", dir, err)
	}
	// A sticky directory of root's, like /tmp, is safe too: nobody else may
	// remove or replace an entry there, and the socket's own mode and the
	// peer check on every connection keep other users out.
	sharedTmp := st.Mode&unix.S_ISVTX != 0 && st.Uid == 0
	if int64(st.Uid) != int64(os.Geteuid()) && !sharedTmp {
		unix.Close(fd)
		return -1, fmt.Errorf("socket directory %s belongs to uid %d, not to this user (uid %d); use a directory of your own", dir, st.Uid, os.Geteuid())
	}
	if perm := st.Mode & 0o777; perm&0o022 != 0 && !sharedTmp {
		unix.Close(fd)
		return -1, fmt.Errorf("socket directory %s is writable by group or others (mode %04o); use a private directory", dir, perm)
	}
	return fd, nil
}

// checkStale looks at what is at name in the directory (the lock is held):
// nothing, or a socket nobody listens on, is fine; a live socket or
// anything else is an error.
func checkStale(dfd int, dirref, name, path string) error {
	var st unix.Stat_t
	err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket path %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	// The lock says no agent of ours owns it; an older agent or another
	// program may still listen there.
	c, err := net.DialTimeout("unix", dirref+"/"+name, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another agent is listening on %s", path)
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		return fmt.Errorf("cannot tell whether %s is in use: %w", path, err)
	}
	return nil // replaced by the rename
}

// socketListener is a listener on a socket made by Listen. It holds the
// socket directory open and the lock beside the socket, and on Close
// removes the socket file if it is still the one it created.
type socketListener struct {
	*net.UnixListener
	path      string // absolute path, for Addr and clients
	name      string // file name in the directory
	dirfd     int
	lockfd    int
	removeDir string // a directory Listen created, removed on Close
	dev, ino  uint64

	once     sync.Once
	closeErr error
}

// Addr returns the socket's path as clients must use it.
func (l *socketListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

// lock takes the advisory lock beside the socket, PATH.lock, without
// waiting: if another agent holds it, that agent owns the path.
func (l *socketListener) lock() error {
	lockName := l.name + ".lock"
	for attempt := 0; attempt < 5; attempt++ {
		fd, err := unix.Openat(l.dirfd, lockName, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("open lock file %s.lock: %w", l.path, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || int64(st.Uid) != int64(os.Geteuid()) || st.Mode&unix.S_IFMT != unix.S_IFREG {
			unix.Close(fd)
			return fmt.Errorf("lock file %s.lock is not a file of this user's; remove it or choose another socket path", l.path)
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			unix.Close(fd)
			if errors.Is(err, unix.EWOULDBLOCK) {
				return fmt.Errorf("another agent is listening on %s", l.path)
			}
			return fmt.Errorf("lock %s.lock: %w", l.path, err)
		}
		// The holder before us may have removed the file between our
		// open and our lock: then the lock is on a file nobody else
		// will ever see, and we must lock the new one.
		var now unix.Stat_t
		if err := unix.Fstatat(l.dirfd, lockName, &now, unix.AT_SYMLINK_NOFOLLOW); err == nil && now.Dev == st.Dev && now.Ino == st.Ino {
			l.lockfd = fd
			return nil
		}
		unix.Close(fd)
	}
	return fmt.Errorf("lock %s.lock: the lock file keeps changing; is another agent starting and stopping on this path?", l.path)
}

// release removes the lock file (while still holding the lock, so no one
// locks a file that is about to disappear) and closes the descriptors.
func (l *socketListener) release() {
	if l.lockfd >= 0 {
		unix.Unlinkat(l.dirfd, l.name+".lock", 0)
		unix.Close(l.lockfd)
		l.lockfd = -1
	}
	if l.UnixListener != nil {
		l.UnixListener.Close()
	}
	if l.dirfd >= 0 {
		unix.Close(l.dirfd)
		l.dirfd = -1
	}
}

// bound returns an error wrapping ErrSocketLost if the path no longer
// leads to this listener's socket: removed, or replaced by someone else's.
func (l *socketListener) bound() error {
	var st unix.Stat_t
	err := unix.Lstat(l.path, &st)
	switch {
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%w: %s was removed", ErrSocketLost, l.path)
	case err != nil:
		return nil // cannot tell; do not shut down on a transient error
	case uint64(st.Dev) != l.dev || uint64(st.Ino) != l.ino:
		return fmt.Errorf("%w: %s was replaced by another file", ErrSocketLost, l.path)
	}
	return nil
}

func (l *socketListener) Close() error {
	l.once.Do(func() {
		l.closeErr = l.UnixListener.Close()
		var st unix.Stat_t
		if unix.Fstatat(l.dirfd, l.name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && uint64(st.Dev) == l.dev && uint64(st.Ino) == l.ino {
			unix.Unlinkat(l.dirfd, l.name, 0)
		}
		l.release()
		if l.removeDir != "" {
			os.Remove(l.removeDir)
		}
	})
	return l.closeErr
}

func ownedBy(st fs.FileInfo, uid int) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && int64(sys.Uid) == int64(uid)
}

func ownedByMe(st fs.FileInfo) bool { return ownedBy(st, os.Geteuid()) }
