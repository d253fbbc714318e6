package emulator

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Fault selectors besides a single method id (e.g. "users.importSshPublicKey",
// "metadata.token", "metadata.oslogin.users", "metadata.oslogin.groups",
// "oauth2.token").
const (
	FaultAll      = "all"      // every OS Login API method
	FaultRead     = "read"     // users.getLoginProfile, users.sshPublicKeys.get
	FaultWrite    = "write"    // every other OS Login API method, signSshPublicKey included
	FaultMetadata = "metadata" // every metadata-server request, VM-side oslogin/ included
	FaultCompute  = "compute"  // every Compute Engine API request (compute.instances.get, ...)
)

// Fault is an injected misbehaviour for the requests Methods selects. When a
// request matches several faults, the most specific selector wins (method id,
// then read/write/metadata, then all). Effects, in request order:
//
//   - Stall holds the request before it is processed; a client that gives up
//     meanwhile leaves no trace. After the stall it proceeds.
//   - Drop closes the connection without an answer (hijack and close).
//   - Status answers with that HTTP status in Google's envelope (429 uses the
//     quota text; RetryAfter, when set, adds a Retry-After header).
//   - BlockKeyManagement makes importSshPublicKey answer 200 with the profile
//     but without adding the key, like the Cloud Identity policy that forbids
//     users to manage their SSH keys.
//   - Latency delays the answer (an injected error too) until after the
//     request was processed, so a client that times out has nevertheless
//     changed the state.
type Fault struct {
	Methods string
	// Rate is the probability that a matching request is affected; 0 means 1.
	Rate float64
	// Times limits how many requests the fault affects; 0 means unlimited.
	Times              int
	Status             int
	RetryAfter         time.Duration
	Latency            time.Duration
	Stall              time.Duration
	Drop               bool
	BlockKeyManagement bool
}

// faultJSON is Fault on the admin API, with Go duration strings.
type faultJSON struct {
	Methods            string  `json:"methods"`
	Rate               float64 `json:"rate,omitempty"`
	Times              int     `json:"times,omitempty"`
	Status             int     `json:"status,omitempty"`
	RetryAfter         string  `json:"retryAfter,omitempty"`
	Latency            string  `json:"latency,omitempty"`
	Stall              string  `json:"stall,omitempty"`
	Drop               bool    `json:"drop,omitempty"`
	BlockKeyManagement bool    `json:"blockKeyManagement,omitempty"`
}

func durString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// MarshalJSON encodes durations as Go duration strings ("1.5s").
func (f Fault) MarshalJSON() ([]byte, error) {
	return json.Marshal(faultJSON{Methods: f.Methods, Rate: f.Rate, Times: f.Times, Status: f.Status,
		RetryAfter: durString(f.RetryAfter), Latency: durString(f.Latency), Stall: durString(f.Stall),
		Drop: f.Drop, BlockKeyManagement: f.BlockKeyManagement})
}

// UnmarshalJSON is the inverse of MarshalJSON.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	out := Fault{Methods: j.Methods, Rate: j.Rate, Times: j.Times, Status: j.Status,
		Drop: j.Drop, BlockKeyManagement: j.BlockKeyManagement}
	var err error
	if out.RetryAfter, err = parseDuration("retryAfter", j.RetryAfter); err != nil {
		return err
	}
	if out.Latency, err = parseDuration("latency", j.Latency); err != nil {
		return err
	}
	if out.Stall, err = parseDuration("stall", j.Stall); err != nil {
		return err
	}
	*f = out
	return nil
}

func (f Fault) validate() error {
	switch {
	case f.Methods == "":
		return fmt.Errorf("fault: methods selector is empty")
	case f.Rate < 0 || f.Rate > 1:
		return fmt.Errorf("fault: rate %v outside [0, 1]", f.Rate)
	case f.Times < 0:
		return fmt.Errorf("fault: negative times")
	case f.Status != 0 && (f.Status < 400 || f.Status > 599):
		return fmt.Errorf("fault: status %d is not an error status", f.Status)
	case f.Latency < 0 || f.Stall < 0 || f.RetryAfter < 0:
		return fmt.Errorf("fault: negative duration")
	}
	return nil
}

// specificity orders selectors: the most specific matching fault applies.
func (f Fault) specificity(id string, write, metadata bool) int {
	switch f.Methods {
	case id:
		return 3
	case FaultMetadata:
		if metadata {
			return 2
		}
	case FaultCompute:
		if !metadata && strings.HasPrefix(id, "compute.") {
			return 2
		}
	case FaultRead:
		if !metadata && !write && strings.HasPrefix(id, "users.") {
			return 2
		}
	case FaultWrite:
		if !metadata && write {
			return 2
		}
	case FaultAll:
		if !metadata && strings.HasPrefix(id, "users.") {
			return 1
		}
	}
	return 0
}

