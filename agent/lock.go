package agent

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters for the lock passphrase hash: OWASP's minimum
// recommendation (19 MiB, 2 passes, 1 lane). The hash only has to make a
// memory dump of a locked agent expensive to turn back into the passphrase.
const (
	lockSaltLen = 16
	lockHashLen = 32
	lockTime    = 2
	lockMemKiB  = 19 * 1024
	lockThreads = 1

	// maxUnlockFailures caps the growing delay, as OpenSSH does: 100
	// failures of 0.1s each give at most 10s.
	maxUnlockFailures = 100
)

// lockState implements lock and unlock as OpenSSH's agent does: the
// passphrase is kept only as a salted hash and compared in constant time,
// an empty passphrase is refused, locking a locked agent fails, and each
// failed unlock is answered after a delay that grows by one step per
// failure. While locked, List is empty and signing fails.
type lockState struct {
	locked atomic.Bool // read without mu on every List and Sign

	mu       sync.Mutex
	salt     []byte
	hash     []byte
	failures int

	// gate admits one LOCK or UNLOCK at a time; see acquire.
	gate chan struct{}

	// kdfMemKiB is Argon2id's memory cost; zero means lockMemKiB. Only
	// tests (the fuzz target) lower it, to keep each execution fast.
	kdfMemKiB uint32
}

func (l *lockState) isLocked() bool { return l.locked.Load() }

func (l *lockState) hashPassphrase(passphrase, salt []byte) []byte {
	mem := l.kdfMemKiB
	if mem == 0 {
		mem = lockMemKiB
	}
	return argon2.IDKey(passphrase, salt, lockTime, mem, lockThreads, lockHashLen)
}

// acquire waits for the Argon2 gate: one LOCK or UNLOCK at a time in the
// whole agent, so a burst of them (from any number of connections, or
// through a forwarded agent) costs one hash's memory, not one per request,
// and wrong guesses are answered one after the other, each after its delay.
func (l *lockState) acquire(ctx context.Context) error {
	select {
	case l.gate <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *lockState) release() { <-l.gate }

// lock locks with passphrase and wipes the caller's copy of it.
func (l *lockState) lock(ctx context.Context, passphrase []byte) error {
	defer clear(passphrase)
	if len(passphrase) == 0 {
		return errors.New("refusing to lock with an empty passphrase")
	}
	if l.isLocked() {
		return errors.New("already locked")
	}
	if err := l.acquire(ctx); err != nil {
		return err
	}
	defer l.release()
	salt := make([]byte, lockSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return err
	}
	hash := l.hashPassphrase(passphrase, salt)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isLocked() {
		return errors.New("already locked")
	}
	l.salt, l.hash, l.failures = salt, hash, 0
	l.locked.Store(true)
	return nil
}

// unlock unlocks if passphrase matches. Requests from all connections take
// turns (see acquire), and a mismatch keeps the turn for failures*step
// (at most maxUnlockFailures steps), as OpenSSH's single-threaded agent
// does: N connections guess no faster than one. The delay holds no lock
// that List or Sign need; ctx cuts the wait short when the connection is
// shut down. It returns the failure count.
func (l *lockState) unlock(ctx context.Context, passphrase []byte, step time.Duration) (int, error) {
	defer clear(passphrase)
	if !l.isLocked() {
		return 0, errors.New("not locked")
	}
	if err := l.acquire(ctx); err != nil {
		return 0, err
	}
	defer l.release()
	l.mu.Lock()
	if !l.isLocked() {
		l.mu.Unlock()
		return 0, errors.New("not locked")
	}
	salt, want := l.salt, l.hash
	l.mu.Unlock()

	// Hash outside mu: Argon2 is deliberately slow.
	got := l.hashPassphrase(passphrase, salt)

	l.mu.Lock()
	if l.isLocked() && subtle.ConstantTimeCompare(got, want) == 1 {
		clear(l.hash)
		l.salt, l.hash, l.failures = nil, nil, 0
		l.locked.Store(false)
		l.mu.Unlock()
		return 0, nil
	}
	if l.failures < maxUnlockFailures {
		l.failures++
	}
	failures := l.failures
	l.mu.Unlock()

	t := time.NewTimer(time.Duration(failures) * step)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return failures, errors.New("incorrect passphrase")
}
