package copier

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ctids returns the ctid of each of the medium's rows by key: a row that
// was rewritten has a new one.
func ctids(t *testing.T, db *pgxpool.Pool, h medium.Hash) map[key]string {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT dev, ino, ctid::text FROM `+h.InodeTable())
	require.NoError(t, err)
	defer rows.Close()
	out := map[key]string{}
	for rows.Next() {
		var k key
		var tid string
		require.NoError(t, rows.Scan(&k.dev, &k.ino, &tid))
		out[k] = tid
	}
	require.NoError(t, rows.Err())
	return out
}

// mustHold holds n inodes of h from its start as worker "w" would, all of
// them, and ends the hold when the test does.
func mustHold(t *testing.T, db *pgxpool.Pool, h medium.Hash, n int) ([]*inode, *hold) {
	t.Helper()
	got, held, cut, err := holdBatch(context.Background(), db, h, "w", cursorStart, n, func() {})
	require.NoError(t, err)
	require.False(t, cut)
	require.NotNil(t, held)
	t.Cleanup(held.end)
	return got, held
}

// copiedOutcome is n copied to a new blob whose id is made of i.
func copiedOutcome(n *inode, i int) outcome {
	return outcome{n: n, kind: copied, blob: fmt.Sprintf("%064x", i), mime: "text/plain", created: true}
}

// A held batch writes nothing to its rows (same row versions, claimed_by
// still NULL, counted as pending), yet no other hold or claim takes them
// while it is held; rolled back, they are pending again at once. The
// hold's slot is given back once.
func TestHoldLocksWithoutWriting(t *testing.T) {
	db, h := benchMedium(t, 1000)
	ctx := context.Background()
	before := ctids(t, db, h)
	var slots atomic.Int32
	done := func() { slots.Add(-1) }

	slots.Add(1)
	a, ha, _, err := holdBatch(ctx, db, h, "a", cursorStart, 100, done)
	require.NoError(t, err)
	require.NotNil(t, ha, "a batch of small files is held")
	require.Len(t, a, 100)
	assert.Equal(t, before, ctids(t, db, h), "holding rewrote rows")
	files, _, claimed, err := Remaining(ctx, db, string(h))
	require.NoError(t, err)
	assert.EqualValues(t, 1000, files)
	assert.Zero(t, claimed, "held rows show as claimed")

	// Another hold and a claim from the start both pass over a's rows.
	slots.Add(1)
	b, hb, _, err := holdBatch(ctx, db, h, "b", cursorStart, 100, done)
	require.NoError(t, err)
	require.NotNil(t, hb)
	c, err := claimBatch(ctx, db, h, "c", time.Minute, cursorStart, 100, false)
	require.NoError(t, err)
	seen := map[key]string{}
	for name, batch := range map[string][]*inode{"a": a, "b": b, "c": c} {
		require.Len(t, batch, 100, name)
		for _, n := range batch {
			require.NotContains(t, seen, n.key(), "%s took a row of %s", name, seen[n.key()])
			seen[n.key()] = name
		}
	}

	ha.end()
	ha.end()
	assert.EqualValues(t, 1, slots.Load(), "a's slot given back once")
	slots.Add(1)
	again, hAgain, _, err := holdBatch(ctx, db, h, "d", cursorStart, 100, done)
	require.NoError(t, err)
	require.Len(t, again, 100)
	for i := range again {
		assert.Equal(t, a[i].key(), again[i].key(), "a's rows are pending again after its rollback")
	}
	hAgain.end()
	hb.end()
	assert.Zero(t, slots.Load())
}

// A batch of more than holdBytes is claimed as before (with the byte
// bound of a claim), the rest of what was locked is left pending and
// unlocked, and the slot is given back.
func TestHoldOfLargeFilesIsAClaim(t *testing.T) {
	db, h := benchMedium(t, 1000) // inode i+12 of size i
	defer SetHoldBytes(1000)()
	defer SetBatchBytes(2000)()
	ctx := context.Background()
	var slots atomic.Int32
	slots.Add(1)
	got, held, cut, err := holdBatch(ctx, db, h, "w", key{2049, 12 + 100}, 100, func() { slots.Add(-1) })
	require.NoError(t, err)
	assert.Nil(t, held, "too many bytes to hold")
	assert.Zero(t, slots.Load(), "slot not given back")
	assert.True(t, cut, "the rows past the bound were locked until the claim committed")
	// Sizes 101, 102, ...: the claim stops once 2000 bytes are before it.
	var sum int64
	for _, n := range got {
		require.Less(t, sum, batchBytes)
		sum += n.Size
	}
	require.Len(t, got, 19) // 101+...+118 = 1971 < 2000 before 119, the last
	var claimed int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM `+h.InodeTable()+` WHERE claimed_by = 'w'`).Scan(&claimed))
	assert.Equal(t, len(got), claimed)

	// The next row after the claim is neither claimed nor still locked.
	next, err := claimBatch(ctx, db, h, "x", time.Minute, got[len(got)-1].key(), 1, false)
	require.NoError(t, err)
	require.Len(t, next, 1)
	assert.Equal(t, got[len(got)-1].Ino+1, next[0].Ino)
}

