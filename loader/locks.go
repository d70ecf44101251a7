package loader

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// lockTable takes a table lock explicitly before the statement that needs
// it, so that a lock timeout can say which table, in which mode and why.
// only locks a partitioned parent without its partitions (other media's
// partitions are none of the load's business).
func (l *load) lockTable(ctx context.Context, table string, only bool, mode, purpose string) error {
	kw := ""
	if only {
		kw = "ONLY "
	}
	// table is "inode", "path" or a name derived from the validated hash.
	if _, err := l.tx.Exec(ctx, fmt.Sprintf(`LOCK TABLE %s%s IN %s MODE`, kw, table, mode)); err != nil {
		if isLockTimeout(err) {
			return l.lockTimeoutError(ctx, "table "+table, mode, purpose, err,
				func(ctx context.Context, c *pgxpool.Conn) ([]Blocker, error) {
					return tableHolders(ctx, c, table, mode, l.pid)
				})
		}
		return l.sqlErr(ctx, fmt.Sprintf("locking table %s in %s mode (%s)", table, mode, purpose), err)
	}
	return nil
}

// lockTimeoutError builds the error, asking a second connection who holds
// the lock (the load's own transaction is aborted by then).
func (l *load) lockTimeoutError(ctx context.Context, object, mode, purpose string, err error,
	holders func(context.Context, *pgxpool.Conn) ([]Blocker, error)) error {
	e := &LockTimeoutError{Medium: string(l.h), Object: object, Mode: mode, Purpose: purpose, Timeout: l.lockTimeout, Err: err}
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	c, aerr := l.db.Acquire(qctx)
	if aerr != nil {
		return e
	}
	defer c.Release()
	if bs, herr := holders(qctx, c); herr == nil {
		e.Blockers = bs
	}
	return e
}

const holderColumns = `l.pid, l.mode, coalesce(a.application_name, ''), coalesce(a.state, ''),
	coalesce(extract(epoch FROM now() - a.xact_start), 0)::float8, left(coalesce(a.query, ''), 160)`

// conflicts lists, for each mode the loader asks for, the held modes that
// keep it waiting (PostgreSQL's table-level lock conflict matrix).
var conflicts = map[string][]string{
	"ACCESS SHARE":           {"AccessExclusiveLock"},
	"ROW EXCLUSIVE":          {"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"},
	"SHARE UPDATE EXCLUSIVE": {"ShareUpdateExclusiveLock", "ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"},
	"ACCESS EXCLUSIVE": {"AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock",
		"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"},
}

func tableHolders(ctx context.Context, c *pgxpool.Conn, table, mode string, self uint32) ([]Blocker, error) {
	return holdersQuery(ctx, c, `SELECT `+holderColumns+`
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'relation' AND l.granted AND l.pid <> $1
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND l.relation = to_regclass($2) AND l.mode = ANY($3)
		ORDER BY a.xact_start NULLS LAST, l.pid`, self, table, conflicts[mode])
}

func advisoryHolders(ctx context.Context, c *pgxpool.Conn, key string, self uint32) ([]Blocker, error) {
	// A bigint advisory key shows in pg_locks as classid (high 32 bits),
	// objid (low 32 bits) and objsubid 1.
	return holdersQuery(ctx, c, `SELECT `+holderColumns+`
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> $1 AND l.objsubid = 1
		  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($2, 0)
		ORDER BY l.pid`, self, key)
}

func holdersQuery(ctx context.Context, c *pgxpool.Conn, sql string, args ...any) ([]Blocker, error) {
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var bs []Blocker
	for rows.Next() {
		var b Blocker
		var age float64
		if err := rows.Scan(&b.PID, &b.Mode, &b.Application, &b.State, &age, &b.Query); err != nil {
			return nil, err
		}
		b.InXact = time.Duration(age * float64(time.Second))
		bs = append(bs, b)
	}
	return bs, rows.Err()
}
