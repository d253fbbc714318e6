//go:build !linux

package agent

import "log/slog"

// Harden is implemented on Linux only; elsewhere it says so and returns.
func Harden(logger *slog.Logger) {
	if logger == nil {
		logger = slog.Default()
	}
	logger.Warn("process not hardened: core dumps, tracing and memory locking are only handled on Linux")
}
