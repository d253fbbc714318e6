//go:build linux

package agent

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
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
		// Someone removes our socket and a new agent takes the path.
		os.Remove(path)
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

func TestDefaultSocketPath(t *testing.T) {
	xdg := shortTempDir(t)
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	got, err := DefaultSocketPath()
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(xdg, "oslogin-agent", fmt.Sprintf("agent.%d.sock", os.Getpid()))
	if got != want {
		t.Errorf("with XDG_RUNTIME_DIR: %q, want %q", got, want)
	}
	ln, err := Listen(got)
	if err != nil {
		t.Fatalf("Listen on the default path: %v", err)
	}
	ln.Close()

	for _, v := range []string{"", "relative/dir", "/nonexistent/run"} {
		t.Setenv("XDG_RUNTIME_DIR", v)
		got, err := DefaultSocketPath()
		if err != nil {
			t.Fatal(err)
		}
		want := filepath.Join(os.TempDir(), fmt.Sprintf("oslogin-agent-%d", os.Geteuid()), fmt.Sprintf("agent.%d.sock", os.Getpid()))
		if got != want {
			t.Errorf("XDG_RUNTIME_DIR=%q: %q, want %q", v, got, want)
		}
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
