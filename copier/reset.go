package copier

import (
	"context"
	"fmt"
	"slices"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/jackc/pgx/v5"
)

// ErrorTypes are the schema's inode.error_type values.
var ErrorTypes = []string{"path_error", "io_error", "hash_error", "permission_error", "unknown"}

// ResetOptions select the failed rows to reset.
type ResetOptions struct {
	// ErrorType limits the reset to one error_type ("" = all).
	ErrorType string
	// IncludePermanent takes back failed_permanent rows too (auto-skipped
	// or given up as unreadable): after the medium was re-imaged or
	// remounted whole, or when a dead source made files look unreadable.
	IncludePermanent bool
	// Apply does the reset; without it ResetFailed only counts (dry run).
	Apply bool
}

// ResetResult counts the rows reset (or that would be), by error_type.
type ResetResult struct {
	ByErrorType map[string]int64
	ByStatus    map[string]int64 // failed_retryable, failed_permanent
	Total       int64
	Applied     bool
}

// ResetFailed puts a medium's failed_retryable inodes (optionally of one
// error_type) back to pending, so that the next copy retries them: after a
// fixable cause (a path problem, a mount that was not there) is fixed, the
// files are not stranded. Their errors stay as history; error_count starts
// again from zero so the retry budget is whole. failed_permanent rows
// (auto-skipped, unreadable data) are reset only with
// opts.IncludePermanent. Without opts.Apply nothing changes: the result
// says what would be reset.
func ResetFailed(ctx context.Context, db querier, hash string, opts ResetOptions) (ResetResult, error) {
	h, err := medium.Parse(hash)
	if err != nil {
		return ResetResult{}, err
	}
	if opts.ErrorType != "" && !slices.Contains(ErrorTypes, opts.ErrorType) {
		return ResetResult{}, fmt.Errorf("%w: error type %q: want one of %v", ErrInvalidOptions, opts.ErrorType, ErrorTypes)
	}
	var sql string
	if opts.Apply {
		sql = fmt.Sprintf(`
			WITH o AS (
				SELECT dev, ino, status FROM %[1]s
				WHERE medium_hash = $1 AND (status = 'failed_retryable' OR $3 AND status = 'failed_permanent')
				  AND ($2 = '' OR error_type = $2)
				FOR UPDATE),
			u AS (
				UPDATE %[1]s AS i SET copied = false, status = 'pending', claimed_by = NULL, claimed_at = NULL,
					processed_at = NULL, error_count = 0
				FROM o WHERE i.medium_hash = $1 AND i.dev = o.dev AND i.ino = o.ino
				RETURNING i.error_type, o.status)
			SELECT coalesce(error_type, 'unknown'), status, count(*) FROM u GROUP BY 1, 2`, h.InodeTable())
	} else {
		sql = fmt.Sprintf(`
			SELECT coalesce(error_type, 'unknown'), status, count(*) FROM %s
			WHERE medium_hash = $1 AND (status = 'failed_retryable' OR $3 AND status = 'failed_permanent')
			  AND ($2 = '' OR error_type = $2)
			GROUP BY 1, 2`, h.InodeTable())
	}
	rows, err := db.Query(ctx, sql, string(h), opts.ErrorType, opts.IncludePermanent)
	if err != nil {
		return ResetResult{}, fmt.Errorf("medium %s: resetting failed inodes: %w", h, err)
	}
	res := ResetResult{ByErrorType: map[string]int64{}, ByStatus: map[string]int64{}, Applied: opts.Apply}
	var t, status string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&t, &status, &n}, func() error {
		res.ByErrorType[t] += n
		res.ByStatus[status] += n
		res.Total += n
		return nil
	})
	if err != nil {
		return ResetResult{}, fmt.Errorf("medium %s: resetting failed inodes: %w", h, err)
	}
	return res, nil
}
