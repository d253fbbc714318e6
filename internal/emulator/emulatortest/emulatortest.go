// Package emulatortest runs an OS Login emulator for one test: on an
// httptest server bound to loopback, closed by t.Cleanup.
package emulatortest

import (
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oslogin-agent/oslogin-agent/internal/emulator"
)

// Server is a running emulator.
type Server struct {
	URL      string // base URL, "http://127.0.0.1:port"
	Host     string // "127.0.0.1:port", the value for GCE_METADATA_HOST
	Emulator *emulator.Emulator
	Admin    *emulator.AdminClient // the same emulator over its admin API
	srv      *httptest.Server
}

// Start runs an emulator for cfg until the test ends. It logs nothing unless
// the test runs with -v, then emulator logs at debug go to t.Log.
func Start(t testing.TB, cfg emulator.Config) *Server {
	t.Helper()
	return StartWithOptions(t, emulator.Options{Config: cfg})
}

// StartWithOptions is Start with a clock, logger or random source.
func StartWithOptions(t testing.TB, opts emulator.Options) *Server {
	t.Helper()
	if opts.Logger == nil && testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	emu, err := emulator.New(opts)
	if err != nil {
		t.Fatalf("emulatortest: %v", err)
	}
	srv := httptest.NewServer(emu.Handler())
	s := &Server{
		URL: srv.URL, Host: strings.TrimPrefix(srv.URL, "http://"),
		Emulator: emu, Admin: emulator.NewAdminClient(srv.URL), srv: srv,
	}
	t.Cleanup(func() {
		emu.Close() // release stalled requests first, or Close would wait for them
		srv.Close()
	})
	return s
}

// APIEndpoint is the value for option.WithEndpoint.
func (s *Server) APIEndpoint() string { return s.URL + "/" }

// TokenURI is the emulator's OAuth token endpoint.
func (s *Server) TokenURI() string { return s.URL + "/token" }

// WriteKeyFile writes a new service-account JSON key for email into a temp
// directory of t and returns its path, for GOOGLE_APPLICATION_CREDENTIALS.
func (s *Server) WriteKeyFile(t testing.TB, email string) string {
	t.Helper()
	b, err := s.Emulator.ServiceAccountKeyJSON(email, s.TokenURI())
	if err != nil {
		t.Fatalf("emulatortest: %v", err)
	}
	path := filepath.Join(t.TempDir(), "service-account.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatalf("emulatortest: write key file: %v", err)
	}
	return path
}

// tWriter sends log lines to the test log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
