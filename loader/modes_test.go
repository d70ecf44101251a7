package loader

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5/pgxpool"
)

// firstRaw is the medium's first enumeration, mounted with dev 2049.
func firstRaw(t *testing.T) []byte {
	return rawOf(t,
		rec('d', 2049, 2, 3, rootA),
		rec('f', 2049, 10, 1, rootA+"/a"),
		rec('f', 2049, 11, 2, rootA+"/b"),
		rec('f', 2049, 11, 2, rootA+"/b-link"),
		rec('d', 2049, 12, 2, rootA+"/dir"),
		rec('f', 2049, 13, 1, rootA+"/dir/c"),
		rec('f', 2049, 14, 1, rootA+"/dir/d"),
	)
}

// markCopied gives the medium a copy state: two files copied, one claimed.
func markCopied(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	for _, q := range []string{
		`UPDATE inode SET copied = true, status = 'success', blobid = repeat('ab', 32), mime_type = 'text/plain', processed_at = now()
		WHERE medium_hash = $1 AND ino IN (10, 11)`,
		`UPDATE inode SET claimed_by = 'worker-1', claimed_at = now() WHERE medium_hash = $1 AND ino = 13`,
	} {
		if _, err := pool.Exec(context.Background(), q, hashA); err != nil {
			t.Fatal(err)
		}
	}
}

// rowsDump lists a medium's inode and path rows with every column.
func rowsDump(t *testing.T, pool *pgxpool.Pool, hash string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, q := range []string{
		`SELECT 'inode ' || dev || '/' || ino, row_to_json(i)::text FROM inode i WHERE medium_hash = $1`,
		`SELECT 'path ' || encode(path, 'escape'), row_to_json(p)::text FROM path p WHERE medium_hash = $1`,
	} {
		rows, err := pool.Query(context.Background(), q, hash)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				t.Fatal(err)
			}
			out[k] = v
		}
		rows.Close()
	}
	return out
}

