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
	// Exit 0 as documented even if OS Login could not be reached to
	// delete the keys: stop has logged that they expire by their TTL.
	s.stop()
	return nil
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
			fmt.Fprintf(&b, "setenv %s %s;\n", kv[0], cshQuote(kv[1]))
		} else {
			fmt.Fprintf(&b, "%s=%s; export %s;\n", kv[0], shellQuote(kv[1]), kv[0])
		}
	}
	fmt.Fprintf(&b, "echo Agent pid %d;\n", pid)
	return b.String()
}

// cshQuote quotes for csh and tcsh, where single quotes do not stop
// history substitution (!) and do not hold a newline: ! is escaped with a
// backslash and a newline with a backslash inside the quotes, which both
// shells accept.
func cshQuote(s string) string {
	q := shellQuote(s)
	if !strings.HasPrefix(q, "'") {
		return q
	}
	return strings.NewReplacer("!", `\!`, "\n", "\\\n").Replace(q)
}

// shellQuote leaves plain words alone, as ssh-agent prints them, and single-
// quotes anything else.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:@%+,=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
