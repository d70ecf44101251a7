package schema

import (
	"context"
	"fmt"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
)

// MergeProblem records a problem flag on the medium: medium.problems gets
// {flag: details + {"at": now}} merged in (other flags are kept; the same
// flag is replaced by its newest occurrence). The medium row is created if
// it does not exist yet, so a failure before loading is still recorded.
func MergeProblem(ctx context.Context, q Querier, h medium.Hash, flag string, details map[string]any) error {
	d := make(map[string]any, len(details)+1)
	for k, v := range details {
		d[k] = v
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
