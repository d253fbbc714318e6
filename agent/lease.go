package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/oslogin-agent/oslogin-agent/signer"
)

// leaseState is the lease loop's bookkeeping. Everything in it is guarded by
// mu, which is held across Registrar calls; readers of the keyring never
// take it.
type leaseState struct {
	mu       sync.Mutex
	started  bool
	running  bool
	closed   bool
	renewAt  time.Time    // when the current key's expiry is extended next
	rotateAt time.Time    // when the next key is due
	pending  *leasedKey   // the next key, generated but not yet confirmed registered
	orphans  []revocation // retired keys whose Revoke failed; retried
	renewBO  backoff
	rotateBO backoff
	revokeBO backoff

	// skew is the Registrar's clock less this host's, as last measured
	// (see ServerClock); serverAt is the Registrar's time at its last
	// answer, and skewWarned whether the current skew was warned about.
	skew       time.Duration
	serverAt   time.Time
	skewWarned bool
}

// revocation is a key that still has to be withdrawn from the Registrar.
// Only its public line is left; the private key is already destroyed.
type revocation struct {
	authorized  string
	fingerprint string
}

func (l *leaseState) init(retryMin, retryMax time.Duration) {
	l.renewBO = backoff{min: retryMin, max: retryMax}
	l.rotateBO = l.renewBO
	l.revokeBO = l.renewBO
}

// backoff is exponential backoff with jitter: the n-th consecutive failure
// waits a random time in [d/2, d], where d = min*2^n capped at max. The
// jitter keeps many agents that lost OS Login at the same moment from
// retrying in lockstep.
type backoff struct {
	min, max time.Duration
	failures int
	next     time.Time // no new attempt before this
}

func (b *backoff) fail(now time.Time) time.Duration {
	d := b.min
	for i := 0; i < b.failures && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	if d > 1 {
		d = d/2 + rand.N(d/2+1)
	}
	b.failures++
	b.next = now.Add(d)
	return d
}

func (b *backoff) reset()                   { b.failures, b.next = 0, time.Time{} }
func (b *backoff) ready(now time.Time) bool { return !now.Before(b.next) }

// after returns the later of t and the next permitted attempt.
func (b *backoff) after(t time.Time) time.Time {
	if b.next.After(t) {
		return b.next
	}
	return t
}

// Start generates the first key and registers it with expiry now+TTL. It
// returns only once the Registrar confirmed the registration, so the caller
// can start serving afterwards. If registration fails, the key is destroyed,
// a best-effort Revoke covers a registration that happened despite the
// error (skipped when the error has a NotRegistered method that returns
// true: the Registrar knows nothing was stored), and nothing is left
// registered.
func (a *Agent) Start(ctx context.Context) error {
	l := &a.lease
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return errors.New("Start after Close")
	case l.started:
		return errors.New("Start called twice")
	}
	lk, err := a.generate()
	if err != nil {
		return err
	}
	user, err := a.register(ctx, lk, a.now().Add(a.ttl))
	if err == nil && a.expiredAtServer(lk) {
		// The first answer is the first reading of OS Login's clock: a
		// host clock more than a TTL behind registers a key that is dead on
		// arrival. Now that the difference is known, the second key's
		// expiry is right.
		a.logDeadOnArrival(lk)
		lk.key.Destroy()
		a.revokeQuietly(ctx, lk.authorized)
		if lk, err = a.generate(); err != nil {
			return err
		}
		user, err = a.register(ctx, lk, a.now().Add(a.ttl))
		if err == nil && a.expiredAtServer(lk) {
			err = fmt.Errorf("register key %s: it arrived already expired twice; OS Login's clock is off this host's by %v and moving: fix the host's time (NTP)",
				lk.key.Fingerprint(), a.lease.skew.Round(time.Second))
		}
	}
	if err != nil {
		lk.key.Destroy()
		var nr interface{ NotRegistered() bool }
		if !errors.As(err, &nr) || !nr.NotRegistered() {
			a.revokeQuietly(ctx, lk.authorized)
		}
		return err
	}
	exp := lk.expiry
	a.mu.Lock()
	a.keys = append(a.keys, lk)
	a.username = user
	a.mu.Unlock()
	l.started = true
	l.renewAt = exp.Add(-a.ttl / 2)
	l.rotateAt = lk.registered.Add(a.rotate)
	a.log.Info("key registered",
		"fingerprint", lk.key.Fingerprint(), "key_type", a.keyType.String(),
		"username", user, "expiry", exp.UTC(), "ttl", a.ttl, "next_rotation", l.rotateAt.UTC(),
		"key_memory", lk.key.Protection())
	switch lk.key.Protection() {
	case "mlock-failed":
		a.log.Warn("the key's memory page could not be locked and may reach swap: allow this user to lock a few pages (RLIMIT_MEMLOCK, e.g. LimitMEMLOCK=64K in systemd)")
	case "mlock":
		a.log.Debug("memfd_secret unavailable: the key page is locked and not dumpable, but root can read it; Linux 5.14+ with secretmem enabled (default since 6.5, else boot with secretmem.enable=1) keeps it out of everyone's reach")
	}
	a.releaseMemory()
	return nil
}

