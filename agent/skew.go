package agent

import (
	"time"
)

// ServerClock is implemented by a Registrar that can tell the login
// service's time (oslogin.Client reads it from the HTTP Date header of OS
// Login's answers). Registration expiries are enforced by that service and
// by the VMs, never by the agent's host: when the host's clock is off, the
// agent computes expiries in the service's clock instead of its own, and
// warns. A Registrar without it is assumed to share the host's clock.
type ServerClock interface {
	// ServerTime returns the service's time as of its most recent answer
	// and the local time (by the clock the agent was given) that answer
	// arrived; ok is false before any answer.
	ServerTime() (server, local time.Time, ok bool)
}

// skewTolerance is the clock difference not worth acting on: HTTP Date has
// whole seconds, so two readings of the same difference can be a second
// apart.
const skewTolerance = time.Second

// skewWarnFloor is the least difference ever warned about, however short
// the TTL: below it the measurement itself is noise.
const skewWarnFloor = 2 * time.Second

// observeServerClock reads the Registrar's clock after a call. When the
// difference with the local clock moved by more than skewTolerance, it
// takes the new difference, moves every key's local expiry and the next
// renewal accordingly, and logs once for the change. It returns the
// service's time as of the last answer. l.mu must be held.
func (a *Agent) observeServerClock() (serverAt time.Time, ok bool) {
	sc, ok := a.reg.(ServerClock)
	if !ok {
		return time.Time{}, false
	}
	server, local, ok := sc.ServerTime()
	if !ok {
		return time.Time{}, false
	}
	l := &a.lease
	l.serverAt = server
	skew := server.Sub(local)
	if d := skew - l.skew; d >= -skewTolerance && d <= skewTolerance {
		return server, true
	}
	l.skew = skew
	a.serviceSkew.Store(int64(skew))
	a.mu.Lock()
	for _, k := range a.keys {
		if !k.serverExpiry.IsZero() {
			k.expiry = k.serverExpiry.Add(-skew)
		}
	}
	var cur *leasedKey
	if n := len(a.keys); n > 0 {
		cur = a.keys[n-1]
	}
	a.mu.Unlock()
	if cur != nil {
		l.renewAt = cur.expiry.Add(-a.ttl / 2)
	}
	limit := max(a.retireMargin, skewWarnFloor)
	switch {
	case skew > limit || skew < -limit:
		dir := "ahead of"
		if skew < 0 {
			dir = "behind"
		}
		a.log.Warn("this host's clock differs from OS Login's; key expiries are now computed in OS Login's clock, "+
			"but fix the host's time (NTP): VMs whose clocks are off as well may still refuse keys early",
			"oslogin_clock", dir+" this host by "+abs(skew).Round(100*time.Millisecond).String(),
			"skew", skew.Round(100*time.Millisecond), "ttl", a.ttl, "warn_above", limit)
		l.skewWarned = true
	case l.skewWarned:
		a.log.Info("this host's clock agrees with OS Login's again", "skew", skew.Round(100*time.Millisecond))
		l.skewWarned = false
	}
	return server, true
}

// serviceNow is the login service's time by this host's clock and the
// last measured skew. Certificates are valid in the signing service's
// clock (and the VMs'), so their freshness is judged in it, like key
// expiries; it is safe to call without any lock.
func (a *Agent) serviceNow() time.Time {
	return a.now().Add(time.Duration(a.serviceSkew.Load()))
}

// serverExpiry converts a local expiry to the service's clock for sending.
// l.mu must be held.
func (a *Agent) serverExpiry(local time.Time) time.Time { return local.Add(a.lease.skew) }

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
