package archive

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// inodeRow is one inode in a state of the design's table.
type inodeRow struct {
	copied    bool
	claimedBy string // "" = NULL
	status    string
}

var (
	copiedRow   = inodeRow{true, "", "success"}
	nonFileRow  = inodeRow{true, "NON_FILE", "success"}
	excludedRow = inodeRow{true, "EXCLUDED", "success"}
	skippedRow  = inodeRow{true, "DIAGNOSTIC_SKIP:BEYOND_EOF", "failed_permanent"}
	failedRow   = inodeRow{true, "", "failed_retryable"}
	pendingRow  = inodeRow{false, "", "pending"}
	claimedRow  = inodeRow{false, "worker-1", "pending"}
)

// catalog makes a medium row for testHash with the given inodes.
func catalog(t *testing.T, rows ...inodeRow) *pgxpool.Pool {
	t.Helper()
	return catalogIn(t, pgtest.New(t), rows...)
}

// catalogIn makes the medium row and inodes in db.
func catalogIn(t *testing.T, db *pgxpool.Pool, rows ...inodeRow) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, `INSERT INTO medium (medium_hash, medium_human) VALUES ($1, 'test medium')`, testHash)
	require.NoError(t, err)
	require.NoError(t, schema.CreatePartitions(ctx, tx, medium.MustParse(testHash)))
	for i, r := range rows {
		var claimed any
		if r.claimedBy != "" {
			claimed = r.claimedBy
		}
		_, err := tx.Exec(ctx, `INSERT INTO inode (medium_hash, dev, ino, fs_type, nlink, size, mtime, copied, claimed_by, status)
			VALUES ($1, 2049, $2, 'f', 1, 10, 0, $3, $4, $5)`, testHash, i+2, r.copied, claimed, r.status)
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit(ctx))
	return db
}

func archivedMark(t *testing.T, db *pgxpool.Pool) (copyDone *time.Time, path *string) {
	t.Helper()
	require.NoError(t, db.QueryRow(context.Background(),
		`SELECT copy_done, archive_path FROM medium WHERE medium_hash = $1`, testHash).Scan(&copyDone, &path))
	return
}

// removals records Progress.Removed calls.
type removals struct {
	NopProgress
	mu    sync.Mutex
	paths []string
}

func (r *removals) Removed(path string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.paths = append(r.paths, path)
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// TestCompleteRunbook is the seed's Phase 4 end to end: copy complete (with
// excluded, non-file, skipped and failed rows), seal, verify, mark, remove
// exactly the listed sources, each reported.
func TestCompleteRunbook(t *testing.T) {
	db := catalog(t, copiedRow, nonFileRow, excludedRow, skippedRow, failedRow)
	src := mediumDir(t, 5<<20)
	bystander := filepath.Join(src, testHash+".img.notes") // not listed: never touched
	require.NoError(t, os.WriteFile(bystander, []byte("keep me"), 0o644))
	dest := t.TempDir()
	rec := &removals{}
	res, err := Complete(context.Background(), db, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest, Progress: rec}, CompleteOptions{})
	require.NoError(t, err)

	copyDone, path := archivedMark(t, db)
	require.NotNil(t, copyDone)
	require.Equal(t, res.Path, *path)
	want := []string{filepath.Join(src, testHash+".img"), filepath.Join(src, testHash+".map"), filepath.Join(src, testHash+"-ddrescue.log")}
	require.Equal(t, want, rec.paths)
	require.Equal(t, want, res.Removed)
	for _, p := range want {
		require.False(t, exists(p), p)
	}
	require.True(t, exists(bystander))
	_, err = Verify(context.Background(), res.Path)
	require.NoError(t, err)

	// a second run has nothing to do
	_, err = Complete(context.Background(), db, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest}, CompleteOptions{})
	require.ErrorIs(t, err, ErrAlreadyArchived)
}

// TestCompleteRefusesIncompleteCopy: pending or claimed inodes (or none at
// all) → refused, nothing touched: no archive, no partial, no mark, sources
// intact. Forced, it archives.
func TestCompleteRefusesIncompleteCopy(t *testing.T) {
	for name, rows := range map[string][]inodeRow{
		"pending":   {copiedRow, pendingRow, excludedRow},
		"claimed":   {copiedRow, claimedRow},
		"no inodes": nil,
	} {
		t.Run(name, func(t *testing.T) {
			db := catalog(t, rows...)
			src := mediumDir(t, 2<<20)
			dest := t.TempDir()
			spec := Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest}
			_, err := Complete(context.Background(), db, spec, CompleteOptions{})
			require.ErrorIs(t, err, ErrCopyIncomplete)
			var ie *IncompleteError
			require.ErrorAs(t, err, &ie)
			require.Contains(t, err.Error(), testHash)
			entries, _ := os.ReadDir(dest)
			require.Empty(t, entries)
			copyDone, _ := archivedMark(t, db)
			require.Nil(t, copyDone)
			require.True(t, exists(filepath.Join(src, testHash+".img")))

			res, err := Complete(context.Background(), db, spec, CompleteOptions{AllowIncomplete: true, KeepSources: true})
			require.NoError(t, err)
			require.Empty(t, res.Removed)
			require.True(t, exists(filepath.Join(src, testHash+".img")))
			copyDone, _ = archivedMark(t, db)
			require.NotNil(t, copyDone)
		})
	}
}