// The production incident: loading a second raw file over a medium with
// rows — some already copied — is refused with the counts and the flags to
// use; Append keeps every existing row and its copy state and adds only
// new paths; Replace swaps everything, and the partitions stay identical
// to CreatePartitions' ones.
func TestModesOnPartlyCopiedMedium(t *testing.T) {
	pool := pgtest.New(t)
	mustLoad(t, pool, hashA, firstRaw(t), Options{})
	markCopied(t, pool)

	// The second enumeration: another mount (dev 2051), the same tree plus
	// new entries, one of them a duplicate and one excluded.
	ign, err := enumerate.NewMatcher([]string{`\.tmp$`})
	if err != nil {
		t.Fatal(err)
	}
	second := rawOf(t,
		rec('d', 2051, 2, 3, rootA),
		rec('f', 2051, 10, 1, rootA+"/a"),
		rec('f', 2051, 11, 3, rootA+"/b"),
		rec('f', 2051, 11, 3, rootA+"/b-link"),
		rec('f', 2051, 11, 3, rootA+"/b-link2"), // new hardlink of a copied file
		rec('d', 2051, 12, 2, rootA+"/dir"),
		rec('f', 2051, 13, 1, rootA+"/dir/c"),
		rec('f', 2051, 14, 1, rootA+"/dir/d"),
		rec('f', 2051, 20, 1, rootA+"/dir/new"),
		rec('f', 2051, 21, 1, rootA+"/dir/x.tmp"),
		rec('f', 2051, 20, 1, rootA+"/dir/new"), // duplicate
	)

	before := dbState(t, pool)
	_, err = tryLoad(t, pool, hashA, second, Options{Ignore: ign})
	var hr *HasRowsError
	if !errors.Is(err, ErrMediumHasRows) || !errors.As(err, &hr) {
		t.Fatalf("default mode over existing rows: err = %v, want HasRowsError", err)
	}
	if hr.Inodes != 6 || hr.Paths != 7 || hr.Copied != 2 {
		t.Errorf("HasRowsError counts = %+v, want 6 inodes (2 copied), 7 paths", hr)
	}
	for _, want := range []string{"--replace", "--append", "6 inodes", "2 of them copied", "7 paths", hashA} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q lacks %q", err, want)
		}
	}
	if after := dbState(t, pool); after != before {
		t.Fatalf("refused load changed the database")
	}

	old := rowsDump(t, pool, hashA)
	st := mustLoad(t, pool, hashA, second, Options{Mode: Append, Ignore: ign})
	if st.ExistingPaths != 7 || st.Paths != 3 || st.Inodes != 3 || st.DuplicatePaths != 1 || st.ExcludedPaths != 1 || st.ExcludedInodes != 1 || st.Records != 11 {
		t.Errorf("append stats = %+v, want 7 existing, 3 new paths, 3 new inodes, 1 duplicate, 1 excluded", st)
	}
	now := rowsDump(t, pool, hashA)
	for k, v := range old {
		if now[k] != v {
			t.Errorf("append changed %s:\n was %s\n now %s", k, v, now[k])
		}
	}
	ps := pathsOf(t, pool, hashA)
	if r := ps["/dir/new"]; r.Dev != 2051 || r.Ino != 20 || r.Exclude != nil {
		t.Errorf("/dir/new = %+v", r)
	}
	if r := ps["/b-link2"]; r.Dev != 2051 || r.Ino != 11 {
		t.Errorf("/b-link2 = %+v", r)
	}
	if r := ps["/dir/x.tmp"]; r.Exclude == nil || *r.Exclude != ExcludePatternMatch {
		t.Errorf("/dir/x.tmp = %+v", r)
	}
	ins := inodesOf(t, pool, hashA)
	if len(ins) != 9 {
		t.Errorf("after append: %d inodes, want 9", len(ins))
	}
	if r := ins[[2]int64{2051, 11}]; r.Copied || r.Status != "pending" || r.Nlink != 3 {
		t.Errorf("new inode of /b-link2 = %+v, want pending", r)
	}
	if r := ins[[2]int64{2051, 21}]; r.claimed() != ClaimedExcluded {
		t.Errorf("excluded new inode = %+v", r)
	}
	if r := ins[[2]int64{2049, 10}]; !r.Copied || r.Blobid == nil {
		t.Errorf("copied inode lost its state: %+v", r)
	}
	// Appending the same file again adds nothing.
	st = mustLoad(t, pool, hashA, second, Options{Mode: Append, Ignore: ign})
	if st.Paths != 0 || st.Inodes != 0 || st.ExistingPaths != 10 {
		t.Errorf("second append stats = %+v, want nothing new", st)
	}

	// Replace: the old rows and their copy state are gone, the new ones are
	// exactly the raw file's.
	third := rawOf(t, rec('d', 2052, 2, 2, rootA), rec('f', 2052, 30, 1, rootA+"/only"))
	st = mustLoad(t, pool, hashA, third, Options{Mode: Replace})
	if st.ReplacedInodes != 9 || st.ReplacedPaths != 10 || st.Inodes != 2 || st.Paths != 2 {
		t.Errorf("replace stats = %+v", st)
	}
	ins = inodesOf(t, pool, hashA)
	if len(ins) != 2 || ins[[2]int64{2052, 30}].Status != "pending" {
		t.Errorf("after replace: %+v", ins)
	}
	if err := schema.CheckAttached(context.Background(), pool, medium.MustParse(hashA)); err != nil {
		t.Error(err)
	}
	tx, err := pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.CreatePartitions(context.Background(), tx, medium.MustParse(hashB)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, b := describe(t, pool, hashA), describe(t, pool, hashB); a != b {
		t.Errorf("partitions after replace differ from CreatePartitions':\n%s\n---\n%s", a, b)
	}
}