// SetFault installs f, replacing any fault with the same selector. Invalid
// faults (negative durations, non-error status, rate outside [0,1]) are
// ignored and logged; the admin API reports them as 400.
func (e *Emulator) SetFault(f Fault) {
	if err := e.setFault(f); err != nil {
		e.log.Warn("fault rejected", "err", err)
	}
}

func (e *Emulator) setFault(f Fault) error {
	if err := f.validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, g := range e.faults {
		if g.Methods == f.Methods {
			e.faults[i] = f
			return nil
		}
	}
	e.faults = append(e.faults, f)
	return nil
}

// ClearFaults removes every fault.
func (e *Emulator) ClearFaults() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = nil
}

// Faults returns the installed faults, with Times counting down.
func (e *Emulator) Faults() []Fault {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Fault(nil), e.faults...)
}

// SetWriteQuota enables the per-user write quota of perMinute requests per
// emulator-clock minute window (Google: 60); 0 turns it off.
func (e *Emulator) SetWriteQuota(perMinute int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.writeQuota = max(perMinute, 0)
	clear(e.quota)
}

// quotaLocked counts one write by email and reports whether it is over the
// quota of the current one-minute window.
func (e *Emulator) quotaLocked(email string) bool {
	if e.writeQuota == 0 {
		return false
	}
	window := e.nowLocked().Truncate(time.Minute)
	q := e.quota[email]
	if q == nil || !q.start.Equal(window) {
		q = &quotaWindow{start: window}
		e.quota[email] = q
	}
	if q.count >= e.writeQuota {
		return true
	}
	q.count++
	return false
}

type quotaWindow struct {
	start time.Time
	count int
}

// fireFault picks the fault that applies to this request, if any fires.
func (e *Emulator) fireFault(id string, write, metadata bool) (Fault, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	best, bestScore := -1, 0
	for i, f := range e.faults {
		if s := f.specificity(id, write, metadata); s > bestScore {
			best, bestScore = i, s
		}
	}
	if best < 0 {
		return Fault{}, false
	}
	f := e.faults[best]
	if f.Rate > 0 && f.Rate < 1 && e.rand() >= f.Rate {
		return Fault{}, false
	}
	if f.Times > 0 {
		e.faults[best].Times--
		if e.faults[best].Times == 0 {
			e.faults = append(e.faults[:best], e.faults[best+1:]...)
		}
	}
	e.log.Debug("fault fired", "method", id, "selector", f.Methods)
	return f, true
}

// preFaults applies the effects that happen before processing. It returns
// false when the request was answered (or dropped) and must not proceed.
func (e *Emulator) preFaults(w http.ResponseWriter, r *http.Request, f Fault, writeErr func(code int)) bool {
	if f.Stall > 0 && !e.sleep(r.Context(), f.Stall) {
		return false
	}
	if f.Drop {
		dropConnection(w)
		return false
	}
	if f.Status != 0 {
		writeErr(f.Status)
		return false
	}
	return true
}

// dropConnection closes the TCP connection without writing a response, so
// the client sees a reset/EOF as after a proxy or network failure.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // HTTP/2 or a test recorder: abort the stream instead
	}
	_ = conn.Close() // closing is the point; its error changes nothing
}

// sleep waits d unless the request ends or the emulator closes first; it
// reports whether the full duration passed.
func (e *Emulator) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-e.closed:
		return false
	}
}

// lateWriter delays the first byte of the response by the Latency fault.
type lateWriter struct {
	http.ResponseWriter
	once  sync.Once
	delay func()
}

func (l *lateWriter) WriteHeader(code int) {
	l.once.Do(l.delay)
	l.ResponseWriter.WriteHeader(code)
}

func (l *lateWriter) Write(b []byte) (int, error) {
	l.once.Do(l.delay)
	return l.ResponseWriter.Write(b)
}

func (l *lateWriter) Unwrap() http.ResponseWriter { return l.ResponseWriter }

// withLatency wraps w so the answer leaves only after f.Latency.
func (e *Emulator) withLatency(w http.ResponseWriter, r *http.Request, f Fault) http.ResponseWriter {
	if f.Latency <= 0 {
		return w
	}
	return &lateWriter{ResponseWriter: w, delay: func() { e.sleep(r.Context(), f.Latency) }}
}
