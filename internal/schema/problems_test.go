package schema_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/stretchr/testify/require"
)

func problemsOf(t *testing.T, q schema.Querier, h string) map[string]map[string]any {
	t.Helper()
	var raw []byte
	require.NoError(t, q.QueryRow(context.Background(), `SELECT problems FROM medium WHERE medium_hash = $1`, h).Scan(&raw))
	if raw == nil {
		return nil
	}
	var m map[string]map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	return m
}

// The runbook's stale problems: a flag recorded by an earlier run stays in
// medium.problems, marked resolved (with when) once a later run saw its
// condition gone; recorded again it is current again; flags not named,
// and media without problems, are left alone.
func TestResolveProblemsKeepsHistoryAndNullRule(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	h := medium.MustParse(seedHash)
	other := medium.MustParse("ece03c6779caa14be2b00d380add8475")

	// A medium without problems stays NULL (the seed's pre-flight expects it).
	_, err := db.Exec(ctx, `INSERT INTO medium (medium_hash) VALUES ($1)`, string(other))
	require.NoError(t, err)
	got, err := schema.ResolveProblems(ctx, db, other, "ddrescue_running")
	require.NoError(t, err)
	require.Empty(t, got)
	require.Nil(t, problemsOf(t, db, string(other)))
	// No medium row: nothing created.
	got, err = schema.ResolveProblems(ctx, db, medium.MustParse("0123456789abcdef0123456789abcdef"), "stale_mount")
	require.NoError(t, err)
	require.Empty(t, got)
	var n int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM medium`).Scan(&n))
	require.Equal(t, 1, n)

	require.NoError(t, schema.MergeProblem(ctx, db, h, "ddrescue_running", map[string]any{"error": "ddrescue (pid 42) is still writing this image"}))
	require.NoError(t, schema.MergeProblem(ctx, db, h, "high_error_rate", map[string]any{"failed": 12}))
	require.NoError(t, schema.MergeProblem(ctx, db, h, "unrescued_bytes", map[string]any{"bad_bytes": 4096}))

	got, err = schema.ResolveProblems(ctx, db, h, "ddrescue_running", "high_error_rate", "stale_mount")
	require.NoError(t, err)
	require.Equal(t, []string{"ddrescue_running", "high_error_rate"}, got, "only present flags are resolved")
	p := problemsOf(t, db, string(h))
	require.Len(t, p, 3, "resolved flags are kept, never removed")
	first, ok := p["ddrescue_running"][schema.ResolvedAtKey].(string)
	require.True(t, ok, "ddrescue_running has resolved_at: %v", p["ddrescue_running"])
	require.Equal(t, "ddrescue (pid 42) is still writing this image", p["ddrescue_running"]["error"], "details kept")
	require.NotNil(t, p["ddrescue_running"]["at"])
	require.NotNil(t, p["high_error_rate"][schema.ResolvedAtKey])
	require.NotContains(t, p["unrescued_bytes"], schema.ResolvedAtKey, "a flag not named stays current")

	// Resolving again keeps the first resolution time.
	got, err = schema.ResolveProblems(ctx, db, h, "ddrescue_running")
	require.NoError(t, err)
	require.Empty(t, got)
	require.Equal(t, first, problemsOf(t, db, string(h))["ddrescue_running"][schema.ResolvedAtKey])

	// Recorded again: current again.
	require.NoError(t, schema.MergeProblem(ctx, db, h, "ddrescue_running", map[string]any{"error": "again"}))
	p = problemsOf(t, db, string(h))
	require.NotContains(t, p["ddrescue_running"], schema.ResolvedAtKey)
	require.Equal(t, "again", p["ddrescue_running"]["error"])

	// The documented query lists current problems only.
	rows, err := db.Query(ctx, `SELECT key FROM medium, jsonb_each(problems) WHERE medium_hash = $1 AND NOT value ? 'resolved_at' ORDER BY key`, string(h))
	require.NoError(t, err)
	var current []string
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		current = append(current, k)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"ddrescue_running", "unrescued_bytes"}, current)
}

// A hand-written seed-style flag (not an object) is left as it is.
func TestResolveProblemsLeavesHandWrittenFlags(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t)
	_, err := db.Exec(ctx, `INSERT INTO medium (medium_hash, problems) VALUES ($1, jsonb_build_object('enum_failed', true, 'error', 'x'))`, seedHash)
	require.NoError(t, err)
	got, err := schema.ResolveProblems(ctx, db, medium.MustParse(seedHash), "enum_failed")
	require.NoError(t, err)
	require.Empty(t, got)
	var s string
	require.NoError(t, db.QueryRow(ctx, `SELECT problems::text FROM medium`).Scan(&s))
	require.JSONEq(t, `{"enum_failed": true, "error": "x"}`, s)
}