// releaseMemory hands the garbage of RSA key generation (the prime search
// leaves megabytes) back to the system at once, so that a long-running idle
// agent stays small. It runs once per key, never per signature. Other key
// types leave too little: the collection's own code pages would cost more
// resident memory than it frees (measured with scripts/bench).
func (a *Agent) releaseMemory() {
	if a.keyType == signer.RSA3072 || a.keyType == signer.RSA4096 {
		debug.FreeOSMemory()
	}
}

// Run is the lease loop. It renews the current key's expiry at half the
// TTL, rotates to a fresh key every Rotate interval, retires superseded keys
// shortly before their expiry, and retries failed Registrar calls with
// backoff. While the Registrar is unreachable the current key stays offered
// until its registration expires. Run returns nil when ctx is done or Close
// is called, and an error only if it cannot run at all.
func (a *Agent) Run(ctx context.Context) error {
	l := &a.lease
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		return errors.New("Run after Close")
	case !l.started:
		l.mu.Unlock()
		return errors.New("Run called before Start")
	case l.running:
		l.mu.Unlock()
		return errors.New("Run is already running")
	}
	l.running = true
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.running = false
		l.mu.Unlock()
	}()

	// Close cancels a Registrar call in progress, so that it does not wait
	// for the call's timeout before revoking.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-a.done:
			cancel()
		case <-ctx.Done():
		}
	}()

	// A short floor keeps a frozen test clock from spinning the loop.
	const minWait = 10 * time.Millisecond
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.done:
			return nil
		case <-timer.C:
		}
		next, ok := a.step(ctx)
		if !ok {
			return nil
		}
		timer.Reset(max(next.Sub(a.now()), minWait))
	}
}

// step does all lease work that is due and returns when the next is due.
// It returns false once the agent is closed.
func (a *Agent) step(ctx context.Context) (time.Time, bool) {
	l := &a.lease
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return time.Time{}, false
	}
	// Renew before rotating: after an outage the current key may be close
	// to expiry, and it must outlive the new key's propagation window.
	a.renew(ctx)
	a.rotateKey(ctx)
	a.retire(ctx)
	a.retryOrphans(ctx)
	return a.nextDue(), true
}

// renew extends the current key's registration when it is due.
func (a *Agent) renew(ctx context.Context) {
	l := &a.lease
	now := a.now()
	cur := a.current()
	if cur == nil || now.Before(l.renewAt) || !l.renewBO.ready(now) {
		return
	}
	// A rotation due now replaces this key. Renewing it first would be a
	// wasted call, as long as it outlives the new key's propagation window
	// and the margin before it is withdrawn. Should the rotation fail, its
	// backoff makes the next step renew after all.
	if !now.Before(l.rotateAt) && l.rotateBO.ready(now) && cur.expiry.Sub(now) > a.propagation+a.retireMargin {
		return
	}
	expired := !now.Before(cur.expiry)
	sent := a.serverExpiry(now.Add(a.ttl))
	var user string
	callCtx, cancel := context.WithTimeout(ctx, a.callTimeout)
	// Never import the same key again: if it is gone from the profile,
	// someone may have deleted it on purpose (an admin revoking it).
	err := a.reg.Extend(callCtx, cur.authorized, sent)
	cancel()
	a.observeServerClock()
	if errors.Is(err, fs.ErrNotExist) {
		a.replaceVanished(cur, expired, err)
		return
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		d := l.renewBO.fail(a.now())
		level, msg := slog.LevelWarn, "cannot renew key registration; the key stays offered until it expires"
		if expired {
			level, msg = slog.LevelError, "key registration expired and cannot be renewed; logins with it fail until it is"
		}
		a.log.Log(ctx, level, msg,
			"fingerprint", cur.key.Fingerprint(), "expiry", cur.expiry.UTC(),
			"attempt", l.renewBO.failures, "retry_in", d.Round(time.Millisecond), "error", err)
		return
	}
	recovered := l.renewBO.failures > 0
	l.renewBO.reset()
	a.mu.Lock()
	cur.serverExpiry = sent
	cur.expiry = sent.Add(-l.skew)
	if user != "" {
		a.setUsernameLocked(user)
	}
	a.mu.Unlock()
	if a.expiredAtServer(cur) {
		// The answer showed OS Login's clock past even the new expiry:
		// the "renewal" left the key expired there.
		a.logDeadOnArrival(cur)
		a.replaceExpired(cur)
		return
	}
	l.renewAt = cur.expiry.Add(-a.ttl / 2)
	a.log.Info("key renewed", "fingerprint", cur.key.Fingerprint(), "expiry", cur.expiry.UTC(),
		"oslogin_expiry", sent.UTC(), "recovered", recovered)
}

