package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLogDestinations: who sees which record in each mode.
func TestLogDestinations(t *testing.T) {
	tests := []struct {
		name          string
		mode          logMode
		cfg           config
		withFile      bool
		wantTerminal  []string // substrings, in order of logging; empty: nothing
		noTerminal    []string
		wantFile      []string
		wantCollected string
	}{
		{name: "foreground logs everything to stderr", mode: modeForeground, cfg: config{logFormat: "text"},
			wantTerminal: []string{`level=INFO msg=signature`, `level=WARN msg="renewal failed"`}},
		{name: "foreground with a log file keeps stderr clean", mode: modeForeground, cfg: config{logFormat: "text"}, withFile: true,
			noTerminal: []string{"signature", "renewal"}, wantFile: []string{"msg=signature", `msg="renewal failed"`}},
		{name: "command mode shows warnings only, readably", mode: modeCommand, cfg: config{logFormat: "text"},
			wantTerminal: []string{"oslogin-agent: warning: renewal failed (retry_in=1s)\n"}, noTerminal: []string{"signature"}},
		{name: "command mode with a log file: audit to the file, warnings to both", mode: modeCommand, cfg: config{logFormat: "json"}, withFile: true,
			wantTerminal: []string{"oslogin-agent: warning: renewal failed"}, noTerminal: []string{"signature"},
			wantFile: []string{`"msg":"signature"`, `"msg":"renewal failed"`}},
		{name: "command mode, explicit level, no file", mode: modeCommand, cfg: config{logFormat: "text", logLevel: "info"},
			wantTerminal: []string{"msg=signature", `msg="renewal failed"`}},
		{name: "background hands start-up warnings over", mode: modeBackground, cfg: config{logFormat: "text"},
			noTerminal: []string{"signature", "renewal"}, wantCollected: "oslogin-agent: warning: renewal failed (retry_in=1s)\n"},
		{name: "log level warn leaves the audit out of the file", mode: modeForeground, cfg: config{logFormat: "text", logLevel: "warn"}, withFile: true,
			wantFile: []string{`msg="renewal failed"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var terminal bytes.Buffer
			startup := &startupWarnings{}
			cfg := tc.cfg
			if tc.withFile {
				cfg.logFile = filepath.Join(t.TempDir(), "agent.log")
			}
			l, err := openLogs(&cfg, tc.mode, &terminal, startup)
			if err != nil {
				t.Fatal(err)
			}
			l.log.Info("signature", "fingerprint", "SHA256:x", "result", "ok")
			l.log.Warn("renewal failed", "retry_in", "1s")
			l.close()
			got := terminal.String()
			for _, w := range tc.wantTerminal {
				if !strings.Contains(got, w) {
					t.Errorf("terminal %q lacks %q", got, w)
				}
			}
			if len(tc.wantTerminal) == 0 && tc.noTerminal == nil && got != "" {
				t.Errorf("terminal %q, want nothing", got)
			}
			for _, w := range tc.noTerminal {
				if strings.Contains(got, w) {
					t.Errorf("terminal %q shows %q", got, w)
				}
			}
			if tc.withFile {
				b, err := os.ReadFile(cfg.logFile)
				if err != nil {
					t.Fatal(err)
				}
				for _, w := range tc.wantFile {
					if !bytes.Contains(b, []byte(w)) {
						t.Errorf("log file lacks %q:\n%s", w, b)
					}
				}
				if cfg.logLevel == "warn" && bytes.Contains(b, []byte("signature")) {
					t.Errorf("log file at warn has the info record:\n%s", b)
				}
			}
			if c := startup.take(); c != tc.wantCollected {
				t.Errorf("start-up warnings %q, want %q", c, tc.wantCollected)
			}
		})
	}
}

// TestLogFileFailuresAreReported: a log file that cannot be written is
// reported once at the time and with a count at close.
func TestLogFileFailuresAreReported(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	var terminal bytes.Buffer
	cfg := config{logFormat: "text", logFile: "/dev/full"}
	l, err := openLogs(&cfg, modeCommand, &terminal, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		l.log.Info("signature")
	}
	l.close()
	got := terminal.String()
	if strings.Count(got, "cannot write to the log file /dev/full") != 1 || !strings.Contains(got, "3 log records could not be written to /dev/full") {
		t.Fatalf("terminal %q; want one report at the time and the count of 3 at close", got)
	}
}
