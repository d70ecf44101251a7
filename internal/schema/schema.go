// Package schema owns NTT's PostgreSQL schema: numbered SQL migrations
// embedded in the binary, the version check every tool runs at start-up, and
// the creation of a medium's partition pair (inode_p_<h>, path_p_<h>) with
// its partition-to-partition foreign key and the index the seed looks for.
//
// Invariants:
//   - Migrate is idempotent and safe when several processes run it at once
//     (one transaction under an advisory lock; a migration is applied with
//     its version row or not at all).
//   - Require fails before any data is touched when the database is older or
//     newer than the code, naming the command that fixes it.
//   - Table and index names come only from medium.Hash, which is validated;
//     identifiers are built from it and never from caller text.
//   - medium.problems is NULL until a first problem, then merged into and
//     never overwritten (MergeProblem); a flag whose condition a later run
//     saw gone is kept with "resolved_at" (ResolveProblems), not removed.
package schema

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Version is the schema version this build of NTT reads and writes.
const Version = 4

// migrateLockKey is the advisory lock that serializes concurrent Migrate
// calls across processes ("NTT" + 1 in ASCII, any constant would do).
const migrateLockKey = 0x4e545401

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Querier is what this package needs of a connection, pool or transaction.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Beginner starts a transaction: *pgx.Conn, *pgxpool.Pool and pgx.Tx all do.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("schema: migration file %q is not named NNNN_name.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("schema: migrations must be numbered 1..n without gaps, found %s at position %d", m.name, i+1)
		}
	}
	if len(ms) != Version {
		return nil, fmt.Errorf("schema: %d migrations but this build says version %d", len(ms), Version)
	}
	return ms, nil
}

// Migrate brings the database to Version. It is a no-op on a current
// database and never downgrades.
func Migrate(ctx context.Context, db Beginner) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("schema: migrate: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit this is a no-op
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLockKey)); err != nil {
		return fmt.Errorf("schema: migrate: taking the migration lock: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("schema: migrate: creating schema_version: %w", err)
	}
	have, err := currentVersion(ctx, tx)
	if err != nil {
		return err
	}
	if have > len(ms) {
		e := &VersionError{Have: have, Want: len(ms)}
		tx.QueryRow(ctx, `SELECT current_database()`).Scan(&e.Database) //nolint:errcheck
		return e
	}
	for _, m := range ms[have:] {
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("schema: applying migration %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
			return fmt.Errorf("schema: recording migration %s: %w", m.name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("schema: migrate: commit: %w", err)
	}
	return nil
}

func currentVersion(ctx context.Context, q Querier) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('schema_version') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, fmt.Errorf("schema: reading the schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("schema: reading the schema version: %w", err)
	}
	return v, nil
}

// ErrVersion matches every *VersionError with errors.Is.
var ErrVersion = errors.New("schema version mismatch")

// VersionError says that the database's schema is not the one this code needs.
// The fix for the programs is `ntt-loader migrate`; library callers use
// Migrate.
type VersionError struct {
	Have, Want int
	// Database is the name of the database that was looked at
	// (current_database()), "" if unknown.
	Database string
}

func (e *VersionError) Error() string {
	db := "database"
	if e.Database != "" {
		db = fmt.Sprintf("database %q", e.Database)
	}
	if e.Have > e.Want {
		return fmt.Sprintf("%s has schema version %d, newer than this build of NTT understands (%d): upgrade NTT", db, e.Have, e.Want)
	}
	if e.Have == 0 {
		return fmt.Sprintf("%s has no NTT schema (need version %d): if it is the catalog, run `ntt-loader migrate` against it; "+
			"if not, name the catalog with --db or PGDATABASE", db, e.Want)
	}
	return fmt.Sprintf("%s has schema version %d, this build of NTT needs %d: run `ntt-loader migrate` against it to upgrade it", db, e.Have, e.Want)
}

func (e *VersionError) Is(target error) bool { return target == ErrVersion }

// Require returns a *VersionError unless the database is at version want.
func Require(ctx context.Context, q Querier, want int) error {
	have, err := currentVersion(ctx, q)
	if err != nil {
		return err
	}
	if have != want {
		e := &VersionError{Have: have, Want: want}
		// Best effort: the name makes "which database?" answerable.
		q.QueryRow(ctx, `SELECT current_database()`).Scan(&e.Database) //nolint:errcheck
		return e
	}
	return nil
}
