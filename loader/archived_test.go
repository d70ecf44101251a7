package loader

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/HRDAG/ntt/archive"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// archiveMedium brings the loaded medium to where the runbook leaves it:
// every file copied (as the copier marks them), then sealed by the
// archiver, which sets copy_done and archive_path.
func archiveMedium(t *testing.T, pool *pgxpool.Pool, hash string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `UPDATE inode SET copied = true, status = 'success', blobid = repeat('ab', 32),
		processed_at = now() WHERE medium_hash = $1 AND NOT copied`, hash); err != nil {
		t.Fatal(err)
	}
	images, dest := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(images, hash+".img"), make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := archive.Complete(ctx, pool, archive.Spec{Medium: hash, ImagesDirs: []string{images}, Dest: dest},
		archive.CompleteOptions{KeepSources: true})
	if err != nil {
		t.Fatalf("archiving: %v", err)
	}
	return res.Path
}

type mediumRow struct {
	enumDone, copyDone *time.Time
	archivePath        *string
}

func mediumOf(t *testing.T, pool *pgxpool.Pool, hash string) mediumRow {
	t.Helper()
	var m mediumRow
	if err := pool.QueryRow(context.Background(), `SELECT enum_done, copy_done, archive_path FROM medium WHERE medium_hash = $1`, hash).
		Scan(&m.enumDone, &m.copyDone, &m.archivePath); err != nil {
		t.Fatal(err)
	}
	return m
}

// uncopied counts the medium's files left to copy.
func uncopied(t *testing.T, pool *pgxpool.Pool, hash string) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM inode WHERE medium_hash = $1 AND NOT copied`, hash).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The runbook's --replace on an archived medium once reset every file to
// uncopied while copy_done stayed set. It is refused, changing nothing,
// unless StartOver, which clears copy_done and archive_path in the same
// commit: the catalog never holds an archived medium with files to copy.
func TestReplaceOnArchivedMediumNeedsStartOver(t *testing.T) {
	pool := pgtest.New(t)
	mustLoad(t, pool, hashA, firstRaw(t), Options{})
	path := archiveMedium(t, pool, hashA)
	if m := mediumOf(t, pool, hashA); m.copyDone == nil || m.archivePath == nil || *m.archivePath != path {
		t.Fatalf("after archiving: %+v, want copy_done and archive_path %s", m, path)
	}

	before := dbState(t, pool)
	for _, mode := range []Mode{Replace, Refuse} {
		_, err := tryLoad(t, pool, hashA, firstRaw(t), Options{Mode: mode})
		var ae *ArchivedError
		if !errors.Is(err, ErrMediumArchived) || !errors.As(err, &ae) {
			t.Fatalf("%v over an archived medium: err = %v, want ArchivedError", mode, err)
		}
		for _, want := range []string{hashA, "already archived", path, "--replace --start-over", "nothing was changed"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal %q lacks %q", err, want)
			}
		}
		if after := dbState(t, pool); after != before {
			t.Fatalf("refused %v load changed the database", mode)
		}
	}

	st := mustLoad(t, pool, hashA, firstRaw(t), Options{Mode: Replace, StartOver: true})
	if !st.StartedOver || st.ReplacedInodes != 6 {
		t.Errorf("start-over stats = %+v, want StartedOver and 6 replaced inodes", st)
	}
	m := mediumOf(t, pool, hashA)
	if m.copyDone != nil || m.archivePath != nil {
		t.Errorf("after --replace --start-over: copy_done %v, archive_path %v; want both cleared", m.copyDone, m.archivePath)
	}
	if n := uncopied(t, pool, hashA); n != 4 {
		t.Errorf("after starting over %d files to copy, want 4", n)
	}
}

// Append over an archived medium: adding nothing is fine (and leaves
// enum_done as it was); adding paths is refused like Replace.
func TestAppendOnArchivedMedium(t *testing.T) {
	pool := pgtest.New(t)
	mustLoad(t, pool, hashA, firstRaw(t), Options{})
	archiveMedium(t, pool, hashA)
	before := dbState(t, pool)

	st, err := tryLoad(t, pool, hashA, firstRaw(t), Options{Mode: Append})
	if err != nil {
		t.Fatalf("append of nothing new to an archived medium: %v", err)
	}
	if st.Paths != 0 || st.ExistingPaths != 7 {
		t.Errorf("append stats = %+v, want 0 new, 7 existing", st)
	}
	if after := dbState(t, pool); after != before {
		t.Errorf("an append that added nothing changed the catalog (enum_done bumped?)")
	}

	more := rawOf(t, rec('d', 2051, 2, 3, rootA), rec('f', 2051, 30, 1, rootA+"/late"))
	_, err = tryLoad(t, pool, hashA, more, Options{Mode: Append})
	var ae *ArchivedError
	if !errors.As(err, &ae) || ae.NewPaths != 1 || !strings.Contains(err.Error(), "appending 1 new paths") {
		t.Fatalf("append of a new path to an archived medium: err = %v, want ArchivedError with 1 new path", err)
	}
	if after := dbState(t, pool); after != before {
		t.Fatalf("refused append changed the database")
	}
}

// An append that adds nothing leaves enum_done alone on a medium being
// copied too; one that adds paths moves it.
func TestAppendOfNothingKeepsEnumDone(t *testing.T) {
	pool := pgtest.New(t)
	mustLoad(t, pool, hashA, firstRaw(t), Options{})
	first := mediumOf(t, pool, hashA).enumDone
	mustLoad(t, pool, hashA, firstRaw(t), Options{Mode: Append})
	if got := mediumOf(t, pool, hashA).enumDone; got == nil || !got.Equal(*first) {
		t.Errorf("enum_done after an empty append = %v, want %v", got, first)
	}
	mustLoad(t, pool, hashA, rawOf(t, rec('d', 2051, 2, 3, rootA), rec('f', 2051, 30, 1, rootA+"/late")), Options{Mode: Append})
	if got := mediumOf(t, pool, hashA).enumDone; got == nil || !got.After(*first) {
		t.Errorf("enum_done after an append that added a path = %v, want later than %v", got, first)
	}
}

// archiveDuring seals the medium when the load reaches a phase: the
// archiver finishing while a load is under way.
type archiveDuring struct {
	t     *testing.T
	pool  *pgxpool.Pool
	phase string
	done  bool
}

func (a *archiveDuring) Phase(name string) {
	if name == a.phase && !a.done {
		a.done = true
		archiveMedium(a.t, a.pool, hashA)
	}
}
func (a *archiveDuring) Records(int64, int64) {}

// The archiver sealing the medium after the load's first look: the load
// looks again under the medium row's lock before writing it, and refuses.
func TestReplaceRefusedWhenArchivedMeanwhile(t *testing.T) {
	pool := pgtest.New(t)
	mustLoad(t, pool, hashA, firstRaw(t), Options{})
	prog := &archiveDuring{t: t, pool: pool, phase: PhaseCopy}
	_, err := tryLoad(t, pool, hashA, firstRaw(t), Options{Mode: Replace, Progress: prog})
	if !prog.done {
		t.Fatal("the load never reached the copy phase")
	}
	if !errors.Is(err, ErrMediumArchived) {
		t.Fatalf("replace while the archiver sealed the medium: err = %v, want ErrMediumArchived", err)
	}
	if n := uncopied(t, pool, hashA); n != 0 {
		t.Errorf("%d files uncopied on an archived medium", n)
	}
	if m := mediumOf(t, pool, hashA); m.copyDone == nil {
		t.Errorf("copy_done lost")
	}
}
