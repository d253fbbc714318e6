package e2e

import (
	"os"
	"sort"
	"testing"
	"time"
)

// TestCertificateSetupTime measures ssh connection set-up through the
// agent to a certificate-only VM with the certificate cached against a VM
// that takes the imported key, interleaved so both see the same load. It
// runs only with E2E_BENCH=1: on shared machines it is a measurement, not
// a check.
func TestCertificateSetupTime(t *testing.T) {
	if os.Getenv("E2E_BENCH") != "1" {
		t.Skip("set E2E_BENCH=1 to measure")
	}
	vms := mixedFleet()[2:4] // cert-3, keys-1
	v := newVM(t, fleetConfig(vms))
	vms = v.startFleet(t, vms)
	a := v.startCertAgent(t, "--log-level", "warn")
	const n = 20
	var cert, key []time.Duration
	for i := 0; i < n+1; i++ {
		for j, f := range vms {
			start := time.Now()
			if out, err := v.ssh(f.srv, a.sock, "true").CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", f.name, err, out)
			}
			if i == 0 {
				continue // the first connection signs and builds the index
			}
			if j == 0 {
				cert = append(cert, time.Since(start))
			} else {
				key = append(key, time.Since(start))
			}
		}
	}
	med := func(d []time.Duration) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	mc, mk := med(cert), med(key)
	t.Logf("median set-up over %d connections: certificate (cached) %v, imported key %v, ratio %.3f; signing calls %d",
		n, mc, mk, float64(mc)/float64(mk), v.emu.Emulator.Calls()[signMethod])
}
