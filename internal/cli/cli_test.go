package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNotATerminal(t *testing.T) {
	var b bytes.Buffer
	require.False(t, IsTerminal(&b))
	f, err := os.CreateTemp(t.TempDir(), "x")
	require.NoError(t, err)
	defer f.Close()
	require.False(t, IsTerminal(f), "a regular file is not a terminal")
	s := NewStatus(&b)
	s.Set("%d files", 3)
	s.Clear()
	require.Zero(t, b.Len(), "no status line off a terminal")
}

func TestLoggerWritesJSONOffATerminal(t *testing.T) {
	var b bytes.Buffer
	NewLogger(&b, false).Info("Batch completed", "files", 50)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b.Bytes(), &m))
	require.Equal(t, "Batch completed", m["msg"])
	require.Equal(t, float64(50), m["files"])
}

func TestFormats(t *testing.T) {
	require.Equal(t, "1.5k/s", Rate(3000, 2*time.Second))
	require.Equal(t, "2.0M", SI(2e6))
	require.Equal(t, "10s", ETA(50, 100, 10*time.Second))
	require.Equal(t, "-", ETA(0, 100, time.Second))
}

func TestGroup(t *testing.T) {
	require.Equal(t, "1,234,567", Group(1234567))
	require.Equal(t, "999", Group(999))
	require.Equal(t, "-1234", Group(-1234))
}

func TestRedrawStopsWhenDone(t *testing.T) {
	done := make(chan struct{})
	calls := make(chan struct{}, 100)
	finished := make(chan struct{})
	go func() { Redraw(done, time.Millisecond, func() { calls <- struct{}{} }); close(finished) }()
	<-calls // it draws
	close(done)
	<-finished // and returns once done is closed
}

func TestParseFlagsPrintsHelpOnce(t *testing.T) {
	newFS := func() *flag.FlagSet {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.Bool("v", false, "verbose")
		fs.Usage = func() { fmt.Fprintln(fs.Output(), "Usage: x [-v]") }
		return fs
	}
	var out, errb bytes.Buffer
	fs := newFS()
	code, ok := ParseFlags(fs, &out, &errb, func() error { return fs.Parse([]string{"--help"}) })
	require.False(t, ok)
	require.Equal(t, 0, code)
	require.Equal(t, "Usage: x [-v]\n", out.String(), "usage once, on stdout")
	require.Zero(t, errb.Len())

	out.Reset()
	fs = newFS()
	code, ok = ParseFlags(fs, &out, &errb, func() error { return fs.Parse([]string{"--bogus"}) })
	require.False(t, ok)
	require.Equal(t, 1, code)
	require.Zero(t, out.Len())
	require.Equal(t, "flag provided but not defined: -bogus\nUsage: x [-v]\n", errb.String())

	fs = newFS()
	_, ok = ParseFlags(fs, &out, &errb, func() error { return fs.Parse([]string{"-v", "arg"}) })
	require.True(t, ok)
	require.Equal(t, []string{"arg"}, fs.Args())
}