// A held batch whose connection died before its commit (a database
// restart, a network cut) is held again by the commit's next attempt and
// recorded; rows another process took meanwhile are left to it and
// counted as lost.
func TestHeldCommitAfterLostConnection(t *testing.T) {
	db, h := benchMedium(t, 1000)
	ctx := context.Background()
	got, held := mustHold(t, db, h, 100)
	outs := make([]outcome, len(got))
	for i, n := range got {
		outs[i] = copiedOutcome(n, i)
	}

	_, err := db.Exec(ctx, `SELECT pg_terminate_backend($1, 5000)`, held.conn.Conn().PgConn().PID()) // waits until it is gone
	require.NoError(t, err)
	_, _, err = commitBatch(ctx, db, h, "w", outs, nil, &blobSet{}, held)
	require.Error(t, err, "a commit on a dead connection succeeded")

	// Meanwhile another process holds the first ten rows.
	other, otherHeld, _, err := holdBatch(ctx, db, h, "o", cursorStart, 10, func() {})
	require.NoError(t, err)
	require.Len(t, other, 10)
	defer otherHeld.end()

	lost, refused, err := commitBatch(ctx, db, h, "w", outs, nil, &blobSet{}, held)
	require.NoError(t, err)
	assert.Zero(t, refused)
	assert.EqualValues(t, 10, lost, "the rows the other process holds")
	var copiedN, claimedN int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE copied), count(*) FILTER (WHERE claimed_by IS NOT NULL)
		FROM `+h.InodeTable()).Scan(&copiedN, &claimedN))
	assert.Equal(t, 90, copiedN)
	assert.Zero(t, claimedN)
	for _, n := range other {
		var copied bool
		require.NoError(t, db.QueryRow(ctx, `SELECT copied FROM `+h.InodeTable()+` WHERE dev = $1 AND ino = $2`, n.Dev, n.Ino).Scan(&copied))
		assert.False(t, copied, "inode %d, held by the other process, recorded", n.Ino)
	}
}

// A held batch whose commit did happen but whose answer was lost (the
// connection died after COMMIT reached the server) is committed again by
// the caller's retry: what was recorded is left as it is. A copied inode
// is not counted lost, and a failure is not counted twice (its error
// count, its message, its diagnostic event).
func TestHeldCommitAnsweredLost(t *testing.T) {
	db, h := benchMedium(t, 1000)
	ctx := context.Background()
	got, held := mustHold(t, db, h, 20)
	outs := make([]outcome, len(got))
	for i, n := range got {
		if i%2 == 0 {
			outs[i] = copiedOutcome(n, i)
		} else {
			outs[i] = outcome{n: n, kind: failed, err: fmt.Errorf("read error"), at: time.Now(),
				dec: Decision{Action: Retry, ErrorType: "io_error", Class: "io", RetryCount: 1, Event: true}}
		}
	}
	lost, _, err := commitBatch(ctx, db, h, "w", outs, nil, &blobSet{}, held)
	require.NoError(t, err)
	require.Zero(t, lost)

	// The same call again, as after an answer lost: its transaction is
	// gone, so the rows are held again first.
	require.False(t, held.open)
	lost, _, err = commitBatch(ctx, db, h, "w", outs, nil, &blobSet{}, held)
	require.NoError(t, err)
	assert.Zero(t, lost, "recorded copies counted as lost")

	var copiedN, errs, events int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE copied), coalesce(sum(error_count), 0)
		FROM `+h.InodeTable()).Scan(&copiedN, &errs))
	assert.Equal(t, 10, copiedN)
	assert.Equal(t, 10, errs, "one error each for the ten failures")
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM diagnostic_event WHERE medium_hash = $1`, string(h)).Scan(&events))
	assert.Equal(t, 10, events)
}

// The hold budget: two a worker, within the pool less three, within half
// of what the server has to spare.
func TestHoldBudget(t *testing.T) {
	for _, c := range []struct{ maxConns, workers, free, want int }{
		{20, 8, -1, 16}, // ntt-copier's pool, server unknown
		{20, 8, 80, 16}, // plenty to spare
		{20, 8, 10, 5},  // a busy server: half of what is left
		{4, 8, 100, 1},  // pgx's default pool
		{2, 8, 100, 0},  // the smallest pool Run accepts: claims only
		{20, 8, 0, 0},   // nothing to spare
		{40, 1, 100, 2}, // one worker
	} {
		assert.Equal(t, c.want, holdBudget(c.maxConns, c.workers, c.free), "%+v", c)
	}
}
