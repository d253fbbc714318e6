// Command oslogin-agent is an SSH agent for machine users on Google Cloud.
// It keeps its key in memory, leases it to OS Login with a short expiry, and
// serves it to stock OpenSSH tools through SSH_AUTH_SOCK.
//
// This file only wires things together; the work is done by packages agent,
// signer and oslogin.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/oslogin-agent/oslogin-agent/internal/version"
	"github.com/oslogin-agent/oslogin-agent/oslogin"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the process exit status: 0 success, 1 runtime failure,
// 2 usage error; in command mode, the command's own status.
func run(args []string, stdout, stderr io.Writer) int {
	if fd, ok := daemonReadyFD(); ok {
		return runDaemonChild(args, fd)
	}
	if code, ok := runSubcommand(args, stdout, stderr); ok {
		return code
	}
	act, actErr := takeActivation() // and unset LISTEN_*, whatever happens next
	cfg, fs, err := parseFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "oslogin-agent: %v (run 'oslogin-agent --help' for usage)\n", err)
		return 2
	}
	if actErr != nil {
		return exitStatus(stderr, actErr)
	}
	if act.fds > 0 {
		switch {
		case !(cfg.foreground || cfg.debug) || len(cfg.command) > 0:
			return exitStatus(stderr, usagef("systemd passed a socket, which only -D or -d serves; add -D to ExecStart="))
		case cfg.socket != "":
			return exitStatus(stderr, usagef("-a cannot be used with a socket from systemd: the socket unit names the path"))
		}
		// Checked before anything else happens: a socket that cannot be
		// served must not cost a key registration.
		if cfg.activated, err = act.listener(); err != nil {
			return exitStatus(stderr, err)
		}
	}
	if cfg.endpoints.LoopbackOnly() {
		// Google's libraries (Application Default Credentials, the metadata
		// client) read the metadata server's address from here.
		os.Setenv(oslogin.MetadataHostEnv, cfg.endpoints.MetadataHost)
	}
	switch {
	case cfg.help:
		printUsage(fs, stdout)
		return 0
	case cfg.version:
		fmt.Fprintln(stdout, version.Line("oslogin-agent"))
		return 0
	case cfg.kill:
		return exitStatus(stderr, killAgent(cfg, stdout))
	case len(cfg.command) > 0:
		return runCommand(cfg, stderr)
	case cfg.foreground || cfg.debug:
		return exitStatus(stderr, runForeground(cfg, stdout, stderr))
	default:
		return exitStatus(stderr, startDaemon(cfg, args, stdout, stderr))
	}
}

// exitStatus reports err on one line and maps it to an exit status.
func exitStatus(stderr io.Writer, err error) int {
	if err == nil || errors.Is(err, context.Canceled) {
		return 0
	}
	if errors.Is(err, errInterrupted) {
		fmt.Fprintf(stderr, "oslogin-agent: %v\n", err)
		return 130
	}
	fmt.Fprintf(stderr, "oslogin-agent: %s\n", strings.Join(strings.Fields(err.Error()), " "))
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}
