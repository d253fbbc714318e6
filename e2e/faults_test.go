package e2e

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
	"github.com/oslogin-agent/oslogin-agent/internal/emulator/emulatortest"
)

// cyclicRand makes fault rates deterministic: it returns the same ten
// numbers over and over, three of them under 0.3.
func cyclicRand() func() float64 {
	seq := []float64{0.05, 0.15, 0.95, 0.5, 0.7, 0.2, 0.9, 0.6, 0.8, 0.4}
	var mu sync.Mutex
	i := 0
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		v := seq[i%len(seq)]
		i++
		return v
	}
}

// faultVM is an emulator without sshd: these tests talk to the agent's
// socket directly.
func faultVM(t *testing.T) *vm {
	t.Helper()
	cfg := emulator.DefaultConfig()
	v := &vm{email: cfg.Accounts[0].Email}
	v.emu = emulatortest.StartWithOptions(t, emulator.Options{Config: cfg, Rand: cyclicRand()})
	return v
}

// listAndSign lists the agent's keys over a fresh connection, signs with
// the first and verifies the signature. It returns the key's fingerprint.
func listAndSign(sock string) (string, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	ag := sshagent.NewClient(c)
	keys, err := ag.List()
	if err != nil {
		return "", fmt.Errorf("list: %w", err)
	}
	if len(keys) == 0 {
		return "", fmt.Errorf("list: no keys")
	}
	pub, err := ssh.ParsePublicKey(keys[0].Blob)
	if err != nil {
		return "", err
	}
	data := []byte("faults")
	sig, err := ag.Sign(pub, data)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	if err := pub.Verify(data, sig); err != nil {
		return "", fmt.Errorf("verify: %w", err)
	}
	return ssh.FingerprintSHA256(pub), nil
}

// stopCleanly stops the agent and checks it exited 0 and left nothing.
func stopCleanly(t *testing.T, v *vm, a *agentProc) {
	t.Helper()
	select {
	case <-a.Done():
		t.Fatalf("the agent died (%v):\n%s", a.Cmd.ProcessState, a.stderr.String())
	default:
	}
	a.Stop()
	if code := a.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0:\n%s", code, a.stderr.String())
	}
	if n := len(v.emu.Emulator.Keys(v.email)); n != 0 {
		t.Fatalf("%d keys left at OS Login", n)
	}
}

// TestStartUnderFaults: with OS Login or the metadata server failing in the
// ways Google's services do, the agent still becomes ready within its retry
// budget, with exactly one key registered and served.
func TestStartUnderFaults(t *testing.T) {
	const imports = "users.importSshPublicKey"
	tests := []struct {
		name   string
		faults []emulator.Fault
		// minImports is how many import attempts the faults force.
		minImports int
		// minWait is what Retry-After makes the agent wait at least.
		minWait time.Duration
	}{
		{name: "30% of API calls answer 503",
			faults:     []emulator.Fault{{Methods: emulator.FaultAll, Rate: 0.3, Status: 503}},
			minImports: 3},
		{name: "429 with Retry-After",
			faults:     []emulator.Fault{{Methods: imports, Status: 429, RetryAfter: time.Second, Times: 2}},
			minImports: 3, minWait: 2 * time.Second},
		{name: "2 s stall",
			faults:     []emulator.Fault{{Methods: imports, Stall: 2 * time.Second, Times: 1}},
			minImports: 1, minWait: 2 * time.Second},
		{name: "dropped connections",
			faults:     []emulator.Fault{{Methods: imports, Drop: true, Times: 2}},
			minImports: 3},
		{name: "metadata server 503",
			faults: []emulator.Fault{{Methods: emulator.FaultMetadata, Status: 503, Times: 2}},
		},
		{name: "all at once",
			faults: []emulator.Fault{
				{Methods: imports, Drop: true, Times: 1},
				{Methods: emulator.FaultWrite, Rate: 0.3, Stall: 2 * time.Second, Status: 503},
				{Methods: emulator.FaultAll, Rate: 0.3, Status: 429, RetryAfter: time.Second},
				{Methods: "metadata.token", Drop: true, Times: 1},
				{Methods: emulator.FaultMetadata, Rate: 0.3, Status: 500},
			},
			minImports: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := faultVM(t)
			for _, f := range tc.faults {
				v.emu.Emulator.SetFault(f)
			}
			start := time.Now()
			a := v.startAgent(t, "")
			took := time.Since(start)
			calls := v.emu.Emulator.Calls()
			v.emu.Emulator.ClearFaults()
			if calls[imports] < tc.minImports {
				t.Fatalf("%d import calls, want at least %d: the faults did not fire (%v)", calls[imports], tc.minImports, calls)
			}
			if took < tc.minWait {
				t.Fatalf("ready after %v; the faults should have held it up for %v", took, tc.minWait)
			}
			keys := v.emu.Emulator.Keys(v.email)
			if len(keys) != 1 {
				t.Fatalf("%d keys registered, want 1 (retries must not leave extra keys)", len(keys))
			}
			fp, err := listAndSign(a.sock)
			if err != nil {
				t.Fatal(err)
			}
			if want := fingerprintOfLine(t, keys[0].Key); fp != want {
				t.Fatalf("the agent signs with %s, but OS Login holds %s", fp, want)
			}
			t.Logf("ready after %v; calls %v", took.Round(time.Millisecond), calls)
			stopCleanly(t, v, a)
		})
	}
}

