package copier_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/internal/dbconn"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// onBatch calls fn with the number of batches committed so far, and keeps
// the files each worker copied.
type onBatch struct {
	n  atomic.Int64
	fn func(n int64)
	copiedList
}

func (p *onBatch) BatchDone(copier.BatchResult) { p.fn(p.n.Add(1)) }

// copiedOnce asserts that every file inode of the medium was reported
// copied exactly once.
func (f *fixture) copiedOnce(cl *copiedList) {
	f.t.Helper()
	seen := map[[2]int64]int{}
	for _, k := range cl.out {
		seen[k]++
	}
	for k, n := range seen {
		assert.Equal(f.t, 1, n, "inode %v copied %d times", k, n)
	}
	var files int
	require.NoError(f.t, f.db.QueryRow(context.Background(), `SELECT count(*) FROM inode WHERE medium_hash = $1 AND fs_type = 'f'`,
		string(f.h)).Scan(&files))
	assert.Len(f.t, seen, files, "every file inode copied")
}

// `pg_ctl restart -m fast` in the middle of a copy (after the third batch,
// while the other worker is reading its files): the copier waits the
// outage out, takes its worker lock again and finishes in the same run;
// every file is copied once, every blob is right, nothing stays claimed.
func TestCatalogRestartMidCopy(t *testing.T) {
	pg := pgtest.NewCluster(t)
	f := newMediumAt(t, manyFiles(300, 0), pg.URL())
	defer copier.SetLockCheck(100 * time.Millisecond)()
	var restarted atomic.Bool
	prog := &onBatch{}
	prog.fn = func(n int64) {
		if n == 3 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := pg.Restart(ctx); err != nil {
				t.Errorf("restarting the catalog: %v", err)
				return
			}
			restarted.Store(true)
		}
	}
	logger, logs := captureLog(t)
	o := f.options()
	o.Workers, o.BatchSize, o.Progress, o.Logger = 2, 10, prog, logger
	o.DBRetry = time.Minute
	st, err := f.run(o)
	require.NoError(t, err)
	require.True(t, restarted.Load(), "the catalog was restarted mid-copy")
	assert.NotEmpty(t, logs.lines("catalog unavailable; retrying"), "the outage was noticed")
	assert.NotEmpty(t, logs.lines("catalog reachable again"))
	assert.True(t, st.Complete)
	assert.Zero(t, st.Lost)
	assert.Zero(t, st.Errors)
	f.copiedOnce(&prog.copiedList)
	f.checkComplete()
}

// The catalog stops for longer than the bound (3 s): the run ends with an
// error wrapping dbconn.ErrUnavailable that says so; once the catalog is
// back, a rerun releases what was left claimed and completes the medium.
func TestCatalogOutageLongerThanBound(t *testing.T) {
	pg := pgtest.NewCluster(t)
	f := newMediumAt(t, manyFiles(300, 0), pg.URL())
	var stopped atomic.Bool
	prog := &onBatch{}
	prog.fn = func(n int64) {
		if n == 3 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := pg.Stop(ctx); err != nil {
				t.Errorf("stopping the catalog: %v", err)
				return
			}
			stopped.Store(true)
		}
	}
	o := f.options()
	o.Workers, o.BatchSize, o.Progress = 2, 10, prog
	o.DBRetry = 3 * time.Second
	st, err := f.run(o)
	require.True(t, stopped.Load())
	require.Error(t, err)
	assert.ErrorIs(t, err, dbconn.ErrUnavailable)
	assert.Contains(t, err.Error(), "catalog database unavailable for more than 3s")
	assert.False(t, st.Complete)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, pg.Start(ctx))
	o = f.options()
	o.Workers, o.BatchSize = 2, 10
	st2, err := f.run(o)
	require.NoError(t, err)
	assert.True(t, st2.Complete)
	f.checkComplete()
}

