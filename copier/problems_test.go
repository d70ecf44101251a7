package copier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func (f *fixture) problems() map[string]map[string]any {
	f.t.Helper()
	var raw []byte
	require.NoError(f.t, f.db.QueryRow(context.Background(), `SELECT problems FROM medium WHERE medium_hash = $1`, string(f.h)).Scan(&raw))
	var m map[string]map[string]any
	require.NoError(f.t, json.Unmarshal(raw, &m))
	return m
}

func current(p map[string]map[string]any, flag string) bool {
	v, ok := p[flag]
	if !ok {
		return false
	}
	_, resolved := v[schema.ResolvedAtKey]
	return !resolved
}

// Issue 18.5: high_error_rate (and stale_mount) stayed in medium.problems
// after a full recovery. A run that fails 20 of 100 files raises
// high_error_rate; runs that leave a file failed keep the flags current,
// even one without a failed attempt of its own; the run that copies the
// last file without an error marks them resolved, kept with resolved_at.
func TestCleanCompleteRunResolvesProblems(t *testing.T) {
	f := newMedium(t, smallFiles(100))
	ctx := context.Background()
	// 20 catalog paths that are not on the mount: path errors, retryable.
	moved := map[string]string{}
	for i := range 20 {
		from, to := fmt.Sprintf("/f%02d", i), fmt.Sprintf("/gone%02d", i)
		_, err := f.db.Exec(ctx, `UPDATE path SET path = $2 WHERE medium_hash = $1 AND path = $3`, string(f.h), []byte(to), []byte(from))
		require.NoError(t, err)
		moved[to] = from
	}
	o := f.options()
	o.Policy = copier.SimplePolicy{MaxFailures: 1}
	st := f.mustRun(o)
	require.Equal(t, int64(80), st.Copied)
	require.Equal(t, int64(20), st.GaveUp)
	require.True(t, st.Complete)
	// The diagnose tracker records a mount that went away like this.
	require.NoError(t, schema.MergeProblem(ctx, f.db, f.h, "stale_mount", map[string]any{"errno": "ESTALE"}))
	require.NoError(t, schema.MergeProblem(ctx, f.db, f.h, "unrescued_bytes", map[string]any{"bad_bytes": 512}))
	p := f.problems()
	require.True(t, current(p, "high_error_rate"), "20 of 100 failed: %v", p)

	fix := func(to string) {
		_, err := f.db.Exec(ctx, `UPDATE path SET path = $2 WHERE medium_hash = $1 AND path = $3`, string(f.h), []byte(moved[to]), []byte(to))
		require.NoError(t, err)
		delete(moved, to)
	}
	reset := func() {
		_, err := copier.ResetFailed(ctx, f.db, string(f.h), copier.ResetOptions{Apply: true})
		require.NoError(t, err)
	}
	for to := range moved {
		if len(moved) == 1 {
			break
		}
		fix(to)
	}
	reset()
	st = f.mustRun(o)
	require.Equal(t, int64(19), st.Copied)
	require.Equal(t, int64(1), st.GaveUp)
	p = f.problems()
	assert.True(t, current(p, "high_error_rate"), "a run with a failure resolves nothing")
	assert.True(t, current(p, "stale_mount"))

	// Nothing to do, no failed attempt, but a file still failed: still current.
	st = f.mustRun(o)
	require.Zero(t, st.Processed)
	require.True(t, st.Complete)
	p = f.problems()
	assert.True(t, current(p, "high_error_rate"), "a file is still failed")
	assert.True(t, current(p, "stale_mount"))

	for to := range moved {
		fix(to)
	}
	reset()
	logger, logs := captureLog(t)
	o.Logger = logger
	st = f.mustRun(o)
	require.Equal(t, int64(1), st.Copied)
	require.Zero(t, st.Errors)
	require.True(t, st.Complete)
	p = f.problems()
	for _, flag := range []string{"high_error_rate", "stale_mount"} {
		require.Contains(t, p, flag, "a resolved problem is kept")
		assert.False(t, current(p, flag), "%s still current after a full recovery: %v", flag, p[flag])
	}
	assert.True(t, current(p, "unrescued_bytes"), "the image's own problem is not the copier's to resolve")
	assert.Len(t, logs.lines("problems resolved"), 1)
	f.checkComplete()

	// Recorded again, a flag is current again.
	require.NoError(t, schema.MergeProblem(ctx, f.db, f.h, "stale_mount", map[string]any{"errno": "ESTALE"}))
	assert.True(t, current(f.problems(), "stale_mount"))
}
