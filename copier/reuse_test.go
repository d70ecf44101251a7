package copier_test

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// blobStat is a file under <store>/by-hash: where it is, its size, inode
// number and mtime.
type blobStat struct {
	ino        uint64
	size       int64
	mtime      unix.Timespec
	relToStore string
}

// blobFiles lists every file under <store>/by-hash that is not a
// directory (blobs, and any temporary file), by name.
func blobFiles(t *testing.T, store string) map[string]blobStat {
	t.Helper()
	out := map[string]blobStat{}
	root := filepath.Join(store, copier.ByHashDir)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(store, p)
		out[d.Name()] = blobStat{ino: st.Ino, size: st.Size, mtime: st.Mtim, relToStore: rel}
		return nil
	})
	require.NoError(t, err)
	return out
}

// Field failure: "The batch UPDATE failed after files were already stored
// and retried forever." The catalog refuses the batch's commit (a trigger
// raising on UPDATE … SET copied = true) after its blobs were stored and
// synced: the run ends with the catalog's error instead of retrying, with
// every blob in by-hash and nothing recorded. Once the catalog accepts
// commits again, the rerun records every file against the blobs already
// there: the same files (same inode, same mtime), nothing written again
// (no blob stored, 0 bytes written, 0 new blobs), no temporary file.
func TestRerunReusesBlobsStoredBeforeAFailedCommit(t *testing.T) {
	spec := testimg.Spec{Entries: []testimg.Entry{
		{Path: "a/small", Kind: testimg.File, Size: 5000, Seed: 501},
		{Path: "a/mid", Kind: testimg.File, Size: 70 << 10, Seed: 502},
		{Path: "b/meg", Kind: testimg.File, Size: 1<<20 + 17, Seed: 503},
		{Path: "b/dup-of-mid", Kind: testimg.File, Size: 70 << 10, Seed: 502},
		// Above 16 MiB: streamed into an unnamed file while hashed, so the
		// rerun stages it again and must drop it rather than replace the blob.
		{Path: "big", Kind: testimg.File, Size: 17<<20 + 5, Seed: 504},
	}}
	f := newMedium(t, spec)
	ctx := context.Background()
	files := countFiles(t, f)
	require.Equal(t, int64(len(spec.Entries)), files)

	// The expected blob of each catalogued path, and the distinct contents,
	// computed from the spec, not from the copier.
	wantBlob := map[string]string{}
	sizes := map[string]int64{}
	var bigBlob string
	for _, e := range spec.Entries {
		id := blake3Hex(e.Content())
		wantBlob["/"+e.Path] = id
		sizes[id] = e.FileSize()
		if e.Path == "big" {
			bigBlob = id
		}
	}
	require.Len(t, sizes, 4, "four distinct contents")

	// Every blob stored, and when syncs and commits happen. The watch is
	// package-wide: this test must not run in parallel with another copy.
	var (
		mu     sync.Mutex
		events []string // "stored", "sync", "commit"
		stored = map[string]int{}
	)
	defer copier.WatchDurability(func(ev int, ids []string) {
		mu.Lock()
		defer mu.Unlock()
		switch ev {
		case copier.WatchStored:
			stored[ids[0]]++
			events = append(events, "stored")
		case copier.WatchSyncEnd:
			events = append(events, "sync")
		case copier.WatchCommit:
			events = append(events, "commit")
		}
	})()

	// A real refusal by the catalog: the medium's inode partition raises
	// on the copier's commit (copied false -> true), and only there, so
	// that claims and their release still work.
	table := f.h.InodeTable()
	_, err := f.db.Exec(ctx, fmt.Sprintf(`
		CREATE FUNCTION reuse_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'reuse_test: catalog refuses the batch'; END $$;
		CREATE TRIGGER reuse_test_refuse BEFORE UPDATE ON %s
			FOR EACH ROW WHEN (NEW.copied AND NOT OLD.copied) EXECUTE FUNCTION reuse_test_refuse();`, table))
	require.NoError(t, err)

	// One batch holding every file: all of them stored before the commit.
	o := f.options()
	o.BatchSize = 100
	st, err := f.run(o)
	require.Error(t, err, "the refused commit ends the run")
	require.NotErrorIs(t, err, context.DeadlineExceeded, "ended by the refusal, not by retrying until the deadline")
	require.Contains(t, err.Error(), "reuse_test: catalog refuses the batch")
	require.Zero(t, st.Copied, "nothing counted as copied")

	// Stored and durable: every content stored once, a syncfs ended after
	// the last store and before the commit was attempted.
	mu.Lock()
	firstStored, firstEvents := maps.Clone(stored), slices.Clone(events)
	clear(stored)
	events = nil
	mu.Unlock()
	for id := range sizes {
		require.Equal(t, 1, firstStored[id], "blob %s stored once by the failed run", id)
	}
	require.Len(t, firstStored, len(sizes), "no other blob stored")
	commitAt := slices.Index(firstEvents, "commit")
	require.GreaterOrEqual(t, commitAt, 0, "a commit was attempted: %v", firstEvents)
	lastStored := -1
	for i, ev := range firstEvents {
		if ev == "stored" {
			lastStored = i
		}
	}
	require.Less(t, lastStored, commitAt, "every blob stored before the commit: %v", firstEvents)
	require.Contains(t, firstEvents[lastStored+1:commitAt], "sync", "a syncfs between the last store and the commit: %v", firstEvents)

	// Not committed: no file inode copied, none left claimed, no blobs row.
	var copiedN, claimedN, blobRows int64
	require.NoError(t, f.db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE copied), count(*) FILTER (WHERE claimed_by IS NOT NULL)
		FROM inode WHERE medium_hash = $1 AND fs_type = 'f'`, string(f.h)).Scan(&copiedN, &claimedN))
	require.Zero(t, copiedN, "the refused batch recorded no copy")
	require.Zero(t, claimedN, "the failed run released its claims")
	require.NoError(t, f.db.QueryRow(ctx, `SELECT count(*) FROM blobs`).Scan(&blobRows))
	require.Zero(t, blobRows, "the batch's blobs rows were rolled back with it")

	// The blobs are in by-hash, whole, at their names, and nothing else is.
	before := blobFiles(t, f.store)
	require.Len(t, before, len(sizes), "exactly the distinct contents in by-hash: %v", before)
	for id, size := range sizes {
		b, ok := before[id]
		require.True(t, ok, "blob %s stored by the failed run", id)
		require.Equal(t, filepath.Join(copier.ByHashDir, copier.BlobPath(id)), b.relToStore)
		require.Equal(t, size, b.size, "blob %s size", id)
		got, err := os.ReadFile(filepath.Join(f.store, b.relToStore))
		require.NoError(t, err)
		require.Equal(t, id, blake3Hex(got), "blob %s content", id)
	}

	// The catalog accepts commits again.
	_, err = f.db.Exec(ctx, fmt.Sprintf(`DROP TRIGGER reuse_test_refuse ON %s; DROP FUNCTION reuse_test_refuse();`, table))
	require.NoError(t, err)

	o = f.options()
	o.BatchSize = 100
	st = f.mustRun(o)
	require.True(t, st.Complete)
	require.Equal(t, files, st.Copied, "every file recorded")
	require.Zero(t, st.New, "no new blob: every content was stored")
	require.Equal(t, files, st.Deduped, "every file deduplicated against the stored blobs")
	require.Zero(t, st.BytesWritten, "no byte written to the store")
	require.Zero(t, st.Errors)
	// The large file was staged in an unnamed file (hashed while written)
	// and dropped; its blob was not replaced.
	require.Equal(t, sizes[bigBlob], st.BytesDiscarded, "only the large file staged and dropped")
	mu.Lock()
	rerunStored := maps.Clone(stored)
	mu.Unlock()
	require.Empty(t, rerunStored, "the rerun stored no blob")

	// Every file inode copied, to the blob its content names, which the
	// rerun did not create.
	rows, err := f.db.Query(ctx, `SELECT p.path, i.copied, i.status, coalesce(i.blobid, ''), i.by_hash_created
		FROM path p JOIN inode i USING (medium_hash, dev, ino)
		WHERE p.medium_hash = $1 AND i.fs_type = 'f'`, string(f.h))
	require.NoError(t, err)
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var p []byte
		var ok, created bool
		var status, blob string
		require.NoError(t, rows.Scan(&p, &ok, &status, &blob, &created))
		want, known := wantBlob[string(p)]
		require.True(t, known, "unexpected path %q", p)
		require.True(t, ok, "%q copied", p)
		require.Equal(t, "success", status, "%q", p)
		require.Equal(t, want, blob, "blob of %q", p)
		require.False(t, created, "%q: blob reused, not created by the rerun", p)
		seen++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, len(wantBlob), seen, "every path catalogued")

	// The same blob files: not rewritten, not replaced, nothing added.
	after := blobFiles(t, f.store)
	require.Len(t, after, len(before), "no file added to by-hash: %v", after)
	for id, b := range before {
		a, ok := after[id]
		require.True(t, ok, "blob %s still there", id)
		require.Equal(t, b.relToStore, a.relToStore)
		require.Equal(t, b.ino, a.ino, "blob %s is the same file (inode)", id)
		require.Equal(t, b.mtime, a.mtime, "blob %s not rewritten (mtime)", id)
	}

	f.checkComplete() // and no temporary file (checkNoTemps)
}
