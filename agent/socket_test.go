//go:build linux

package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestListenModes(t *testing.T) {
	// A permissive umask must not loosen the modes.
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(shortTempDir(t), "a", "b")
	path := filepath.Join(dir, "s.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer ln.Close()
	dst, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := dst.Mode().Perm(); perm != 0o700 {
		t.Errorf("directory mode %04o, want 0700", perm)
	}
	sst, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if sst.Mode().Type() != fs.ModeSocket {
		t.Errorf("%s is not a socket", path)
	}
	if perm := sst.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode %04o, want 0600", perm)
	}
	if err := ln.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}
	if err := ln.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestListenDirectoryChecks(t *testing.T) {
	const me, root, nobody = -1, 0, 65534
	tests := []struct {
		name    string
		mode    fs.FileMode
		owner   int // me, or a uid to chown to (needs root)
		wantErr string
	}{
		{"private", 0o700, me, ""},
		{"readable by others", 0o755, me, ""},
		{"group writable", 0o770, me, "writable by group or others"},
		{"world writable", 0o777, me, "writable by group or others"},
		{"world writable root's, not sticky", 0o777, root, "writable by group or others"},
		{"sticky world writable root's, like /tmp", fs.ModeSticky | 0o777, root, ""},
		{"sticky world writable nobody's", fs.ModeSticky | 0o777, nobody, "belongs to uid"},
		{"someone else's", 0o700, nobody, "belongs to uid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(shortTempDir(t), "d")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if tt.owner != me {
				if os.Geteuid() != 0 {
					t.Skip("giving a directory to another user needs root")
				}
				if err := os.Chown(dir, tt.owner, tt.owner); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(dir, tt.mode); err != nil {
				t.Fatal(err)
			}
			ln, err := Listen(filepath.Join(dir, "s.sock"))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Listen: %v", err)
				}
				ln.Close()
				return
			}
			if err == nil {
				ln.Close()
				t.Fatalf("Listen succeeded, want error %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want %q", err, tt.wantErr)
			}
		})
	}
	t.Run("not a directory", func(t *testing.T) {
		f := filepath.Join(shortTempDir(t), "f")
		os.WriteFile(f, nil, 0o600)
		if _, err := Listen(filepath.Join(f, "s.sock")); err == nil {
			t.Error("Listen under a file succeeded")
		}
	})
	t.Run("path too long", func(t *testing.T) {
		_, err := Listen("/tmp/" + strings.Repeat("x", 120))
		if err == nil || !strings.Contains(err.Error(), "at most 107") {
			t.Errorf("error %v", err)
		}
	})
}

func TestListenStaleAndLive(t *testing.T) {
	t.Run("stale socket replaced", func(t *testing.T) {
		path := shortTempDir(t) + "/s.sock"
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		old.SetUnlinkOnClose(false)
		old.Close() // the file stays, nobody listens: a dead agent's socket
		ln, err := Listen(path)
		if err != nil {
			t.Fatalf("Listen over a stale socket: %v", err)
		}
		defer ln.Close()
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("new socket not accepting: %v", err)
		}
		c.Close()
	})
	t.Run("live socket kept", func(t *testing.T) {
		path := shortTempDir(t) + "/s.sock"
		live, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		_, err = Listen(path)
		if err == nil || err.Error() != "another agent is listening on "+path {
			t.Fatalf("Listen over a live socket: %v", err)
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("live socket was disturbed: %v", err)
		}
		c.Close()
	})
	t.Run("regular file kept", func(t *testing.T) {
		path := shortTempDir(t) + "/s.sock"
		os.WriteFile(path, []byte("precious"), 0o600)
		if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("Listen over a file: %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "precious" {
			t.Error("file modified")
		}
	})
	t.Run("close keeps a replacement", func(t *testing.T) {
		path := shortTempDir(t) + "/s.sock"
		ln, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		// While the first agent holds the path, a second is refused.
		if other, err := Listen(path); err == nil {
			other.Close()
			t.Fatal("a second agent got a path the first still holds")
		}
		// Someone removes our socket and its lock, and a new agent takes
		// the path.
		os.Remove(path)
		os.Remove(path + ".lock")
		other, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		ln.Close()
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("closing the old listener removed the new socket: %v", err)
		}
	})
}