// TestOutageKeepsServing: OS Login fails every write, each after a 2 s
// stall, from just after start-up until past the first renewal. The agent
// keeps listing and signing with its key throughout, says why it cannot
// renew, and renews the same key once OS Login is back.
func TestOutageKeepsServing(t *testing.T) {
	v := faultVM(t)
	a := v.startAgent(t, "", "--ttl", "10s", "--rotate", "1h")
	keys := v.emu.Emulator.Keys(v.email)
	if len(keys) != 1 {
		t.Fatalf("%d keys registered, want 1", len(keys))
	}
	fp := fingerprintOfLine(t, keys[0].Key)
	firstExpiry := keys[0].Expiry

	v.emu.Emulator.SetFault(emulator.Fault{Methods: emulator.FaultWrite, Stall: 2 * time.Second, Status: 503})
	outageEnd := time.Now().Add(8 * time.Second) // renewal is due 5 s after start
	n := 0
	for time.Now().Before(outageEnd) {
		got, err := listAndSign(a.sock)
		if err != nil {
			t.Fatalf("during the outage: %v", err)
		}
		if got != fp {
			t.Fatalf("during the outage the agent signs with %s, want its key %s", got, fp)
		}
		n++
		time.Sleep(250 * time.Millisecond)
	}
	failed := v.emu.Emulator.Calls()["users.sshPublicKeys.patch"] + v.emu.Emulator.Calls()["users.importSshPublicKey"]
	if failed < 2 {
		t.Fatalf("only %d renewal attempts during the outage; the outage did not cover a renewal", failed)
	}
	if !strings.Contains(a.stderr.String(), "cannot renew key registration") {
		t.Fatalf("the agent did not say why it cannot renew:\n%s", a.stderr.String())
	}

	v.emu.Emulator.ClearFaults()
	waitFor(t, func() bool {
		ks := v.emu.Emulator.Keys(v.email)
		return len(ks) == 1 && ks[0].Expiry.After(firstExpiry)
	}, "the renewal after the outage")
	ks := v.emu.Emulator.Keys(v.email)
	if got := fingerprintOfLine(t, ks[0].Key); got != fp {
		t.Fatalf("after the outage OS Login holds %s, want the same key %s", got, fp)
	}
	if got, err := listAndSign(a.sock); err != nil || got != fp {
		t.Fatalf("after the outage: key %s, %v; want %s", got, err, fp)
	}
	t.Logf("%d list+sign pairs during the outage; renewed to %s", n, ks[0].Expiry.Format(time.TimeOnly))
	stopCleanly(t, v, a)
}

func fingerprintOfLine(t *testing.T, line string) string {
	t.Helper()
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	return ssh.FingerprintSHA256(pub)
}
