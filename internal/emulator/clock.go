package emulator

import "time"

// Clock is the emulator's source of time. Tests inject one to pin "now";
// nil means the real clock. The emulator adds its own offset on top, moved by
// Advance, so a running process can be fast-forwarded through the admin API.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Now is the emulator's current time: the clock plus the advanced offset.
func (e *Emulator) Now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.nowLocked()
}

func (e *Emulator) nowLocked() time.Time { return e.clock.Now().Add(e.offset) }

// Advance moves the emulator's clock forward by d; non-positive d does
// nothing, because time that runs backwards would break token and quota logic.
func (e *Emulator) Advance(d time.Duration) {
	if d <= 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.offset += d
	e.log.Debug("clock advanced", "by", d, "now", e.nowLocked())
}
