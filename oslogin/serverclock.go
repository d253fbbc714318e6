package oslogin

import (
	"net/http"
	"sync"
	"time"
)

// serverClock remembers OS Login's time as of its most recent answer, read
// from the HTTP Date header, and the local time that answer arrived. The
// agent computes key expiries in OS Login's clock with it: an expiry is
// checked by OS Login and the VMs, never by the agent's host, and a host
// clock that is off by a good part of the TTL would otherwise register keys
// that VMs drop early, or that have expired before they arrive.
type serverClock struct {
	now func() time.Time

	mu     sync.Mutex
	server time.Time // zero until the first answer with a Date
	local  time.Time
}

// observe records the Date header of an answer received now.
func (s *serverClock) observe(h http.Header) {
	d, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		return // no or malformed Date: nothing learned
	}
	local := s.now()
	// Date has whole seconds, truncated: the server's time at sending was
	// in [d, d+1s). The middle halves the worst error.
	server := d.Add(500 * time.Millisecond)
	s.mu.Lock()
	s.server, s.local = server, local
	s.mu.Unlock()
}

func (s *serverClock) get() (server, local time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.server, s.local, !s.server.IsZero()
}

// clockTransport passes requests on to base and records the Date of every
// answer, error answers included: they are just as good a clock reading.
type clockTransport struct {
	base  http.RoundTripper
	clock *serverClock
}

func (t *clockTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil {
		t.clock.observe(resp.Header)
	}
	return resp, err
}

// ServerTime returns OS Login's time as of the client's most recent answer
// (from its HTTP Date header, which has one-second resolution; the estimate
// is within half a second plus the network delay) and the local time, by
// Options.Now, when that answer arrived. ok is false before any answer. It
// implements agent.ServerClock.
func (c *Client) ServerTime() (server, local time.Time, ok bool) {
	return c.clock.get()
}

// serverNow is the local clock corrected by the difference measured with
// OS Login's at its last answer; before any answer, the local clock.
func (c *Client) serverNow() time.Time {
	now := c.now()
	if server, local, ok := c.clock.get(); ok {
		return now.Add(server.Sub(local))
	}
	return now
}
