package copier_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// bitRotSpec has a small content at two inodes (one of them with two
// names), a streamed one (above 16 MiB) and a few others.
func bitRotSpec() testimg.Spec {
	return testimg.Spec{Entries: []testimg.Entry{
		{Path: "a/x", Kind: testimg.File, Size: 5000, Seed: 1},
		{Path: "b/x-dup", Kind: testimg.File, Size: 5000, Seed: 1},
		{Path: "c/hard", Kind: testimg.Hardlink, Target: "a/x"},
		{Path: "big", Kind: testimg.File, Size: 17 << 20, Seed: 42},
		{Path: "ok/1", Kind: testimg.File, Size: 300, Seed: 2},
		{Path: "ok/2", Kind: testimg.File, Size: 301, Seed: 3},
		{Path: "ok/empty", Kind: testimg.File},
	}}
}

func (f *fixture) blobFile(id string) string {
	return filepath.Join(f.store, "by-hash", id[0:2], id[2:4], id)
}

// contentID is the blob id of the spec entry at path.
func (f *fixture) contentID(path string) string {
	return blake3Hex(f.entries()["/"+path].Content())
}

func (f *fixture) quarantined() map[string]string {
	f.t.Helper()
	rows, err := f.db.Query(context.Background(), `SELECT blobid, quarantine_reason FROM blobs WHERE quarantined_at IS NOT NULL`)
	require.NoError(f.t, err)
	m := map[string]string{}
	for rows.Next() {
		var id, reason string
		require.NoError(f.t, rows.Scan(&id, &reason))
		m[id] = reason
	}
	require.NoError(f.t, rows.Err())
	return m
}

func ino(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(path, &st))
	return st.Ino
}

// Bit rot, as found on a real store: a flipped byte in one blob, another
// cut to half its size. VerifyStore reports the truncation as a wrong size,
// moves both aside (never deletes them), marks them, puts every inode that
// named them back to pending and names the medium and its paths; the next
// copy stores correct blobs and repairs the tree.
func TestBitRotQuarantinedAndRepaired(t *testing.T) {
	f := newMedium(t, bitRotSpec())
	ctx := context.Background()
	f.mustRun(f.options())
	f.checkComplete()

	x, big := f.contentID("a/x"), f.contentID("big")
	flipped, err := os.ReadFile(f.blobFile(x))
	require.NoError(t, err)
	flipped[1234] ^= 0x20
	require.NoError(t, os.WriteFile(f.blobFile(x), flipped, 0o644))
	const bigSize, half = 17 << 20, 17 << 19
	require.NoError(t, os.Truncate(f.blobFile(big), half))
	oldX := ino(t, f.blobFile(x))

	var seen []copier.BlobProblem
	rep, err := copier.VerifyStore(ctx, f.db, copier.VerifyOptions{StoreRoot: f.store,
		OnProblem: func(p copier.BlobProblem) { seen = append(seen, p) }})
	require.NoError(t, err)
	require.True(t, rep.Failed())
	assert.Equal(t, int64(1), rep.Mismatched)
	assert.Equal(t, int64(1), rep.WrongSize, "a truncation is a wrong size")
	assert.Equal(t, int64(2), rep.Quarantined)
	assert.Equal(t, int64(3), rep.Reset, "a/x (with c/hard), b/x-dup, big")
	assert.Equal(t, int64(2), rep.Awaiting)
	require.Len(t, seen, 2)
	require.Len(t, rep.Problems, 2)
	for _, p := range rep.Problems {
		assert.True(t, p.Marked, p.ID)
		assert.True(t, strings.HasPrefix(p.Quarantine, copier.QuarantineDir+"/"+p.ID+"."), p.Quarantine)
		moved := filepath.Join(f.store, p.Quarantine)
		_, err := os.Stat(f.blobFile(p.ID))
		assert.ErrorIs(t, err, os.ErrNotExist, "moved out of by-hash")
		switch p.ID {
		case x:
			assert.Equal(t, copier.BlobMismatch, p.Problem)
			assert.Equal(t, blake3Hex(flipped), p.Actual)
			assert.Equal(t, int64(2), p.Inodes)
			got, err := os.ReadFile(moved)
			require.NoError(t, err)
			assert.Equal(t, flipped, got, "the damaged blob is kept as it was")
			assert.Equal(t, oldX, ino(t, moved))
		case big:
			assert.Equal(t, copier.BlobWrongSize, p.Problem)
			assert.Equal(t, int64(bigSize), p.Size)
			assert.Equal(t, int64(half), p.Found)
			assert.Equal(t, int64(1), p.Inodes)
			st, err := os.Stat(moved)
			require.NoError(t, err)
			assert.Equal(t, int64(half), st.Size())
		default:
			t.Errorf("unexpected problem %+v", p)
		}
	}
	q := f.quarantined()
	require.Len(t, q, 2)
	assert.Contains(t, q[big], "wrong size: 17825792 bytes expected, 8912896 found")
	assert.Contains(t, q[x], "content hashes to "+blake3Hex(flipped))
	assert.Contains(t, q[x], "moved to "+copier.QuarantineDir+"/"+x+".")

	// Their inodes are pending again, blob id kept; the rest is untouched.
	var pendingIDs []string
	rows, err := f.db.Query(ctx, `SELECT blobid FROM inode WHERE medium_hash = $1 AND NOT copied AND status = 'pending'
		AND claimed_by IS NULL ORDER BY blobid`, string(f.h))
	require.NoError(t, err)
	pendingIDs, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{x, x, big}, pendingIDs)
	_, pending, claimed := f.monitor()
	assert.Equal(t, int64(3), pending)
	assert.Zero(t, claimed)

	// The report names the medium and its paths.
	require.Equal(t, int64(1), rep.AffectedMedia)
	require.Len(t, rep.Affected, 1)
	m := rep.Affected[0]
	assert.Equal(t, string(f.h), m.Medium)
	assert.Equal(t, f.image, m.ImagePath)
	assert.Empty(t, m.ArchivePath)
	assert.Equal(t, int64(3), m.Inodes)
	assert.Equal(t, int64(3), m.Pending)
	assert.Equal(t, int64(2*5000+bigSize), m.Bytes)
	assert.Equal(t, []string{"/a/x", "/b/x-dup", "/big", "/c/hard"}, m.Paths)

	// The next copy writes correct blobs and repairs the tree.
	st := f.mustRun(f.options())
	assert.Equal(t, int64(3), st.Copied)
	assert.Equal(t, int64(2), st.New, "both contents stored again")
	assert.True(t, st.Complete)
	f.checkComplete() // every blob hashes to its name, the tree is the source, nothing claimed
	assert.NotEqual(t, oldX, ino(t, f.blobFile(x)))
	assert.Empty(t, f.quarantined(), "marks cleared once written again")
	var reasons int
	require.NoError(t, f.db.QueryRow(ctx, `SELECT count(*) FROM blobs WHERE quarantine_reason IS NOT NULL`).Scan(&reasons))
	assert.Equal(t, 2, reasons, "the reason stays as history")
	for _, p := range rep.Problems {
		_, err := os.Stat(filepath.Join(f.store, p.Quarantine))
		assert.NoError(t, err, "quarantined files are never deleted")
	}

	rep, err = copier.VerifyStore(ctx, f.db, copier.VerifyOptions{StoreRoot: f.store})
	require.NoError(t, err)
	assert.False(t, rep.Failed())
	assert.Zero(t, rep.Awaiting)
	assert.Empty(t, rep.Affected)
}

