package iaprelay

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Errors a Backend wraps so the relay can pick the answer.
var (
	ErrUnauthenticated = errors.New("iaprelay: unauthenticated")
	ErrNotFound        = errors.New("iaprelay: not found")
)

// Backend is what the relay needs from the emulator's shared state.
type Backend interface {
	// Authenticate resolves a bearer token to the account e-mail and the
	// token's expiry; an error wrapping ErrUnauthenticated when the token is
	// unknown or expired.
	Authenticate(token string) (email string, expiry time.Time, err error)
	// Resolve finds the instance (by name) in project/zone and the
	// interface (nic0); an error wrapping ErrNotFound if any part is unknown.
	Resolve(project, zone, instance, iface string) (Target, error)
	// MayTunnel reports whether email holds iap.tunnelInstances.accessViaIAP
	// on the target.
	MayTunnel(email string, t Target) bool
}

// Target is a resolved instance interface.
type Target struct {
	Project, Zone, Name, ID string
	Addr                    string // nic0's networkIP: a loopback address here
	Running                 bool
}

// Options configure a Relay. Zero values take the defaults in brackets.
type Options struct {
	Backend Backend
	Logger  *slog.Logger                                             // [discard]
	Rand    func() float64                                           // for rate faults [math/rand/v2]
	Now     func() time.Time                                         // token expiry is measured against it [time.Now]
	Dial    func(ctx context.Context, addr string) (net.Conn, error) // [net.Dialer]
	// DialTimeout bounds the backend dial; an unanswered dial is what makes
	// real clients hang, so it is short [5s].
	DialTimeout time.Duration
	// Grace is how long a session whose WebSocket dropped keeps its backend
	// connection and sid for a reconnect [60s].
	Grace time.Duration
	// MaxUnacked bounds the backend bytes kept until the client ACKs them;
	// when full the relay stops reading the backend (flow control). It must
	// exceed the clients' 32 KiB ACK threshold [1 MiB].
	MaxUnacked int
	// AckThreshold sends an ACK once this many client bytes are unacked, as
	// gcloud does [32 KiB]; AckFlush sends a pending smaller ACK after this
	// idle time [1s].
	AckThreshold int
	AckFlush     time.Duration
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Rand == nil {
		o.Rand = mrand.Float64
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Dial == nil {
		o.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.Grace <= 0 {
		o.Grace = 60 * time.Second
	}
	if o.MaxUnacked <= 0 {
		o.MaxUnacked = 1 << 20
	}
	if o.AckThreshold <= 0 {
		o.AckThreshold = 2 * MaxDataLen
	}
	if o.AckFlush <= 0 {
		o.AckFlush = time.Second
	}
}

// Relay serves /v4/connect and /v4/reconnect. It is safe for concurrent use.
type Relay struct {
	opts Options
	log  *slog.Logger

	ctx    context.Context // cancelled by Close: aborts every socket write
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the relay starts, and every handler

	// Per-frame counters, kept apart from mu so that forwarding a frame
	// takes no relay-wide lock when no fault is installed.
	bytesUp, bytesDown atomic.Int64
	nfaults            atomic.Int64 // len(faults), for frameFaults' fast path

	mu       sync.Mutex
	closed   bool
	sessions map[string]*session
	faults   []installedFault
	faultSeq int
	stats    Stats
}

// Stats are counters for tests and the admin API.
type Stats struct {
	SessionsOpen int   `json:"sessionsOpen"`
	Connects     int   `json:"connects"`   // successful /v4/connect
	Reconnects   int   `json:"reconnects"` // successful /v4/reconnect
	Rejected     int   `json:"rejected"`   // handshakes answered with an HTTP error or close code
	Drops        int   `json:"drops"`      // WebSockets dropped by faults
	BytesUp      int64 `json:"bytesUp"`    // client bytes written to backends
	BytesDown    int64 `json:"bytesDown"`  // backend bytes read for clients
	BytesResent  int64 `json:"bytesResent"`
}

// New returns a relay; Close ends it.
func New(opts Options) *Relay {
	opts.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Relay{opts: opts, log: opts.Logger, ctx: ctx, cancel: cancel, sessions: map[string]*session{}}
}

// Stats returns a snapshot of the counters.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.SessionsOpen = len(r.sessions)
	s.BytesUp, s.BytesDown = r.bytesUp.Load(), r.bytesDown.Load()
	return s
}

func (r *Relay) count(f func(*Stats)) {
	r.mu.Lock()
	f(&r.stats)
	r.mu.Unlock()
}

// Close ends every session (closing its backend connection and WebSocket
// with 1001) and waits for all goroutines of the relay, handlers included.
func (r *Relay) Close() {
	r.mu.Lock()
	r.closed = true
	sessions := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		sessions = append(sessions, s)
	}
	r.mu.Unlock()
	for _, s := range sessions {
		s.finish(CloseGoingAway)
	}
	// Give the close handshakes (1001) a moment, so clients see the code
	// rather than a drop they would try to resume; then abort what is left.
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	r.cancel()
	<-done
}

// ServeHTTP handles GET /v4/connect and /v4/reconnect under any prefix, so
// the emulator can mount it where gcloud's URL override points.
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		http.Error(w, "relay closed", http.StatusServiceUnavailable)
		return
	}
	r.wg.Add(1)
	r.mu.Unlock()
	defer r.wg.Done()

	var reconnect bool
	switch {
	case strings.HasSuffix(req.URL.Path, "/v4/connect"):
	case strings.HasSuffix(req.URL.Path, "/v4/reconnect"):
		reconnect = true
	default:
		http.NotFound(w, req)
		return
	}
	h := &handshake{r: r, w: w, req: req, reconnect: reconnect, q: req.URL.Query()}
	h.serve()
}

// newSID returns a printable, unguessable session id.
func newSID() string {
	b := make([]byte, 24)
	rand.Read(b) // never fails (crypto/rand panics rather)
	return base64.RawURLEncoding.EncodeToString(b)
}

// acceptOptions: the subprotocol is required (checked before Accept, which
// would otherwise proceed without one). Origin is "bot:iap-tunneler", not a
// URL, which the library's same-origin check rejects; skipping that check
// is safe because auth rides in the Authorization header, which browsers
// cannot set on WebSocket requests, so cross-site pages cannot use a token.
var acceptOptions = websocket.AcceptOptions{
	Subprotocols:       []string{Subprotocol},
	InsecureSkipVerify: true,
	CompressionMode:    websocket.CompressionDisabled,
}

// readLimit admits the largest legal frame with room to spare, so an
// oversized DATA is judged by the relay (4013) rather than the library.
const readLimit = 64 << 10

func hasSubprotocol(req *http.Request) bool {
	for _, v := range req.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), Subprotocol) {
				return true
			}
		}
	}
	return false
}
