package agent

import (
	"log/slog"

	"golang.org/x/sys/unix"
)

// Harden makes the process harder to read keys from. It never fails; what it
// cannot do it logs at Warn, except the usual case of an unprivileged user
// with a limited memlock limit, logged at Info: every such run would warn.
//
//   - prctl(PR_SET_DUMPABLE, 0): no core dumps, and other processes of the
//     same user cannot ptrace it or read /proc/<pid>/mem.
//   - RLIMIT_CORE 0: no core file even if something makes the process
//     dumpable again.
//
// It does not lock the process's memory (mlockall): that locked the whole
// mapped binary, 14 of the 16 MiB resident, to protect a few hundred bytes
// of key. Package signer protects the key pages themselves instead
// (memfd_secret, else mlock and MADV_DONTDUMP on a mapping of their own).
func Harden(logger *slog.Logger) {
	if logger == nil {
		logger = slog.Default()
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		logger.Warn("process left dumpable: prctl(PR_SET_DUMPABLE, 0) failed", "error", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		logger.Warn("core dumps not disabled: setrlimit(RLIMIT_CORE, 0) failed", "error", err)
	}
	logger.Debug("process hardened: not dumpable, no core files")
}