// sibling builds and mounts another medium holding spec, loaded into f's
// catalog and copied into f's store.
func (f *fixture) sibling(spec testimg.Spec) *fixture {
	t := f.t
	t.Helper()
	g := &fixture{t: t, h: randomHash(t), spec: spec, mountRoot: f.mountRoot, store: f.store, url: f.url, db: f.db}
	g.image = testimg.Build(t, spec)
	g.mount = g.h.MountPath(g.mountRoot)
	require.NoError(t, os.MkdirAll(g.mount, 0o755))
	g.loop = testimg.AttachLoop(t, g.image, 0, 0)
	require.NoError(t, testimg.TryMount(g.loop.Path, g.mount, "ext4", testimg.MountOptions("ext4")))
	t.Cleanup(func() { unmount(t, g.mount) })
	g.load()
	return g
}

// Two media with the same content: once a blob is quarantined, a copy of
// the second medium does not dedupe against it — neither against the
// damaged file (moved aside) nor against a file found at its name while
// the mark stands (a copier that stored it and died before recording it):
// it writes the blob itself.
func TestQuarantinedBlobIsNeverDeduped(t *testing.T) {
	a := newMedium(t, smallFiles(6))
	ctx := context.Background()
	a.mustRun(a.options())
	b := a.sibling(smallFiles(6))

	x, y := a.contentID("f01"), a.contentID("f02")
	dx, err := os.ReadFile(a.blobFile(x))
	require.NoError(t, err)
	dx[10] ^= 0x01
	require.NoError(t, os.WriteFile(a.blobFile(x), dx, 0o644))
	dy, err := os.ReadFile(a.blobFile(y))
	require.NoError(t, err)
	dy[20] ^= 0x01
	require.NoError(t, os.WriteFile(a.blobFile(y), dy, 0o644))
	rep, err := copier.VerifyStore(ctx, a.db, copier.VerifyOptions{StoreRoot: a.store})
	require.NoError(t, err)
	require.Equal(t, int64(2), rep.Quarantined)
	require.Equal(t, int64(2), rep.Reset)
	require.Len(t, rep.Affected, 1, "only medium a has copied inodes")
	assert.Equal(t, string(a.h), rep.Affected[0].Medium)
	movedX := filepath.Join(a.store, rep.Problems[0].Quarantine)
	if rep.Problems[0].ID != x {
		movedX = filepath.Join(a.store, rep.Problems[1].Quarantine)
	}
	// y's correct content is back at its name while the mark stands.
	require.NoError(t, os.WriteFile(a.blobFile(y), a.entries()["/f02"].Content(), 0o644))
	strayY := ino(t, a.blobFile(y))

	st := b.mustRun(b.options())
	assert.True(t, st.Complete)
	b.checkComplete()
	for _, id := range []string{x, y} {
		var created bool
		require.NoError(t, b.db.QueryRow(ctx, `SELECT by_hash_created FROM inode WHERE medium_hash = $1 AND blobid = $2`,
			string(b.h), id).Scan(&created))
		assert.True(t, created, "blob %s written by the copy of b, not deduped", id)
	}
	assert.NotEqual(t, ino(t, movedX), ino(t, b.blobFile(x)))
	assert.NotEqual(t, strayY, ino(t, b.blobFile(y)), "the file found at a quarantined blob's name is replaced")
	treeX := b.h.MountPath(filepath.Join(b.store, "archived"))
	assert.Equal(t, ino(t, b.blobFile(x)), ino(t, filepath.Join(treeX, "f01")))
	assert.Empty(t, a.quarantined())

	// a's inodes are still pending; its next copy dedupes against b's blobs
	// and relinks its tree.
	_, pending, _ := a.monitor()
	assert.Equal(t, int64(2), pending)
	st = a.mustRun(a.options())
	assert.Equal(t, int64(2), st.Copied)
	assert.Equal(t, int64(2), st.Deduped)
	a.checkComplete()
}

