//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"
)

// regCall is one call the fake registrar received.
type regCall struct {
	op     string // "Register", "Extend" or "Revoke"
	line   string
	expiry time.Time // zero for Revoke
	at     time.Time
	err    error // what the call returned
}

// fakeRegistrar is an in-memory Registrar that records every call and can
// be told to fail.
type fakeRegistrar struct {
	mu       sync.Mutex
	username string
	keys     map[string]time.Time // registered line -> expiry
	calls    []regCall
	failing  map[string]error // op -> error to return; "" matches every op
	// storeThenFail makes Register store the key and still fail, like a
	// reply lost after the server stored the key.
	storeThenFail bool
	// hang makes calls of this op wait for their context, like a server
	// that never answers; hung counts them.
	hang string
	hung int
}

func newFakeRegistrar() *fakeRegistrar {
	return &fakeRegistrar{username: "sa_1234567890", keys: make(map[string]time.Time), failing: make(map[string]error)}
}

var errUnavailable = errors.New("fake: service unavailable")

// fail makes op (or every op, for "") return err; a nil err heals it.
func (f *fakeRegistrar) fail(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.failing, op)
		return
	}
	f.failing[op] = err
}

func (f *fakeRegistrar) failure(op string) error {
	if err, ok := f.failing[op]; ok {
		return err
	}
	return f.failing[""]
}

func (f *fakeRegistrar) record(op, line string, expiry time.Time, err error) {
	f.calls = append(f.calls, regCall{op: op, line: line, expiry: expiry, at: time.Now(), err: err})
}

func (f *fakeRegistrar) Register(ctx context.Context, line string, expiry time.Time) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.failure("Register")
	if err == nil {
		err = ctx.Err()
	}
	if err == nil || f.storeThenFail {
		f.keys[line] = expiry
	}
	f.record("Register", line, expiry, err)
	if err != nil {
		return "", err
	}
	return f.username, nil
}

// maybeHang blocks a call of op until ctx is done if op is set to hang.
func (f *fakeRegistrar) maybeHang(ctx context.Context, op string) {
	f.mu.Lock()
	hang := f.hang == op
	if hang {
		f.hung++
	}
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
	}
}

func (f *fakeRegistrar) hungCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hung
}

func (f *fakeRegistrar) Extend(ctx context.Context, line string, expiry time.Time) error {
	f.maybeHang(ctx, "Extend")
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.failure("Extend")
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		if _, ok := f.keys[line]; !ok {
			err = fmt.Errorf("fake: key not registered: %w", fs.ErrNotExist)
		} else {
			f.keys[line] = expiry
		}
	}
	f.record("Extend", line, expiry, err)
	return err
}

func (f *fakeRegistrar) Revoke(ctx context.Context, line string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.failure("Revoke")
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		delete(f.keys, line)
	}
	f.record("Revoke", line, time.Time{}, err)
	return err
}

// callsFor returns the calls of op ("" for all), optionally for one line.
func (f *fakeRegistrar) callsFor(op, line string) []regCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []regCall
	for _, c := range f.calls {
		if (op == "" || c.op == op) && (line == "" || c.line == line) {
			out = append(out, c)
		}
	}
	return out
}

// registered returns a copy of the registered keys.
func (f *fakeRegistrar) registered() map[string]time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]time.Time, len(f.keys))
	for k, v := range f.keys {
		m[k] = v
	}
	return m
}
