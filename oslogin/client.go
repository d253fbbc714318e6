package oslogin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// defaultCallTimeout bounds one attempt. OS Login's backend deadline is 10 s;
// a little more leaves room for the network.
const defaultCallTimeout = 15 * time.Second

// Options configure a Client.
type Options struct {
	Account     string             // e-mail of the account whose profile holds the keys; required
	Project     string             // project whose POSIX account supplies the username; required
	TokenSource oauth2.TokenSource // required
	// Endpoint is the OS Login API base URL; empty means Google's. Tests and
	// the emulator demo point it at oslogin-emulator.
	Endpoint string
	// Transport carries the calls before the token is added; nil means
	// Endpoints{}.HTTPTransport(). Pass the resolved endpoints' transport
	// so that OSLOGIN_EMULATOR_HOST keeps every call on loopback.
	Transport http.RoundTripper
	// Regions, when set, makes imports return only once the key has reached
	// these regions, which shortens the wait before VMs there accept it.
	Regions     []string
	Backoff     Backoff
	CallTimeout time.Duration // per attempt; default 15s
	Logger      *slog.Logger
	// Now is the local clock, default time.Now. Which keys have expired is
	// decided by it corrected to OS Login's clock (see ServerTime).
	Now func() time.Time
}

// Client leases keys to one account's OS Login profile. It implements
// agent.Registrar and is safe for concurrent use.
type Client struct {
	api         *restClient
	tokens      *tokenCache
	account     string
	project     string
	user        string // "users/" + account, the resource name every call starts from
	regions     []string
	backoff     Backoff
	callTimeout time.Duration
	log         *slog.Logger
	now         func() time.Time
	clock       *serverClock // OS Login's time as of its last answer
}

