package copier

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// A batch's commit asks whether any blob is quarantined before it looks
// for its own quarantined blobs. That question must cost a few index pages
// whatever the size of blobs, also before blobs is analyzed: written as
// EXISTS, it was a sequential scan of all of blobs at every batch of a
// store filling up (2,858 pages at 200,000 blobs).
func TestRefusedCheckReadsNoBlobsPages(t *testing.T) {
	db, h := benchMedium(t, 2000)
	ctx := context.Background()
	// A growing store whose statistics lag behind: blobs never analyzed.
	_, err := db.Exec(ctx, `ALTER TABLE blobs SET (autovacuum_enabled = false)`)
	require.NoError(t, err)
	_, err = db.Exec(ctx, `INSERT INTO blobs (blobid, size)
		SELECT encode(sha256(g::text::bytea), 'hex'), g FROM generate_series(1, 200000) g`)
	require.NoError(t, err)

	got, err := claimBatch(ctx, db, h, "w", time.Minute, cursorStart, 1000, false)
	require.NoError(t, err)
	require.Len(t, got, 1000)
	var keys []key
	var blobs []string
	for i, n := range got {
		keys = append(keys, n.key())
		blobs = append(blobs, fmt.Sprintf("%064x", i))
	}
	devs, inos := splitKeys(keys)

	var plan []struct{ Plan planNode }
	var out []byte
	require.NoError(t, db.QueryRow(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+refusedSQL(h.InodeTable()),
		string(h), "w", devs, inos, blobs).Scan(&out))
	require.NoError(t, json.Unmarshal(out, &plan))
	require.Len(t, plan, 1)
	pages := plan[0].Plan.SharedHit + plan[0].Plan.SharedRead
	require.LessOrEqual(t, pages, int64(10), "the quarantine check read %d pages: %s", pages, out)

	// And it still finds a quarantined blob named by the batch.
	_, err = db.Exec(ctx, `INSERT INTO blobs (blobid, size, quarantined_at) VALUES ($1, 1, now())`, blobs[7])
	require.NoError(t, err)
	rows, err := db.Query(ctx, refusedSQL(h.InodeTable()), string(h), "w", devs, inos, blobs)
	require.NoError(t, err)
	refused, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{blobs[7]}, refused)
}

