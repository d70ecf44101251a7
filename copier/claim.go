package copier

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Claims.
//
// A claim is an inode row with copied = false and claimed_by = the worker
// id, claimed_at = when it was claimed (or last renewed). Claims are taken
// in batches by one statement,
//
//	UPDATE inode_p_<h> SET claimed_by = $w, claimed_at = now()
//	WHERE ctid = ANY(ARRAY(SELECT ctid … FOR UPDATE SKIP LOCKED LIMIT n))
//
// on the medium's own partition only, in (dev, ino) order from a cursor, so
// concurrent workers and processes never take the same row and a claim
// costs the same at the end of a 10M-inode medium as at its start.
//
// A claim comes back to pending by itself when its worker is gone:
//   - at once when the worker's process died or lost its connection: each
//     process holds a session advisory lock named after (medium, worker id)
//     for as long as it runs, and a claim whose lock nobody holds is an
//     orphan. Any worker releases orphans when it starts and whenever it
//     runs out of work; the seed's monitoring query then shows them pending.
//   - after the lease otherwise (a host that vanished while its database
//     session lingers): a live worker renews its claims every lease/3, and
//     a claim older than the lease may be taken by anyone.
//
// One worker id belongs to one process at a time: a second process with
// the same id is refused while the first holds the lock.
//
// A batch of small files is not claimed but held (see Holds below) when
// the pool has a connection to spare for it; a claim is for a batch that
// may take long, where the seed's monitoring query should show it as
// claimed.

// The copier's own indexes on a medium's inode partition. The pending index
// holds only the rows left to copy, so claims stay cheap however much of
// the medium is done; the claimed index holds only rows in flight, for the
// orphan and lease checks.
func pendingIndex(h medium.Hash) string { return h.InodeTable() + "_pending_idx" }
func claimedIndex(h medium.Hash) string { return h.InodeTable() + "_claimed_idx" }

