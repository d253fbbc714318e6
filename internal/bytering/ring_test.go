package bytering

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestRingMatchesSlice drives a Ring and a plain slice with the same random
// writes, peeks and discards and requires the same bytes throughout.
func TestRingMatchesSlice(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var r Ring
	var want []byte
	const limit = 10000
	var seq byte
	for i := 0; i < 20000; i++ {
		switch rng.IntN(4) {
		case 0, 1:
			p := make([]byte, rng.IntN(3000))
			for j := range p {
				p[j] = seq
				seq++
			}
			n := r.Write(p, limit)
			if exp := min(len(p), limit-len(want)); n != exp {
				t.Fatalf("Write took %d, want %d", n, exp)
			}
			want = append(want, p[:n]...)
		case 2:
			n := rng.IntN(4000)
			r.Discard(n)
			want = want[min(n, len(want)):]
		case 3:
			p := make([]byte, rng.IntN(4000))
			n := r.Read(p)
			if !bytes.Equal(p[:n], want[:n]) || n != min(len(p), len(want)) {
				t.Fatalf("Read %d bytes differ", n)
			}
			want = want[n:]
		}
		if r.Len() != len(want) {
			t.Fatalf("Len %d, want %d", r.Len(), len(want))
		}
		if len(want) > 0 {
			off := rng.IntN(len(want))
			p := r.Peek(off, 5000)
			if len(p) == 0 || !bytes.Equal(p, want[off:off+len(p)]) {
				t.Fatalf("Peek(%d) wrong", off)
			}
		}
		if len(r.buf) > limit {
			t.Fatalf("array grew to %d past the limit", len(r.buf))
		}
	}
}