// expiredAtServer reports whether the Registrar's last answer showed its
// clock at or past k's expiry as sent: VMs already refuse the key. l.mu
// must be held.
func (a *Agent) expiredAtServer(k *leasedKey) bool {
	l := &a.lease
	return !l.serverAt.IsZero() && !k.serverExpiry.IsZero() && !l.serverAt.Before(k.serverExpiry)
}

// logDeadOnArrival reports loudly a registration that was expired at OS
// Login the moment it was stored.
func (a *Agent) logDeadOnArrival(k *leasedKey) {
	a.log.Error("key registration arrived already expired at OS Login: its clock is ahead of this host's by more than the expiry sent; "+
		"not counting it as registered, replacing it with a fresh key whose expiry is in OS Login's clock",
		"fingerprint", k.key.Fingerprint(), "oslogin_expiry", k.serverExpiry.UTC(),
		"oslogin_time", a.lease.serverAt.UTC(), "skew", a.lease.skew.Round(100*time.Millisecond))
}

// replaceExpired takes a current key that OS Login already considers
// expired out of the keyring, destroys it, queues its revocation (it is
// still in the profile) and makes a rotation due at once.
func (a *Agent) replaceExpired(cur *leasedKey) {
	l := &a.lease
	a.mu.Lock()
	a.keys = slices.DeleteFunc(slices.Clone(a.keys), func(k *leasedKey) bool { return k == cur })
	a.mu.Unlock()
	cur.key.Destroy()
	l.orphans = append(l.orphans, revocation{cur.authorized, cur.key.Fingerprint()})
	l.renewBO.reset()
	l.rotateBO.reset()
	l.rotateAt = a.now()
}

// replaceVanished handles a current key that is no longer registered: it
// is logged loudly, taken out of the keyring and destroyed, and a rotation
// is made due at once, so the next step registers a fresh key. It is not
// imported again: an admin may have deleted it to revoke it.
func (a *Agent) replaceVanished(cur *leasedKey, expired bool, err error) {
	l := &a.lease
	a.mu.Lock()
	kept := a.keys[:0:0]
	for _, k := range a.keys {
		if k != cur {
			kept = append(kept, k)
		}
	}
	a.keys = kept
	a.mu.Unlock()
	cur.key.Destroy()
	msg := "key was deleted from the login profile by someone else (an admin, or gcloud compute os-login ssh-keys remove); it is not imported again: replacing it with a fresh key"
	if expired {
		msg = "key registration expired and was purged from the login profile; replacing it with a fresh key"
	}
	a.log.Error(msg, "fingerprint", cur.key.Fingerprint(), "expiry", cur.expiry.UTC(), "error", err)
	l.renewBO.reset()
	l.rotateBO.reset()
	l.rotateAt = a.now()
}

