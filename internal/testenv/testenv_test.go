package testenv

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestIsolate runs in the test binary's own process, so it restores what it
// changes.
func TestIsolate(t *testing.T) {
	for _, k := range []string{"GCE_METADATA_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "HOME", "GOPATH", "GOCACHE", "GOENV", "XDG_CONFIG_HOME"} {
		t.Setenv(k, os.Getenv(k))
	}
	os.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "/somewhere/key.json")
	os.Unsetenv("GOPATH")
	oldHome, _ := os.UserHomeDir()

	cleanup, err := Isolate()
	if err != nil {
		t.Fatal(err)
	}
	if got := os.Getenv("GCE_METADATA_HOST"); got != "127.0.0.1:1" {
		t.Errorf("GCE_METADATA_HOST = %q", got)
	}
	if v, ok := os.LookupEnv("GOOGLE_APPLICATION_CREDENTIALS"); ok {
		t.Errorf("GOOGLE_APPLICATION_CREDENTIALS still set to %q", v)
	}
	home := os.Getenv("HOME")
	if home == oldHome {
		t.Fatal("HOME was not replaced")
	}
	if entries, err := os.ReadDir(home); err != nil || len(entries) != 0 {
		t.Errorf("new HOME %s: %v entries, %v", home, len(entries), err)
	}
	if got := os.Getenv("GOPATH"); got != filepath.Join(oldHome, "go") {
		t.Errorf("GOPATH = %q, want the old default under %s", got, oldHome)
	}
	cleanup()
	if _, err := os.Stat(home); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cleanup left %s: %v", home, err)
	}
}
