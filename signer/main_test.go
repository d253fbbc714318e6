package signer

import (
	"sync"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// sharedKeys holds one key per type for tests that only sign, so the slow
// RSA generation happens once per test binary.
var sharedKeys = sync.OnceValues(func() (map[KeyType]*Key, error) {
	keys := make(map[KeyType]*Key)
	for _, t := range KeyTypes() {
		k, err := Generate(t)
		if err != nil {
			return nil, err
		}
		keys[t] = k
	}
	return keys, nil
})

func sharedKey(tb testing.TB, t KeyType) *Key {
	tb.Helper()
	keys, err := sharedKeys()
	if err != nil {
		tb.Fatalf("generate shared keys: %v", err)
	}
	return keys[t]
}