// rotateKey registers a fresh key when rotation is due and makes it the
// current key. The key it replaces stays offered, not renewed, until
// retire withdraws it.
func (a *Agent) rotateKey(ctx context.Context) {
	l := &a.lease
	now := a.now()
	if now.Before(l.rotateAt) || !l.rotateBO.ready(now) {
		return
	}
	if l.pending == nil {
		lk, err := a.generate()
		if err != nil {
			d := l.rotateBO.fail(a.now())
			a.log.Error("cannot generate the next key; keeping the current one", "retry_in", d, "error", err)
			return
		}
		l.pending = lk
	}
	nk := l.pending
	callCtx, cancel := context.WithTimeout(ctx, a.callTimeout)
	user, err := a.register(callCtx, nk, now.Add(a.ttl))
	cancel()
	if err == nil && a.expiredAtServer(nk) {
		a.logDeadOnArrival(nk)
		l.pending = nil
		nk.key.Destroy()
		l.orphans = append(l.orphans, revocation{nk.authorized, nk.key.Fingerprint()})
		l.rotateBO.fail(a.now())
		return
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		d := l.rotateBO.fail(a.now())
		a.log.Warn("cannot register the next key; the current key stays in use",
			"fingerprint", nk.key.Fingerprint(), "attempt", l.rotateBO.failures,
			"retry_in", d.Round(time.Millisecond), "error", err)
		return
	}
	l.rotateBO.reset()
	l.pending = nil

	a.mu.Lock()
	var superseded []*leasedKey // older than the previous key: at most two keys stay
	var prev *leasedKey
	if n := len(a.keys); n > 0 {
		superseded = append(superseded, a.keys[:n-1]...)
		prev = a.keys[n-1]
		a.keys = []*leasedKey{prev, nk}
	} else {
		a.keys = []*leasedKey{nk}
	}
	a.setUsernameLocked(user)
	a.mu.Unlock()

	exp := nk.expiry
	l.renewAt = exp.Add(-a.ttl / 2)
	l.renewBO.reset()
	l.rotateAt = nk.registered.Add(a.rotate)
	a.releaseMemory()
	attrs := []any{"fingerprint", nk.key.Fingerprint(), "expiry", exp.UTC(), "next_rotation", l.rotateAt.UTC()}
	if prev != nil {
		attrs = append(attrs, "previous", prev.key.Fingerprint(),
			"previous_expiry", prev.expiry.UTC(),
			"previous_offered_first_until", nk.registered.Add(a.propagation).UTC())
	}
	a.log.Info("key rotated", attrs...)
	for _, k := range superseded {
		a.withdraw(ctx, k, "superseded by two newer keys")
	}
}

// retire withdraws superseded keys that are about to expire. Withdrawing
// before the expiry (by TTL/10) keeps a clock difference with the VMs from
// offering a key they already dropped, and deletes the key from the login
// profile instead of leaving it to pile up there.
func (a *Agent) retire(ctx context.Context) {
	now := a.now()
	var due []*leasedKey
	a.mu.Lock()
	if n := len(a.keys); n > 1 {
		kept := make([]*leasedKey, 0, n)
		for i, k := range a.keys {
			if i < n-1 && !now.Before(k.expiry.Add(-a.retireMargin)) {
				due = append(due, k)
				continue
			}
			kept = append(kept, k)
		}
		a.keys = kept
	}
	a.mu.Unlock()
	for _, k := range due {
		a.withdraw(ctx, k, "superseded key about to expire")
	}
}

// withdraw destroys a key that is no longer in the keyring and revokes its
// registration; a failed Revoke is retried later by retryOrphans.
func (a *Agent) withdraw(ctx context.Context, k *leasedKey, why string) {
	l := &a.lease
	// Destroy waits for signatures in progress, then wipes the key.
	k.key.Destroy()
	callCtx, cancel := context.WithTimeout(ctx, a.callTimeout)
	err := a.reg.Revoke(callCtx, k.authorized)
	cancel()
	if err != nil {
		l.orphans = append(l.orphans, revocation{k.authorized, k.key.Fingerprint()})
		d := l.revokeBO.fail(a.now())
		a.log.Warn("cannot revoke retired key; it expires on its own, retrying",
			"fingerprint", k.key.Fingerprint(), "expiry", k.expiry.UTC(), "retry_in", d.Round(time.Millisecond), "error", err)
		return
	}
	a.log.Info("key revoked", "fingerprint", k.key.Fingerprint(), "reason", why)
}

// retryOrphans retries the revocations that failed before.
func (a *Agent) retryOrphans(ctx context.Context) {
	l := &a.lease
	if len(l.orphans) == 0 || !l.revokeBO.ready(a.now()) {
		return
	}
	var failed []revocation
	var lastErr error
	for _, r := range l.orphans {
		callCtx, cancel := context.WithTimeout(ctx, a.callTimeout)
		err := a.reg.Revoke(callCtx, r.authorized)
		cancel()
		if err != nil {
			failed, lastErr = append(failed, r), err
			continue
		}
		a.log.Info("key revoked", "fingerprint", r.fingerprint, "reason", "retry")
	}
	l.orphans = failed
	if len(failed) == 0 {
		l.revokeBO.reset()
		return
	}
	if ctx.Err() == nil {
		d := l.revokeBO.fail(a.now())
		a.log.Warn("cannot revoke retired keys; retrying", "count", len(failed), "retry_in", d.Round(time.Millisecond), "error", lastErr)
	}
}