// New builds a Client. It makes no network call.
func New(_ context.Context, opts Options) (*Client, error) {
	if err := checkAccount(opts.Account); err != nil {
		return nil, err
	}
	if opts.Project == "" {
		return nil, errors.New("no project given")
	}
	if opts.TokenSource == nil {
		return nil, errors.New("no token source given")
	}
	base := opts.Transport
	if base == nil {
		base = Endpoints{}.HTTPTransport()
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	clock := &serverClock{now: now}
	tokens := newTokenCache(opts.TokenSource)
	hc := &http.Client{Transport: &oauth2.Transport{Source: tokens, Base: &clockTransport{base: base, clock: clock}}}
	api, err := newRESTClient(hc, opts.Endpoint)
	if err != nil {
		return nil, err
	}
	c := &Client{
		api:         api,
		tokens:      tokens,
		account:     opts.Account,
		project:     opts.Project,
		user:        "users/" + opts.Account,
		regions:     opts.Regions,
		backoff:     opts.Backoff.withDefaults(),
		callTimeout: opts.CallTimeout,
		log:         opts.Logger,
		now:         now,
		clock:       clock,
	}
	if c.callTimeout <= 0 {
		c.callTimeout = defaultCallTimeout
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Account is the e-mail whose profile the client manages.
func (c *Client) Account() string { return c.account }

// Project is the project whose POSIX account supplies the username.
func (c *Client) Project() string { return c.project }

// Register imports authorizedKey with the given expiry and returns the POSIX
// username for the project. It checks that the returned profile really holds
// the key, and when the profile is full it deletes this account's expired
// keys and tries once more.
func (c *Client) Register(ctx context.Context, authorizedKey string, expiry time.Time) (_ string, err error) {
	fp := Fingerprint(authorizedKey)
	maybeStored := false // set by an attempt whose outcome is unknown
	defer func() {
		// Nothing to delete: say so, so that start-up does not spend its
		// time deleting a key OS Login never had.
		if err != nil && !maybeStored {
			err = &notRegisteredError{err}
		}
	}()
	resp, err := c.importKey(ctx, authorizedKey, expiry, &maybeStored)
	if isProfileFull(err) {
		n, perr := c.PruneExpired(ctx)
		if perr != nil {
			return "", fmt.Errorf("import key: the login profile is full, and deleting expired keys failed: %w", perr)
		}
		if n == 0 {
			return "", fmt.Errorf("import key: the login profile of %s is full and holds no expired keys; "+
				"delete keys that never expire (gcloud compute os-login ssh-keys list / remove): %w", c.account, readable(err))
		}
		c.log.Info("login profile was full; deleted expired keys and importing again", "deleted", n)
		resp, err = c.importKey(ctx, authorizedKey, expiry, &maybeStored)
	}
	if err != nil {
		return "", c.explain("import key", err)
	}
	profile := resp.LoginProfile
	if profile == nil {
		profile = &loginProfile{}
	}
	if _, ok := profile.SSHPublicKeys[fp]; !ok {
		if resp.Details != "" {
			return "", fmt.Errorf("import key: %w (OS Login says: %s)", ErrKeyManagementBlocked, resp.Details)
		}
		return "", fmt.Errorf("import key: %w", ErrKeyManagementBlocked)
	}
	username, err := pickUsername(profile, c.project)
	if err != nil {
		// Leave nothing behind that no one will use.
		if rerr := c.Revoke(ctx, authorizedKey); rerr != nil {
			maybeStored = true
			err = errors.Join(err, rerr)
		}
		return "", err
	}
	return username, nil
}

func (c *Client) importKey(ctx context.Context, authorizedKey string, expiry time.Time, maybeStored *bool) (*importSSHPublicKeyResponse, error) {
	key := &sshPublicKey{Key: authorizedKey, ExpirationTimeUsec: usec(expiry)}
	var resp *importSSHPublicKeyResponse
	err := c.retry(ctx, "import key", func(ctx context.Context) error {
		var err error
		resp, err = c.api.importSSHPublicKey(ctx, c.user, key, c.project, c.regions)
		if err != nil && !definite(err) {
			*maybeStored = true
		}
		return err
	})
	return resp, err
}

// Extend moves the key's expiry. The key keeps its fingerprint, so VMs that
// already know it need no time to learn it again. If OS Login has lost the
// key meanwhile (purged, or deleted by someone), the error wraps
// fs.ErrNotExist and the key is not imported again.
func (c *Client) Extend(ctx context.Context, authorizedKey string, expiry time.Time) error {
	name := c.user + "/sshPublicKeys/" + Fingerprint(authorizedKey)
	key := &sshPublicKey{Key: authorizedKey, ExpirationTimeUsec: usec(expiry)}
	err := c.retry(ctx, "extend key", func(ctx context.Context) error {
		return c.api.patchSSHPublicKey(ctx, name, key, "expirationTimeUsec")
	})
	if isNotFound(err) {
		// Not imported again: someone may have deleted it on purpose.
		// The agent replaces it with a fresh key.
		return fmt.Errorf("extend key %s: not in the login profile of %s: %w", Fingerprint(authorizedKey), c.account, fs.ErrNotExist)
	}
	if err != nil {
		return c.explain("extend key", err)
	}
	return nil
}

// Revoke deletes the key from the profile. A key that is already gone
// (404) counts as deleted.
func (c *Client) Revoke(ctx context.Context, authorizedKey string) error {
	name := c.user + "/sshPublicKeys/" + Fingerprint(authorizedKey)
	err := c.retry(ctx, "delete key", func(ctx context.Context) error {
		return c.api.deleteSSHPublicKey(ctx, name)
	})
	if err != nil && !isNotFound(err) {
		return c.explain("delete key", err)
	}
	return nil
}

// PruneExpired deletes the keys on the profile whose expiry has passed and
// returns how many it deleted. Keys without an expiry are never touched:
// someone put them there on purpose.
func (c *Client) PruneExpired(ctx context.Context) (int, error) {
	var profile *loginProfile
	err := c.retry(ctx, "get login profile", func(ctx context.Context) error {
		var err error
		profile, err = c.api.getLoginProfile(ctx, c.user, c.project)
		return err
	})
	if err != nil {
		return 0, c.explain("get login profile", err)
	}
	now := c.serverNow().UnixMicro()
	n := 0
	for fp, key := range profile.SSHPublicKeys {
		if key.ExpirationTimeUsec == 0 || key.ExpirationTimeUsec > now {
			continue
		}
		name := c.user + "/sshPublicKeys/" + fp
		err := c.retry(ctx, "delete expired key", func(ctx context.Context) error {
			return c.api.deleteSSHPublicKey(ctx, name)
		})
		if err != nil && !isNotFound(err) {
			return n, c.explain("delete expired key", err)
		}
		n++
	}
	return n, nil
}

// retry runs fn until it succeeds, fails for good, runs out of attempts
// (when Backoff.Attempts caps them), or ctx ends: the caller's deadline is
// the one bound, reaching every attempt and every wait. Each attempt also
// gets its own deadline. A 401 is tried once more with a fresh token: a
// cached token the server no longer accepts would otherwise fail every
// call until it expires.
func (c *Client) retry(ctx context.Context, op string, fn func(context.Context) error) error {
	refreshed := false
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.callTimeout)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return gaveUp(err, ctx)
		}
		if isUnauthenticated(err) && !refreshed {
			refreshed = true
			if rerr := c.tokens.refresh(); rerr != nil {
				return fmt.Errorf("%w (and a new token could not be fetched: %w)", err, rerr)
			}
			c.log.Info("OS Login refused the token; trying once more with a new one", "op", op)
			continue
		}
		again, wait := retryable(err)
		if !again || (c.backoff.Attempts > 0 && attempt >= c.backoff.Attempts) {
			return err
		}
		wait = max(wait, c.backoff.delay(attempt))
		c.log.Warn("OS Login call failed; retrying", "op", op, "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "err", describe(err))
		c.log.Debug("OS Login call failed", "op", op, "detail", err)
		if sleep(ctx, wait) != nil {
			return gaveUp(err, ctx)
		}
	}
}

// gaveUp is the last attempt's error, marked with why there was no other:
// errors.Is finds context.DeadlineExceeded or context.Canceled in it.
func gaveUp(last error, ctx context.Context) error {
	if errors.Is(last, ctx.Err()) {
		return last
	}
	return fmt.Errorf("%w (gave up: %w)", last, ctx.Err())
}

// notRegisteredError marks a Register error after which OS Login certainly
// holds no trace of the key: every attempt was refused or never arrived.
type notRegisteredError struct{ err error }

func (e *notRegisteredError) Error() string { return e.err.Error() }
func (e *notRegisteredError) Unwrap() error { return e.err }

// NotRegistered tells the agent that there is no key to delete.
func (e *notRegisteredError) NotRegistered() bool { return true }

// tokenCache holds the token the client sends. x/oauth2 keeps a token
// until it expires even when the server refuses it; refresh drops it.
type tokenCache struct {
	base oauth2.TokenSource
	mu   sync.Mutex
	cur  oauth2.TokenSource
}

func newTokenCache(base oauth2.TokenSource) *tokenCache {
	return &tokenCache{base: base, cur: oauth2.ReuseTokenSource(nil, base)}
}

func (t *tokenCache) Token() (*oauth2.Token, error) {
	t.mu.Lock()
	cur := t.cur
	t.mu.Unlock()
	return cur.Token()
}

// refresh makes the next Token come from the token service. A base that
// can drop its own cache (FindIdentity's) is asked to; for any other, a
// cache of x/oauth2's is bypassed by starting a new one on what it wraps.
func (t *tokenCache) refresh() error {
	if r, ok := t.base.(interface{ Refresh() error }); ok {
		if err := r.Refresh(); err != nil {
			return err
		}
		t.mu.Lock()
		t.cur = oauth2.ReuseTokenSource(nil, t.base)
		t.mu.Unlock()
		return nil
	}
	t.mu.Lock()
	t.cur = oauth2.ReuseTokenSource(new(oauth2.Token), t.base)
	t.mu.Unlock()
	return nil
}

// usec is OS Login's expirationTimeUsec; the zero time means no expiry.
func usec(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// pickUsername chooses the POSIX account logins use: the primary Linux
// account of the project, else the project's first account, else the first
// one at all. The VM reads the account the metadata server lists first,
// which for the VM's project is that same account.
func pickUsername(p *loginProfile, project string) (string, error) {
	linux := func(a *posixAccount) bool {
		return a.OperatingSystemType == "" || a.OperatingSystemType == "LINUX" ||
			a.OperatingSystemType == "OPERATING_SYSTEM_TYPE_UNSPECIFIED"
	}
	tests := []func(a *posixAccount) bool{
		func(a *posixAccount) bool { return a.Primary && linux(a) && a.AccountID == project },
		func(a *posixAccount) bool { return a.Primary && linux(a) },
		func(a *posixAccount) bool { return linux(a) && a.AccountID == project },
		linux,
	}
	for _, ok := range tests {
		for _, a := range p.PosixAccounts {
			if a != nil && a.Username != "" && ok(a) {
				return a.Username, nil
			}
		}
	}
	return "", fmt.Errorf("the login profile has no Linux POSIX account for project %s", project)
}
