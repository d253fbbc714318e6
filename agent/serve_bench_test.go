//go:build linux

package agent

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/oslogin-agent/oslogin-agent/signer"
)

// BenchmarkSignViaSocket signs through the agent's Unix socket with
// x/crypto's agent client, one connection per client, as ssh does: the
// whole path of a request (socket, framing, protocol, keyring lookup,
// signature, the per-signature log record formatted as text) except the
// Registrar, which is the fake. Compare with signer's BenchmarkSign for the
// cost of the signature alone; scripts/bench compares with OpenSSH's agent.
//
//	go test -run '^$' -bench SignViaSocket ./agent
func BenchmarkSignViaSocket(b *testing.B) {
	data := bytes.Repeat([]byte{0x5a}, 256) // about the size of a userauth request
	for _, kt := range []signer.KeyType{signer.Ed25519, signer.ECDSAP256, signer.RSA3072} {
		// One agent per key type, outside the sub-benchmarks: they run
		// several times, and RSA key generation is slow.
		ta := startTestAgent(b, Options{KeyType: kt, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		path := serve(b, ta.Agent)
		pub := ta.current().key.PublicKey()
		var flags sshagent.SignatureFlags
		if pub.Type() == ssh.KeyAlgoRSA {
			flags = sshagent.SignatureFlagRsaSha512
		}
		for _, clients := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%s/clients=%d", kt, clients), func(b *testing.B) {
				conns := make([]sshagent.ExtendedAgent, clients)
				for i := range conns {
					conns[i] = client(b, path)
					sig, err := conns[i].SignWithFlags(pub, data, flags)
					if err != nil {
						b.Fatal(err)
					}
					if err := pub.Verify(data, sig); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				var next atomic.Int64
				var wg sync.WaitGroup
				for _, c := range conns {
					wg.Go(func() {
						for next.Add(1) <= int64(b.N) {
							if _, err := c.SignWithFlags(pub, data, flags); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sigs/s")
			})
		}
	}
}
