package copier_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loader"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func smallFiles(n int) testimg.Spec {
	var es []testimg.Entry
	for i := range n {
		es = append(es, testimg.Entry{Path: fmt.Sprintf("f%02d", i), Kind: testimg.File, Size: int64(100 + i), Seed: uint64(i)})
	}
	return testimg.Spec{Entries: es}
}

// holdLock takes the advisory lock a live copier process named worker holds.
func (f *fixture) holdLock(worker string) *pgx.Conn {
	f.t.Helper()
	conn, err := pgx.Connect(context.Background(), f.url)
	require.NoError(f.t, err)
	_, err = conn.Exec(context.Background(), `SELECT pg_advisory_lock(hashtextextended($1, 0))`, "ntt-copier:"+string(f.h)+":"+worker)
	require.NoError(f.t, err)
	f.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// waitUnlocked waits until no session holds worker's lock: a closed
// connection's backend lets go of its locks when it exits, a moment after
// Close returns.
func (f *fixture) waitUnlocked(worker string) {
	f.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, f.url)
	require.NoError(f.t, err)
	defer conn.Close(ctx)
	key := "ntt-copier:" + string(f.h) + ":" + worker
	for deadline := time.Now().Add(10 * time.Second); ; {
		var got bool
		require.NoError(f.t, conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, key).Scan(&got))
		if got {
			_, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, key)
			require.NoError(f.t, err)
			return
		}
		require.True(f.t, time.Now().Before(deadline), "the lock of %s is still held", worker)
		time.Sleep(10 * time.Millisecond)
	}
}

// Claims of dead workers come back; claims of live workers are left alone
// until their lease runs out.
func TestOrphanedAndExpiredClaims(t *testing.T) {
	f := newMedium(t, smallFiles(15))
	ctx := context.Background()
	claim := func(worker string, age time.Duration, offset int) {
		_, err := f.db.Exec(ctx, `UPDATE inode SET claimed_by = $2, claimed_at = now() - $3::float8 * interval '1 second'
			WHERE medium_hash = $1 AND (dev, ino) IN (
				SELECT dev, ino FROM inode WHERE medium_hash = $1 AND fs_type = 'f' ORDER BY ino OFFSET $4 LIMIT 5)`,
			string(f.h), worker, age.Seconds(), offset)
		require.NoError(t, err)
	}
	claim("ghost", 0, 0)               // its process is gone: no lock
	claim("alive", 0, 5)               // its process runs: lock held, claims fresh
	claim("vanished", 2*time.Hour, 10) // lock held, but no renewal for 2 hours
	live := f.holdLock("alive")
	f.holdLock("vanished")
	_, _, claimed := f.monitor()
	require.Equal(t, int64(15), claimed)

	o := f.options()
	o.Lease = time.Hour
	st := f.mustRun(o)
	assert.Equal(t, int64(10), st.Copied, "the ghost's and the vanished host's inodes")
	assert.False(t, st.Complete)
	_, pending, claimed := f.monitor()
	assert.Zero(t, pending)
	assert.Equal(t, int64(5), claimed, "the live worker keeps its claims")
	var who string
	require.NoError(t, f.db.QueryRow(ctx, `SELECT string_agg(DISTINCT claimed_by, ',') FROM inode
		WHERE medium_hash = $1 AND NOT copied AND claimed_by IS NOT NULL`, string(f.h)).Scan(&who))
	assert.Equal(t, "alive", who)

	live.Close(ctx) // the live worker dies: its claims are orphans at once
	f.waitUnlocked("alive")
	st = f.mustRun(o)
	assert.Equal(t, int64(5), st.Copied)
	assert.True(t, st.Complete)
	f.checkComplete()
}

// Rows held by another process (locked FOR UPDATE, unclaimed) are passed
// over; when that process dies after this run's cursor has passed them,
// they are pending again with no claim to release, and this run goes back
// for them before it ends.
func TestHeldRowsOfADeadProcessBehindTheCursor(t *testing.T) {
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) { heldRowsOfADeadProcess(t, workers) })
	}
}

