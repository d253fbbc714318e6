package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// Where logs go, by mode:
//
//   - -D / -d: stderr, or only --log-file when given, at --log-level
//     (info; debug with -d). Unchanged from before levels existed.
//   - command mode: the terminal shows warnings and errors only, so that
//     the command's output stays its own; --log-file, when given, gets
//     every record at --log-level (info), the per-signature audit among
//     them. Without --log-file, an explicit --log-level applies to stderr.
//   - background (-s, -c, or none): --log-file as above; warnings during
//     start-up are handed to the starting process, which prints them.
//
// A --log-file that cannot be written is never lost silently: the first
// failure and, at exit, the count of lost records are reported on stderr.

// logMode is how the agent runs.
type logMode int

const (
	modeForeground logMode = iota
	modeCommand
	modeBackground
)

// logs is the logger of one run and what must happen at exit.
type logs struct {
	log  *slog.Logger
	file *reportingFile // nil without --log-file
}

// openLogs builds the logger for mode. terminal is stderr (io.Discard in
// the background child); startup, when not nil, collects warnings.
func openLogs(cfg *config, mode logMode, terminal io.Writer, startup *startupWarnings) (*logs, error) {
	level := slog.LevelInfo
	if cfg.debug {
		level = slog.LevelDebug
	}
	if cfg.logLevel != "" {
		if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
			return nil, usagef("--log-level %q: want debug, info, warn or error", cfg.logLevel)
		}
	}
	l := &logs{}
	var handlers []slog.Handler
	if cfg.logFile != "" {
		f, err := os.OpenFile(cfg.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("cannot open --log-file: %w", err)
		}
		l.file = &reportingFile{f: f, path: cfg.logFile, report: terminal}
		handlers = append(handlers, recordHandler(cfg, l.file, level))
	}
	switch mode {
	case modeForeground:
		if cfg.logFile == "" {
			handlers = append(handlers, recordHandler(cfg, terminal, level))
		}
	case modeCommand:
		termLevel := slog.LevelWarn
		if cfg.logFile == "" && cfg.logLevel != "" {
			termLevel = level
			handlers = append(handlers, recordHandler(cfg, terminal, termLevel))
		} else {
			handlers = append(handlers, &terminalHandler{w: terminal, level: termLevel, mu: new(sync.Mutex)})
		}
	case modeBackground:
		if startup != nil {
			handlers = append(handlers, &terminalHandler{w: startup, level: slog.LevelWarn, mu: new(sync.Mutex)})
		}
	}
	l.log = slog.New(fanout(handlers))
	slog.SetDefault(l.log) // x/crypto's agent server reports through the standard logger
	return l, nil
}

// close flushes and closes the log file and reports records it lost.
func (l *logs) close() {
	if l.file != nil {
		l.file.close()
	}
}

func recordHandler(cfg *config, w io.Writer, level slog.Level) slog.Handler {
	opts := &slog.HandlerOptions{Level: level}
	if cfg.logFormat == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// reportingFile is --log-file. A failed write is reported once on the
// terminal at the time, and the number of lost records at close.
type reportingFile struct {
	mu     sync.Mutex
	f      *os.File
	path   string
	report io.Writer
	lost   int
}

func (r *reportingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.f.Write(p); err != nil {
		if r.lost == 0 {
			fmt.Fprintf(r.report, "oslogin-agent: cannot write to the log file %s (%v); log records, the audit of each signature among them, are being lost: free space or choose another --log-file\n",
				r.path, plainErr(err))
		}
		r.lost++
	}
	return len(p), nil
}

func (r *reportingFile) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.f.Close(); err != nil && r.lost == 0 {
		fmt.Fprintf(r.report, "oslogin-agent: closing the log file %s failed (%v); its last records may be lost\n", r.path, plainErr(err))
	}
	if r.lost > 0 {
		fmt.Fprintf(r.report, "oslogin-agent: %d log records could not be written to %s\n", r.lost, r.path)
	}
}

// plainErr drops the "write /path: " that *os.PathError repeats.
func plainErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// terminalHandler prints records as a person reads them:
// "oslogin-agent: warning: message (key=value, …)".
type terminalHandler struct {
	w     io.Writer
	level slog.Level
	attrs []slog.Attr
	mu    *sync.Mutex
}

func (h *terminalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *terminalHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("oslogin-agent: ")
	switch {
	case r.Level >= slog.LevelError:
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	default:
		b.WriteString(strings.ToLower(r.Level.String()) + ": ")
	}
	b.WriteString(r.Message)
	var details []string
	add := func(a slog.Attr) bool {
		if a.Key != "" {
			details = append(details, a.Key+"="+strings.Join(strings.Fields(a.Value.String()), " "))
		}
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	if len(details) > 0 {
		b.WriteString(" (" + strings.Join(details, ", ") + ")")
	}
	b.WriteString("\n")
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *terminalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &h2
}

func (h *terminalHandler) WithGroup(string) slog.Handler { return h }

// startupWarnings collects the terminal lines of a background agent until
// it is ready; the starting process prints them.
type startupWarnings struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done bool
}

func (s *startupWarnings) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done && s.buf.Len() < 64<<10 {
		s.buf.Write(p)
	}
	return len(p), nil
}

// take returns what was collected and stops collecting.
func (s *startupWarnings) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	return s.buf.String()
}

// fanoutHandler sends each record to every handler that wants it.
type fanoutHandler []slog.Handler

func fanout(hs []slog.Handler) slog.Handler {
	if len(hs) == 0 {
		return slog.DiscardHandler
	}
	if len(hs) == 1 {
		return hs[0]
	}
	return fanoutHandler(hs)
}

func (f fanoutHandler) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range f {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (f fanoutHandler) Handle(ctx context.Context, r slog.Record) error {
	var first error
	for _, h := range f {
		if h.Enabled(ctx, r.Level) {
			if err := h.Handle(ctx, r.Clone()); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

func (f fanoutHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(fanoutHandler, len(f))
	for i, h := range f {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (f fanoutHandler) WithGroup(name string) slog.Handler {
	out := make(fanoutHandler, len(f))
	for i, h := range f {
		out[i] = h.WithGroup(name)
	}
	return out
}
