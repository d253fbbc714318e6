package destination

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Cache defaults. An instance's id, addresses and host keys change when it
// is recreated or its guest rewrites them, both rare; a few minutes keep
// a burst of connections (Ansible's forks, scp after ssh) to one lookup.
// Definite negative answers are kept briefly, so a loop over a missing
// host does not hammer the API but a freshly created VM is found soon.
const (
	DefaultTTL         = 5 * time.Minute
	DefaultNegativeTTL = 10 * time.Second
	DefaultMaxEntries  = 1024
	// fetchTimeout bounds one shared fetch, which outlives the context of
	// the caller that started it so that the others waiting are not
	// cancelled with it.
	fetchTimeout = 30 * time.Second
)

// CacheOptions configure a Cache; zero fields take the defaults.
type CacheOptions struct {
	TTL         time.Duration
	NegativeTTL time.Duration // for not found, ambiguous, refused and no host keys
	MaxEntries  int           // per kind (records, host keys)
	Now         func() time.Time
}

// Cache keeps a Source's answers in memory for a bounded time and makes
// concurrent requests for one name share a single call. It holds no
// credentials and writes nothing to disk: it is meant to live inside the
// long-lived agent, which answers short-lived helpers from it.
type Cache struct {
	src  Source
	opts CacheOptions

	mu      sync.Mutex
	records map[string]*cached[*Instance]
	keys    map[string]*cached[HostKeys]
	flights map[string]*flight
}

var _ Source = (*Cache)(nil)

type cached[T any] struct {
	val     T
	err     error
	expires time.Time
}

// flight is one fetch in progress that later callers wait for.
type flight struct {
	done chan struct{}
	val  any
	err  error
}

// NewCache wraps src.
func NewCache(src Source, opts CacheOptions) *Cache {
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = DefaultNegativeTTL
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Cache{src: src, opts: opts, records: map[string]*cached[*Instance]{},
		keys: map[string]*cached[HostKeys]{}, flights: map[string]*flight{}}
}

// Lookup answers from the cache or asks the source once for all callers.
// The record is also filed under the instance's canonical name and id, so
// that NAME, NAME.ZONE.PROJECT and compute.ID share one entry.
func (c *Cache) Lookup(ctx context.Context, n Name) (*Instance, error) {
	v, err := get(c, ctx, c.records, "lookup:"+n.key(), n.key(), func(ctx context.Context) (*Instance, error) {
		return c.src.Lookup(ctx, n)
	}, func(in *Instance) []string {
		return []string{in.Destination().key(), Name{ID: in.ID, Project: in.Project}.key(),
			Name{ID: in.ID, Project: in.Project, Zone: in.Zone}.key()}
	})
	if err != nil {
		return nil, err
	}
	cp := *v // callers may not change what others are served
	return &cp, nil
}

// HostKeys answers from the cache or asks the source once for all callers,
// keyed by the instance's id.
func (c *Cache) HostKeys(ctx context.Context, in *Instance) (HostKeys, error) {
	k := in.Project + "/" + in.Zone + "/" + in.ID
	return get(c, ctx, c.keys, "keys:"+k, k, func(ctx context.Context) (HostKeys, error) {
		return c.src.HostKeys(ctx, in)
	}, nil)
}

// Forget drops everything, as after a host key mismatch the user wants
// re-checked.
func (c *Cache) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.records)
	clear(c.keys)
}

// get is the cache walk shared by both kinds: fresh entry, or join the
// flight for this key, or start one.
func get[T any](c *Cache, ctx context.Context, m map[string]*cached[T], flightKey, key string,
	fetch func(context.Context) (T, error), aliases func(T) []string) (T, error) {
	var zero T
	c.mu.Lock()
	if e, ok := m[key]; ok && c.opts.Now().Before(e.expires) {
		c.mu.Unlock()
		return e.val, e.err
	}
	f, joined := c.flights[flightKey]
	if !joined {
		f = &flight{done: make(chan struct{})}
		c.flights[flightKey] = f
		go c.run(ctx, f, flightKey, func(ctx context.Context) (any, error) {
			v, err := fetch(ctx)
			store(c, m, key, v, err, aliases)
			return v, err
		})
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		if f.err != nil {
			return zero, f.err
		}
		return f.val.(T), nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

func (c *Cache) run(ctx context.Context, f *flight, flightKey string, fetch func(context.Context) (any, error)) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
	defer cancel()
	f.val, f.err = fetch(fctx)
	c.mu.Lock()
	delete(c.flights, flightKey)
	c.mu.Unlock()
	close(f.done)
}

// store files an answer: values for TTL, definite refusals for
// NegativeTTL, and transient failures (network, 5xx, timeouts) not at all.
func store[T any](c *Cache, m map[string]*cached[T], key string, v T, err error, aliases func(T) []string) {
	ttl := c.opts.TTL
	if err != nil {
		if !definite(err) {
			return
		}
		ttl = c.opts.NegativeTTL
	}
	now := c.opts.Now()
	e := &cached[T]{val: v, err: err, expires: now.Add(ttl)}
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := []string{key}
	if err == nil && aliases != nil {
		keys = append(keys, aliases(v)...)
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok && len(m) >= c.opts.MaxEntries {
			evict(m, now)
		}
		m[k] = e
	}
}

// evict makes room: expired entries first, else the one expiring soonest.
func evict[T any](m map[string]*cached[T], now time.Time) {
	var oldest string
	swept := false
	for k, e := range m {
		if !now.Before(e.expires) {
			delete(m, k)
			swept = true
			continue
		}
		if oldest == "" || e.expires.Before(m[oldest].expires) {
			oldest = k
		}
	}
	if !swept && oldest != "" {
		delete(m, oldest)
	}
}

// definite reports whether err is an answer worth remembering rather than
// a failure to get one.
func definite(err error) bool {
	var (
		nf *NotFoundError
		am *AmbiguousError
		nk *NoHostKeysError
		pe *PermissionError
	)
	return errors.As(err, &nf) || errors.As(err, &am) || errors.As(err, &nk) || errors.As(err, &pe)
}
