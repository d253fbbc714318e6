package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// API cost of a running agent. Per rotation period R its schedule makes one
// import (the new key), one delete (the retired key) and a patch every
// TTL/2 (renewals). When R is a multiple of TTL/2 the last renewal of a
// period falls on the rotation itself; it is made only if its timer is due
// before the rotation's (registration time + R), which with a real API
// round trip of ~100 ms it nearly always is, and against a local emulator
// about half the time. So, per hour:
//
//	3600/(TTL/2) + 3600/R  <=  calls  <=  3600/(TTL/2) + 2*3600/R
func callsPerHour(ttl, rotate time.Duration) (low, high float64) {
	renewals := time.Hour.Seconds() / (ttl.Seconds() / 2)
	perRotation := time.Hour.Seconds() / rotate.Seconds()
	return renewals + perRotation, renewals + 2*perRotation
}

// Short intervals for the measurement; the result is scaled to an hour and
// compared with the formula.
const (
	costTTL    = 10 * time.Second
	costRotate = 10 * time.Second
)

// APIHour is the measured and computed OS Login traffic of an idle agent.
type APIHour struct {
	TTLSeconds      float64        `json:"ttl_s"`
	RotateSeconds   float64        `json:"rotate_s"`
	ElapsedSeconds  float64        `json:"elapsed_s"`
	Calls           map[string]int `json:"calls"`
	APICalls        int            `json:"api_calls"`
	MeasuredPerHour float64        `json:"measured_per_hour"`
	FormulaLow      float64        `json:"formula_per_hour_low"`
	FormulaHigh     float64        `json:"formula_per_hour_high"`
	DefaultsLow     float64        `json:"defaults_per_hour_low"` // ttl=10m, rotate=1h
	DefaultsHigh    float64        `json:"defaults_per_hour_high"`
	TokenFetches    int            `json:"metadata_token_fetches"`
}

// apiCostRun is an agent running with short intervals in the background
// while the rest of the bench runs; finish reads its emulator's counters.
type apiCostRun struct {
	e      *emu
	a      *oslAgent
	start  time.Time
	before map[string]int
}

func (b *bench) startAPICost() (*apiCostRun, error) {
	dir, err := os.MkdirTemp(b.tmp, "cost")
	if err != nil {
		return nil, err
	}
	e, err := startEmulator(b.emuConfig())
	if err != nil {
		return nil, err
	}
	b.onCleanup(e.Close)
	a, err := b.startOslAgent(e, filepath.Join(dir, "a.sock"), filepath.Join(dir, "agent.log"),
		"--ttl", costTTL.String(), "--rotate", costRotate.String(), "--propagation", "1s")
	if err != nil {
		return nil, err
	}
	return &apiCostRun{e: e, a: a, start: time.Now(), before: e.Calls()}, nil
}

// finish waits until at least minRun passed since the start, then stops the
// agent and reports.
func (r *apiCostRun) finish(minRun time.Duration) (*APIHour, error) {
	if d := minRun - time.Since(r.start); d > 0 {
		time.Sleep(d)
	}
	calls := diffCalls(r.before, r.e.Calls())
	elapsed := time.Since(r.start)
	if err := waitAnswers(r.a.sock, 5*time.Second); err != nil {
		return nil, fmt.Errorf("the agent stopped answering during the run: %w", err)
	}
	r.a.Stop()
	api := map[string]int{}
	for m, c := range calls {
		if m != "metadata.token" && m != "metadata.get" {
			api[m] = c
		}
	}
	h := &APIHour{
		TTLSeconds: costTTL.Seconds(), RotateSeconds: costRotate.Seconds(),
		ElapsedSeconds: elapsed.Seconds(),
		Calls:          api,
		APICalls:       apiCalls(calls),
		TokenFetches:   calls["metadata.token"],
	}
	h.FormulaLow, h.FormulaHigh = callsPerHour(costTTL, costRotate)
	h.DefaultsLow, h.DefaultsHigh = callsPerHour(10*time.Minute, time.Hour)
	h.MeasuredPerHour = float64(h.APICalls) / elapsed.Hours()
	return h, nil
}
