// Package cli holds what NTT's example programs share about talking to a
// person: whether stderr is a terminal, the logger (readable lines on a
// terminal, JSON lines for scripts and log files), and a one-line status
// display for long phases. The library packages never print; only programs
// use this.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// NewLogger logs to w: plain "LEVEL message key=value" lines without
// timestamps on a terminal, JSON lines (log/slog) otherwise. verbose adds
// debug lines.
func NewLogger(w io.Writer, verbose bool) *slog.Logger { return NewStatusLogger(w, nil, verbose) }

// NewStatusLogger is NewLogger for a program that also draws status on w:
// each log line first clears the status line, so the two never mix.
func NewStatusLogger(w io.Writer, status *Status, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	if !IsTerminal(w) {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
	}
	if status != nil {
		w = clearing{w, status}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}))
}

type clearing struct {
	w      io.Writer
	status *Status
}

func (c clearing) Write(p []byte) (int, error) {
	c.status.Clear()
	return c.w.Write(p)
}

// Group formats n with thousands separators: 1,234,567.
func Group(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// Status is a single, rewritten status line on a terminal. On anything
// else it prints nothing (programs log progress as JSON lines instead).
// It is safe for concurrent use.
type Status struct {
	mu   sync.Mutex
	w    io.Writer
	on   bool
	last int
	// to, when set, receives each line instead of w (a Board's row).
	to func(line string)
}

// NewStatusFunc returns a status line whose text goes to set (an empty
// text when cleared): one row of a Board.
func NewStatusFunc(set func(line string)) *Status { return &Status{on: true, to: set} }

// NewStatus returns a status line on w (active only if w is a terminal).
func NewStatus(w io.Writer) *Status { return &Status{w: w, on: IsTerminal(w)} }

// Active reports whether the status line is shown.
func (s *Status) Active() bool { return s != nil && s.on }

// Set replaces the status line.
func (s *Status) Set(format string, args ...any) {
	if !s.Active() {
		return
	}
	line := fmt.Sprintf(format, args...)
	if s.to != nil {
		s.to(line)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pad := ""
	if n := s.last - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprintf(s.w, "\r%s%s", line, pad)
	s.last = len(line)
}

// Clear removes the status line so that a log line can be printed.
func (s *Status) Clear() {
	if !s.Active() {
		return
	}
	if s.to != nil {
		s.to("")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last > 0 {
		fmt.Fprintf(s.w, "\r%s\r", strings.Repeat(" ", s.last))
		s.last = 0
	}
}

// Rate formats n per elapsed as "1.2k/s".
func Rate(n float64, elapsed time.Duration) string {
	if elapsed <= 0 {
		return "-"
	}
	return SI(n/elapsed.Seconds()) + "/s"
}

// SI formats n with k, M, G suffixes.
func SI(n float64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1fG", n/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", n/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fk", n/1e3)
	}
	return fmt.Sprintf("%.0f", n)
}

// ETA estimates the time left when done of total took elapsed.
func ETA(done, total float64, elapsed time.Duration) string {
	if done <= 0 || total <= done {
		return "-"
	}
	left := time.Duration(float64(elapsed) * (total - done) / done)
	return left.Round(time.Second).String()
}

// Redraw calls draw every interval until done is closed: the loop behind
// a status line that a long phase keeps up to date.
func Redraw(done <-chan struct{}, interval time.Duration, draw func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			draw()
		}
	}
}

// ParseFlags runs parse (fs.Parse, or a program's own loop over it) with
// the flag package's own printing held back, then: --help prints fs.Usage
// to stdout once (exit 0); a bad flag prints the error and the usage to
// stderr (exit 1). ok is false in both cases. Afterwards fs writes to
// stderr, for the program's own usage errors.
func ParseFlags(fs *flag.FlagSet, stdout, stderr io.Writer, parse func() error) (exit int, ok bool) {
	fs.SetOutput(io.Discard)
	err := parse()
	switch {
	case err == nil:
		fs.SetOutput(stderr)
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		fs.SetOutput(stderr)
		return 0, false
	default:
		fs.SetOutput(stderr)
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return 1, false
	}
}
