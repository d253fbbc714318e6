package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// killAgent stops the agent named by SSH_AGENT_PID and waits until it has
// deleted its keys and exited, then prints the shell lines that forget it.
//
// Environment variables are not proof: a stale or forged SSH_AGENT_PID can
// name any process. So the agent is signalled only when it proves itself:
// it serves SSH_AUTH_SOCK, and the socket's peer credentials (which the
// kernel records, and no process can fake) name exactly SSH_AGENT_PID and
// this user. The process is held through a pidfd from before that check,
// so a pid reused meanwhile is not signalled either.
func killAgent(cfg *config, stdout io.Writer) error {
	v := os.Getenv("SSH_AGENT_PID")
	if v == "" {
		return errors.New("SSH_AGENT_PID is not set, so there is no agent to stop (run eval \"$(oslogin-agent -s)\" first)")
	}
	pid, err := parsePID(v)
	if err != nil {
		return err
	}
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return fmt.Errorf("SSH_AUTH_SOCK is not set, so nothing proves that process %d is an agent; not stopping anything", pid)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("no process %d (SSH_AGENT_PID) to stop: %w", pid, err)
	}
	defer unix.Close(pidfd)
	cred, err := socketPeer(sock)
	if err != nil {
		return fmt.Errorf("cannot reach the agent at SSH_AUTH_SOCK %s (%w), so nothing proves that process %d is that agent; not stopping anything", sock, err, pid)
	}
	switch {
	case int(cred.Pid) != pid:
		return fmt.Errorf("SSH_AUTH_SOCK %s is served by process %d, not SSH_AGENT_PID %d; not stopping anything", sock, cred.Pid, pid)
	case int(cred.Uid) != os.Getuid():
		return fmt.Errorf("SSH_AUTH_SOCK %s is served by user id %d, not by you; not stopping anything", sock, cred.Uid)
	}
	if err := unix.PidfdSendSignal(pidfd, unix.SIGTERM, nil, 0); err != nil {
		return fmt.Errorf("stop agent pid %d: %w", pid, err)
	}
	// A pidfd becomes readable when the process exits.
	wait := closeTimeout + 5*time.Second
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("agent pid %d did not exit within %v", pid, wait)
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, int(left.Milliseconds())+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait for agent pid %d: %w", pid, err)
		}
		if n > 0 {
			break
		}
	}
	csh := cfg.cshSyntax || (!cfg.shSyntax && strings.HasSuffix(os.Getenv("SHELL"), "csh"))
	for _, k := range []string{"SSH_AUTH_SOCK", "SSH_AGENT_PID", "OSLOGIN_USER"} {
		if csh {
			fmt.Fprintf(stdout, "unsetenv %s;\n", k)
		} else {
			fmt.Fprintf(stdout, "unset %s;\n", k)
		}
	}
	fmt.Fprintf(stdout, "echo Agent pid %d killed;\n", pid)
	return nil
}

// parsePID reads a process id as kill(2) takes it: a positive 32-bit
// pid_t written in plain decimal digits. Anything else is refused rather
// than truncated: 2^32-1 would reach the kernel as -1 (every process), and
// 2^32+N as process N. Process 1 is init, never an agent.
func parsePID(v string) (int, error) {
	bad := fmt.Errorf("SSH_AGENT_PID=%q is not a process id of an agent", v)
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0, bad
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || n <= 1 {
		return 0, bad
	}
	return int(n), nil
}

// socketPeer returns the credentials the kernel recorded for the process
// that listens on a Unix socket.
func socketPeer(path string) (*unix.Ucred, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, err
	}
	return unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
}