func TestCompleteUnknownMedium(t *testing.T) {
	db := pgtest.New(t)
	src := mediumDir(t, 1<<20)
	_, err := Complete(context.Background(), db, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: t.TempDir()}, CompleteOptions{})
	require.ErrorIs(t, err, ErrUnknownMedium)
}

// TestCompleteResumesAfterCrash: the states kill -9 can leave, finished by
// a rerun.
func TestCompleteResumesAfterCrash(t *testing.T) {
	ctx := context.Background()
	t.Run("archive in place, catalog not marked", func(t *testing.T) {
		db := catalog(t, copiedRow)
		src := mediumDir(t, 3<<20)
		dest := t.TempDir()
		spec := Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest}
		seal(t, spec) // as if the process died right after the rename
		res, err := Complete(ctx, db, spec, CompleteOptions{})
		require.NoError(t, err)
		require.Len(t, res.Removed, 3)
		copyDone, _ := archivedMark(t, db)
		require.NotNil(t, copyDone)
	})
	t.Run("marked, some sources left", func(t *testing.T) {
		db := catalog(t, copiedRow)
		src := mediumDir(t, 3<<20)
		dest := t.TempDir()
		spec := Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest}
		res := seal(t, spec)
		require.NoError(t, MarkArchived(ctx, db, testHash, res.Path, false))
		require.NoError(t, os.Remove(filepath.Join(src, testHash+".img"))) // removal had started
		again, err := Complete(ctx, db, spec, CompleteOptions{})
		require.NoError(t, err)
		require.Equal(t, []string{filepath.Join(src, testHash+".map"), filepath.Join(src, testHash+"-ddrescue.log")}, again.Removed)
	})
	t.Run("source differs from the archive", func(t *testing.T) {
		db := catalog(t, copiedRow)
		src := mediumDir(t, 3<<20)
		dest := t.TempDir()
		spec := Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest}
		seal(t, spec)
		require.NoError(t, os.WriteFile(filepath.Join(src, testHash+".map"), []byte("a newer mapfile\n"), 0o644))
		_, err := Complete(ctx, db, spec, CompleteOptions{})
		require.ErrorIs(t, err, ErrSourceChanged)
		for _, n := range []string{".img", ".map", "-ddrescue.log"} {
			require.True(t, exists(filepath.Join(src, testHash+n)), n)
		}
		copyDone, _ := archivedMark(t, db)
		require.Nil(t, copyDone)
	})
	t.Run("existing archive corrupt", func(t *testing.T) {
		db := catalog(t, copiedRow)
		src := mediumDir(t, 3<<20)
		dest := t.TempDir()
		spec := Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest}
		res := seal(t, spec)
		flipByte(t, res.Path, res.Size/3, 0xff)
		_, err := Complete(ctx, db, spec, CompleteOptions{})
		require.ErrorIs(t, err, ErrCorrupt)
		require.True(t, exists(filepath.Join(src, testHash+".img")))
		copyDone, _ := archivedMark(t, db)
		require.Nil(t, copyDone)
	})
}

// TestRemoveSourcesChecksIdentity: a source replaced after sealing is kept.
func TestRemoveSourcesChecksIdentity(t *testing.T) {
	src := mediumDir(t, 2<<20)
	res := seal(t, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: t.TempDir()})
	img := filepath.Join(src, testHash+".img")
	require.NoError(t, os.Rename(img, img+".old"))
	writeImage(t, img, 2<<20, 1, true) // same content, another file
	err := RemoveSources(context.Background(), res, nil)
	require.ErrorIs(t, err, ErrSourceChanged)
	require.True(t, exists(img))
	require.Empty(t, res.Removed)
}

// TestCompleteFailedReadBackKeepsEverything is the field failure "sources
// deleted after checking only that the archive was non-empty": a read-back
// that fails leaves the sources, no archive and no catalog mark.
func TestCompleteFailedReadBackKeepsEverything(t *testing.T) {
	db := catalog(t, copiedRow)
	src := mediumDir(t, 3<<20)
	dest := t.TempDir()
	damageFrame(t, 1)
	_, err := Complete(context.Background(), db, Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest}, CompleteOptions{})
	require.ErrorIs(t, err, ErrCorrupt)
	for _, n := range []string{".img", ".map", "-ddrescue.log"} {
		require.True(t, exists(filepath.Join(src, testHash+n)), n)
	}
	entries, _ := os.ReadDir(dest)
	require.Empty(t, entries)
	copyDone, _ := archivedMark(t, db)
	require.Nil(t, copyDone)
}

// TestCompleteAlreadyArchivedIgnoresUnlistedFiles: a file the archive does
// not hold (a .map.bak that appeared later) is not a reason to redo work.
func TestCompleteAlreadyArchivedIgnoresUnlistedFiles(t *testing.T) {
	db := catalog(t, copiedRow)
	src := mediumDir(t, 2<<20)
	dest := t.TempDir()
	spec := Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest}
	_, err := Complete(context.Background(), db, spec, CompleteOptions{})
	require.NoError(t, err)
	late := filepath.Join(src, testHash+".map.bak")
	require.NoError(t, os.WriteFile(late, []byte("later\n"), 0o644))
	_, err = Complete(context.Background(), db, spec, CompleteOptions{})
	require.ErrorIs(t, err, ErrAlreadyArchived)
	require.True(t, exists(late))
}
