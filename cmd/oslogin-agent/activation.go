package main

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// listenFDsStart is the first descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// activation is what systemd's socket activation protocol passed this
// process: LISTEN_PID, LISTEN_FDS (and LISTEN_FDNAMES). It is read once, at
// start, and the variables are removed from the environment then, so that
// no child process takes the socket for its own (sd_listen_fds(1)).
type activation struct {
	fds int // descriptors passed to this process; 0 when none
}

// takeActivation reads and unsets the LISTEN_* variables. Variables meant
// for another process (LISTEN_PID is not ours) are ignored, as
// sd_listen_fds does.
func takeActivation() (activation, error) {
	pidStr, fdsStr := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	if fdsStr == "" {
		return activation{}, nil
	}
	if pid, err := strconv.Atoi(pidStr); err != nil || pid != os.Getpid() {
		return activation{}, nil
	}
	n, err := strconv.Atoi(fdsStr)
	if err != nil || n < 0 {
		return activation{}, fmt.Errorf("LISTEN_FDS=%q is not a number of sockets; check the socket unit", fdsStr)
	}
	return activation{fds: n}, nil
}

// listener turns the one socket systemd passed into a listener. It must be
// a listening Unix stream socket, and the only one: the agent serves one
// socket, the one SSH_AUTH_SOCK names.
func (a activation) listener() (net.Listener, error) {
	if a.fds != 1 {
		return nil, fmt.Errorf("systemd passed %d sockets; oslogin-agent serves exactly one: give the socket unit a single ListenStream=", a.fds)
	}
	fd := listenFDsStart
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, fmt.Errorf("the descriptor systemd passed is not a socket (%v); check the socket unit", err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("the socket systemd passed: %w", err)
	}
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return nil, fmt.Errorf("the socket systemd passed: %w", err)
	}
	if domain != unix.AF_UNIX || typ != unix.SOCK_STREAM || listening != 1 {
		return nil, fmt.Errorf("the socket systemd passed is not a listening Unix stream socket; use ListenStream=%%t/oslogin-agent/agent.sock in the socket unit")
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "systemd socket")
	defer f.Close() // FileListener dups it
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("the socket systemd passed: %w", err)
	}
	// Closing must not remove the socket file: it is systemd's, and it
	// starts the agent again on the next connection.
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	return ln, nil
}
