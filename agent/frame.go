package agent

import (
	"encoding/binary"
	"errors"
	"io"
)

// maxFrameLen is the largest request the agent reads, as in OpenSSH's
// ssh-agent (AGENT_MAX_LEN). x/crypto's ServeAgent would accept 16 MiB.
const maxFrameLen = 256 * 1024

// errFrameTooLarge ends a connection whose client announced an oversized
// request.
var errFrameTooLarge = errors.New("request larger than 256 KiB")

// frameGuard sits between a connection and ServeAgent. It reads each
// request's 4-byte length prefix itself, refuses lengths over maxFrameLen
// before ServeAgent allocates a buffer for the body, and then passes the
// prefix and exactly that many body bytes through. A refusal makes
// ServeAgent return, and the connection is closed.
type frameGuard struct {
	r      io.Reader
	hdr    [4]byte
	hdrOff int    // bytes of hdr already handed out; len(hdr) when none pending
	body   uint32 // body bytes of the current frame not yet handed out
}

func newFrameGuard(r io.Reader) *frameGuard {
	return &frameGuard{r: r, hdrOff: 4}
}

func (g *frameGuard) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if g.hdrOff < len(g.hdr) {
		n := copy(p, g.hdr[g.hdrOff:])
		g.hdrOff += n
		return n, nil
	}
	if g.body == 0 {
		if _, err := io.ReadFull(g.r, g.hdr[:]); err != nil {
			return 0, err
		}
		l := binary.BigEndian.Uint32(g.hdr[:])
		if l > maxFrameLen {
			return 0, errFrameTooLarge
		}
		g.body = l
		n := copy(p, g.hdr[:])
		g.hdrOff = n
		return n, nil
	}
	if uint64(len(p)) > uint64(g.body) {
		p = p[:g.body]
	}
	n, err := g.r.Read(p)
	g.body -= uint32(n)
	return n, err
}