// nextDue returns the time of the earliest pending lease work.
func (a *Agent) nextDue() time.Time {
	l := &a.lease
	next := l.renewBO.after(l.renewAt)
	if t := l.rotateBO.after(l.rotateAt); t.Before(next) {
		next = t
	}
	a.mu.RLock()
	for i, k := range a.keys {
		if t := k.expiry.Add(-a.retireMargin); i < len(a.keys)-1 && t.Before(next) {
			next = t
		}
	}
	a.mu.RUnlock()
	if len(l.orphans) > 0 && l.revokeBO.next.Before(next) {
		next = l.revokeBO.next
	}
	return next
}

// Close revokes every key from the Registrar and destroys it. The keys are
// destroyed first, so nothing can sign after Close starts; revocations are
// retried with backoff until they succeed or ctx is done (30 seconds if ctx
// has no deadline). Close also makes Run return. It is safe to call more
// than once: a later call retries revocations an earlier one could not
// finish, and returns nil when nothing is left.
func (a *Agent) Close(ctx context.Context) error {
	a.closeOnce.Do(func() { close(a.done) })
	l := &a.lease
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		a.mu.Lock()
		keys := a.keys
		a.keys = nil
		a.mu.Unlock()
		if l.pending != nil {
			// It may have been registered by a call that timed out.
			keys = append(keys, l.pending)
			l.pending = nil
		}
		for i := len(keys) - 1; i >= 0; i-- {
			keys[i].key.Destroy()
			l.orphans = append(l.orphans, revocation{keys[i].authorized, keys[i].key.Fingerprint()})
		}
	}
	if len(l.orphans) == 0 {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	bo := backoff{min: a.retryMin, max: a.retryMax}
	lastErr := make(map[string]error)
	for {
		var failed []revocation
		for _, r := range l.orphans {
			callCtx, cancel := context.WithTimeout(ctx, a.callTimeout)
			err := a.reg.Revoke(callCtx, r.authorized)
			cancel()
			if err != nil {
				failed = append(failed, r)
				lastErr[r.authorized] = err
				continue
			}
			a.log.Info("key revoked", "fingerprint", r.fingerprint, "reason", "agent closing")
		}
		l.orphans = failed
		if len(failed) == 0 {
			return nil
		}
		d := bo.fail(a.now())
		a.log.Warn("cannot revoke keys while closing; retrying", "count", len(failed), "retry_in", d.Round(time.Millisecond), "error", lastErr[failed[0].authorized])
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			errs := make([]error, 0, len(failed))
			for _, r := range failed {
				errs = append(errs, fmt.Errorf("revoke key %s: %w", r.fingerprint, lastErr[r.authorized]))
			}
			return errors.Join(errs...)
		case <-t.C:
		}
	}
}

// generate makes a new key, not yet registered.
func (a *Agent) generate() (*leasedKey, error) {
	k, err := a.genKey(a.keyType)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return newLeasedKey(k, a.comment), nil
}

// register registers lk until exp, a time by this host's clock that it
// sends converted to the Registrar's, and, on success, records when. A
// registration that reports no username is an error: the agent could not
// tell anyone how to log in. The caller checks expiredAtServer.
func (a *Agent) register(ctx context.Context, lk *leasedKey, exp time.Time) (string, error) {
	sent := a.serverExpiry(exp)
	user, err := a.reg.Register(ctx, lk.authorized, sent)
	a.observeServerClock()
	if err == nil && user == "" {
		err = errors.New("the registrar reported no POSIX username")
	}
	if err != nil {
		return "", fmt.Errorf("register key %s: %w", lk.key.Fingerprint(), err)
	}
	lk.registered = a.now()
	a.mu.Lock()
	lk.serverExpiry = sent
	lk.expiry = sent.Add(-a.lease.skew)
	a.mu.Unlock()
	return user, nil
}

// startRevokeGrace bounds the delete of a key whose registration failed
// in a way that leaves it unknown whether OS Login stored it.
const startRevokeGrace = 700 * time.Millisecond

// revokeQuietly withdraws a key whose registration failed, in case the
// failure was only in the reply. Errors are logged at Debug: the key was
// probably never stored.
//
// It gets a short grace of its own, not a full call timeout: start-up
// must end promptly at its deadline or on a signal, and a key that was
// stored after all still expires by its TTL.
func (a *Agent) revokeQuietly(ctx context.Context, line string) {
	callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(a.callTimeout, startRevokeGrace))
	defer cancel()
	if err := a.reg.Revoke(callCtx, line); err != nil {
		a.log.Debug("revoke after failed registration", "error", err)
	}
}

// setUsernameLocked records the username; a.mu must be held.
func (a *Agent) setUsernameLocked(user string) {
	if a.username != "" && user != a.username {
		a.log.Warn("the registrar reported a different POSIX username", "previous", a.username, "username", user)
	}
	a.username = user
}