func heldRowsOfADeadProcess(t *testing.T, workers int) {
	f := newMedium(t, smallFiles(15))
	ctx := context.Background()
	other, err := pgx.Connect(ctx, f.url)
	require.NoError(t, err)
	defer other.Close(ctx)
	tx, err := other.Begin(ctx)
	require.NoError(t, err)
	var held int
	require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM inode
		WHERE medium_hash = $1 AND fs_type = 'f' ORDER BY dev, ino LIMIT 5 FOR UPDATE) s`, string(f.h)).Scan(&held))
	require.Equal(t, 5, held)
	_, pending, _ := f.monitor()
	require.EqualValues(t, 15, pending, "held rows count as pending")

	o := f.options()
	o.BatchSize, o.Workers, o.FixedWorkers = 5, workers, true
	var died atomic.Bool
	o.Progress = &onBatch{fn: func(n int64) {
		if n == 1 { // the cursor is past the held rows: the holder dies
			require.NoError(t, tx.Rollback(ctx))
			died.Store(true)
		}
	}}
	st := f.mustRun(o)
	require.True(t, died.Load())
	assert.EqualValues(t, 15, st.Copied, "the dead process's rows were left to the next run")
	assert.True(t, st.Complete)
	f.checkComplete()
}

// A medium of fewer batches than Workers (a floppy) starts one worker a
// batch, not Workers that would each ask for a batch and find none.
func TestSmallMediumStartsAWorkerABatch(t *testing.T) {
	f := newMedium(t, smallFiles(15))
	logger, logs := captureLog(t)
	var workers sync.Map
	o := f.options()
	o.Workers, o.Logger = 8, logger
	o.Progress = &batchRecorder{done: func(b copier.BatchResult) { workers.Store(b.Worker, true) }}
	st := f.mustRun(o)
	assert.True(t, st.Complete)
	assert.EqualValues(t, 2, st.Batches)
	// Two copying at the start: batches of 8 files, two batches.
	assert.Contains(t, logs.String(), `"workers_started":2,`)
	workers.Range(func(w, _ any) bool {
		assert.Less(t, w.(int), 2, "a batch of a worker that was not started")
		return true
	})
	f.checkComplete()

	// Large files make more batches than their count alone: a claim
	// stops at batchBytes (here 150 bytes, files of 100-105).
	defer copier.SetBatchBytes(150)()
	g := newMedium(t, smallFiles(6))
	logger, logs = captureLog(t)
	o = g.options()
	o.Workers, o.Logger = 8, logger
	st = g.mustRun(o)
	assert.True(t, st.Complete)
	assert.GreaterOrEqual(t, st.Batches, int64(3))
	assert.Contains(t, logs.String(), `"workers_started":5,`, "one a batch of 150 bytes, the medium's 615 bytes")
	g.checkComplete()
}

// One worker id is one process: a second process with the same id is
// refused while the first runs.
func TestWorkerIDInUse(t *testing.T) {
	f := newMedium(t, smallFiles(2))
	defer copier.SetLockWait(300 * time.Millisecond)()
	f.holdLock("test-worker")
	_, err := f.run(f.options())
	require.ErrorIs(t, err, copier.ErrWorkerBusy)
	_, pending, _ := f.monitor()
	assert.Equal(t, int64(2), pending)
}

type onFile struct {
	n  atomic.Int64
	fn func(n int64)
}

func (p *onFile) Started(copier.Totals)        {}
func (p *onFile) BatchDone(copier.BatchResult) {}
func (p *onFile) FileDone(copier.FileResult)   { p.fn(p.n.Add(1)) }

// SIGINT/SIGTERM (ctx cancelled): the current files finish, the batch is
// committed, unprocessed claims are released; the seed's monitoring query
// is true during the run and after it; a rerun finishes the medium. A
// batch of small files is held by row lock, and counts as pending while
// it is copied; one too large to hold is claimed, and counts as claimed.
func TestInterruptReleasesClaims(t *testing.T) {
	for _, c := range []struct {
		name      string
		holdBytes int64
		claimed   int64 // the batch in flight as the monitoring query sees it
	}{
		{"held", 1 << 20, 0},
		{"claimed", 0, 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer copier.SetHoldBytes(c.holdBytes)()
			f := newMedium(t, smallFiles(40))
			files := countFiles(t, f)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var during [3]int64
			prog := &onFile{}
			prog.fn = func(n int64) {
				if n == 5 {
					during[0], during[1], during[2] = f.monitor()
					cancel()
				}
			}
			o := f.options()
			o.BatchSize, o.Progress = 10, prog
			st, err := copier.Run(ctx, f.db, o)
			require.ErrorIs(t, err, context.Canceled)
			assert.Equal(t, c.claimed, during[2], "the batch in flight")
			assert.Equal(t, files+2, during[0]+during[1]+during[2], "every inode is done, pending or claimed")
			assert.Equal(t, int64(5), st.Copied, "the files started before the signal are finished and committed")
			assert.Equal(t, int64(5), st.Released)
			done, pending, claimed := f.monitor()
			assert.Zero(t, claimed)
			assert.Equal(t, files-5, pending)
			assert.Equal(t, int64(5+2), done) // and the two directories

			st = f.mustRun(f.options())
			assert.Equal(t, files-5, st.Copied)
			f.checkComplete()
		})
	}
}

// The copier refuses a medium that is not mounted instead of reporting
// every file missing.
func TestNotMounted(t *testing.T) {
	f := newMedium(t, smallFiles(2))
	o := f.options()
	o.MountRoot = t.TempDir()
	_, err := f.run(o)
	require.ErrorIs(t, err, copier.ErrNotMounted)
	require.NoError(t, os.MkdirAll(f.h.MountPath(o.MountRoot), 0o755)) // an empty mount point
	_, err = f.run(o)
	require.ErrorIs(t, err, copier.ErrNotMounted)
	assert.Contains(t, err.Error(), string(f.h))
	_, pending, claimed := f.monitor()
	assert.Equal(t, int64(2), pending)
	assert.Zero(t, claimed)
}

// A multi-partition disk: partitions mounted at <root>/<hash>/p1 and p2,
// catalog paths /p1/… and /p2/…; the same inode numbers on both partitions
// are told apart by dev. Every file is copied from its own partition.
func TestMultiPartitionMedium(t *testing.T) {
	testimg.RequireRoot(t)
	specs := []testimg.Spec{
		{Entries: []testimg.Entry{{Path: "etc/x", Kind: testimg.File, Data: []byte("partition one\n")},
			{Path: "same", Kind: testimg.File, Data: []byte("shared\n")}}},
		{Entries: []testimg.Entry{{Path: "etc/x", Kind: testimg.File, Data: []byte("partition two\n")},
			{Path: "same", Kind: testimg.File, Data: []byte("shared\n")},
			{Path: "only2", Kind: testimg.File, Size: 20 << 20, Seed: 4}}},
	}
	f := newMultiMedium(t, specs)
	f.url = mustURL(t)
	f.db = mustPool(t, f.url)
	ctx := context.Background()
	parts, err := enumerate.PartitionMounts(f.mount)
	require.NoError(t, err)
	require.Len(t, parts, 2)
	var raw bytes.Buffer
	_, err = enumerate.Walk(ctx, []string{f.mount}, enumerate.Options{EnterMounts: parts}, &raw)
	require.NoError(t, err)
	_, err = loader.Load(ctx, f.db, string(f.h), &raw, loader.Options{})
	require.NoError(t, err)
	var sameIno int
	require.NoError(t, f.db.QueryRow(ctx, `SELECT count(DISTINCT dev) FROM path WHERE medium_hash = $1 AND path IN ('/p1/same', '/p2/same')`,
		string(f.h)).Scan(&sameIno))
	require.Equal(t, 2, sameIno)

	st := f.mustRun(f.options())
	assert.Equal(t, int64(5), st.Copied)
	assert.Equal(t, int64(4), st.New)
	f.checkComplete()
	got, err := os.ReadFile(filepath.Join(f.store, "archived", string(f.h), "p2", "etc", "x"))
	require.NoError(t, err)
	assert.Equal(t, "partition two\n", string(got))
}

// Store verification re-hashes content: a flipped byte, a missing blob and
// a blob with the wrong mode are found; good blobs get last_checked.
func TestVerifyStoreFindsDamage(t *testing.T) {
	f := newMedium(t, smallFiles(10))
	f.mustRun(f.options())
	ctx := context.Background()
	var ids []string
	rows, err := f.db.Query(ctx, `SELECT blobid FROM blobs ORDER BY blobid LIMIT 3`)
	require.NoError(t, err)
	ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	path := func(id string) string { return filepath.Join(f.store, "by-hash", id[0:2], id[2:4], id) }
	b, err := os.ReadFile(path(ids[0]))
	require.NoError(t, err)
	b[len(b)/2] ^= 0x01
	require.NoError(t, os.WriteFile(path(ids[0]), b, 0o644)) // same size, other content
	require.NoError(t, os.Remove(path(ids[1])))
	require.NoError(t, os.Chmod(path(ids[2]), 0o600))

	var problems []copier.BlobProblem
	rep, err := copier.VerifyStore(ctx, f.db, copier.VerifyOptions{StoreRoot: f.store,
		OnProblem: func(p copier.BlobProblem) { problems = append(problems, p) }})
	require.NoError(t, err)
	assert.True(t, rep.Failed())
	assert.Equal(t, int64(10), rep.Checked)
	assert.Equal(t, int64(7), rep.OK)
	assert.Equal(t, int64(1), rep.Mismatched)
	assert.Equal(t, int64(1), rep.Missing)
	assert.Equal(t, int64(1), rep.BadMode)
	assert.Len(t, problems, 3)
	for _, p := range problems {
		if p.Problem == copier.BlobMismatch {
			assert.Equal(t, ids[0], p.ID)
			assert.Equal(t, blake3Hex(b), p.Actual)
		}
	}
	var unchecked int
	require.NoError(t, f.db.QueryRow(ctx, `SELECT count(*) FROM blobs WHERE last_checked IS NULL`).Scan(&unchecked))
	assert.Equal(t, 3, unchecked, "only good blobs are marked checked")
	// The damaged and the missing blob are quarantined, the one with a
	// wrong mode (its content is good) is not.
	assert.Equal(t, int64(2), rep.Quarantined)
	assert.Equal(t, int64(2), rep.Reset, "their inodes are pending again")
	assert.Equal(t, int64(2), rep.Awaiting)

	// The least recently checked first: the one of wrong mode, then two
	// good ones; quarantined blobs are not checked again.
	rep, err = copier.VerifyStore(ctx, f.db, copier.VerifyOptions{StoreRoot: f.store, Oldest: 3})
	require.NoError(t, err)
	assert.Equal(t, int64(3), rep.Checked)
	assert.Equal(t, int64(1), rep.BadMode)
	assert.Equal(t, int64(2), rep.OK)
	assert.Equal(t, int64(2), rep.Awaiting)
	rep, err = copier.VerifyStore(ctx, f.db, copier.VerifyOptions{StoreRoot: f.store, Sample: 4})
	require.NoError(t, err)
	assert.Equal(t, int64(4), rep.Checked)
	_, err = copier.VerifyStore(ctx, f.db, copier.VerifyOptions{StoreRoot: f.store, Sample: 1, Oldest: 1})
	assert.ErrorIs(t, err, copier.ErrInvalidOptions)
	_, err = copier.VerifyStore(ctx, f.db, copier.VerifyOptions{StoreRoot: t.TempDir()})
	assert.True(t, errors.Is(err, os.ErrNotExist), "%v", err)
}

// blockingPolicy never answers until released: a check that hangs, as a
// read on a failing image can.
type blockingPolicy struct{ release chan struct{} }

func (p blockingPolicy) Failed(ctx context.Context, f copier.Failure) copier.Decision {
	<-p.release
	return copier.Decision{Action: copier.Retry}
}
func (blockingPolicy) Succeeded(string, int64, int64) {}

// A worker that makes no progress for the stall timeout ends the run with
// ErrStalled and the medium problem copy_stalled, instead of an endless
// wait; its claims come back.
func TestStallIsAnErrorNotAWait(t *testing.T) {
	f := newMedium(t, smallFiles(3))
	ctx := context.Background()
	_, err := f.db.Exec(ctx, `UPDATE path SET path = '/gone' WHERE medium_hash = $1 AND path = '/f01'`, string(f.h))
	require.NoError(t, err)
	p := blockingPolicy{release: make(chan struct{})}
	t.Cleanup(func() { close(p.release) })
	o := f.options()
	o.Policy, o.StallTimeout = p, time.Second
	_, err = f.run(o)
	require.ErrorIs(t, err, copier.ErrStalled)
	var stalled bool
	require.NoError(t, f.db.QueryRow(ctx, `SELECT problems ? 'copy_stalled' FROM medium WHERE medium_hash = $1`, string(f.h)).Scan(&stalled))
	assert.True(t, stalled)
	_, _, claimed := f.monitor()
	assert.Zero(t, claimed, "the stuck worker's claims are released")
	// and its held batch is let go, though the worker still blocks.
	var all, free int
	require.NoError(t, pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM inode WHERE medium_hash = $1 AND NOT copied`, string(f.h)).Scan(&all); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM inode WHERE medium_hash = $1 AND NOT copied
			FOR UPDATE SKIP LOCKED) s`, string(f.h)).Scan(&free)
	}))
	assert.NotZero(t, all)
	assert.Equal(t, all, free, "rows still locked by the stuck worker")
}

// A full store is the store's failure, not the medium's: the run stops with
// a *StoreError, no inode is marked failed, no claim is left.
func TestFullStoreStopsTheRun(t *testing.T) {
	f := newMedium(t, testimg.Spec{Entries: []testimg.Entry{
		{Path: "a", Kind: testimg.File, Size: 300 << 10, Seed: 1},
		{Path: "b", Kind: testimg.File, Size: 300 << 10, Seed: 2},
	}})
	require.NoError(t, unix.Mount("tmpfs", f.store, "tmpfs", 0, "size=128k"))
	t.Cleanup(func() { unmount(t, f.store) })
	_, err := f.run(f.options())
	require.Error(t, err)
	var se *copier.StoreError
	require.ErrorAs(t, err, &se)
	assert.ErrorIs(t, err, unix.ENOSPC)
	var failed, errs int64
	require.NoError(t, f.db.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE status <> 'pending'), sum(error_count)
		FROM inode WHERE medium_hash = $1 AND fs_type = 'f'`, string(f.h)).Scan(&failed, &errs))
	assert.Zero(t, failed)
	assert.Zero(t, errs)
	_, pending, claimed := f.monitor()
	assert.Equal(t, int64(2), pending)
	assert.Zero(t, claimed)
}

// The session holding the worker lock is killed (a lost connection): the
// copier takes the lock again and finishes; its claims were never orphans
// for long.
func TestWorkerLockSessionLost(t *testing.T) {
	f := newMedium(t, smallFiles(12))
	defer copier.SetLockCheck(50 * time.Millisecond)()
	ctx := context.Background()
	lockPID := func() (pid int, ok bool) {
		err := f.db.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
			AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0)`,
			"ntt-copier:"+string(f.h)+":test-worker").Scan(&pid)
		return pid, err == nil
	}
	var before, after int
	var heldAfter bool
	prog := &onFile{}
	prog.fn = func(n int64) {
		switch n {
		case 3:
			pid, ok := lockPID()
			require.True(t, ok, "the lock is held during the run")
			before = pid
			_, err := f.db.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid)
			require.NoError(t, err)
			time.Sleep(500 * time.Millisecond) // several lock checks
		case 4:
			after, heldAfter = lockPID()
		}
	}
	o := f.options()
	o.BatchSize, o.Progress = 2, prog
	st := f.mustRun(o)
	assert.Equal(t, int64(12), st.Copied)
	assert.True(t, heldAfter, "the lock is taken again")
	assert.NotEqual(t, before, after, "on a new session")
	f.checkComplete()
}
