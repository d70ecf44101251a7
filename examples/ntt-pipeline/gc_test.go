package main

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

// The collector is paced for a queue and bounded by 256 MiB a job, unless
// GOGC says how to collect (nothing changes) or GOMEMLIMIT bounds the
// heap (only the pace changes).
func TestTuneGC(t *testing.T) {
	gc, limit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	defer func() { debug.SetGCPercent(gc); debug.SetMemoryLimit(limit) }()
	settings := func() (int, int64) {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p, debug.SetMemoryLimit(-1)
	}
	reset := func() { debug.SetGCPercent(100); debug.SetMemoryLimit(1 << 40) }

	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	reset()
	tuneGC(3)
	p, l := settings()
	require.Equal(t, 400, p)
	require.Equal(t, int64(3*256<<20), l)

	t.Setenv("GOMEMLIMIT", "1GiB")
	reset()
	tuneGC(3)
	p, l = settings()
	require.Equal(t, 400, p)
	require.Equal(t, int64(1<<40), l, "GOMEMLIMIT set: the limit is left alone")

	t.Setenv("GOGC", "off")
	t.Setenv("GOMEMLIMIT", "")
	reset()
	tuneGC(3)
	p, l = settings()
	require.Equal(t, 100, p, "GOGC set: the pace is left alone")
	require.Equal(t, int64(1<<40), l, "GOGC set: the limit is left alone")
}
