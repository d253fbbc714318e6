// Package agent is oslogin-agent's SSH agent: it owns the lease of the
// agent's keys at a [Registrar] and serves them to SSH clients over the
// agent protocol on a Unix socket.
//
// The lease: [Agent.Start] generates a key in memory (package signer) and
// registers it with an expiry of now+TTL; only then is there anything to
// serve. [Agent.Run] renews the expiry at half the TTL, rotates to a fresh
// key every Rotate interval (the new key is registered before it is
// offered, and the old one is offered, not renewed, until shortly before
// its expiry, then revoked and destroyed) and keeps retrying when the
// Registrar is unreachable. [Agent.Close] revokes and destroys everything.
// OS Login itself enforces the expiry (the VM drops keys whose
// expirationTimeUsec has passed at every login), so a crashed agent's keys
// stop working on their own within one TTL.
//
// The protocol: [Agent.Serve] runs golang.org/x/crypto/ssh/agent.ServeAgent
// once per accepted connection, over a per-connection value that knows the
// peer's credentials (SO_PEERCRED) and the connection's session binds,
// because x/crypto's handlers never see the connection. It lists and signs
// with the agent's own keys only; ssh-add cannot add or remove keys; lock
// and unlock, session-bind@openssh.com and query behave as in OpenSSH
// (PROTOCOL.agent, RFC 9987). Every signature produces one structured log
// record. No lock is held while signing.
//
// The socket and process: [Listen] makes a private socket and replaces only
// a stale one; [Harden] makes the process non-dumpable and locks its memory
// where the system allows.
//
// The package knows nothing about OS Login; package oslogin implements the
// Registrar. It keeps no package-level mutable state, and every goroutine it
// starts stops with the context that started it.
package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/oslogin-agent/oslogin-agent/signer"
)

// Defaults for the zero values of Options.
const (
	DefaultTTL         = 10 * time.Minute
	DefaultRotate      = time.Hour
	DefaultPropagation = 30 * time.Second

	// MinTTL is the shortest TTL the package accepts. It exists for tests;
	// a command line should insist on something much longer, because every
	// renewal is a request to OS Login.
	MinTTL = time.Second
)

// Options configures an Agent. Only Registrar is required.
type Options struct {
	// Registrar publishes and withdraws the agent's public keys.
	Registrar Registrar
	// KeyType of the generated keys; zero means ed25519.
	KeyType signer.KeyType
	// TTL is the lifetime of a key registration; the agent renews it at
	// half the TTL. Zero means DefaultTTL; the minimum is MinTTL.
	TTL time.Duration
	// Rotate is how often the agent switches to a fresh key. Zero means
	// DefaultRotate. It must be at least TTL/2: rotating faster than
	// renewing would only multiply registrations.
	Rotate time.Duration
	// Propagation is how long a newly registered key may take to reach the
	// VMs (a few seconds typically, sometimes over a minute). For this long
	// after a rotation the previous key is offered first. Zero means
	// DefaultPropagation, lowered if needed to the largest value the TTL
	// allows; an explicit value must satisfy
	// Propagation <= TTL/2 - TTL/10, so that the previous key outlives
	// the window.
	Propagation time.Duration
	// Comment is appended to the authorized_keys line of each key, e.g.
	// "oslogin-agent@host". It must be printable, without line breaks.
	Comment string
	// Logger receives the agent's records; nil means slog.Default().
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
	// RetryMin and RetryMax bound the exponential backoff (with jitter)
	// used when the Registrar fails during renewal, rotation, revocation
	// and Close. Zero means min(1s, TTL/10) and min(30s, TTL/4).
	RetryMin, RetryMax time.Duration
	// Certificates, when enabled, add an OS Login certificate for the
	// destination of each connection (see identities.go).
	Certificates CertOptions
	// Destinations, when set, answers the destination extensions for the
	// helpers ssh starts (see extension_dest.go); nil refuses them.
	Destinations Destinations
	// HelperExecutable is the only program whose connections may use the
	// destination extensions; empty means this process's own executable.
	// Tests name their test binary here.
	HelperExecutable string
}

// KeyInfo describes one of the agent's keys.
type KeyInfo struct {
	// Fingerprint is the OpenSSH SHA256 fingerprint, "SHA256:...".
	Fingerprint string
	// AuthorizedKey is the authorized_keys line registered for the key,
	// without a trailing newline.
	AuthorizedKey string
	// Expiry is the registration's current expiry by this host's clock: when
	// OS Login drops it, corrected for the measured clock difference.
	Expiry time.Time
	// Registered is when the Registrar confirmed the key.
	Registered time.Time
}

