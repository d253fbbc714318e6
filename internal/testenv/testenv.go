// Package testenv keeps test binaries away from the machine they run on:
// no credential lookup may reach a real metadata server or Google, and no
// credentials that exist on the machine may be read. Every TestMain calls
// Isolate (or Main) before anything else.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Isolate points GCE_METADATA_HOST at a closed loopback port (tests that
// use the emulator point it there themselves), unsets
// GOOGLE_APPLICATION_CREDENTIALS and OSLOGIN_EMULATOR_HOST, and gives the process an empty HOME, where
// x/oauth2 would otherwise find gcloud's application default credentials.
// The Go toolchain's caches and settings keep their places, so tests that
// run `go build` reuse them. The returned function removes the new HOME.
func Isolate() (cleanup func(), err error) {
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:1")
	os.Unsetenv("GOOGLE_APPLICATION_CREDENTIALS")
	os.Unsetenv("OSLOGIN_EMULATOR_HOST") // a developer's emulator is not the test's

	oldHome, _ := os.UserHomeDir()
	cacheDir, _ := os.UserCacheDir()
	configDir, _ := os.UserConfigDir()
	keep := map[string]string{
		"GOPATH":  filepath.Join(oldHome, "go"),
		"GOCACHE": filepath.Join(cacheDir, "go-build"),
		"GOENV":   filepath.Join(configDir, "go", "env"),
	}
	for k, v := range keep {
		if os.Getenv(k) == "" && oldHome != "" {
			os.Setenv(k, v)
		}
	}
	home, err := os.MkdirTemp("", "oslogin-test-home-")
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	os.Setenv("HOME", home)
	os.Unsetenv("XDG_CONFIG_HOME")
	return func() { os.RemoveAll(home) }, nil
}

// Main is a TestMain for packages that need nothing more: isolate, run the
// tests, clean up, exit.
func Main(m *testing.M) {
	cleanup, err := Isolate()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}
