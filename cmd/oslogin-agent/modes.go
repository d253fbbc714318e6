package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// stopSignals end the agent cleanly: keys deleted, socket removed.
var stopSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// runForeground serves until a stop signal (-D and -d).
func runForeground(cfg *config, stdout, stderr io.Writer) error {
	logs, err := openLogs(cfg, modeForeground, stderr, nil)
	if err != nil {
		return err
	}
	defer logs.close()
	log := logs.log
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals...)
	defer stop()
	s, err := startSession(ctx, cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, shellLines(cfg, s.socket, os.Getpid(), s.username))
	<-ctx.Done()
	return s.stop()
}

// runCommand runs one command with the agent and returns its exit status,
// after the agent has deleted its keys.
func runCommand(cfg *config, stderr io.Writer) int {
	logs, err := openLogs(cfg, modeCommand, stderr, nil)
	if err != nil {
		return exitStatus(stderr, err)
	}
	defer logs.close()
	log := logs.log
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, stopSignals...)
	defer signal.Stop(sigs)

	// A signal during start-up abandons it; once the command runs, signals
	// are passed on to it and the agent stops when it exits.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	starting := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-sigs:
			cancel()
		case <-starting:
		}
	}()
	s, err := startSession(ctx, cfg, log)
	close(starting)
	<-watched
	if ctx.Err() != nil { // stopped by a signal before the command ran
		if err == nil {
			s.stop()
		}
		fmt.Fprintln(stderr, "oslogin-agent: interrupted before the command started; nothing left registered")
		return 130
	}
	if err != nil {
		return exitStatus(stderr, err)
	}
	cmd := exec.Command(cfg.command[0], cfg.command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = withEnv(os.Environ(), map[string]string{
		"SSH_AUTH_SOCK": s.socket,
		"SSH_AGENT_PID": strconv.Itoa(os.Getpid()),
		"OSLOGIN_USER":  s.username,
	})
	if err := cmd.Start(); err != nil {
		s.stop()
		fmt.Fprintf(stderr, "oslogin-agent: run %s: %v\n", cfg.command[0], err)
		return 127
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-sigs:
				cmd.Process.Signal(sig)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	if serr := s.stop(); serr != nil {
		fmt.Fprintf(stderr, "oslogin-agent: %v\n", serr)
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return exitErr.ExitCode()
	default:
		fmt.Fprintf(stderr, "oslogin-agent: %s: %v\n", cfg.command[0], err)
		return 1
	}
}

// withEnv returns env with the given variables set, replacing old values.
func withEnv(env []string, set map[string]string) []string {
	out := make([]string, 0, len(env)+len(set))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; !ok {
			out = append(out, kv)
		}
	}
	for k, v := range set {
		out = append(out, k+"="+v)
	}
	return out
}

// shellLines are the variable assignments eval'ed by the caller's shell.
func shellLines(cfg *config, socket string, pid int, user string) string {
	csh := cfg.cshSyntax || (!cfg.shSyntax && strings.HasSuffix(os.Getenv("SHELL"), "csh"))
	vars := [][2]string{{"SSH_AUTH_SOCK", socket}, {"SSH_AGENT_PID", strconv.Itoa(pid)}, {"OSLOGIN_USER", user}}
	var b strings.Builder
	for _, kv := range vars {
		if csh {
			fmt.Fprintf(&b, "setenv %s %s;\n", kv[0], shellQuote(kv[1]))
		} else {
			fmt.Fprintf(&b, "%s=%s; export %s;\n", kv[0], shellQuote(kv[1]), kv[0])
		}
	}
	fmt.Fprintf(&b, "echo Agent pid %d;\n", pid)
	return b.String()
}

// shellQuote leaves plain words alone, as ssh-agent prints them, and single-
// quotes anything else.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:@%+,=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// killAgent stops the agent named by SSH_AGENT_PID and waits until it has
// deleted its keys and exited, then prints the shell lines that forget it.
func killAgent(cfg *config, stdout io.Writer) error {
	v := os.Getenv("SSH_AGENT_PID")
	if v == "" {
		return errors.New("SSH_AGENT_PID is not set, so there is no agent to stop (run eval \"$(oslogin-agent -s)\" first)")
	}
	pid, err := strconv.Atoi(v)
	if err != nil || pid <= 1 {
		return fmt.Errorf("SSH_AGENT_PID=%q is not a process id", v)
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		if owner, err := socketOwner(sock); err == nil && owner != pid {
			return fmt.Errorf("SSH_AUTH_SOCK %s belongs to process %d, not SSH_AGENT_PID %d; not stopping anything", sock, owner, pid)
		}
	}
	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		return fmt.Errorf("stop agent pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(closeTimeout + 5*time.Second)
	for unix.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			return fmt.Errorf("agent pid %d did not exit within %v", pid, closeTimeout+5*time.Second)
		}
		time.Sleep(20 * time.Millisecond)
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

// socketOwner returns the pid of the process serving a Unix socket.
func socketOwner(path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return 0, err
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, err
	}
	return int(cred.Pid), nil
}
