package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/syslog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// readyFDEnv tells a re-executed agent that it is the background half and
// which file descriptor reports its readiness to the foreground half.
const readyFDEnv = "OSLOGIN_AGENT_READY_FD"

// readiness is what the background agent tells the process that started it:
// either where it serves, or why it could not.
type readiness struct {
	Socket string `json:"socket,omitempty"`
	PID    int    `json:"pid,omitempty"`
	User   string `json:"user,omitempty"`
	Error  string `json:"error,omitempty"`
	// Warnings are the terminal lines logged during start-up, for the
	// starting process to print: the background agent has no terminal.
	Warnings string `json:"warnings,omitempty"`
}

func daemonReadyFD() (int, bool) {
	v := os.Getenv(readyFDEnv)
	if v == "" {
		return 0, false
	}
	os.Unsetenv(readyFDEnv)
	fd, err := strconv.Atoi(v)
	return fd, err == nil && fd > 2
}

// startDaemon starts the agent in the background and returns once its first
// key is registered and its socket answers, printing the shell variables.
// Go cannot fork, so the agent re-executes itself in a new session and
// reports back through a pipe.
//
// Until the variables are printed, nobody but this process knows the
// background agent, so it must not outlive it: a second pipe, the watch
// pipe, stays open here until the hand-over, when one byte says "printed".
// If this process goes away first (Ctrl-C, SIGKILL, a closed terminal),
// the background agent reads end-of-file instead, stops starting and
// deletes any key it registered. A stop signal here closes the pipe on
// purpose and waits for the background agent to give up.
func startDaemon(cfg *config, args []string, stdout, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("readiness pipe: %w", err)
	}
	defer r.Close()
	watchR, watchW, err := os.Pipe()
	if err != nil {
		w.Close()
		return fmt.Errorf("watch pipe: %w", err)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		w.Close()
		watchR.Close()
		watchW.Close()
		return err
	}
	defer devnull.Close()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, stopSignals...)
	defer signal.Stop(sigs)
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), readyFDEnv+"=3", watchFDEnv+"=4")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	cmd.ExtraFiles = []*os.File{w, watchR}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	watchR.Close()
	if err != nil {
		watchW.Close()
		return fmt.Errorf("start background agent: %w", err)
	}
	pid := cmd.Process.Pid
	go cmd.Wait() // reap it if it dies while we wait; it outlives us otherwise

	// The watcher is owned by this function: it ends when a signal comes
	// or when the hand-over is done (stopWatch).
	var interrupted atomic.Bool
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-sigs:
			interrupted.Store(true)
			watchW.Close() // the background agent gives up and reports it
		case <-stopWatch:
		}
	}()
	defer func() {
		close(stopWatch)
		<-watched
		watchW.Close()
	}()

	r.SetReadDeadline(time.Now().Add(cfg.startTime + closeTimeout))
	var msg readiness
	if err := json.NewDecoder(r).Decode(&msg); err != nil {
		if interrupted.Load() {
			return errInterrupted
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			syscall.Kill(pid, syscall.SIGTERM)
			return errors.New("the background agent did not become ready in time")
		}
		return errors.New("the background agent exited during start-up (run with -D to see why)")
	}
	io.WriteString(stderr, msg.Warnings)
	if interrupted.Load() {
		return errInterrupted
	}
	if msg.Error != "" {
		return errors.New(msg.Error)
	}
	if _, err := fmt.Fprint(stdout, shellLines(cfg, msg.Socket, msg.PID, msg.User)); err != nil {
		return fmt.Errorf("print the shell variables: %w; the background agent stops", err)
	}
	close(stopWatch)
	<-watched
	stopWatch = make(chan struct{}) // for the deferred close
	if interrupted.Load() {
		return errInterrupted
	}
	if _, err := watchW.Write([]byte{handedOver}); err != nil {
		return fmt.Errorf("hand over to the background agent: %w", err)
	}
	return nil
}

// errInterrupted is a stop signal during start-up: exit status 130.
var errInterrupted = errors.New("interrupted before the agent started; nothing left registered")

// watchFDEnv names the background agent's end of the watch pipe.
const watchFDEnv = "OSLOGIN_AGENT_WATCH_FD"

// handedOver is the byte the starting process writes on the watch pipe
// once it has printed the shell variables.
const handedOver = 'k'

// watchParent reads the watch pipe in the background agent. It cancels
// ctx if the starting process goes away before the hand-over, and closes
// handed once it has happened. It returns when either has.
func watchParent(f *os.File, cancel context.CancelFunc, handed chan<- struct{}) {
	defer f.Close()
	var b [1]byte
	if n, _ := f.Read(b[:]); n == 1 && b[0] == handedOver {
		close(handed)
		return
	}
	cancel()
}

// runDaemonChild is the background agent. It reports readiness or the
// start-up error on fd, then serves until a stop signal, or until the
// starting process goes away before it has printed the variables.
func runDaemonChild(args []string, fd int) int {
	report := os.NewFile(uintptr(fd), "readiness")
	tell := func(m readiness) {
		if report != nil {
			json.NewEncoder(report).Encode(m)
			report.Close()
			report = nil
		}
	}
	sigCtx, stop := signal.NotifyContext(context.Background(), stopSignals...)
	defer stop()
	ctx, cancel := context.WithCancel(sigCtx)
	defer cancel()
	handed := make(chan struct{})
	if wfd, err := strconv.Atoi(os.Getenv(watchFDEnv)); err == nil && wfd > 2 {
		os.Unsetenv(watchFDEnv)
		go watchParent(os.NewFile(uintptr(wfd), "watch"), cancel, handed) // ends at hand-over or the parent's exit
	} else {
		close(handed)
	}
	cfg, _, err := parseFlags(args)
	if err != nil {
		tell(readiness{Error: err.Error()})
		return 2
	}
	startup := &startupWarnings{}
	warnTo := &switchWriter{w: startup}
	logs, err := openLogs(cfg, modeBackground, warnTo, startup)
	if err != nil {
		tell(readiness{Error: err.Error()})
		return 1
	}
	defer logs.close()
	log := logs.log
	s, err := startSession(ctx, cfg, log)
	if err != nil {
		warnings := startup.take() // the error itself is printed once, by the starting process
		if logs.file != nil {
			log.Error("start-up failed", "err", err)
		}
		tell(readiness{Error: err.Error(), Warnings: warnings})
		return 1
	}
	tell(readiness{Socket: s.socket, PID: os.Getpid(), User: s.username, Warnings: startup.take()})
	select {
	case <-handed:
	case <-ctx.Done():
		if sigCtx.Err() == nil {
			log.Warn("the starting process went away before printing the shell variables; stopping")
		}
	}
	// From now on nobody reads the terminal: a log file that fails is
	// reported to syslog, where there is one.
	warnTo.set(syslogWriter())
	<-ctx.Done()
	s.stop() // exit 0 as documented; a key it could not delete is logged and expires by its TTL
	return 0
}

// switchWriter is a writer whose destination changes once.
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *switchWriter) set(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w = w
}

// syslogWriter is the local syslog (journald takes it too), or nothing.
func syslogWriter() io.Writer {
	w, err := syslog.New(syslog.LOG_WARNING|syslog.LOG_USER, "oslogin-agent")
	if err != nil {
		return io.Discard
	}
	return w
}
