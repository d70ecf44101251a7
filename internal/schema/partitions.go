package schema

import (
	"context"
	"errors"
	"fmt"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/jackc/pgx/v5"
)

// ErrNotAttached is returned when a medium's partition table exists but is
// not attached to its parent table: rows written to it would be invisible
// to every query on inode/path (the seed's loader safety check).
var ErrNotAttached = errors.New("partition not attached to its parent")

// ErrHashCollision is returned when a table named after the first 32 hex
// characters of h already holds another medium whose hash shares them.
var ErrHashCollision = errors.New("medium hashes share their table name")

// PartitionFK is the name of the path→inode foreign key of a medium's pair.
func PartitionFK(h medium.Hash) string { return h.PathTable() + "_fk" }

// CreatePartitions creates the medium's partition pair attached to inode
// and path, the partition-to-partition foreign key (ON DELETE CASCADE) and
// the index path_p_<h>_fk_idx. It is idempotent and serializes with other
// callers for the same medium through a transaction-level advisory lock, so
// run it inside the caller's transaction.
func CreatePartitions(ctx context.Context, tx pgx.Tx, h medium.Hash) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "ntt-partitions:"+h.TableKey()); err != nil {
		return fmt.Errorf("medium %s: locking partition creation: %w", h, err)
	}
	for _, t := range []struct{ parent, table string }{{"inode", h.InodeTable()}, {"path", h.PathTable()}} {
		bound, exists, err := partitionBound(ctx, tx, t.table)
		if err != nil {
			return fmt.Errorf("medium %s: %w", h, err)
		}
		if exists {
			if err := checkBound(h, t.table, bound); err != nil {
				return err
			}
			continue
		}
		// Identifiers are safe: they are derived from a validated medium.Hash.
		sql := fmt.Sprintf(`CREATE TABLE %s PARTITION OF %s FOR VALUES IN ('%s')`, t.table, t.parent, h)
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("medium %s: creating %s: %w", h, t.table, err)
		}
	}
	var hasFK bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2))`,
		PartitionFK(h), h.PathTable()).Scan(&hasFK); err != nil {
		return fmt.Errorf("medium %s: looking up %s: %w", h, PartitionFK(h), err)
	}
	if !hasFK {
		sql := fmt.Sprintf(`ALTER TABLE %s ADD CONSTRAINT %s FOREIGN KEY (medium_hash, dev, ino) REFERENCES %s (medium_hash, dev, ino) ON DELETE CASCADE`,
			h.PathTable(), PartitionFK(h), h.InodeTable())
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("medium %s: adding the path→inode foreign key: %w", h, err)
		}
	}
	sql := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s ON %s (medium_hash, dev, ino)`, h.PathFKIndex(), h.PathTable())
	if _, err := tx.Exec(ctx, sql); err != nil {
		return fmt.Errorf("medium %s: creating index %s: %w", h, h.PathFKIndex(), err)
	}
	return nil
}

// partitionBound returns the partition bound of table ("" when the table
// exists but is detached) and whether the table exists.
func partitionBound(ctx context.Context, q Querier, table string) (bound string, exists bool, err error) {
	var b *string
	err = q.QueryRow(ctx, `SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.oid = to_regclass($1)`, table).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("looking up table %s: %w", table, err)
	}
	if b == nil {
		return "", true, nil
	}
	return *b, true, nil
}

func checkBound(h medium.Hash, table, bound string) error {
	if bound == "" {
		return fmt.Errorf("medium %s: table %s exists but is %w (ALTER TABLE … ATTACH PARTITION, or drop it)", h, table, ErrNotAttached)
	}
	if bound != fmt.Sprintf("FOR VALUES IN ('%s')", h) {
		return fmt.Errorf("medium %s: table %s belongs to another medium (%s): %w", h, table, bound, ErrHashCollision)
	}
	return nil
}

// CheckAttached verifies that both of the medium's partitions exist and are
// attached to inode and path for exactly this medium.
func CheckAttached(ctx context.Context, q Querier, h medium.Hash) error {
	for _, table := range []string{h.InodeTable(), h.PathTable()} {
		bound, exists, err := partitionBound(ctx, q, table)
		if err != nil {
			return fmt.Errorf("medium %s: %w", h, err)
		}
		if !exists {
			return fmt.Errorf("medium %s: table %s does not exist: %w", h, table, ErrNotAttached)
		}
		if err := checkBound(h, table, bound); err != nil {
			return err
		}
	}
	return nil
}
