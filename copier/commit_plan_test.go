package copier

import (
	"context"
	"encoding/json"
	"fmt"
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

	var plan []struct {
		Plan struct {
			SharedHit  int64 `json:"Shared Hit Blocks"`
			SharedRead int64 `json:"Shared Read Blocks"`
		}
	}
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
