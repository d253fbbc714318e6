package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
)

// apiLatency is the injected delay of one emulated round trip.
const apiLatency = 100 * time.Millisecond

// startScenario is one emulator set-up for the start-to-ready measurement.
type startScenario struct {
	Name   string
	Faults []emulator.Fault
}

var startScenarios = []startScenario{
	{Name: "0 ms"},
	{Name: "100 ms on OS Login API", Faults: []emulator.Fault{
		{Methods: emulator.FaultAll, Latency: apiLatency},
	}},
	{Name: "100 ms on API and metadata", Faults: []emulator.Fault{
		{Methods: emulator.FaultAll, Latency: apiLatency},
		{Methods: emulator.FaultMetadata, Latency: apiLatency},
	}},
}

// StartRow is the start-to-ready time of one scenario.
type StartRow struct {
	Scenario     string  `json:"scenario"`
	ReadyMs      float64 `json:"ready_ms"` // median
	MinMs        float64 `json:"min_ms"`
	MaxMs        float64 `json:"max_ms"`
	Runs         int     `json:"runs"`
	APICalls     int     `json:"api_calls_per_start"`      // OS Login API requests until ready
	MetadataReqs int     `json:"metadata_calls_per_start"` // metadata server requests until ready
	// RoundTrips estimates the requests on the critical path:
	// (ready - ready at 0 ms) / 100 ms.
	RoundTrips float64 `json:"sequential_round_trips,omitempty"`
	// OverheadMs is ready minus one API round trip (100 ms); the target
	// applies to the API-latency scenario.
	OverheadMs float64 `json:"overhead_beyond_one_round_trip_ms,omitempty"`
	Calls      string  `json:"calls"`
}

// startBench measures process start to a registered key and an answering
// socket, for each scenario, alternating the scenario order across rounds.
func (b *bench) startBench() ([]StartRow, error) {
	dir, err := os.MkdirTemp(b.tmp, "start")
	if err != nil {
		return nil, err
	}
	e, err := startEmulator(b.emuConfig())
	if err != nil {
		return nil, err
	}
	defer e.Close()

	runOnce := func(sc startScenario, i int) (time.Duration, map[string]int, error) {
		e.ClearFaults()
		for _, f := range sc.Faults {
			e.SetFault(f)
		}
		defer e.ClearFaults()
		before := e.Calls()
		a, err := b.startOslAgent(e, filepath.Join(dir, fmt.Sprintf("a%d.sock", i)), "")
		if err != nil {
			return 0, nil, err
		}
		calls := diffCalls(before, e.Calls())
		e.ClearFaults() // stop quickly
		a.Stop()
		if n := len(e.Keys(e.Email)); n != 0 {
			return 0, nil, fmt.Errorf("%d keys left after the agent stopped", n)
		}
		return a.ready, calls, nil
	}
	// Warm the page cache and the emulator: not counted.
	if _, _, err := runOnce(startScenarios[0], 0); err != nil {
		return nil, err
	}
	times := make([][]float64, len(startScenarios))
	calls := make([]map[string]int, len(startScenarios))
	n := 1
	for r := range b.startRuns {
		for j := range startScenarios {
			k := j
			if r%2 == 1 {
				k = len(startScenarios) - 1 - j
			}
			d, c, err := runOnce(startScenarios[k], n)
			n++
			if err != nil {
				return nil, fmt.Errorf("start, %s: %w", startScenarios[k].Name, err)
			}
			times[k] = append(times[k], ms(d))
			calls[k] = c
			b.progress("  start %-28s run %d  %7.1f ms  %v", startScenarios[k].Name, r+1, ms(d), c)
		}
	}
	var rows []StartRow
	base := median(times[0])
	for k, sc := range startScenarios {
		row := StartRow{Scenario: sc.Name, ReadyMs: median(times[k]), MinMs: minF(times[k]), MaxMs: maxF(times[k]), Runs: len(times[k])}
		row.APICalls = apiCalls(calls[k])
		for m, c := range calls[k] {
			if strings.HasPrefix(m, "metadata.") {
				row.MetadataReqs += c
			}
		}
		row.Calls = fmt.Sprint(calls[k])
		if len(sc.Faults) > 0 {
			row.RoundTrips = (row.ReadyMs - base) / ms(apiLatency)
			row.OverheadMs = row.ReadyMs - ms(apiLatency)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func minF(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

func maxF(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}
