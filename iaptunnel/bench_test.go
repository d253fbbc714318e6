package iaptunnel_test

import (
	"io"
	"net"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator/iaprelay"
)

// BenchmarkThroughput moves bytes to a discarding server through the relay
// and, side by side, over a direct loopback TCP connection, so the cost of
// the tunnel shows as the ratio of the two MB/s figures.
func BenchmarkThroughput(b *testing.B) {
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	stream(3).Read(buf)
	sink := func(c net.Conn) { io.Copy(io.Discard, c) }
	b.Run("direct-tcp", func(b *testing.B) {
		port := listen(b, sink)
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", itoa(port)))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.SetBytes(chunk)
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("iap-relay", func(b *testing.B) {
		e := newEnv(b, iaprelay.Options{})
		c := dial(b, e, listen(b, sink))
		b.SetBytes(chunk)
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.Close() // flushes: the buffered bytes count too
	})
}
