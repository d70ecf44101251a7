package loader

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/jackc/pgx/v5/pgxpool"
)

// describe returns what a catalog says about a medium's partition pair,
// with the hash replaced by <h>: columns, constraints, indexes, triggers,
// partition bounds. Two pairs with equal descriptions are built alike.
func describe(t *testing.T, pool *pgxpool.Pool, hash string) string {
	t.Helper()
	ctx := context.Background()
	h := medium.MustParse(hash)
	var out []string
	add := func(sql string, args ...any) {
		rows, err := pool.Query(ctx, sql, args...)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		defer rows.Close()
		var lines []string
		for rows.Next() {
			v, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, strings.ReplaceAll(fmt.Sprint(v...), h.TableKey(), "<h>"))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		sort.Strings(lines)
		out = append(out, "-- "+strings.Join(strings.Fields(sql), " "))
		out = append(out, lines...)
	}
	for _, table := range []string{h.InodeTable(), h.PathTable()} {
		add(`SELECT c.relname, ' ', c.relkind, ' ', c.relispartition, ' ', c.relpersistence, ' ', coalesce(c.reloptions::text, ''), ' ',
			c.relreplident, ' ', pg_get_expr(c.relpartbound, c.oid), ' parent=', coalesce(i.inhparent::regclass::text, ''), ' am=', a.amname
			FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid LEFT JOIN pg_am a ON a.oid = c.relam WHERE c.oid = $1::regclass`, table)
		add(`SELECT a.attnum, ' ', a.attname, ' ', format_type(a.atttypid, a.atttypmod), ' notnull=', a.attnotnull, ' local=', a.attislocal,
			' inh=', a.attinhcount, ' storage=', a.attstorage, ' compression=', a.attcompression, ' default=', coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
			' stats=', a.attstattarget, ' collation=', a.attcollation
			FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
			WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`, table)
		add(`SELECT c.conname, ' ', c.contype, ' local=', c.conislocal, ' inh=', c.coninhcount, ' noinherit=', c.connoinherit,
			' valid=', c.convalidated, ' deferrable=', c.condeferrable, ' hasparent=', c.conparentid <> 0, ' ', pg_get_constraintdef(c.oid),
			' index=', coalesce(c.conindid::regclass::text, '')
			FROM pg_constraint c WHERE c.conrelid = $1::regclass`, table)
		add(`SELECT i.indexrelid::regclass::text, ' ', pg_get_indexdef(i.indexrelid), ' primary=', i.indisprimary, ' unique=', i.indisunique,
			' valid=', i.indisvalid, ' ready=', i.indisready, ' parent=', coalesce(h.inhparent::regclass::text, '')
			FROM pg_index i LEFT JOIN pg_inherits h ON h.inhrelid = i.indexrelid WHERE i.indrelid = $1::regclass`, table)
		add(`SELECT t.tgfoid::regproc::text, ' ', t.tgtype, ' ', t.tgenabled, ' ', t.tgisinternal, ' ', coalesce(c.conname, ''), ' ', t.tgdeferrable
			FROM pg_trigger t LEFT JOIN pg_constraint c ON c.oid = t.tgconstraint WHERE t.tgrelid = $1::regclass`, table)
		add(`SELECT indexname, ' ', indexdef FROM pg_indexes WHERE tablename = $1`, table)
	}
	return strings.Join(out, "\n")
}

// psqlDescribe runs the seed's verification command.
func psqlDescribe(t *testing.T, url, table, hash string) string {
	t.Helper()
	psql, err := exec.LookPath("psql")
	if err != nil {
		testenv.SkipOrFail(t, "psql not installed")
	}
	out, err := exec.Command(psql, "-X", "-d", url, "-c", `\d+ `+table).CombinedOutput()
	if err != nil {
		t.Fatalf("psql \\d+ %s: %v\n%s", table, err, out)
	}
	return strings.ReplaceAll(string(out), medium.MustParse(hash).TableKey(), "<h>")
}

// The partitions a load attaches are the ones schema.CreatePartitions
// makes, down to names, constraint and index flags, triggers and what the
// seed's `\d+` prints; the seed's verification queries answer as it
// expects. So for a medium loaded directly into its partitions and for one
// whose keys are built before it is attached.
func TestPartitionsMatchCreatePartitions(t *testing.T) {
	onBothLoadPaths(t, partitionsMatchCreatePartitions)
}

func partitionsMatchCreatePartitions(t *testing.T) {
	pool := pgtest.New(t)
	url := pool.Config().ConnString()
	ctx := context.Background()
	raw := rawOf(t, rec('d', 5, 2, 2, rootA), rec('f', 5, 3, 1, rootA+"/a"), rec('f', 5, 4, 2, rootA+"/b"), rec('f', 5, 4, 2, rootA+"/c"))
	mustLoad(t, pool, hashA, raw, Options{})

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.CreatePartitions(ctx, tx, medium.MustParse(hashB)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if a, b := describe(t, pool, hashA), describe(t, pool, hashB); a != b {
		t.Errorf("loaded partitions differ from CreatePartitions':\n--- loader\n%s\n--- CreatePartitions\n%s", a, b)
	}
	for _, table := range []string{"inode_p_", "path_p_"} {
		a, b := psqlDescribe(t, url, table+hashA, hashA), psqlDescribe(t, url, table+hashB, hashB)
		if a != b {
			t.Errorf("\\d+ %s<h> differs:\n--- loader\n%s\n--- CreatePartitions\n%s", table, a, b)
		}
		if !strings.Contains(a, "Partition of: ") || !strings.Contains(a, "FOR VALUES IN ('<h>')") {
			t.Errorf("\\d+ %s%s does not show an attached partition:\n%s", table, hashA, a)
		}
	}

	// The seed's queries.
	var inodes, paths int64
	if err := pool.QueryRow(ctx, `SELECT
		(SELECT COUNT(*) FROM inode WHERE medium_hash = '`+hashA+`') as inodes,
		(SELECT COUNT(*) FROM path WHERE medium_hash = '`+hashA+`') as paths`).Scan(&inodes, &paths); err != nil {
		t.Fatal(err)
	}
	if inodes != 3 || paths != 4 {
		t.Errorf("seed count query: inodes %d paths %d, want 3 and 4", inodes, paths)
	}
	rows, err := pool.Query(ctx, `SELECT indexname FROM pg_indexes WHERE tablename = 'path_p_`+hashA+`' AND indexname LIKE '%fk%'`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := collectStrings(rows)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "path_p_"+hashA+"_fk_idx" {
		t.Errorf("seed FK-index query = %v, want [path_p_%s_fk_idx]", names, hashA)
	}
	// A second CreatePartitions on the loaded medium is a no-op (it
	// recognizes the pair as its own).
	tx, err = pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := schema.CreatePartitions(ctx, tx, medium.MustParse(hashA)); err != nil {
		t.Errorf("CreatePartitions after a load: %v", err)
	}
}

func collectStrings(rows interface {
	Next() bool
	Scan(...any) error
	Err() error
	Close()
}) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
