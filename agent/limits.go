package agent

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Connection limits. Every client connection costs a descriptor, and the
// agent needs descriptors of its own to reach OS Login: at the descriptor
// limit renewals fail and the key lapses. So the agent serves at most
// maxConns connections at once, well below RLIMIT_NOFILE, and closes
// connections that stay silent for idleTimeout.
const (
	// DefaultMaxConns caps client connections when RLIMIT_NOFILE is high.
	DefaultMaxConns = 1024
	// DefaultIdleTimeout closes a connection that sends nothing, or does
	// not read its replies, for this long. OpenSSH's clients connect,
	// ask and hang up; nothing well-behaved waits that long between
	// requests.
	DefaultIdleTimeout = 5 * time.Minute
	// reservedFDs are kept for the agent itself: OS Login connections,
	// DNS, files.
	reservedFDs = 64
)

// maxConnsFor returns the connection cap for a descriptor limit: at most
// half of what is left after the reserve.
func maxConnsFor(nofile uint64) int {
	if nofile <= 2*reservedFDs {
		return 8
	}
	return int(min(uint64(DefaultMaxConns), (nofile-reservedFDs)/2))
}

// defaultMaxConns reads RLIMIT_NOFILE.
func defaultMaxConns() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return DefaultMaxConns
	}
	return maxConnsFor(rl.Cur)
}

// connTable tracks the open client connections. When a new connection
// would exceed the caps, it closes the least recently active connection
// of the peer process holding the most (or of the new connection's own
// peer, if that one reached its share): a client that opens connections
// without end (say, through a forwarded agent, where they all come from
// one ssh process) only displaces its own, and a well-behaved client
// connecting fresh always gets in.
type connTable struct {
	max     int // connections in all
	perPeer int // connections of one peer process

	mu       sync.Mutex
	conns    map[*limitedConn]struct{}
	byPeer   map[int32]int
	lastWarn time.Time // when the limit was last reported; once a minute at most
}

func newConnTable(limit int) *connTable {
	return &connTable{
		max:     limit,
		perPeer: max(1, limit/4),
		conns:   make(map[*limitedConn]struct{}),
		byPeer:  make(map[int32]int),
	}
}

// add registers c and returns the connection it displaced, if any, which
// the caller must close; report is true at most once a minute.
func (t *connTable) add(c *limitedConn) (victim *limitedConn, report bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.byPeer[c.pid] >= t.perPeer:
		victim = t.idlest(c.pid)
	case len(t.conns) >= t.max:
		heaviest, n := c.pid, -1
		for pid, k := range t.byPeer {
			if k > n {
				heaviest, n = pid, k
			}
		}
		victim = t.idlest(heaviest)
	}
	if victim != nil {
		t.removeLocked(victim)
		if now := time.Now(); now.Sub(t.lastWarn) >= time.Minute {
			t.lastWarn, report = now, true
		}
	}
	t.conns[c] = struct{}{}
	t.byPeer[c.pid]++
	return victim, report
}

func (t *connTable) idlest(pid int32) *limitedConn {
	var v *limitedConn
	for c := range t.conns {
		if c.pid == pid && (v == nil || c.last.Load() < v.last.Load()) {
			v = c
		}
	}
	return v
}

func (t *connTable) remove(c *limitedConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeLocked(c)
}

func (t *connTable) removeLocked(c *limitedConn) {
	if _, ok := t.conns[c]; !ok {
		return
	}
	delete(t.conns, c)
	if t.byPeer[c.pid]--; t.byPeer[c.pid] <= 0 {
		delete(t.byPeer, c.pid)
	}
}

// limitedConn is a client connection that records its last activity and
// times out when idle: each read and write must make progress within
// idle.
type limitedConn struct {
	net.Conn
	pid  int32
	idle time.Duration
	last atomic.Int64 // UnixNano of the last read or write
}

func newLimitedConn(nc net.Conn, pid int32, idle time.Duration) *limitedConn {
	c := &limitedConn{Conn: nc, pid: pid, idle: idle}
	c.last.Store(time.Now().UnixNano())
	return c
}

func (c *limitedConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *limitedConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Write(p)
	c.last.Store(time.Now().UnixNano())
	return n, err
}
