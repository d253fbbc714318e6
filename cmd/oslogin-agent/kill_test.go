package main

import (
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// victim starts a process that -k must never signal and reports whether it
// is still alive at the end of the test.
func victim(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func alive(cmd *exec.Cmd) bool {
	var ws syscall.WaitStatus
	pid, _ := syscall.Wait4(cmd.Process.Pid, &ws, syscall.WNOHANG, nil)
	return pid == 0
}

// TestKillRefusesUnprovenPID is issue 12 item 1: -k used to send SIGTERM
// to whatever SSH_AGENT_PID named when SSH_AUTH_SOCK was unset, empty,
// stale or served by someone else, and to pass a 64-bit value to kill(2),
// which takes a 32-bit pid_t (2^32+N reached process N; 2^32-1 reached -1,
// every process). It must signal only a process that serves SSH_AUTH_SOCK
// for this user under that very pid, and refuse everything else.
func TestKillRefusesUnprovenPID(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the file stays; nobody listens
	served := filepath.Join(dir, "served.sock")
	ln, err = net.Listen("unix", served) // served by this test process
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	// PID and WRAPPED stand for the victim's pid, and that pid plus 2^32,
	// which a 32-bit pid_t truncates to the victim's.
	const pid, wrapped = "PID", "WRAPPED"
	tests := []struct {
		name, pid, sock, want string
	}{
		{"socket unset", pid, "", "SSH_AUTH_SOCK is not set"},
		{"socket stale", pid, stale, "cannot reach"},
		{"socket missing", pid, filepath.Join(dir, "missing.sock"), "cannot reach"},
		{"socket served by another process", pid, served, "not SSH_AGENT_PID"},
		{"pid wraps to the victim, socket unset", wrapped, "", "not a process id"},
		{"pid wraps to the victim, socket served", wrapped, served, "not a process id"},
		{"pid wraps to -1", "4294967295", served, "not a process id"},
		{"pid -1", "-1", served, "not a process id"},
		{"pid 0", "0", served, "not a process id"},
		{"pid of init", "1", served, "not a process id"},
		{"pid with a sign", "+" + pid, served, "not a process id"},
		{"pid with spaces", " " + pid, served, "not a process id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := victim(t)
			p := strings.NewReplacer(wrapped, strconv.FormatInt(1<<32+int64(v.Process.Pid), 10),
				pid, strconv.Itoa(v.Process.Pid)).Replace(tc.pid)
			t.Setenv("SSH_AGENT_PID", p)
			t.Setenv("SSH_AUTH_SOCK", tc.sock)
			err := killAgent(&config{}, io.Discard)
			time.Sleep(50 * time.Millisecond) // let a wrongly sent signal land
			if !alive(v) {
				t.Fatalf("-k signalled an unrelated process (err %v)", err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("-k error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