// TestListenDefault: with XDG_RUNTIME_DIR the socket goes there; without
// it, into a fresh directory with an unpredictable name, so another user
// who creates the old predictable name first (a directory of theirs, a
// dangling symlink, a symlink to their own directory) can neither stop the
// agent nor redirect its clients. Run as root, the planted entries belong to
// nobody, as an attacker's would; unprivileged, to this user.
func TestListenDefault(t *testing.T) {
	xdg := shortTempDir(t)
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	ln, err := Listen("")
	if err != nil {
		t.Fatalf("Listen on the default path: %v", err)
	}
	want := filepath.Join(xdg, "oslogin-agent", fmt.Sprintf("agent.%d.sock", os.Getpid()))
	if got := ln.Addr().String(); got != want {
		t.Errorf("with XDG_RUNTIME_DIR: %q, want %q", got, want)
	}
	ln.Close()

	planted := func(tmp string) string { return filepath.Join(tmp, fmt.Sprintf("oslogin-agent-%d", os.Geteuid())) }
	attacker := func(t *testing.T, p string) {
		if os.Geteuid() == 0 {
			if err := os.Lchown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name  string
		xdg   string
		plant func(t *testing.T, tmp string)
	}{
		{"no XDG_RUNTIME_DIR", "", func(*testing.T, string) {}},
		{"relative XDG_RUNTIME_DIR", "relative/dir", func(*testing.T, string) {}},
		{"another user's directory at the old name", "", func(t *testing.T, tmp string) {
			os.Mkdir(planted(tmp), 0o777)
			attacker(t, planted(tmp))
		}},
		{"dangling symlink at the old name", "", func(t *testing.T, tmp string) {
			os.Symlink("/nonexistent/oslogin", planted(tmp))
			attacker(t, planted(tmp))
		}},
		{"symlink to the attacker's directory at the old name", "", func(t *testing.T, tmp string) {
			evil := filepath.Join(tmp, "evil")
			os.Mkdir(evil, 0o700)
			os.Symlink(evil, planted(tmp))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := shortTempDir(t)
			os.Chmod(tmp, fs.ModeSticky|0o777) // a shared /tmp
			t.Setenv("TMPDIR", tmp)
			t.Setenv("XDG_RUNTIME_DIR", tt.xdg)
			tt.plant(t, tmp)
			ln, err := Listen("")
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			path := ln.Addr().String()
			dir := filepath.Dir(path)
			if filepath.Dir(dir) != tmp || !strings.HasPrefix(filepath.Base(dir), "oslogin-agent-") || dir == planted(tmp) {
				t.Errorf("socket at %s, want a fresh directory under %s", path, tmp)
			}
			st, err := os.Lstat(dir)
			if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 || !ownedByMe(st) {
				t.Errorf("socket directory %s: %v, %v; want a private directory of this user's", dir, st.Mode(), err)
			}
			if c, err := net.Dial("unix", path); err != nil {
				t.Errorf("dial %s: %v", path, err)
			} else {
				c.Close()
			}
			ln.Close()
			if _, err := os.Lstat(dir); !os.IsNotExist(err) {
				t.Errorf("socket directory %s left after Close: %v", dir, err)
			}
		})
	}
}

// TestListenNoSymlinks: a socket directory that is a symbolic link is
// refused, even one to a private directory of this user's, because whoever
// controls the link controls where clients end up.
func TestListenNoSymlinks(t *testing.T) {
	base := shortTempDir(t)
	real := filepath.Join(base, "real")
	os.Mkdir(real, 0o700)
	link := filepath.Join(base, "link")
	os.Symlink(real, link)
	ln, err := Listen(filepath.Join(link, "s.sock"))
	if err == nil {
		ln.Close()
		t.Fatal("Listen through a symlinked directory succeeded")
	}
	if !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("error %q, want it to name the symbolic link", err)
	}
	if _, err := os.Lstat(filepath.Join(real, "s.sock")); !os.IsNotExist(err) {
		t.Errorf("a socket was created behind the link: %v", err)
	}
}

