package destination_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oslogin-agent/oslogin-agent/destination"
)

// countingSource answers from a fixed table, counting calls; gate, when
// set, holds every call until closed.
type countingSource struct {
	lookups, keys atomic.Int32
	gate          chan struct{}
	fail          error
}

func (s *countingSource) Lookup(ctx context.Context, n destination.Name) (*destination.Instance, error) {
	s.lookups.Add(1)
	if s.gate != nil {
		<-s.gate
	}
	if s.fail != nil {
		return nil, s.fail
	}
	if n.Instance == "missing" {
		return nil, &destination.NotFoundError{Name: n}
	}
	return &destination.Instance{Project: "p-project", Zone: "us-central1-a", Name: "vm", ID: "42"}, nil
}

func (s *countingSource) HostKeys(ctx context.Context, in *destination.Instance) (destination.HostKeys, error) {
	s.keys.Add(1)
	return destination.HostKeys{}, &destination.NoHostKeysError{Instance: in}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestCacheLifetimes(t *testing.T) {
	src := &countingSource{}
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	c := destination.NewCache(src, destination.CacheOptions{TTL: time.Minute, NegativeTTL: 5 * time.Second, Now: clock.Now})
	ctx := context.Background()
	lookup := func(s string) error {
		_, err := c.Lookup(ctx, mustParse(t, s))
		return err
	}
	for _, s := range []string{"vm", "vm", "vm.us-central1-a.p-project"} {
		if err := lookup(s); err != nil {
			t.Fatal(err)
		}
	}
	if n := src.lookups.Load(); n != 1 {
		t.Errorf("%d lookups for one instance under two names; want 1", n)
	}
	clock.Add(61 * time.Second)
	lookup("vm")
	if n := src.lookups.Load(); n != 2 {
		t.Errorf("%d lookups after the TTL; want 2", n)
	}

	// Definite negative answers are kept for NegativeTTL only.
	src.lookups.Store(0)
	for range 3 {
		if err := lookup("missing"); !isType[*destination.NotFoundError](err) {
			t.Fatalf("error %v", err)
		}
	}
	clock.Add(6 * time.Second)
	lookup("missing")
	if n := src.lookups.Load(); n != 2 {
		t.Errorf("%d lookups of a missing instance; want 2 (one per negative TTL)", n)
	}

	// Transient failures are not kept at all.
	src.lookups.Store(0)
	src.fail = errors.New("network down")
	lookup("other")
	lookup("other")
	if n := src.lookups.Load(); n != 2 {
		t.Errorf("%d lookups after transient failures; want 2", n)
	}

	// No host keys is a definite answer, kept briefly.
	in := &destination.Instance{Project: "p-project", Zone: "us-central1-a", Name: "vm", ID: "42"}
	for range 3 {
		if _, err := c.HostKeys(ctx, in); !isType[*destination.NoHostKeysError](err) {
			t.Fatalf("error %v", err)
		}
	}
	if n := src.keys.Load(); n != 1 {
		t.Errorf("%d host key reads; want 1", n)
	}
}

func TestCacheSharesConcurrentLookups(t *testing.T) {
	src := &countingSource{gate: make(chan struct{})}
	c := destination.NewCache(src, destination.CacheOptions{})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Lookup(context.Background(), mustParse(t, "vm"))
			errs <- err
		}()
	}
	// A caller that gives up does not cancel the shared fetch.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Lookup(ctx, mustParse(t, "vm")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	close(src.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := src.lookups.Load(); n != 1 {
		t.Errorf("%d lookups for 20 concurrent callers; want 1", n)
	}
}
