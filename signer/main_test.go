package signer

import (
	"os"
	"sync"
	"testing"
)

func TestMain(m *testing.M) {
	// Project rule for every test binary: never reach a real metadata
	// server or real Google credentials.
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:1")
	os.Unsetenv("GOOGLE_APPLICATION_CREDENTIALS")
	os.Exit(m.Run())
}

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