// Every statement that settles claims finds each of its rows by the
// primary key, however many rows the process holds and whatever the
// planner believes about claimed_by ("release" is also the renewal's
// form, as a commit would run it). Statistics are taken before a run,
// when nothing is claimed. With "claimed_by = $2", a commit read every row
// the process held through the claimed index (all batches of all its
// workers); with that condition merely unindexable, the planner, expecting
// one matching row, looped over the keys with a sequential scan of the
// medium (1.4-2.3 s a commit on media of 30k-75k rows). Here a 60k-row
// medium has 16 batches held; each statement, planned custom and generic
// under the commit's settings, must read the medium by its primary key
// only, no more rows than the batch has, no node more than once per key,
// a bounded number of pages per row.
func TestHeldUpdatesFindRowsByKey(t *testing.T) {
	const rows, batch, held = 60000, 1000, 16
	db, h := benchMedium(t, rows)
	ctx := context.Background()
	table := h.InodeTable()
	_, err := db.Exec(ctx, `ALTER TABLE `+table+` SET (autovacuum_enabled = false)`)
	require.NoError(t, err)
	var mine []*inode
	after := cursorStart
	for i := range held {
		got, err := claimBatch(ctx, db, h, "w", time.Minute, after, batch, false)
		require.NoError(t, err)
		require.Len(t, got, batch)
		after = got[len(got)-1].key()
		if i == held/2 {
			// A batch in the middle: a merge join along the primary key
			// from the start of the medium would not stop early.
			mine = got
		}
	}
	var keys []key
	var blobs, mimes []string
	var created []bool
	damage := make([]*string, batch) // NULL elements, as commits send them
	for i, n := range mine {
		keys = append(keys, n.key())
		blobs = append(blobs, fmt.Sprintf("%064x", i))
		mimes, created = append(mimes, "text/plain"), append(created, false)
	}
	devs, inos := splitKeys(keys)
	// One quarantined blob among the batch's, so that refusedSQL goes past
	// its first question and looks up the batch's rows.
	_, err = db.Exec(ctx, `INSERT INTO blobs (blobid, size, quarantined_at) VALUES ($1, 1, now())`, blobs[0])
	require.NoError(t, err)

	cases := []struct {
		name    string
		sql     string
		types   string
		args    []any
		updated int
	}{
		{"success", successSQL(table), "text, text, bigint[], bigint[], text[], text[], bool[], text[]",
			[]any{string(h), "w", devs, inos, blobs, mimes, created, damage}, batch - 1},
		{"release", heldUpdate(table, `claimed_by = NULL, claimed_at = NULL`, keysUnnest, "", ""), "text, text, bigint[], bigint[]",
			[]any{string(h), "w", devs, inos}, batch},
		{"refused", refusedSQL(table), "text, text, bigint[], bigint[], text[]",
			[]any{string(h), "w", devs, inos, blobs}, 1},
	}
	for m, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		for ci, c := range cases {
			t.Run(mode+"/"+c.name, func(t *testing.T) {
				tx, err := db.Begin(ctx)
				require.NoError(t, err)
				defer tx.Rollback(ctx)
				// EXPLAIN of a statement with parameters plans it for their
				// values; only EXECUTE of a prepared one takes a generic plan.
				_, err = tx.Exec(ctx, `SET LOCAL plan_cache_mode = `+mode)
				require.NoError(t, err)
				_, err = tx.Exec(ctx, commitPlanning)
				require.NoError(t, err)
				// A name of its own: a prepared statement outlives the
				// transaction, and an aborted one could not deallocate it.
				name := fmt.Sprintf("held_update_%d_%d", m, ci)
				_, err = tx.Exec(ctx, `PREPARE `+name+` (`+c.types+`) AS `+c.sql)
				require.NoError(t, err)
				defer tx.Exec(ctx, `DEALLOCATE `+name)
				// EXECUTE takes values, not parameters: quoted by the server.
				types := strings.Split(c.types, ", ")
				values := make([]string, len(c.args))
				for i, a := range c.args {
					require.NoError(t, tx.QueryRow(ctx, `SELECT quote_nullable($1::`+types[i]+`)`, a).Scan(&values[i]))
					values[i] += "::" + types[i]
				}
				var out []byte
				require.NoError(t, tx.QueryRow(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE "+name+"("+strings.Join(values, ", ")+")").Scan(&out))
				if mode == "force_generic_plan" {
					require.Contains(t, string(out), "medium_hash = $1", "not a generic plan: %s", out)
				}
				var plan []struct{ Plan planNode }
				require.NoError(t, json.Unmarshal(out, &plan))
				require.Len(t, plan, 1)
				top := plan[0].Plan
				require.NotContains(t, string(out), claimedIndex(h), "read the claimed index: %s", out)
				top.walk(func(n planNode) {
					require.LessOrEqual(t, n.Loops, int64(batch), "%s ran %d times for a batch of %d: %s", n.Type, n.Loops, batch, out)
					if n.Relation == table && n.Type != "ModifyTable" {
						require.Equal(t, "Index Scan", n.Type, "the medium read otherwise than by key: %s", out)
						require.Equal(t, table+"_pkey", n.Index, "the medium read through another index: %s", out)
						require.LessOrEqual(t, n.Rows*n.Loops, int64(batch), "%d rows of the medium read for a batch of %d: %s", n.Rows*n.Loops, batch, out)
					}
				})
				pages := top.SharedHit + top.SharedRead
				require.LessOrEqual(t, pages, int64(20*batch), "%d pages for a batch of %d: %s", pages, batch, out)
				t.Logf("%s: %d pages", c.name, pages)
				var n int
				require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE claimed_by IS DISTINCT FROM 'w'`).Scan(&n))
				require.Equal(t, rows-(held*batch)+c.updated, n, "rows settled")
			})
		}
	}
}

type planNode struct {
	Type       string     `json:"Node Type"`
	Relation   string     `json:"Relation Name"`
	Index      string     `json:"Index Name"`
	Rows       int64      `json:"Actual Rows"`
	Loops      int64      `json:"Actual Loops"`
	SharedHit  int64      `json:"Shared Hit Blocks"`
	SharedRead int64      `json:"Shared Read Blocks"`
	Plans      []planNode `json:"Plans"`
}

func (n planNode) walk(fn func(planNode)) {
	fn(n)
	for _, c := range n.Plans {
		c.walk(fn)
	}
}

// A commit that waits for a renewal of its own claims (the heartbeat
// renews every claim in flight, those of batches being committed too)
// still records every row. A form of the commit that read its rows by
// ctid with its statement's snapshot (5d9eb73) locked each row's newest
// version and then did not see it: the whole batch was left claimed and
// counted as lost.
func TestCommitAfterRenewal(t *testing.T) {
	db, h := benchMedium(t, 2000)
	ctx := context.Background()
	got, err := claimBatch(ctx, db, h, "w", time.Minute, cursorStart, 1000, false)
	require.NoError(t, err)
	require.Len(t, got, 1000)
	outs := make([]outcome, len(got))
	keys := make([]key, len(got))
	for i, n := range got {
		outs[i] = copiedOutcome(n, i)
		keys[i] = n.key()
	}

	renewal, err := db.Begin(ctx)
	require.NoError(t, err)
	defer renewal.Rollback(ctx)
	require.NoError(t, renewClaims(ctx, renewal, h, "w", keys))

	type result struct {
		lost int64
		err  error
	}
	done := make(chan result, 1)
	go func() {
		lost, _, err := commitBatch(ctx, db, h, "w", outs, nil, &blobSet{}, nil)
		done <- result{lost, err}
	}()
	// The commit waits for the renewal's row locks.
	require.Eventually(t, func() bool {
		var waiting int
		err := db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%`+h.InodeTable()+`%'`).Scan(&waiting)
		return err == nil && waiting > 0
	}, 10*time.Second, 10*time.Millisecond, "the commit never waited for the renewal")
	require.NoError(t, renewal.Commit(ctx))

	res := <-done
	require.NoError(t, res.err)
	require.Zero(t, res.lost, "copied inodes counted as lost")
	var copiedN, claimedN int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE copied), count(*) FILTER (WHERE claimed_by IS NOT NULL)
		FROM `+h.InodeTable()).Scan(&copiedN, &claimedN))
	require.Equal(t, 1000, copiedN, "rows recorded as copied")
	require.Zero(t, claimedN, "rows left claimed")
}