// TestSocketPath: -a @name (Linux's abstract namespace, no file
// permissions) is refused, and a relative path becomes absolute, since
// SSH_AUTH_SOCK must work from any directory.
func TestSocketPath(t *testing.T) {
	wd, _ := os.Getwd()
	tests := []struct {
		in, want, wantErr string
	}{
		{"@agent", "", "abstract socket namespace"},
		{"@", "", "abstract socket namespace"},
		{"", "", "empty socket path"},
		{"a\x00b", "", "NUL"},
		{"/tmp/" + strings.Repeat("x", 120), "", "at most 107"},
		{"/run/user/1/a.sock", "/run/user/1/a.sock", ""},
		{"/tmp//x/../a.sock", "/tmp/a.sock", ""},
		{"a.sock", filepath.Join(wd, "a.sock"), ""},
		{"./sub/a.sock", filepath.Join(wd, "sub", "a.sock"), ""},
	}
	for _, tt := range tests {
		in := tt.in
		got, err := SocketPath(in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("SocketPath(%q) = %q, %v; want error %q", in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("SocketPath(%q) = %q, %v; want %q", in, got, err, tt.want)
		}
	}
	// Listen applies the same rules.
	if ln, err := Listen("@agent"); err == nil {
		ln.Close()
		t.Error("Listen(\"@agent\") succeeded")
	}
}

// TestListenRaceOnStaleSocket: agents started at the same moment on one
// path with a stale socket: exactly one wins, and the winner's socket is
// the one at the path. Before the lock, the loser could remove the socket
// the winner had just bound, leaving an agent nobody could reach.
func TestListenRaceOnStaleSocket(t *testing.T) {
	const rounds, racers = 100, 3
	for round := range rounds {
		path := shortTempDir(t) + "/s.sock"
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		old.SetUnlinkOnClose(false)
		old.Close()
		start := make(chan struct{})
		var wg sync.WaitGroup
		lns := make([]net.Listener, racers)
		for i := range racers {
			wg.Go(func() {
				<-start
				lns[i], _ = Listen(path)
			})
		}
		close(start)
		wg.Wait()
		won := 0
		for _, ln := range lns {
			if ln == nil {
				continue
			}
			won++
			sl := ln.(*socketListener)
			var st syscall.Stat_t
			if err := syscall.Lstat(path, &st); err != nil || uint64(st.Ino) != sl.ino {
				t.Errorf("round %d: an agent listens on a socket that is no longer at %s (%v): nobody can reach it", round, path, err)
			}
		}
		if won != 1 {
			t.Errorf("round %d: %d of %d agents got the path, want exactly 1", round, won, racers)
		}
		for _, ln := range lns {
			if ln != nil {
				ln.Close()
			}
		}
	}
}

// TestSocketLostShutsDown: when someone removes the agent's socket, or
// takes the path over, the agent notices, deletes its keys and stops
// serving: an agent nobody can reach must not keep a key alive.
func TestSocketLostShutsDown(t *testing.T) {
	tests := []struct {
		name string
		take func(t *testing.T, path string)
	}{
		{"removed", func(t *testing.T, path string) { os.Remove(path) }},
		{"taken over", func(t *testing.T, path string) {
			os.Remove(path)
			os.Remove(path + ".lock")
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ta := startTestAgent(t, Options{})
			ta.socketCheck = 10 * time.Millisecond
			path := shortTempDir(t) + "/agent.sock"
			ln, err := Listen(path)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- ta.Serve(ctx, ln) }()
			if len(ta.reg.registered()) != 1 {
				t.Fatal("no key registered")
			}
			tt.take(t, path)
			select {
			case err := <-done:
				if !errors.Is(err, ErrSocketLost) {
					t.Errorf("Serve returned %v, want ErrSocketLost", err)
				}
			case <-time.After(10 * time.Second):
				cancel()
				<-done
				t.Fatal("the agent kept serving after its socket was lost")
			}
			if n := len(ta.reg.registered()); n != 0 {
				t.Errorf("%d keys still registered after the socket was lost", n)
			}
			if len(ta.Keys()) != 0 {
				t.Errorf("agent still holds keys %v", ta.Keys())
			}
			if recs := ta.logs.find("agent socket was removed or replaced"); len(recs) != 1 || recs[0].level != slog.LevelError {
				t.Errorf("log records %+v, want one error", recs)
			}
		})
	}
}

// TestPeerUIDRefused connects as user nobody and expects the agent to close
// the connection without answering, as OpenSSH does for a second uid.
func TestPeerUIDRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("connecting as another user needs root; the uid rule itself is covered by TestPeerAllowed")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)

	ta := startTestAgent(t, Options{})
	// nobody must be able to reach and open the socket, so that the
	// agent's own check is what refuses it: a world-traversable directory
	// and a world-writable socket, both loosened by the test only.
	dir := shortTempDir(t)
	os.Chmod(dir, 0o755)
	path := filepath.Join(dir, "agent.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o666)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ta.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })

	// The test binary may sit in a directory nobody cannot enter.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "agent.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}

	run := func(asNobody bool) (string, error) {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=connect", "OSLOGIN_AGENT_TEST_SOCKET="+path)
		if asNobody {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return strings.TrimSpace(out.String()), err
	}
	out, err := run(true)
	if err != nil || out != "refused" {
		t.Fatalf("as nobody: %q, %v; want the connection refused", out, err)
	}
	recs := ta.logs.find("peer runs as another user")
	if len(recs) != 1 || recs[0].level.String() != "WARN" || recs[0].attrs["peer.uid"] != int64(uid) {
		t.Errorf("refusal record %+v", recs)
	}
	// The same child as root is served.
	if out, err := run(false); err == nil || out != "answered" {
		t.Errorf("as root: %q, %v; want an answer (exit 3)", out, err)
	}
}
