// Package bytering is a byte FIFO over one circular array that grows on
// demand up to a bound. Stream buffers that are appended at one end and
// consumed at the other (unacknowledged bytes, received bytes) used to be
// slices resliced from the front; every append past the shrinking capacity
// then reallocated and copied the whole window. A ring never copies or
// allocates once it has grown to its working size.
package bytering

// Ring holds Len bytes starting at head, wrapping at len(buf). The zero
// value is empty and ready. It is not safe for concurrent use.
type Ring struct {
	buf  []byte
	head int
	n    int
}

// Len is the number of bytes held.
func (r *Ring) Len() int { return r.n }

// Write appends as much of p as keeps Len at most limit and returns how
// much it took. It grows the array (at least doubling, never past limit).
func (r *Ring) Write(p []byte, limit int) int {
	p = p[:min(len(p), max(limit-r.n, 0))]
	if len(p) == 0 {
		return 0
	}
	if need := r.n + len(p); need > len(r.buf) {
		r.grow(min(max(need, 2*len(r.buf), 4096), max(limit, need)))
	}
	tail := (r.head + r.n) % len(r.buf)
	k := copy(r.buf[tail:], p)
	copy(r.buf, p[k:])
	r.n += len(p)
	return len(p)
}

func (r *Ring) grow(size int) {
	nb := make([]byte, size)
	r.copyOut(nb, 0)
	r.buf, r.head = nb, 0
}

// Peek returns up to n contiguous bytes starting off bytes past the head,
// aliasing the array: fewer than n when the held bytes wrap there. The
// slice is valid until the next Write or Discard.
func (r *Ring) Peek(off, n int) []byte {
	if off >= r.n || n <= 0 {
		return nil
	}
	n = min(n, r.n-off)
	start := (r.head + off) % len(r.buf)
	return r.buf[start : start+min(n, len(r.buf)-start)]
}

// Discard drops the first n bytes (all of them if n ≥ Len).
func (r *Ring) Discard(n int) {
	n = min(max(n, 0), r.n)
	r.n -= n
	if r.n == 0 {
		r.head = 0 // keeps the next writes contiguous
		return
	}
	r.head = (r.head + n) % len(r.buf)
}

// Read copies the first bytes into p and discards them.
func (r *Ring) Read(p []byte) int {
	n := r.copyOut(p, 0)
	r.Discard(n)
	return n
}

// copyOut copies bytes from off past the head into p, without consuming.
func (r *Ring) copyOut(p []byte, off int) int {
	total := 0
	for total < len(p) {
		chunk := r.Peek(off+total, len(p)-total)
		if len(chunk) == 0 {
			break
		}
		total += copy(p[total:], chunk)
	}
	return total
}

// Free drops the array, for a buffer that will not be used again.
func (r *Ring) Free() { *r = Ring{} }