// Agent is an SSH agent whose keys are leased from a Registrar. Create it
// with New, then call Start, Run, Serve and finally Close.
type Agent struct {
	reg          Registrar
	serviceSkew  atomic.Int64 // the Registrar's clock less this host's, in ns (see ServerClock)
	keyType      signer.KeyType
	ttl          time.Duration
	rotate       time.Duration
	propagation  time.Duration
	retireMargin time.Duration // the previous key is retired this long before its expiry
	callTimeout  time.Duration // bound for one Registrar call made by the lease loop
	retryMin     time.Duration
	retryMax     time.Duration
	comment      string
	log          *slog.Logger
	now          func() time.Time
	uid          int // the agent's real uid, for the peer check
	genKey       func(signer.KeyType) (*signer.Key, error)
	dests        Destinations // nil: destination extensions refused
	helperExe    string       // the executable allowed to use them

	// unlockDelayStep is the extra delay per failed unlock (OpenSSH: 0.1s,
	// capped at 100 steps). Tests shrink it.
	unlockDelayStep time.Duration

	// maxConns caps the client connections served at once (0: from
	// RLIMIT_NOFILE, see defaultMaxConns); idleTimeout closes silent
	// ones. Tests lower them.
	maxConns    int
	idleTimeout time.Duration

	// socketCheck is how often Serve checks that its socket path still
	// leads to its socket. Tests shrink it.
	socketCheck time.Duration

	// mu guards keys and username. It is held only to copy or swap them,
	// never across a signature or a Registrar call.
	mu       sync.RWMutex
	keys     []*leasedKey // registered, not yet retired; oldest first, the last is current
	username string

	// lease serializes the lease work that talks to the Registrar: Start,
	// each step of Run, and Close.
	lease leaseState

	lock lockState

	// certs holds certificates per destination; nil when they are off.
	certs *certStore

	// signers admits at most GOMAXPROCS signatures at once; see conn.sign.
	signers chan struct{}

	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

// New validates opts, fills in defaults and returns an Agent that has no key
// yet; call Start.
func New(opts Options) (*Agent, error) {
	if opts.Registrar == nil {
		return nil, errors.New("Options.Registrar is required")
	}
	a := &Agent{
		reg:             opts.Registrar,
		keyType:         opts.KeyType,
		ttl:             opts.TTL,
		rotate:          opts.Rotate,
		propagation:     opts.Propagation,
		retryMin:        opts.RetryMin,
		retryMax:        opts.RetryMax,
		comment:         opts.Comment,
		log:             opts.Logger,
		now:             opts.Now,
		uid:             os.Getuid(),
		genKey:          signer.Generate,
		dests:           opts.Destinations,
		unlockDelayStep: 100 * time.Millisecond,
		socketCheck:     time.Second,
		idleTimeout:     DefaultIdleTimeout,
		signers:         make(chan struct{}, runtime.GOMAXPROCS(0)),
		done:            make(chan struct{}),
	}
	if a.keyType == 0 {
		a.keyType = signer.Ed25519
	}
	if !a.keyType.Valid() {
		return nil, fmt.Errorf("invalid key type %v", a.keyType)
	}
	if a.ttl == 0 {
		a.ttl = DefaultTTL
	}
	if a.ttl < MinTTL {
		return nil, fmt.Errorf("TTL %v is too short: the minimum is %v", a.ttl, MinTTL)
	}
	if a.rotate == 0 {
		a.rotate = DefaultRotate
	}
	if a.rotate < a.ttl/2 {
		return nil, fmt.Errorf("rotation interval %v is shorter than half the TTL (%v): rotate at least every %v or shorten the TTL", a.rotate, a.ttl, a.ttl/2)
	}
	a.retireMargin = a.ttl / 10
	maxPropagation := MaxPropagation(a.ttl)
	switch {
	case a.propagation == 0:
		a.propagation = min(DefaultPropagation, maxPropagation)
	case a.propagation < 0:
		return nil, fmt.Errorf("propagation delay %v is negative", a.propagation)
	case a.propagation > maxPropagation:
		return nil, fmt.Errorf("propagation delay %v is too long for TTL %v: the previous key must outlive it, so it can be at most %v (TTL/2 - TTL/10)", a.propagation, a.ttl, maxPropagation)
	}
	if a.retryMin == 0 {
		a.retryMin = min(time.Second, a.ttl/10)
	}
	if a.retryMax == 0 {
		a.retryMax = max(a.retryMin, min(30*time.Second, a.ttl/4))
	}
	if a.retryMin < 0 || a.retryMax < a.retryMin {
		return nil, fmt.Errorf("invalid retry bounds %v..%v", a.retryMin, a.retryMax)
	}
	a.callTimeout = min(max(a.ttl/4, time.Second), time.Minute)
	if err := checkComment(a.comment); err != nil {
		return nil, err
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.now == nil {
		a.now = time.Now
	}
	if err := opts.Certificates.check(); err != nil {
		return nil, err
	}
	if opts.Certificates.enabled() {
		a.certs = newCertStore(opts.Certificates, a.log, a.serviceNow)
	}
	if a.dests != nil {
		a.helperExe = resolveHelperExe(opts.HelperExecutable)
	}
	a.lease.init(a.retryMin, a.retryMax)
	a.lock.gate = make(chan struct{}, 1)
	return a, nil
}

// MaxPropagation is the longest propagation delay New accepts for a TTL.
// After a rotation the previous key is offered first for that long, so it
// must still be valid then: it has at least TTL/2 left at the rotation and
// is withdrawn TTL/10 before it expires.
func MaxPropagation(ttl time.Duration) time.Duration { return ttl/2 - ttl/10 }

// checkComment refuses comments that would break the authorized_keys line.
func checkComment(c string) error {
	if len(c) > 256 {
		return fmt.Errorf("comment is %d bytes long; the limit is 256", len(c))
	}
	if i := strings.IndexFunc(c, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }); i >= 0 {
		return fmt.Errorf("comment %q contains a control or non-printable character", c)
	}
	return nil
}

// Username returns the POSIX username the Registrar reported for the
// agent's keys, or "" before Start.
func (a *Agent) Username() string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.username
}

// Keys describes the agent's registered keys, the current one first.
func (a *Agent) Keys() []KeyInfo {
	a.mu.RLock()
	defer a.mu.RUnlock()
	infos := make([]KeyInfo, 0, len(a.keys))
	for i := len(a.keys) - 1; i >= 0; i-- {
		k := a.keys[i]
		infos = append(infos, KeyInfo{
			Fingerprint:   k.key.Fingerprint(),
			AuthorizedKey: k.authorized,
			Expiry:        k.expiry,
			Registered:    k.registered,
		})
	}
	return infos
}