// A medium whose source is gone (archived, image removed) gets its tree
// back without it once another medium holding the same content is copied:
// Relink links its pending files to the blobs stored again. Before that,
// nothing is relinked to the quarantined blob and the files stay pending.
func TestRelinkWithoutTheSource(t *testing.T) {
	a := newMedium(t, smallFiles(5))
	ctx := context.Background()
	a.mustRun(a.options())
	b := a.sibling(smallFiles(5))
	x := a.contentID("f03")
	d, err := os.ReadFile(a.blobFile(x))
	require.NoError(t, err)
	d[0] ^= 0xff
	require.NoError(t, os.WriteFile(a.blobFile(x), d, 0o644))
	rep, err := copier.VerifyStore(ctx, a.db, copier.VerifyOptions{StoreRoot: a.store})
	require.NoError(t, err)
	require.Equal(t, int64(1), rep.Reset)
	unmount(t, a.mount) // a's source is gone

	opts := copier.RelinkOptions{Medium: string(a.h), StoreRoot: a.store, Logger: testLogger(t)}
	res, err := copier.Relink(ctx, a.db, opts)
	require.NoError(t, err)
	assert.Zero(t, res.Relinked, "the blob is quarantined")
	assert.Equal(t, int64(1), res.Waiting)
	_, err = a.run(a.options())
	require.Error(t, err, "a is not mounted")

	b.mustRun(b.options())
	res, err = copier.Relink(ctx, a.db, opts)
	require.NoError(t, err)
	assert.Equal(t, int64(1), res.Relinked)
	assert.Equal(t, int64(1), res.Links)
	assert.Zero(t, res.Waiting)
	a.checkComplete()
	b.checkComplete()
	res, err = copier.Relink(ctx, a.db, opts)
	require.NoError(t, err)
	assert.Zero(t, res.Relinked+res.Waiting)
}

// Verification during a copy: the first batch stores and records a
// content, then its blob rots and VerifyStore quarantines it while the run
// goes on. The run's later copies of that content neither trust its memory
// of the blob (gone from by-hash: the file is released and stored again)
// nor dedupe against it: the run ends complete with correct blobs.
func TestVerifyDuringACopy(t *testing.T) {
	spec := testimg.Spec{}
	for i := range 4 {
		spec.Entries = append(spec.Entries, testimg.Entry{Path: fmt.Sprintf("same%d", i), Kind: testimg.File, Size: 4000, Seed: 9})
	}
	f := newMedium(t, spec)
	ctx := context.Background()
	x := f.contentID("same0")
	var rep copier.VerifyReport
	o := f.options()
	o.BatchSize = 1
	o.Progress = &onBatch{fn: func(n int64) {
		if n != 1 {
			return
		}
		d, err := os.ReadFile(f.blobFile(x))
		require.NoError(t, err)
		d[99] ^= 0x04
		require.NoError(t, os.WriteFile(f.blobFile(x), d, 0o644))
		rep, err = copier.VerifyStore(ctx, f.db, copier.VerifyOptions{StoreRoot: f.store})
		require.NoError(t, err)
	}}
	st := f.mustRun(o)
	require.Equal(t, int64(1), rep.Quarantined, "verified after the first batch")
	require.Equal(t, int64(1), rep.Reset)
	assert.True(t, st.Complete)
	assert.Positive(t, st.Released, "the file whose remembered blob was gone was released")
	f.checkComplete()
	assert.Empty(t, f.quarantined())
	_, err := os.Stat(filepath.Join(f.store, rep.Problems[0].Quarantine))
	assert.NoError(t, err)
}
