package diagnose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/schema"
)

// MaxInodeErrors is how many error messages inode.errors keeps (the newest);
// inode.error_count counts them all. One inode once logged 188,000.
const MaxInodeErrors = 10

// ErrNoInode says that the catalog has no row for the inode.
var ErrNoInode = errors.New("inode not in catalog")

// AppendInodeError adds message to the inode's errors, keeping the newest
// MaxInodeErrors, counts it in error_count and sets error_type. Bytes that
// PostgreSQL text cannot hold (invalid UTF-8 from hostile file names, NUL)
// are written as \xNN.
func AppendInodeError(ctx context.Context, q schema.Querier, k Key, errorType, message string) error {
	if _, err := medium.Parse(string(k.Medium)); err != nil {
		return err
	}
	tag, err := q.Exec(ctx, `
		UPDATE inode SET
			errors = (coalesce(errors, '{}') || $4::text)
				[greatest(1, cardinality(coalesce(errors, '{}')) + 2 - $6::int):],
			error_count = error_count + 1,
			error_type = $5
		WHERE medium_hash = $1 AND dev = $2 AND ino = $3`,
		string(k.Medium), k.Dev, k.Ino, DBText(message), errorType, MaxInodeErrors)
	if err != nil {
		return fmt.Errorf("%s: recording error: %w", k, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: recording error: %w", k, ErrNoInode)
	}
	return nil
}

// RecordEvent inserts d as a diagnostic_event row (action, checks, retry
// count, worker, exception).
func RecordEvent(ctx context.Context, q schema.Querier, d Decision) error {
	if _, err := medium.Parse(string(d.Key.Medium)); err != nil {
		return err
	}
	if d.WorkerID != DBText(d.WorkerID) {
		return fmt.Errorf("%s: worker id %q is not valid text", d.Key, d.WorkerID)
	}
	at := d.At
	if at.IsZero() {
		at = time.Now()
	}
	_, err := q.Exec(ctx, `
		INSERT INTO diagnostic_event (medium_hash, dev, ino, at, worker_id, retry_count, checks, action, exception)
		VALUES ($1, $2, $3, $4, nullif($5, ''), $6, $7::jsonb, $8, nullif($9, ''))`,
		string(d.Key.Medium), d.Key.Dev, d.Key.Ino, at, d.WorkerID, d.RetryCount,
		string(d.ChecksJSON()), d.Action.String(), DBText(d.Exception))
	if err != nil {
		return fmt.Errorf("%s: recording diagnostic event: %w", d.Key, err)
	}
	return nil
}

// RecordDamage stores a file's damaged ranges in inode.damage (NULL when
// there are none).
func RecordDamage(ctx context.Context, q schema.Querier, k Key, damage []Damage) error {
	if _, err := medium.Parse(string(k.Medium)); err != nil {
		return err
	}
	var v any
	if len(damage) > 0 {
		b, err := json.Marshal(damage)
		if err != nil {
			return err
		}
		v = string(b)
	}
	tag, err := q.Exec(ctx, `UPDATE inode SET damage = $4::jsonb WHERE medium_hash = $1 AND dev = $2 AND ino = $3`,
		string(k.Medium), k.Dev, k.Ino, v)
	if err != nil {
		return fmt.Errorf("%s: recording damage: %w", k, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: recording damage: %w", k, ErrNoInode)
	}
	return nil
}

// RecordDecision writes what d means for the catalog, apart from the
// inode's state (the copier's business, see MarkFinal): the error in the
// inode's capped list, a diagnostic_event row at the checkpoint and at the
// final decision, the damage found, and d.Problem merged into
// medium.problems. Settled decisions record nothing.
func RecordDecision(ctx context.Context, q schema.Querier, d Decision) error {
	if d.Action == Settled {
		return nil
	}
	msg := fmt.Sprintf("%s %s: %s", d.At.UTC().Format(time.RFC3339), d.Class, d.Exception)
	if err := AppendInodeError(ctx, q, d.Key, d.ErrorType(), msg); err != nil {
		return err
	}
	if d.NeedsEvent() {
		if err := RecordEvent(ctx, q, d); err != nil {
			return err
		}
	}
	if len(d.Damage) > 0 {
		if err := RecordDamage(ctx, q, d.Key, d.Damage); err != nil {
			return err
		}
	}
	if d.Problem != "" {
		details := map[string]any{
			"dev": d.Key.Dev, "ino": d.Key.Ino, "class": d.Class.String(),
			"action": d.Action.String(), "retry_count": d.RetryCount,
		}
		for _, c := range d.Checks {
			if c.Name == KernelLogCheck && len(c.Lines) > 0 {
				details["kernel_log"] = DBText(c.Lines[len(c.Lines)-1])
			}
		}
		if err := schema.MergeProblem(ctx, q, medium.Hash(d.Key.Medium), d.Problem, details); err != nil {
			return err
		}
	}
	return nil
}

// MarkFinal puts a final decision into the inode row: copied, claimed_by
// DIAGNOSTIC_SKIP:<CLASS> for a skip or NULL when giving up, the status,
// error_type and processed_at (the design's "auto-skipped" and "gave up"
// states). Decisions that are not final are an error.
func MarkFinal(ctx context.Context, q schema.Querier, d Decision) error {
	if !d.Final() {
		return fmt.Errorf("%s: decision %s is not final", d.Key, d.Action)
	}
	if _, err := medium.Parse(string(d.Key.Medium)); err != nil {
		return err
	}
	tag, err := q.Exec(ctx, `
		UPDATE inode SET copied = true, claimed_by = nullif($4, ''), claimed_at = NULL,
			status = $5, error_type = $6, processed_at = now()
		WHERE medium_hash = $1 AND dev = $2 AND ino = $3`,
		string(d.Key.Medium), d.Key.Dev, d.Key.Ino, d.ClaimedBy, d.Status, d.ErrorType())
	if err != nil {
		return fmt.Errorf("%s: marking %s: %w", d.Key, d.Action, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: marking %s: %w", d.Key, d.Action, ErrNoInode)
	}
	return nil
}

// RecordHealth stores the medium's health from its mapfile (recomputed on
// every run; unknown is NULL) and, when bytes were not rescued, merges an
// "unrescued_bytes" problem with the figures.
func RecordHealth(ctx context.Context, q schema.Querier, hash string, r HealthReport) error {
	h, err := medium.Parse(hash)
	if err != nil {
		return err
	}
	_, err = q.Exec(ctx, `
		INSERT INTO medium (medium_hash, health) VALUES ($1, $2)
		ON CONFLICT (medium_hash) DO UPDATE SET health = excluded.health`, string(h), r.Health.DBValue())
	if err != nil {
		return fmt.Errorf("medium %s: recording health: %w", h, err)
	}
	if r.Present && r.BadBytes > 0 {
		return schema.MergeProblem(ctx, q, h, "unrescued_bytes", map[string]any{
			"health": string(r.Health), "rescued_pct": r.RescuedPct,
			"bad_ranges": r.BadRanges, "bad_bytes": r.BadBytes,
		})
	}
	return nil
}

// DBText makes s storable in a PostgreSQL text or jsonb value: valid UTF-8
// passes unchanged; each invalid byte and NUL becomes the four characters
// \xNN (a backslash is written as \\ only when escaping was needed, so
// that the escapes stay unambiguous).
func DBText(s string) string {
	clean := utf8.ValidString(s) && !strings.ContainsRune(s, 0)
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1, r == 0:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
