package iaprelay

import (
	"encoding/json"
	"fmt"
	"time"
)

// Directions for faults: "up" is client → relay, "down" relay → client,
// "" either.
const (
	DirUp   = "up"
	DirDown = "down"
)

type direction int

const (
	up direction = iota
	down
)

func (d direction) String() string {
	if d == up {
		return DirUp
	}
	return DirDown
}

// Fault is an injected misbehaviour of the relay, set at run time. Exactly
// one effect is set:
//
//   - Drop closes the WebSocket without a close frame, as a network failure
//     would, when a DATA frame would take the link's byte count (in
//     Direction) past AfterBytes, or at random with probability Rate per
//     DATA frame. The frame is lost; the session survives for a reconnect.
//   - Stall stops forwarding on the link (both ways) for that long, at the
//     same trigger as Drop; it fires at most once per WebSocket.
//   - RefuseCode / RefuseStatus refuse new handshakes: with a close code
//     right after the upgrade (its reason text per the reference), or with
//     an HTTP status before it.
//   - Throttle limits DATA to that many bytes/s per link and Direction.
//   - Latency delays every DATA frame in Direction.
//
// Selectors: Instance (empty: any) and Path ("connect", "reconnect" or
// empty: both). Times limits how often the fault fires (drops, stalls,
// refusals; for Throttle and Latency, frames); 0 means unlimited, and a
// fault that has fired Times times is removed.
type Fault struct {
	Instance     string
	Path         string
	Times        int
	Direction    string
	AfterBytes   int64
	Rate         float64
	Drop         bool
	Stall        time.Duration
	RefuseCode   int
	RefuseStatus int
	Throttle     int64
	Latency      time.Duration
}

type faultJSON struct {
	Instance     string  `json:"instance,omitempty"`
	Path         string  `json:"path,omitempty"`
	Times        int     `json:"times,omitempty"`
	Direction    string  `json:"direction,omitempty"`
	AfterBytes   int64   `json:"afterBytes,omitempty"`
	Rate         float64 `json:"rate,omitempty"`
	Drop         bool    `json:"drop,omitempty"`
	Stall        string  `json:"stall,omitempty"`
	RefuseCode   int     `json:"refuseCode,omitempty"`
	RefuseStatus int     `json:"refuseStatus,omitempty"`
	Throttle     int64   `json:"throttle,omitempty"`
	Latency      string  `json:"latency,omitempty"`
}

func durString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func parseDuration(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("fault: %s: %w", field, err)
	}
	return d, nil
}

// MarshalJSON encodes durations as Go duration strings ("1.5s").
func (f Fault) MarshalJSON() ([]byte, error) {
	return json.Marshal(faultJSON{Instance: f.Instance, Path: f.Path, Times: f.Times, Direction: f.Direction,
		AfterBytes: f.AfterBytes, Rate: f.Rate, Drop: f.Drop, Stall: durString(f.Stall),
		RefuseCode: f.RefuseCode, RefuseStatus: f.RefuseStatus, Throttle: f.Throttle, Latency: durString(f.Latency)})
}

// UnmarshalJSON is the inverse of MarshalJSON.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	out := Fault{Instance: j.Instance, Path: j.Path, Times: j.Times, Direction: j.Direction,
		AfterBytes: j.AfterBytes, Rate: j.Rate, Drop: j.Drop,
		RefuseCode: j.RefuseCode, RefuseStatus: j.RefuseStatus, Throttle: j.Throttle}
	var err error
	if out.Stall, err = parseDuration("stall", j.Stall); err != nil {
		return err
	}
	if out.Latency, err = parseDuration("latency", j.Latency); err != nil {
		return err
	}
	*f = out
	return nil
}

func (f Fault) validate() error {
	effects := 0
	for _, set := range []bool{f.Drop, f.Stall != 0, f.RefuseCode != 0, f.RefuseStatus != 0, f.Throttle != 0, f.Latency != 0} {
		if set {
			effects++
		}
	}
	switch {
	case effects != 1:
		return fmt.Errorf("fault: want exactly one effect, have %d", effects)
	case f.Path != "" && f.Path != "connect" && f.Path != "reconnect":
		return fmt.Errorf("fault: path %q is not connect or reconnect", f.Path)
	case f.Direction != "" && f.Direction != DirUp && f.Direction != DirDown:
		return fmt.Errorf("fault: direction %q is not up or down", f.Direction)
	case f.Rate < 0 || f.Rate > 1:
		return fmt.Errorf("fault: rate %v outside [0, 1]", f.Rate)
	case f.Times < 0 || f.AfterBytes < 0 || f.Throttle < 0 || f.Stall < 0 || f.Latency < 0:
		return fmt.Errorf("fault: negative value")
	case f.RefuseCode != 0 && (f.RefuseCode < 4000 || f.RefuseCode > 4999):
		return fmt.Errorf("fault: refuse code %d is not a 4xxx relay code", f.RefuseCode)
	case f.RefuseStatus != 0 && (f.RefuseStatus < 400 || f.RefuseStatus > 599):
		return fmt.Errorf("fault: refuse status %d is not an error status", f.RefuseStatus)
	}
	return nil
}