// ensureIndexes creates the copier's indexes on the medium's partition if
// they are missing (once per medium; a few seconds on 10M rows). A medium
// of fewer than smallMediumRows inodes (as the load's ANALYZE counted them)
// gets none: a scan of its few pages costs less than building the two
// indexes, each of which PostgreSQL writes and syncs to disk (2-3 ms of a
// floppy's 40 in the queue). A medium that grows past the bound (an
// appending load analyzes it again) gets them on its next run.
func ensureIndexes(ctx context.Context, db *pgxpool.Pool, h medium.Hash) error {
	var n int
	var rows float64
	if err := db.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_class WHERE relname IN ($1, $2) AND relkind = 'i'),
		coalesce((SELECT reltuples FROM pg_class WHERE oid = to_regclass($3)), -1)`,
		pendingIndex(h), claimedIndex(h), h.InodeTable()).Scan(&n, &rows); err != nil {
		return fmt.Errorf("medium %s: looking up indexes: %w", h, err)
	}
	// reltuples is -1 for a table never analyzed: its size is unknown.
	if n == 2 || (rows >= 0 && rows < float64(smallMediumRows)) {
		return nil
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "ntt-copier-index:"+h.TableKey()); err != nil {
			return fmt.Errorf("medium %s: locking index creation: %w", h, err)
		}
		stmts := []string{
			fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s ON %s (dev, ino) WHERE NOT copied AND fs_type = 'f'`, pendingIndex(h), h.InodeTable()),
			fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s ON %s (claimed_by) WHERE NOT copied AND claimed_by IS NOT NULL`, claimedIndex(h), h.InodeTable()),
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("medium %s: creating the copier's index: %w", h, err)
			}
		}
		return nil
	})
}

// smallMediumRows is the inode count below which a medium gets no
// copier indexes (a variable for tests).
var smallMediumRows = 2000

// lockKey is the text whose hash names a worker's advisory lock.
func lockKey(h medium.Hash, worker string) string { return "ntt-copier:" + string(h) + ":" + worker }

// ErrWorkerBusy says that another live process already copies the medium
// under the same worker id.
var ErrWorkerBusy = errors.New("worker id is in use by another process")

// holdWorkerLock takes the worker's session advisory lock on a dedicated
// connection, waiting up to wait for a previous holder (a process killed a
// moment ago whose session is still closing).
func holdWorkerLock(ctx context.Context, db *pgxpool.Pool, h medium.Hash, worker string, wait time.Duration) (*pgxpool.Conn, error) {
	conn, err := db.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("medium %s: connecting for the worker lock: %w", h, err)
	}
	deadline := time.Now().Add(wait)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, lockKey(h, worker)).Scan(&ok); err != nil {
			conn.Release()
			return nil, fmt.Errorf("medium %s: taking the worker lock: %w", h, err)
		}
		if ok {
			return conn, nil
		}
		if time.Now().After(deadline) {
			conn.Release()
			return nil, fmt.Errorf("medium %s: worker id %q: %w", h, worker, ErrWorkerBusy)
		}
		select {
		case <-ctx.Done():
			conn.Release()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// releaseWorkerLock gives the lock back; the connection returns to the pool.
func releaseWorkerLock(conn *pgxpool.Conn, h medium.Hash, worker string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, lockKey(h, worker)); err != nil {
		// The session's locks must not outlive us in a pooled connection.
		conn.Conn().Close(ctx)
	}
	conn.Release()
}

// releaseOrphans returns to pending every claim of the medium whose
// worker's lock nobody holds, or whose lease ran out, and the claims left
// under our own worker id by a previous incarnation (we hold its lock now,
// so it is dead). It returns how many it released.
func releaseOrphans(ctx context.Context, q querier, h medium.Hash, worker string, lease time.Duration, own bool) (int64, error) {
	sql := fmt.Sprintf(`
		WITH live AS (
			SELECT (l.classid::bigint << 32) | l.objid::bigint AS k
			FROM pg_locks l
			WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
			  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
		UPDATE %[1]s SET claimed_by = NULL, claimed_at = NULL
		WHERE medium_hash = $1 AND NOT copied AND claimed_by IS NOT NULL
		  AND (claimed_at IS NULL OR claimed_at < now() - $2::float8 * interval '1 second'
		       OR ($4 AND claimed_by = $3)
		       OR (claimed_by <> $3 AND hashtextextended('ntt-copier:' || medium_hash || ':' || claimed_by, 0) NOT IN (SELECT k FROM live)))`,
		h.InodeTable())
	tag, err := q.Exec(ctx, sql, string(h), lease.Seconds(), worker, own)
	if err != nil {
		return 0, fmt.Errorf("medium %s: releasing orphaned claims: %w", h, err)
	}
	return tag.RowsAffected(), nil
}

type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// pipeliner sends several statements in one round trip (pgx's pool,
// connection and transaction all do).
type pipeliner interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// inode is a claimed inode with its non-excluded paths.
type inode struct {
	Dev, Ino, Size int64
	Errors         int
	Paths          [][]byte
}

type key struct{ dev, ino int64 }

// compareKeys orders keys as the claims take them: by dev, then ino.
func compareKeys(a, b key) int {
	if c := cmp.Compare(a.dev, b.dev); c != 0 {
		return c
	}
	return cmp.Compare(a.ino, b.ino)
}

func (n *inode) key() key { return key{n.Dev, n.Ino} }

// cursorStart is before every (dev, ino).
var cursorStart = key{math.MinInt64, math.MinInt64}

// claimSQL claims up to n pending file inodes after ($4, $5) for worker
// $1, and no more of them than fit in $6 bytes (the first always does); a
// claim older than the lease ($3) counts as pending. It returns each claimed
// inode once per non-excluded path (once with a NULL path if it has none).
// The byte bound keeps a claim of large files small: one worker never
// holds much more than $6 bytes of work that idle workers cannot take.
//
// Two things keep a claim of 100 inodes on a 1M-inode medium under 2 ms
// (BenchmarkClaim's medium, old and new statement interleaved on one
// connection: 2.4 -> 1.8 ms at load average 3.5, 0.76-0.79x in four runs
// at loads 3-22): the rows locked by the candidate scan are updated by
// their ctid (a TID scan, where a join back through the primary key cost
// 100 index probes), and n is part of the statement's text, not a
// parameter. With LIMIT $n the generic plan's estimate (10 % of the
// pending rows) never beat the custom one, so PostgreSQL planned every
// execution anew (0.3-0.4 ms); with a literal limit it settles on the same
// plan, cached, after five (a medium 90 % done keeps custom plans, and is
// still 0.88x). A ctid is safe here: the row is locked by this statement,
// no one can move it. A candidate updated by a transaction that committed
// after the statement began (released by another process meanwhile) is
// locked at its newest version, which the TID scan, reading with the
// statement's snapshot, does not see: it is not claimed this time, only
// locked until the claim commits, and stays pending.
func claimSQL(h medium.Hash, n int) string {
	return fmt.Sprintf(`
		WITH cand AS (
			SELECT ctid AS tid, dev, ino, size FROM %[1]s
			WHERE medium_hash = $2 AND NOT copied AND fs_type = 'f'
			  AND (claimed_by IS NULL OR claimed_at IS NULL OR claimed_at < now() - $3::float8 * interval '1 second')
			  AND (dev, ino) > ($4, $5)
			ORDER BY dev, ino
			LIMIT %[3]d
			FOR UPDATE SKIP LOCKED),
		c AS (
			UPDATE %[1]s AS i SET claimed_by = $1, claimed_at = now()
			WHERE i.ctid = ANY(ARRAY(
				SELECT tid FROM (SELECT tid, sum(size) OVER (ORDER BY dev, ino) - size AS before FROM cand) s
				WHERE before < $6))
			RETURNING i.dev, i.ino, i.size, i.error_count)
		SELECT c.dev, c.ino, c.size, c.error_count, p.path
		FROM c LEFT JOIN %[2]s p
		  ON p.medium_hash = $2 AND p.dev = c.dev AND p.ino = c.ino AND p.exclude_reason IS NULL
		ORDER BY c.dev, c.ino, p.path`, h.InodeTable(), h.PathTable(), n)
}

// peekSQL is claimSQL without claiming, for dry runs.
func peekSQL(h medium.Hash, n int) string {
	return fmt.Sprintf(`
		WITH cand AS (
			SELECT dev, ino, size, error_count FROM %[1]s
			WHERE medium_hash = $2 AND NOT copied AND fs_type = 'f'
			  AND (claimed_by IS NULL OR claimed_at IS NULL OR claimed_at < now() - $3::float8 * interval '1 second')
			  AND (dev, ino) > ($4, $5) AND $1::text IS NOT NULL
			ORDER BY dev, ino
			LIMIT %[3]d),
		c AS (
			SELECT dev, ino, size, error_count FROM (
				SELECT *, sum(size) OVER (ORDER BY dev, ino) - size AS before FROM cand) s
			WHERE before < $6)
		SELECT c.dev, c.ino, c.size, c.error_count, p.path
		FROM c LEFT JOIN %[2]s p
		  ON p.medium_hash = $2 AND p.dev = c.dev AND p.ino = c.ino AND p.exclude_reason IS NULL
		ORDER BY c.dev, c.ino, p.path`, h.InodeTable(), h.PathTable(), n)
}

// appendRow adds one row of a claim's answer, which gives each inode once
// per non-excluded path (once with a NULL path if it has none), in (dev,
// ino) order, to batch; first says the row began a new inode.
func appendRow(batch []*inode, dev, ino, size int64, errs int, path []byte) (_ []*inode, first bool) {
	if len(batch) == 0 || batch[len(batch)-1].Dev != dev || batch[len(batch)-1].Ino != ino {
		batch = append(batch, &inode{Dev: dev, Ino: ino, Size: size, Errors: errs})
		first = true
	}
	if path != nil {
		last := batch[len(batch)-1]
		last.Paths = append(last.Paths, path)
	}
	return batch, first
}

// claimBatch claims up to n inodes after cursor, at most batchBytes of
// them (but at least one). With peek set it only reads them (dry run).
func claimBatch(ctx context.Context, q pipeliner, h medium.Hash, worker string, lease time.Duration, after key, n int, peek bool) ([]*inode, error) {
	sql := claimSQL(h, n)
	if peek {
		sql = peekSQL(h, n)
	}
	var out []*inode
	scan := func(rows pgx.Rows) error {
		for rows.Next() {
			var dev, ino, size int64
			var errs int
			var path []byte
			if err := rows.Scan(&dev, &ino, &size, &errs, &path); err != nil {
				return err
			}
			out, _ = appendRow(out, dev, ino, size, errs, path)
		}
		return rows.Err()
	}
	// One round trip, one transaction (a pipeline: both statements before
	// one Sync). Its commit does not wait for the WAL to reach the disk: a
	// claim promises nothing durable. Lost in a crash of the database, it
	// only leaves its inodes pending again, and the worker's commit, which
	// applies only to rows it still holds, records them as lost, to be
	// copied again (to the same blob). Commits that record copies stay
	// synchronous.
	b := &pgx.Batch{}
	b.Queue(`SELECT set_config('synchronous_commit', 'off', true)`)
	b.Queue(sql, worker, string(h), lease.Seconds(), after.dev, after.ino, batchBytes).Query(scan)
	if err := q.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("medium %s: claiming inodes: %w", h, err)
	}
	return out, nil
}

// renewClaims moves claimed_at of the given claims of worker to now (the
// lease heartbeat). It runs outside a commit's transaction, so without
// commitPlanning: it renews every claim in flight (up to two batches per
// worker, 16,000 rows with the defaults), and for that many keys the
// planner may read the whole medium once instead, every heartbeat.
func renewClaims(ctx context.Context, q querier, h medium.Hash, worker string, keys []key) error {
	if len(keys) == 0 {
		return nil
	}
	// In (dev, ino) order, as most batches are: fewer deadlocks with the
	// commits than in map order, but not none (a commit locks statement
	// by statement, and either may read in physical order). PostgreSQL
	// breaks one; a commit retries (transient), a renewal waits for the
	// next beat.
	keys = slices.SortedFunc(slices.Values(keys), compareKeys)
	devs, inos := splitKeys(keys)
	_, err := q.Exec(ctx, heldUpdate(h.InodeTable(), `claimed_at = now()`, keysUnnest, "", ""), string(h), worker, devs, inos)
	if err != nil {
		return fmt.Errorf("medium %s: renewing claims: %w", h, err)
	}
	return nil
}

func splitKeys(keys []key) (devs, inos []int64) {
	devs = make([]int64, len(keys))
	inos = make([]int64, len(keys))
	for i, k := range keys {
		devs[i], inos[i] = k.dev, k.ino
	}
	return devs, inos
}

// Remaining counts a medium's file inodes still to copy (pending or
// claimed) and their bytes.
func Remaining(ctx context.Context, q querier, hash string) (files, bytes, claimed int64, err error) {
	h, err := medium.Parse(hash)
	if err != nil {
		return 0, 0, 0, err
	}
	err = q.QueryRow(ctx, fmt.Sprintf(`
		SELECT count(*), coalesce(sum(size), 0)::bigint, count(*) FILTER (WHERE claimed_by IS NOT NULL)
		FROM %s WHERE medium_hash = $1 AND NOT copied AND fs_type = 'f'`, h.InodeTable()),
		string(h)).Scan(&files, &bytes, &claimed)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("medium %s: counting inodes left to copy: %w", h, err)
	}
	return files, bytes, claimed, nil
}

// Holds.
//
// A batch of small files is held by row lock instead of claimed: its rows
// are locked FOR UPDATE by a transaction that stays open on its own
// connection while the batch is copied, and the batch's commit is that
// transaction's. Nothing is written to claim it: a claim rewrites every
// row (a new row version and three index entries, on a freshly loaded
// medium on a new page), which on 2 cores cost a fifth of the copy (the
// pipeline's 300k-entry bench medium, copy phase 8.94-9.08 s claimed
// against 7.10-7.30 s unclaimed, machine G, 2026-12-07). A held row comes
// back to pending by itself the moment its process or connection dies:
// PostgreSQL ends the transaction. The price is that the seed's
// monitoring query counts held rows as pending, not claimed, for as long
// as the batch takes (a fraction of a second for a batch of small files on
// a sound medium; longer on a failing one, with its retries); a batch of
// more than holdBytes, which may take minutes, is claimed as before, with
// a lease, and shows as claimed. A held row that comes back because its
// process died is not seen by releaseOrphans: a live process finds it
// when its cursor goes back to the start at the end of a pass, if the
// holder died before that; otherwise the next run copies it (see
// nextBatch).
//
// A held batch keeps its connection from the hold to its commit: a run
// holds at most two batches a worker, no more than the pool's connections
// but three (the worker lock, claims and the rest), and no more than half
// the connections the server had to spare when the run started (so that
// copiers started side by side do not take all of max_connections); without
// a connection to spare, a batch is claimed (holdBudget).
//
// Held rows are rows nobody claimed (claimed_by IS NULL): their commit
// matches them with an empty worker id, which heldUpdate reads as "not
// claimed". A claim left by a dead process is released (releaseOrphans)
// before anyone holds its rows.

// holdBytes bounds the catalogued bytes of a held batch; a batch of more
// is claimed.
var holdBytes int64 = 64 << 20

// hold is a batch held by row lock: the open transaction on conn.
type hold struct {
	conn *pgxpool.Conn // nil once given back
	open bool          // the transaction that holds the locks is open
	done func()        // gives the hold's slot back (nil once it is)
	// pid is conn's server process, for a run that gives up on a stalled
	// worker: ending that session ends the hold (see run.abandonHolds).
	pid atomic.Uint32
}

func (hd *hold) setConn(c *pgxpool.Conn) {
	hd.conn = c
	hd.pid.Store(c.Conn().PgConn().PID())
}

// holdSQL locks up to n pending, unclaimed file inodes after ($2, $3) in
// the caller's transaction and returns each once per non-excluded path,
// with its row's ctid (for a conversion into a claim) and no write.
func holdSQL(h medium.Hash, n int) string {
	return fmt.Sprintf(`
		WITH c AS (
			SELECT ctid AS tid, dev, ino, size, error_count FROM %[1]s
			WHERE medium_hash = $1 AND NOT copied AND fs_type = 'f' AND claimed_by IS NULL
			  AND (dev, ino) > ($2, $3)
			ORDER BY dev, ino
			LIMIT %[3]d
			FOR UPDATE SKIP LOCKED)
		SELECT c.tid::text, c.dev, c.ino, c.size, c.error_count, p.path
		FROM c LEFT JOIN %[2]s p
		  ON p.medium_hash = $1 AND p.dev = c.dev AND p.ino = c.ino AND p.exclude_reason IS NULL
		ORDER BY c.dev, c.ino, p.path`, h.InodeTable(), h.PathTable(), n)
}

// holdBatch locks up to n inodes after cursor in a transaction it leaves
// open, and returns them with the hold. A batch that a claim's byte bound
// would cut (batchBytes), or of more than holdBytes, is claimed by worker
// instead, as claimBatch would, and returned without a hold. done gives
// back the caller's hold slot; holdBatch calls it unless it returns a
// hold.
func holdBatch(ctx context.Context, db *pgxpool.Pool, h medium.Hash, worker string, after key, n int, done func()) (batch []*inode, held *hold, cut bool, err error) {
	conn, err := db.Acquire(ctx)
	if err != nil {
		done()
		return nil, nil, false, fmt.Errorf("medium %s: connecting to hold inodes: %w", h, err)
	}
	held = &hold{open: true, done: done}
	held.setConn(conn)
	fail := func(err error) ([]*inode, *hold, bool, error) {
		held.end()
		return nil, nil, false, fmt.Errorf("medium %s: holding inodes: %w", h, err)
	}
	var tids []string
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(holdSQL(h, n), string(h), after.dev, after.ino).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var tid string
			var dev, ino, size int64
			var errs int
			var path []byte
			if err := rows.Scan(&tid, &dev, &ino, &size, &errs, &path); err != nil {
				return err
			}
			var first bool
			if batch, first = appendRow(batch, dev, ino, size, errs, path); first {
				tids = append(tids, tid)
			}
		}
		return rows.Err()
	})
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return fail(err)
	}
	if len(batch) == 0 {
		held.end()
		return nil, nil, false, nil
	}
	// A claim's byte bound (batchBytes) applies as to a claim: the first
	// inode, and each after it that starts within the bound.
	k, sum := 0, int64(0)
	for k < len(batch) && (k == 0 || sum < batchBytes) {
		sum += batch[k].Size
		k++
	}
	if k == len(batch) && sum <= holdBytes {
		return batch, held, false, nil
	}
	// Too much to hold: claim the first k (the rest is unlocked when the
	// claim commits, which need not wait for the WAL: see claimBatch).
	c := &pgx.Batch{}
	c.Queue(`SELECT set_config('synchronous_commit', 'off', true)`)
	var claimed int64
	c.Queue(fmt.Sprintf(`UPDATE %s SET claimed_by = $1, claimed_at = now() WHERE ctid = ANY($2::text[]::tid[])`, h.InodeTable()),
		worker, tids[:k]).Exec(func(tag pgconn.CommandTag) error { claimed = tag.RowsAffected(); return nil })
	if err := conn.SendBatch(ctx, c).Close(); err != nil {
		return fail(err)
	}
	if claimed != int64(k) {
		// The rows are locked by this transaction: they cannot have moved.
		return fail(fmt.Errorf("claimed %d of the %d rows held", claimed, k))
	}
	if err := commitOpen(ctx, conn); err != nil {
		return fail(err)
	}
	held.open = false
	held.end()
	// The rest was locked until now: other workers may have passed it.
	return batch[:k], nil, k < len(batch), nil
}

// end rolls the hold's transaction back if it is still open (its rows
// are pending again) and gives back its connection and slot. A nil hold
// is a claimed batch: nothing to do.
func (hd *hold) end() {
	if hd == nil {
		return
	}
	if hd.conn != nil {
		hd.rollback()
		hd.conn.Release()
		hd.conn = nil
	}
	if hd.done != nil {
		hd.done()
		hd.done = nil
	}
}

// rollback ends the open transaction; a connection that cannot say so is
// closed (the server then ends the transaction itself).
func (hd *hold) rollback() {
	if !hd.open {
		return
	}
	hd.open = false
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := hd.conn.Exec(ctx, `ROLLBACK`); err != nil {
		hd.conn.Conn().Close(ctx)
	}
}

// commitOpen commits the transaction open on conn; a transaction that
// had failed ends in a rollback, which is an error here.
func commitOpen(ctx context.Context, conn *pgxpool.Conn) error {
	tag, err := conn.Exec(ctx, `COMMIT`)
	if err == nil && tag.String() != "COMMIT" {
		err = fmt.Errorf("the transaction was rolled back (%s)", tag)
	}
	return err
}

// relock takes the locks of a hold whose transaction ended without a
// known commit (a failed commit, a lost connection) again, on a new
// transaction, and returns the outcomes whose rows it got back unchanged,
// and how many copied inodes it did not: another process holds or claims
// them now. A row whose commit did happen (its answer was lost) is not
// held again: a copied inode recorded with its blob is left as it is and
// not lost, an inode whose failure was recorded (its error count moved
// on) is not counted twice.
func (hd *hold) relock(ctx context.Context, db *pgxpool.Pool, h medium.Hash, outs []outcome) ([]outcome, int64, error) {
	if hd.conn != nil && hd.conn.Conn().IsClosed() {
		hd.conn.Release()
		hd.conn = nil
	}
	if hd.conn == nil {
		conn, err := db.Acquire(ctx)
		if err != nil {
			return nil, 0, fmt.Errorf("medium %s: connecting to hold inodes again: %w", h, err)
		}
		hd.setConn(conn)
	}
	keys := make([]key, len(outs))
	blobs := make([]string, len(outs))
	for i, o := range outs {
		keys[i], blobs[i] = o.n.key(), o.blob
	}
	devs, inos := splitKeys(keys)
	errs := map[key]int{}      // held again: their error count
	recorded := map[key]bool{} // copied, to the blob this batch stored
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	hd.open = true
	b.Queue(fmt.Sprintf(`
		SELECT i.dev, i.ino, i.error_count FROM %s AS i, unnest($2::bigint[], $3::bigint[]) AS u(dev, ino)
		WHERE i.medium_hash = $1 AND i.dev = u.dev AND i.ino = u.ino
		  AND NOT i.copied AND i.claimed_by IS NULL
		FOR UPDATE OF i SKIP LOCKED`, h.InodeTable()), string(h), devs, inos).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var k key
			var n int
			if err := rows.Scan(&k.dev, &k.ino, &n); err != nil {
				return err
			}
			errs[k] = n
		}
		return rows.Err()
	})
	b.Queue(fmt.Sprintf(`
		SELECT i.dev, i.ino FROM %s AS i, unnest($2::bigint[], $3::bigint[], $4::text[]) AS u(dev, ino, blobid)
		WHERE i.medium_hash = $1 AND i.dev = u.dev AND i.ino = u.ino AND i.copied AND i.blobid = u.blobid`, h.InodeTable()),
		string(h), devs, inos, blobs).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var k key
			if err := rows.Scan(&k.dev, &k.ino); err != nil {
				return err
			}
			recorded[k] = true
		}
		return rows.Err()
	})
	if err := hd.conn.SendBatch(ctx, b).Close(); err != nil {
		hd.rollback()
		return nil, 0, fmt.Errorf("medium %s: holding inodes again: %w", h, err)
	}
	var kept []outcome
	var lost int64
	for _, o := range outs {
		n, ok := errs[o.n.key()]
		switch {
		case ok && n == o.n.Errors:
			kept = append(kept, o)
		case o.kind == copied && !recorded[o.n.key()]:
			lost++
		}
	}
	return kept, lost, nil
}