// Partitions that exist but are empty (made by schema.CreatePartitions) are
// not "rows": the default mode loads into their place.
func TestEmptyExistingPartitions(t *testing.T) {
	pool := pgtest.New(t)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.CreatePartitions(ctx, tx, medium.MustParse(hashA)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []Mode{Refuse, Append} {
		if mode == Append {
			// Empty them again: the pair stays, the rows go.
			if _, err := pool.Exec(ctx, `DELETE FROM inode WHERE medium_hash = $1`, hashA); err != nil {
				t.Fatal(err)
			}
		}
		st := mustLoad(t, pool, hashA, firstRaw(t), Options{Mode: mode})
		if st.Inodes != 6 || st.Paths != 7 {
			t.Errorf("mode %v: stats %+v", mode, st)
		}
		if n := len(pathsOf(t, pool, hashA)); n != 7 {
			t.Errorf("mode %v: %d paths", mode, n)
		}
	}
}

// A detached partition, or a table of another medium sharing the 32-char
// prefix, stops the load before anything is written.
func TestPartitionSafetyCheck(t *testing.T) {
	pool := pgtest.New(t)
	ctx := context.Background()
	mustLoad(t, pool, hashA, firstRaw(t), Options{})
	if _, err := pool.Exec(ctx, `ALTER TABLE path DETACH PARTITION path_p_`+hashA); err != nil {
		t.Fatal(err)
	}
	before := dbState(t, pool)
	for _, mode := range []Mode{Refuse, Replace, Append} {
		_, err := tryLoad(t, pool, hashA, firstRaw(t), Options{Mode: mode})
		if !errors.Is(err, ErrNotAttached) || !strings.Contains(err.Error(), "path_p_"+hashA) {
			t.Errorf("mode %v: err = %v, want ErrNotAttached naming path_p_%s", mode, err, hashA)
		}
	}
	if dbState(t, pool) != before {
		t.Errorf("refused load changed the database")
	}

	long := hashA + "00000000" // 40 chars, same table names as hashA
	pool2 := pgtest.New(t)
	mustLoad(t, pool2, hashA, firstRaw(t), Options{})
	_, err := tryLoad(t, pool2, long, firstRaw(t), Options{Mode: Replace})
	if !errors.Is(err, ErrHashCollision) {
		t.Errorf("colliding hash: err = %v, want ErrHashCollision", err)
	}
}

// Records the catalog cannot hold are refused by number, naming the record.
func TestRecordsOutOfRange(t *testing.T) {
	pool := pgtest.New(t)
	cases := []struct {
		name, says string
		bad        enumerate.Record
		want       error
	}{
		{"dev", "dev 9223372036854775808", rec('f', 1<<63, 3, 1, rootA+"/a"), ErrOutOfRange},
		{"ino", "ino 18446744073709551615", rec('f', 5, 1<<64-1, 1, rootA+"/a"), ErrOutOfRange},
		{"nlink", "nlink 9223372036854775813", rec('f', 5, 3, 1<<63+5, rootA+"/a"), ErrOutOfRange},
		{"outside", `path "` + rootA + `x/a"`, rec('f', 5, 3, 1, rootA+"x/a"), ErrNotUnderRoot},
		{"elsewhere", `path "/etc/passwd"`, rec('f', 5, 3, 1, "/etc/passwd"), ErrNotUnderRoot},
	}
	for _, c := range cases {
		raw := rawOf(t, rec('d', 5, 2, 2, rootA), rec('f', 5, 9, 1, rootA+"/ok"), c.bad)
		before := dbState(t, pool)
		_, err := tryLoad(t, pool, hashA, raw, Options{})
		var re *RecordError
		if !errors.Is(err, c.want) || !errors.As(err, &re) || re.Index != 2 {
			t.Errorf("%s: err = %v, want %v at record 2", c.name, err, c.want)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("record 2 at byte %d", re.Offset)) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: message %q", c.name, err)
		}
		if dbState(t, pool) != before {
			t.Errorf("%s: database changed", c.name)
		}
	}
	// An explicit root: paths relative to it, the walk root's parent refused.
	st := mustLoad(t, pool, hashA, rawOf(t, rec('d', 5, 2, 2, rootA+"/"), rec('f', 5, 9, 1, rootA+"/ok")), Options{Root: rootA + "/"})
	if st.Root != rootA+"/" {
		t.Errorf("root = %q", st.Root)
	}
	if ps := pathsOf(t, pool, hashA); ps["/"].Ino != 2 || ps["/ok"].Ino != 9 {
		t.Errorf("paths with explicit root: %+v", ps)
	}
}
