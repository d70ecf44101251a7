package copier

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// Claims taken over and over on one connection, as a worker does, once
// PostgreSQL plans the claim generically (after five executions): each
// batch comes in (dev, ino) order after its cursor, holds at most n inodes
// and no more bytes than the bound allows (at least one), no inode is
// claimed twice, every one is claimed once, and a claim older than the
// lease is taken again. (That the plan is cached at all is checked by
// BenchmarkClaim: on a table this small even LIMIT $n gets a generic plan.)
func TestClaimBatchesExactWithCachedPlan(t *testing.T) {
	const n = 3000
	db, h := benchMedium(t, n) // inode i+12 of size i%5000, path /d…/f<i>
	defer SetBatchBytes(100_000)()
	ctx := context.Background()
	conn, err := db.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()

	seen := map[key]string{}
	cursors := map[string]key{"a": cursorStart, "b": cursorStart}
	active := map[string]bool{"a": true, "b": true}
	for round := 0; len(active) > 0; round++ {
		for _, w := range []string{"a", "b"} {
			if !active[w] {
				continue
			}
			limit := []int{100, 37}[round%2]
			got, err := claimBatch(ctx, conn, h, w, time.Minute, cursors[w], limit, false)
			require.NoError(t, err)
			if len(got) == 0 {
				delete(active, w)
				continue
			}
			require.LessOrEqual(t, len(got), limit)
			var before int64
			prev := cursors[w]
			for k, in := range got {
				require.True(t, compareKeys(prev, in.key()) < 0, "worker %s round %d: %v not after %v", w, round, in.key(), prev)
				prev = in.key()
				require.NotContains(t, seen, in.key(), "claimed twice")
				seen[in.key()] = w
				i := in.Ino - 12
				require.Equal(t, i%5000, in.Size)
				require.Equal(t, [][]byte{[]byte(fmt.Sprintf("/d%04d/f%07d", i/1000, i))}, in.Paths)
				if k > 0 {
					require.Less(t, before, batchBytes, "inode %d starts past the byte bound", in.Ino)
				}
				before += in.Size
			}
			if len(got) < limit && before-got[len(got)-1].Size < batchBytes && len(seen) < n {
				// A short batch must have been cut by the byte bound.
				require.GreaterOrEqual(t, before, batchBytes, "worker %s round %d: short batch of %d", w, round, len(got))
			}
			cursors[w] = got[len(got)-1].key()
		}
	}
	require.Len(t, seen, n)
	var claimed int
	require.NoError(t, conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s WHERE claimed_by IN ('a', 'b')`, h.InodeTable())).Scan(&claimed))
	require.Equal(t, n, claimed)

	// a's claims expire; c takes the first of them.
	_, err = conn.Exec(ctx, fmt.Sprintf(`UPDATE %s SET claimed_at = now() - interval '2 minutes' WHERE claimed_by = 'a'`, h.InodeTable()))
	require.NoError(t, err)
	got, err := claimBatch(ctx, conn, h, "c", time.Minute, cursorStart, 5, false)
	require.NoError(t, err)
	require.Len(t, got, 5)
	for _, in := range got {
		require.Equal(t, "a", seen[in.key()], "inode %d was not a's", in.Ino)
	}

}

// A claim's transaction commits without waiting for the WAL (a claim
// promises nothing durable), and only it: the setting is local to the
// pipeline's one transaction and does not outlive it on the connection.
func TestClaimCommitsAsynchronouslyAlone(t *testing.T) {
	db, h := benchMedium(t, 10)
	ctx := context.Background()
	conn, err := db.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, `SET synchronous_commit = on`)
	require.NoError(t, err)

	// The pipeline claimBatch sends: a local setting and a statement
	// before one Sync share a transaction.
	b := &pgx.Batch{}
	b.Queue(`SELECT set_config('synchronous_commit', 'off', true)`)
	var inside string
	b.Queue(`SELECT current_setting('synchronous_commit')`).QueryRow(func(r pgx.Row) error { return r.Scan(&inside) })
	require.NoError(t, conn.SendBatch(ctx, b).Close())
	require.Equal(t, "off", inside)

	got, err := claimBatch(ctx, conn, h, "w", time.Minute, cursorStart, 10, false)
	require.NoError(t, err)
	require.Len(t, got, 10)
	var after string
	require.NoError(t, conn.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&after))
	require.Equal(t, "on", after, "the claim's setting leaked into the session")
	var claimed int
	require.NoError(t, conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s WHERE claimed_by = 'w'`, h.InodeTable())).Scan(&claimed))
	require.Equal(t, 10, claimed, "the claim committed")
}
