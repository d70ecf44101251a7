package copier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// benchMedium loads a medium of n file inodes (one path each) straight into
// its partitions and leaves them as the loader does: frozen and analyzed.
func benchMedium(b testing.TB, n int) (*pgxpool.Pool, medium.Hash) {
	b.Helper()
	db := pgtest.New(b)
	h := medium.MustParse("00000000000000000000000000c1a1e5")
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if err := schema.CreatePartitions(ctx, tx, h); err != nil {
			return err
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{h.InodeTable()},
			[]string{"medium_hash", "dev", "ino", "fs_type", "nlink", "size", "mtime"},
			pgx.CopyFromSlice(n, func(i int) ([]any, error) {
				return []any{string(h), int64(2049), int64(i + 12), "f", int64(1), int64(i % 5000), int64(1700000000)}, nil
			}))
		if err != nil {
			return err
		}
		_, err = tx.CopyFrom(ctx, pgx.Identifier{h.PathTable()},
			[]string{"medium_hash", "dev", "ino", "path"},
			pgx.CopyFromSlice(n, func(i int) ([]any, error) {
				return []any{string(h), int64(2049), int64(i + 12), []byte(fmt.Sprintf("/d%04d/f%07d", i/1000, i))}, nil
			}))
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	// The loader copies WITH (FREEZE): its rows are frozen and their pages
	// all-visible. Rows copied here are not, so the claims would pay for
	// setting their hint bits (and race autovacuum doing it): freeze them.
	if _, err := db.Exec(ctx, "VACUUM (FREEZE, ANALYZE) "+h.InodeTable()+", "+h.PathTable()); err != nil {
		b.Fatal(err)
	}
	if err := ensureIndexes(ctx, db, h); err != nil {
		b.Fatal(err)
	}
	return db, h
}

// BenchmarkClaim measures one batch claim (100 inodes with their paths) on
// a 1M-inode medium while the copy progresses: each claimed batch is then
// marked copied (not timed), so later claims run against a medium that is
// partly done, as in a real copy. Reports the median claim latency.
func BenchmarkClaim(b *testing.B) {
	const n, batch = 1_000_000, 100
	db, h := benchMedium(b, n)
	ctx := context.Background()
	done := fmt.Sprintf(`UPDATE %s AS i SET copied = true, status = 'success', claimed_by = NULL, claimed_at = NULL
		FROM unnest($2::bigint[], $3::bigint[]) AS u(dev, ino)
		WHERE i.medium_hash = $1 AND i.dev = u.dev AND i.ino = u.ino`, h.InodeTable())
	// One connection, as one worker's claims mostly are, so that its
	// prepared statement's plan cache is what is measured.
	conn, err := db.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	lat := timeTakes(b, func(after key) ([]*inode, error) {
		return claimBatch(ctx, conn, h, "bench", time.Minute, after, batch, false)
	}, func(got []*inode) error {
		devs, inos := batchKeys(got)
		_, err := db.Exec(ctx, done, string(h), devs, inos)
		return err
	})
	if b.N > 10 {
		// Planning the claim anew each time costs a sixth of it (see claimSQL).
		var generic int64
		if err := conn.QueryRow(ctx, `SELECT coalesce(sum(generic_plans), 0) FROM pg_prepared_statements
			WHERE statement LIKE '%FOR UPDATE SKIP LOCKED%'`).Scan(&generic); err != nil {
			b.Fatal(err)
		}
		if generic == 0 {
			b.Fatal("the claim is planned anew at each execution")
		}
	}
	reportClaims(b, lat)
}

// timeTakes times b.N calls of take, a batch from a cursor that moves along
// the medium (back to its start at the end); each batch taken is then
// settled, untimed (marked copied, so that later takes find a medium partly
// done, as in a real copy).
func timeTakes(b *testing.B, take func(after key) ([]*inode, error), settle func([]*inode) error) []time.Duration {
	cursor := cursorStart
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		got, err := take(cursor)
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		if len(got) == 0 {
			cursor = cursorStart
			continue
		}
		cursor = got[len(got)-1].key()
		b.StopTimer()
		if err := settle(got); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	return lat
}

// batchKeys is a batch's keys as the arrays the catalog's statements take.
func batchKeys(batch []*inode) (devs, inos []int64) {
	keys := make([]key, len(batch))
	for i, n := range batch {
		keys[i] = n.key()
	}
	return splitKeys(keys)
}

// reportClaims reports the median and p99 of the claims' latencies, which
// bench/copy.sh reads.
func reportClaims(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-median/claim")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "ms-p99/claim")
}

// BenchmarkHold is BenchmarkClaim for a batch held by row lock, the way
// a worker takes a batch of small files (see Holds): the hold (its BEGIN
// and the locking statement, one round trip) is timed; marking the batch
// copied and committing, the batch's commit, is not.
func BenchmarkHold(b *testing.B) {
	const n, batch = 1_000_000, 100
	db, h := benchMedium(b, n)
	ctx := context.Background()
	done := fmt.Sprintf(`UPDATE %s AS i SET copied = true, status = 'success'
		FROM unnest($2::bigint[], $3::bigint[]) AS u(dev, ino)
		WHERE i.medium_hash = $1 AND i.dev = u.dev AND i.ino = u.ino`, h.InodeTable())
	var held *hold
	lat := timeTakes(b, func(after key) (got []*inode, err error) {
		got, held, _, err = holdBatch(ctx, db, h, "bench", after, batch, func() {})
		if err == nil && len(got) > 0 && held == nil {
			err = errors.New("a batch of small files was claimed, not held")
		}
		return got, err
	}, func(got []*inode) error {
		defer held.end()
		devs, inos := batchKeys(got)
		if _, err := held.conn.Exec(ctx, done, string(h), devs, inos); err != nil {
			return err
		}
		if err := commitOpen(ctx, held.conn); err != nil {
			return err
		}
		held.open = false
		return nil
	})
	reportClaims(b, lat)
}

// BenchmarkClaimDeepIntoMedium is BenchmarkClaim when 90 % of the 1M
// inodes are copied already: the claim must not scan what is done.
func BenchmarkClaimDeepIntoMedium(b *testing.B) {
	const n, batch = 1_000_000, 100
	db, h := benchMedium(b, n)
	ctx := context.Background()
	if _, err := db.Exec(ctx, fmt.Sprintf(`UPDATE %s SET copied = true, status = 'success' WHERE ino < $1`, h.InodeTable()), int64(n*9/10)); err != nil {
		b.Fatal(err)
	}
	if _, err := db.Exec(ctx, "VACUUM ANALYZE "+h.InodeTable()); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		// A fresh process: its cursor starts at the beginning.
		got, err := claimBatch(ctx, db, h, "bench", time.Minute, cursorStart, batch, false)
		lat = append(lat, time.Since(t0))
		if err != nil || len(got) == 0 {
			b.Fatal(err, len(got))
		}
		b.StopTimer()
		if _, err := releaseOwn(ctx, db, h, "bench"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-median/claim")
}
