package copier_test

import (
	"context"
	"fmt"
	"github.com/jackc/pgx/v5/pgxpool"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// richSpec is testimg.EveryKind (hostile names, hardlinks, symlinks of
// every sort, empty, sparse and seeded files, devices, fifos) plus
// duplicates, small and large (streamed) ones.
func richSpec() testimg.Spec {
	s := testimg.EveryKind()
	s.Entries = append(s.Entries,
		testimg.Entry{Path: "dup/a", Kind: testimg.File, Data: []byte("the same words\n")},
		testimg.Entry{Path: "dup/b", Kind: testimg.File, Data: []byte("the same words\n")},
		testimg.Entry{Path: "dup/c", Kind: testimg.File, Size: 100000, Seed: 7}, // = seeded.bin
		testimg.Entry{Path: "empty2", Kind: testimg.File},
		// Above 16 MiB: streamed through the hash into the store.
		testimg.Entry{Path: "big/one", Kind: testimg.File, Size: 17 << 20, Seed: 42},
		testimg.Entry{Path: "big/same", Kind: testimg.File, Size: 17 << 20, Seed: 42},
		testimg.Entry{Path: "big/other", Kind: testimg.File, Size: 17<<20 + 3, Seed: 43},
	)
	return s
}

// uniqueContents returns the number of distinct file contents of the spec
// and their total size.
func uniqueContents(s testimg.Spec) (n int, bytes int64) {
	seen := map[string]bool{}
	for _, e := range s.Entries {
		if e.Kind != testimg.File {
			continue
		}
		id := blake3Hex(e.Content())
		if !seen[id] {
			seen[id] = true
			n++
			bytes += e.FileSize()
		}
	}
	return n, bytes
}

func countFiles(t *testing.T, f *fixture) int64 {
	var n int64
	require.NoError(t, f.db.QueryRow(context.Background(),
		`SELECT count(*) FROM inode WHERE medium_hash = $1 AND fs_type = 'f'`, string(f.h)).Scan(&n))
	return n
}

// The runbook's Phase 3 on a medium with every kind of entry: every file
// lands in by-hash once per content, every path in the tree, and the
// catalog says so.
func TestCopyEndToEnd(t *testing.T) {
	f := newMedium(t, richSpec())
	files := countFiles(t, f)
	o := f.options()
	o.Workers, o.BatchSize = 2, 7
	st := f.mustRun(o)
	f.checkComplete()

	unique, uniqueBytes := uniqueContents(f.spec)
	assert.Equal(t, files, st.Copied)
	assert.Equal(t, files, st.Start.Files)
	assert.Equal(t, int64(unique), st.New, "one blob per distinct content")
	assert.Equal(t, st.Copied-st.New, st.Deduped)
	assert.LessOrEqual(t, st.BytesWritten, uniqueBytes, "bytes written ≤ unique bytes")
	assert.Equal(t, uniqueBytes, st.BytesWritten, "a fresh store gets every unique content once")
	assert.LessOrEqual(t, st.BytesDiscarded, int64(17<<20), "only the large duplicate was staged and dropped")
	assert.True(t, st.Complete)
	assert.Zero(t, st.Errors)
	assert.Positive(t, st.TreeDirs)
	assert.Positive(t, st.TreeSymlinks)

	ctx := context.Background()
	var blobs, created, distinct, noMime int64
	require.NoError(t, f.db.QueryRow(ctx, `SELECT count(*) FROM blobs`).Scan(&blobs))
	require.NoError(t, f.db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE by_hash_created), count(DISTINCT blobid),
		count(*) FILTER (WHERE mime_type IS NULL)
		FROM inode WHERE medium_hash = $1 AND fs_type = 'f'`, string(f.h)).Scan(&created, &distinct, &noMime))
	assert.Equal(t, int64(unique), blobs)
	assert.Equal(t, int64(unique), distinct)
	assert.Equal(t, int64(unique), created, "exactly one inode per blob created it")
	assert.Zero(t, noMime)
	var mime string
	require.NoError(t, f.db.QueryRow(ctx, `SELECT i.mime_type FROM inode i JOIN path p USING (medium_hash, dev, ino)
		WHERE p.medium_hash = $1 AND p.path = '/hello.txt'`, string(f.h)).Scan(&mime))
	assert.Contains(t, mime, "text/plain")

	// Nothing left: a rerun has nothing to do.
	st2 := f.mustRun(o)
	assert.Zero(t, st2.Start.Files)
	assert.Zero(t, st2.Processed)
	assert.True(t, st2.Complete)
	f.checkComplete()
}

// A batch of large files holds no more than fit in the byte bound (at
// least one), and a medium smaller than a batch per worker is still shared
// between the workers.
func TestBatchesBoundedByBytesAndShared(t *testing.T) {
	spec := testimg.Spec{}
	for i := range 5 {
		spec.Entries = append(spec.Entries, testimg.Entry{Path: fmt.Sprintf("big/%d", i), Kind: testimg.File, Size: 3 << 20, Seed: uint64(i + 1)})
	}
	f := newMedium(t, spec)
	defer copier.SetBatchBytes(5 << 20)()
	o := f.options()
	o.Workers, o.BatchSize = 1, 100
	var parts []copier.BatchResult
	o.Progress = &batchRecorder{done: func(r copier.BatchResult) { parts = append(parts, r) }}
	st := f.mustRun(o)
	f.checkComplete()
	require.Equal(t, int64(5), st.Copied)
	// 3 MiB files, 5 MiB bound: two files per batch (the second starts at
	// 3 MiB, within the bound), then the last one.
	require.Len(t, parts, 3)
	for i, want := range []int{2, 2, 1} {
		assert.Equal(t, want, parts[i].Files, "batch %d", i)
		assert.Equal(t, int64(want)*(3<<20), parts[i].BytesRead, "batch %d", i)
	}
	assert.Equal(t, int64(3), st.Batches)

	// Ten small files, two workers, batches of 1000: two claims of five.
	spec = testimg.Spec{}
	for i := range 10 {
		spec.Entries = append(spec.Entries, testimg.Entry{Path: fmt.Sprintf("f%d", i), Kind: testimg.File, Data: []byte(fmt.Sprint(i))})
	}
	g := newMedium(t, spec)
	o = g.options()
	o.Workers, o.BatchSize = 2, 1000
	st = g.mustRun(o)
	g.checkComplete()
	assert.Equal(t, int64(10), st.Copied)
	assert.Equal(t, int64(2), st.Batches, "each worker claims half")
}

// batchRecorder is a copier.Progress that hands each batch to done.
type batchRecorder struct{ done func(copier.BatchResult) }

func (b *batchRecorder) Started(copier.Totals)          {}
func (b *batchRecorder) FileDone(copier.FileResult)     {}
func (b *batchRecorder) BatchDone(r copier.BatchResult) { b.done(r) }

// By-hash files were once created 0750 under root's umask: blobs are 0644
// and store directories 0755 whatever the umask.
func TestUmask027(t *testing.T) {
	f := newMedium(t, testimg.Spec{Entries: []testimg.Entry{
		{Path: "a", Kind: testimg.File, Data: []byte("a")},
		{Path: "d/b", Kind: testimg.File, Size: 17 << 20, Seed: 3},
	}})
	old := syscall.Umask(0o027)
	st := f.mustRun(f.options())
	syscall.Umask(old)
	require.Equal(t, int64(2), st.Copied)
	f.checkComplete() // every blob 0644
	err := filepath.Walk(f.store, func(p string, fi os.FileInfo, err error) error {
		require.NoError(t, err)
		if fi.IsDir() {
			assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm(), p)
		}
		return nil
	})
	require.NoError(t, err)
}

// A dry run reads and hashes but writes nothing anywhere.
func TestDryRun(t *testing.T) {
	f := newMedium(t, testimg.Spec{Entries: []testimg.Entry{
		{Path: "a", Kind: testimg.File, Data: []byte("a")},
		{Path: "b", Kind: testimg.File, Data: []byte("a")},
		{Path: "c", Kind: testimg.File, Size: 17 << 20, Seed: 3},
	}})
	o := f.options()
	o.DryRun = true
	st := f.mustRun(o)
	assert.Equal(t, int64(3), st.Copied)
	assert.Equal(t, int64(17<<20+2), st.BytesRead)
	assert.Zero(t, st.BytesWritten)
	entries, err := os.ReadDir(f.store)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing written to the store")
	done, pending, claimed := f.monitor()
	assert.Equal(t, int64(3), pending)
	assert.Zero(t, claimed)
	assert.Positive(t, done) // the root directory and lost+found
	_ = copier.DefaultStore
}

// The end of a run counts the files left while the tree's listing runs on
// another connection. On a pool of two connections (one holds the worker
// lock) it lists after the count instead, and still builds the whole tree;
// a run that leaves files pending (Limit) builds none of it and does not
// wait for the listing it sent.
func TestTreeAfterTheCount(t *testing.T) {
	f := newMedium(t, richSpec())
	cfg, err := pgxpool.ParseConfig(f.url)
	require.NoError(t, err)
	cfg.MaxConns = 2
	small, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(small.Close)

	o := f.options()
	o.Limit = 1
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := copier.Run(ctx, f.db, o)
	require.NoError(t, err)
	require.False(t, st.Complete)
	require.Zero(t, st.TreeDirs+st.TreeSymlinks+st.TreeErrors, "no tree before the medium is complete")

	o.Limit = 0
	st, err = copier.Run(ctx, small, o)
	require.NoError(t, err, "a pool of two connections")
	require.True(t, st.Complete)
	require.Positive(t, st.TreeDirs)
	require.Positive(t, st.TreeSymlinks)
	require.Zero(t, st.TreeErrors)
	f.checkComplete()
}

// A medium of a few files is copied without the copier's own indexes,
// whose builds would cost more than the scans they save; a larger one gets
// them.
func TestSmallMediumGetsNoCopierIndexes(t *testing.T) {
	f := newMedium(t, richSpec())
	o := f.options()
	f.mustRun(o)
	f.checkComplete()
	indexes := func() int {
		var n int
		require.NoError(t, f.db.QueryRow(context.Background(), `SELECT count(*) FROM pg_class WHERE relkind = 'i' AND relname IN ($1, $2)`,
			f.h.InodeTable()+"_pending_idx", f.h.InodeTable()+"_claimed_idx").Scan(&n))
		return n
	}
	require.Zero(t, indexes(), "a medium of %d files got the copier's indexes", countFiles(t, f))

	defer copier.SetSmallMedium(1)()
	f.mustRun(o)
	require.Equal(t, 2, indexes(), "the copier's indexes on a medium above the bound")
}
