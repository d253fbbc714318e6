// Package agentproc runs an SSH agent as a child process the way scripts
// do: in the foreground, reading the shell lines it prints once it is ready
// (`SSH_AUTH_SOCK=…; export SSH_AUTH_SOCK;` … `echo Agent pid N;`), and
// stops it as a user would, with SIGTERM. The end-to-end tests and the
// benchmark run oslogin-agent with it, and the benchmark OpenSSH's
// ssh-agent too.
package agentproc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopGrace is how long Stop waits after SIGTERM before it kills: long
// enough for oslogin-agent to delete its keys from OS Login.
const stopGrace = 30 * time.Second

// Process is a running agent.
type Process struct {
	Cmd *exec.Cmd
	// Vars are the variables the agent printed, e.g. SSH_AUTH_SOCK and,
	// from oslogin-agent, SSH_AGENT_PID and OSLOGIN_USER.
	Vars map[string]string
	// PID is the process id the agent reported in its echo line.
	PID    int
	exited chan struct{}
}

// Start starts cmd, whose Stdout must be unset, and waits up to timeout for
// the agent's "echo Agent pid N;" line. Output after it is discarded. If
// the agent exits or does not get ready in time, Start makes sure it is
// gone and returns an error; the caller's Stderr holds the reason.
func Start(cmd *exec.Cmd, timeout time.Duration) (*Process, error) {
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{Cmd: cmd, Vars: map[string]string{}, exited: make(chan struct{})}
	lines := make(chan string)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		<-readDone // Wait closes stdout: only once the reader is done with it
		cmd.Wait()
		close(p.exited)
	}()
	drain := func() {
		go func() {
			for range lines {
			}
		}()
	}
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				<-p.exited
				return nil, fmt.Errorf("%s exited before it was ready (%v)", cmd.Path, cmd.ProcessState)
			}
			if pid, ok := strings.CutPrefix(line, "echo Agent pid "); ok {
				p.PID, _ = strconv.Atoi(strings.TrimSuffix(pid, ";"))
				drain()
				return p, nil
			}
			if k, rest, ok := strings.Cut(line, "="); ok {
				p.Vars[k], _, _ = strings.Cut(rest, ";")
			}
		case <-deadline:
			drain()
			p.Stop()
			return nil, fmt.Errorf("%s not ready after %v", cmd.Path, timeout)
		}
	}
}

// Done is closed when the process has exited; Cmd.ProcessState is set then.
func (p *Process) Done() <-chan struct{} { return p.exited }

// Stop sends SIGTERM and waits for the agent to clean up and exit, killing
// it if it takes longer than stopGrace. Stopping an exited agent is a no-op.
func (p *Process) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.Cmd.Process.Kill()
	}
	select {
	case <-p.exited:
	case <-time.After(stopGrace):
		p.Cmd.Process.Kill()
		<-p.exited
	}
}
