package schema

import (
	"context"
	"fmt"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
)

// medium.problems is a JSON object of flags, each an object with the
// flag's details and "at" (when it was last recorded). It is NULL until a
// first problem is recorded and is merged into, never overwritten: a flag
// whose condition a later run found gone stays, marked with "resolved_at",
// so the history is kept while the flag no longer reads as current. A flag
// recorded again replaces its object (details, "at", no "resolved_at") and
// is current again.

// ResolvedAtKey is the key ResolveProblems adds inside a resolved flag's
// object. Current problems are the flags without it:
//
//	SELECT key FROM medium, jsonb_each(problems) WHERE NOT value ? 'resolved_at'
const ResolvedAtKey = "resolved_at"

// MergeProblem records a problem flag on the medium: medium.problems gets
// {flag: details + {"at": now}} merged in (other flags are kept; the same
// flag is replaced by its newest occurrence, which makes a resolved flag
// current again). The medium row is created if it does not exist yet, so a
// failure before loading is still recorded.
func MergeProblem(ctx context.Context, q Querier, h medium.Hash, flag string, details map[string]any) error {
	d := make(map[string]any, len(details)+1)
	for k, v := range details {
		if k != ResolvedAtKey {
			d[k] = v
		}
	}
	d["at"] = time.Now().UTC().Format(time.RFC3339Nano)
	patch := map[string]any{flag: d}
	_, err := q.Exec(ctx, `
		INSERT INTO medium (medium_hash, problems) VALUES ($1, $2::jsonb)
		ON CONFLICT (medium_hash) DO UPDATE
		SET problems = coalesce(medium.problems, '{}'::jsonb) || excluded.problems`, string(h), patch)
	if err != nil {
		return fmt.Errorf("medium %s: recording problem %q: %w", h, flag, err)
	}
	return nil
}

// ResolveProblems marks the named flags of the medium resolved, because
// the caller has just seen their condition gone: each flag that is present
// and current gets "resolved_at": now inside its object. Absent flags,
// flags already resolved (their first resolution time is kept) and flags
// whose value is not an object (written by hand, e.g. the seed's
// jsonb_build_object('enum_failed', true, …)) are left as they are; a
// missing medium row or NULL problems stay so. It returns the flags it
// marked.
func ResolveProblems(ctx context.Context, q Querier, h medium.Hash, flags ...string) ([]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	var resolved []string
	err := q.QueryRow(ctx, `
		WITH old AS (
			SELECT problems FROM medium WHERE medium_hash = $1 AND problems IS NOT NULL FOR UPDATE),
		hit AS (
			SELECT e.key FROM old, jsonb_each(old.problems) e
			WHERE e.key = ANY($2::text[]) AND jsonb_typeof(e.value) = 'object' AND NOT e.value ? $3),
		upd AS (
			UPDATE medium m SET problems = m.problems || (
				SELECT jsonb_object_agg(hit.key, m.problems->hit.key || jsonb_build_object($3::text, $4::text)) FROM hit)
			WHERE m.medium_hash = $1 AND EXISTS (SELECT 1 FROM hit))
		SELECT coalesce(array_agg(key ORDER BY key), '{}') FROM hit`,
		string(h), flags, ResolvedAtKey, time.Now().UTC().Format(time.RFC3339Nano)).Scan(&resolved)
	if err != nil {
		return nil, fmt.Errorf("medium %s: marking problems %v resolved: %w", h, flags, err)
	}
	return resolved, nil
}
