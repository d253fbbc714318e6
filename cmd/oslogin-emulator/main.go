// Command oslogin-emulator serves a local OS Login API, GCE metadata server
// and the VM side of OS Login (see package internal/emulator), and doubles as
// the VM's sshd AuthorizedKeysCommand.
//
//	oslogin-emulator [flags]                  serve
//	oslogin-emulator authorized-keys [--metadata-host HOST:PORT] USER
//	oslogin-emulator --version
//
// Serving prints one line on stdout once it listens, ready for eval,
//
//	export OSLOGIN_EMULATOR_HOST=127.0.0.1:41234
//
// the one variable that points oslogin-agent and the helpers here, and runs
// until SIGINT or SIGTERM. Exit status:
// 0 after a clean shutdown, 1 on runtime errors (including a refused
// non-loopback --listen), 2 on usage errors.
//
// authorized-keys prints the user's unexpired keys, one per line, and exits
// 0; like the guest's google_authorized_keys it prints nothing and still
// exits 0 when the user is unknown, may not log in, or the server cannot be
// asked (the reason goes to stderr). It exits 1 only on usage errors,
// including a missing metadata host. sshd runs it with an empty environment,
// so pass --metadata-host there; elsewhere OSLOGIN_EMULATOR_HOST, then
// GCE_METADATA_HOST, name the emulator.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