// The loop device shrinks under the mounted medium in the middle of a copy
// (its backing file cut, LOOP_SET_CAPACITY: what a USB bridge reset or a
// cut image does). The run stops at the first failure that shows it:
// source_lost is recorded, nothing is claimed, no file is marked failed
// (retryable or permanent), a handful of attempts at most. Once the image
// is whole again, a rerun completes the medium with every blob right.
func TestSourceShrinksMidCopy(t *testing.T) {
	var es []testimg.Entry
	for i := range 400 {
		es = append(es, testimg.Entry{Path: fmt.Sprintf("d%d/f%03d", i%8, i), Kind: testimg.File, Size: 40 << 10, Seed: uint64(100 + i)})
	}
	f := newMedium(t, testimg.Spec{BlockSize: 4096, Size: 48 << 20, Entries: es})

	// Cut at the start of the file in the middle (by position): the files
	// after it lie past the new end.
	var starts []int64
	for _, e := range es {
		s, _ := extentOf(t, filepath.Join(f.mount, e.Path))
		starts = append(starts, s)
	}
	slices.Sort(starts)
	cut := starts[len(starts)/2]
	whole, err := os.ReadFile(f.image)
	require.NoError(t, err)
	setCapacity := func() {
		fd, err := unix.Open(f.loop.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(fd)
		require.NoError(t, unix.IoctlSetInt(fd, unix.LOOP_SET_CAPACITY, 0))
	}

	var once sync.Once
	var cutErr error
	prog := &onFile{}
	prog.fn = func(n int64) {
		if n == 20 {
			once.Do(func() {
				if cutErr = testimg.Truncate(f.image, cut); cutErr != nil {
					return
				}
				fd, err := unix.Open(f.loop.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					cutErr = err
					return
				}
				cutErr = unix.IoctlSetInt(fd, unix.LOOP_SET_CAPACITY, 0)
				unix.Close(fd)
			})
		}
	}
	logger, logs := captureLog(t)
	o := f.options()
	o.Workers, o.BatchSize, o.Progress, o.Logger = 2, 10, prog, logger
	o.Policy = f.policy(t)
	st, err := f.run(o)
	require.NoError(t, cutErr)
	require.Error(t, err)
	assert.ErrorIs(t, err, copier.ErrSourceLost)
	assert.Contains(t, err.Error(), "shrank")
	assert.False(t, st.Complete)
	assert.NotEmpty(t, logs.lines("source lost"))
	assert.LessOrEqual(t, st.Errors, int64(4), "a few attempts at most, not one per file")
	assert.Less(t, st.Copied, int64(len(es)))

	ctx := context.Background()
	var lost bool
	require.NoError(t, f.db.QueryRow(ctx, `SELECT coalesce(problems ? 'source_lost', false) FROM medium WHERE medium_hash = $1`,
		string(f.h)).Scan(&lost))
	assert.True(t, lost, "source_lost recorded in medium.problems")
	_, _, claimed := f.monitor()
	assert.Zero(t, claimed, "nothing claimed")
	var permanent, retryable, events int64
	require.NoError(t, f.db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'failed_permanent'),
		count(*) FILTER (WHERE status = 'failed_retryable') FROM inode WHERE medium_hash = $1`, string(f.h)).Scan(&permanent, &retryable))
	assert.Zero(t, permanent, "no failed_permanent row")
	assert.Zero(t, retryable, "no file given up")
	require.NoError(t, f.db.QueryRow(ctx, `SELECT count(*) FROM diagnostic_event WHERE medium_hash = $1`, string(f.h)).Scan(&events))
	assert.LessOrEqual(t, events, int64(4), "diagnostic events bounded")

	// The image grows back whole: the rerun completes the medium.
	require.NoError(t, os.WriteFile(f.image, whole, 0o644))
	setCapacity()
	o = f.options()
	o.Workers, o.BatchSize = 2, 10
	o.Policy = f.policy(t)
	st, err = f.run(o)
	require.NoError(t, err)
	assert.True(t, st.Complete)
	assert.Zero(t, st.GaveUp+st.Skipped)
	f.checkComplete()
}
