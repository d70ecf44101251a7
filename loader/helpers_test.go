package loader

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	hashA = "c9894f1681b5b542eb3a4b75967e9aea"
	hashB = "ece03c6779caa14be2b00d380add8475"
	rootA = "/mnt/ntt/" + hashA
)

// rec builds a record; mtime and size are derived from ino so that rows
// can be checked against their records.
func rec(typ byte, dev, ino, nlink uint64, path string) enumerate.Record {
	return enumerate.Record{Type: typ, Dev: dev, Ino: ino, Nlink: nlink,
		Size: int64(ino) * 10, Mtime: 1700000000 + int64(ino), Path: []byte(path)}
}

func rawOf(t testing.TB, recs ...enumerate.Record) []byte {
	t.Helper()
	var b bytes.Buffer
	w := enumerate.NewWriter(&b)
	for i := range recs {
		if err := w.Write(&recs[i]); err != nil {
			t.Fatalf("writing record %d: %v", i, err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func tryLoad(t testing.TB, pool *pgxpool.Pool, hash string, raw []byte, opts Options) (Stats, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return Load(ctx, pool, hash, bytes.NewReader(raw), opts)
}

func mustLoad(t testing.TB, pool *pgxpool.Pool, hash string, raw []byte, opts Options) Stats {
	t.Helper()
	st, err := tryLoad(t, pool, hash, raw, opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return st
}

type inodeRowDB struct {
	Dev, Ino    int64
	Type        string
	Nlink, Size int64
	Mtime       int64
	Copied      bool
	ClaimedBy   *string
	Status      string
	Blobid      *string
}

func (r inodeRowDB) claimed() string {
	if r.ClaimedBy == nil {
		return ""
	}
	return *r.ClaimedBy
}

type pathRowDB struct {
	Dev, Ino int64
	Path     []byte
	Exclude  *string
}

func inodesOf(t testing.TB, pool *pgxpool.Pool, hash string) map[[2]int64]inodeRowDB {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT dev, ino, fs_type, nlink, size, mtime, copied, claimed_by, status, blobid
		FROM inode WHERE medium_hash = $1`, hash)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	m := map[[2]int64]inodeRowDB{}
	for rows.Next() {
		var r inodeRowDB
		if err := rows.Scan(&r.Dev, &r.Ino, &r.Type, &r.Nlink, &r.Size, &r.Mtime, &r.Copied, &r.ClaimedBy, &r.Status, &r.Blobid); err != nil {
			t.Fatal(err)
		}
		m[[2]int64{r.Dev, r.Ino}] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

func pathsOf(t testing.TB, pool *pgxpool.Pool, hash string) map[string]pathRowDB {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT dev, ino, path, exclude_reason FROM path WHERE medium_hash = $1`, hash)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	m := map[string]pathRowDB{}
	for rows.Next() {
		var r pathRowDB
		if err := rows.Scan(&r.Dev, &r.Ino, &r.Path, &r.Exclude); err != nil {
			t.Fatal(err)
		}
		if _, dup := m[string(r.Path)]; dup {
			t.Fatalf("path %q stored twice", r.Path)
		}
		m[string(r.Path)] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// dbState is everything a failed load must leave as it was: the tables of
// the public schema with their partition bounds, the medium rows, and every
// inode and path row.
func dbState(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	ctx := context.Background()
	var b bytes.Buffer
	q := func(sql string) {
		rows, err := pool.Query(ctx, sql)
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
			lines = append(lines, fmt.Sprintf("%v", v))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		sort.Strings(lines)
		fmt.Fprintf(&b, "-- %s\n", sql)
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
	}
	q(`SELECT c.relname, c.relkind, coalesce(pg_get_expr(c.relpartbound, c.oid), '') FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'`)
	q(`SELECT conname, conrelid::regclass::text FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public'`)
	q(`SELECT medium_hash, medium_human, image_path, enum_root, enum_done, copy_done, problems FROM medium`)
	q(`SELECT medium_hash, dev, ino, fs_type, nlink, size, mtime, copied, claimed_by, status, blobid, error_count FROM inode`)
	q(`SELECT medium_hash, dev, ino, path, exclude_reason FROM path`)
	return b.String()
}

// onBothLoadPaths runs test for a small medium loaded directly into its
// partitions and again with its keys built before it is attached, the path
// of a large medium (see loadFresh).
func onBothLoadPaths(t *testing.T, test func(t *testing.T)) {
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			if !direct {
				defer func(n int) { directLoadRecords = n }(directLoadRecords)
				directLoadRecords = 0
			}
			test(t)
		})
	}
}
