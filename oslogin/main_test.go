package oslogin_test

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// Before anything else: no credential lookup may reach a real metadata
	// server or read credentials that exist on this machine.
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:1")
	os.Unsetenv("GOOGLE_APPLICATION_CREDENTIALS")
	home, err := os.MkdirTemp("", "oslogin-test-home-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("HOME", home)
	code := m.Run()
	os.RemoveAll(home)
	os.Exit(code)
}