type installedFault struct {
	Fault
	id int
}

// SetFault installs f next to the others (several may apply at once).
func (r *Relay) SetFault(f Fault) error {
	if err := f.validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faultSeq++
	r.faults = append(r.faults, installedFault{Fault: f, id: r.faultSeq})
	r.nfaults.Store(int64(len(r.faults)))
	return nil
}

// Faults returns the installed faults, with Times counting down.
func (r *Relay) Faults() []Fault {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Fault, len(r.faults))
	for i, f := range r.faults {
		out[i] = f.Fault
	}
	return out
}

// ClearFaults removes every fault.
func (r *Relay) ClearFaults() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = nil
	r.nfaults.Store(0)
}

// useLocked counts one firing of fault i and removes it when spent,
// reporting whether it did.
func (r *Relay) useLocked(i int) (removed bool) {
	if r.faults[i].Times == 0 {
		return false
	}
	r.faults[i].Times--
	if r.faults[i].Times > 0 {
		return false
	}
	r.faults = append(r.faults[:i], r.faults[i+1:]...)
	r.nfaults.Store(int64(len(r.faults)))
	return true
}

// refusal returns the refusing fault for a handshake, if one fires: one
// with an HTTP status before the upgrade (status), one with a close code
// after it.
func (r *Relay) refusal(instance, path string, status bool) (Fault, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, f := range r.faults {
		if (status && f.RefuseStatus == 0) || (!status && f.RefuseCode == 0) || !f.selects(instance, path) {
			continue
		}
		if f.Rate > 0 && r.opts.Rand() >= f.Rate {
			continue
		}
		r.useLocked(i)
		return f.Fault, true
	}
	return Fault{}, false
}

func (f Fault) selects(instance, path string) bool {
	return (f.Instance == "" || f.Instance == instance) && (f.Path == "" || f.Path == path)
}

// droppedID marks, in link.fired, a link a fault has dropped already.
const droppedID = -1

type action struct {
	drop           bool
	stall, latency time.Duration
	throttle       int64
}

// frameFaults decides the effects on one DATA frame of n bytes going dir
// on l, and counts the bytes.
func (r *Relay) frameFaults(l *link, dir direction, n int) action {
	var before int64
	if dir == up {
		before = l.up.Add(int64(n)) - int64(n)
	} else {
		before = l.down.Add(int64(n)) - int64(n)
	}
	if r.nfaults.Load() == 0 {
		return action{} // the common case: no relay-wide lock per frame
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var a action
	for i := 0; i < len(r.faults); i++ {
		f := r.faults[i]
		if f.RefuseCode != 0 || f.RefuseStatus != 0 || !f.selects(l.s.target.Name, l.path) {
			continue
		}
		if f.Direction != "" && f.Direction != dir.String() {
			continue
		}
		if f.Throttle > 0 || f.Latency > 0 {
			a.throttle, a.latency = max(a.throttle, f.Throttle), max(a.latency, f.Latency)
			if r.useLocked(i) {
				i--
			}
			continue
		}
		if (f.Stall > 0 && l.fired[f.id]) || (f.Drop && l.fired[droppedID]) {
			continue // stalls fire once per link; a dropped link is not dropped again
		}
		count := before
		if f.Direction == "" {
			count = l.up.Load() + l.down.Load() - int64(n)
		}
		var fire bool
		if f.Rate > 0 {
			fire = r.opts.Rand() < f.Rate
		} else {
			fire = count+int64(n) > f.AfterBytes
		}
		if !fire {
			continue
		}
		l.fired[f.id] = true
		if f.Drop {
			l.fired[droppedID] = true
			a.drop = true
		} else {
			a.stall = max(a.stall, f.Stall)
		}
		if r.useLocked(i) {
			i--
		}
	}
	return a
}
