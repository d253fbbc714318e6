package agent

import (
	"errors"
	"log/slog"
	"os"

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
//   - mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT): keep key pages out of
//     swap. Only when running as root or with an unlimited RLIMIT_MEMLOCK:
//     with MCL_FUTURE under a small limit, the Go runtime's next heap growth
//     fails and the process dies, which is worse than swap.
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
	var memlock unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &memlock); err != nil {
		logger.Warn("memory not locked: cannot read RLIMIT_MEMLOCK", "error", err)
		return
	}
	if os.Geteuid() != 0 && memlock.Cur != unix.RLIM_INFINITY {
		logger.Info("memory not locked: RLIMIT_MEMLOCK is limited, and locking future allocations under a limit can crash the Go runtime; keys may reach swap (run with an unlimited memlock limit, e.g. LimitMEMLOCK=infinity, to lock memory)",
			"memlock_limit_bytes", memlock.Cur)
		return
	}
	err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT)
	if errors.Is(err, unix.EINVAL) {
		// Kernels before 4.4 have no MCL_ONFAULT.
		err = unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE)
	}
	if err != nil {
		logger.Warn("memory not locked: mlockall failed; keys may reach swap", "error", err)
		return
	}
	logger.Debug("process hardened: not dumpable, no core files, memory locked")
}
