package copier_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loader"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		helperMain()
		return
	}
	pgtest.Main(m)
}

// fixture is a medium as the runbook has it: an image built by the test,
// attached read-only to a loop device and mounted read-only at
// <mountRoot>/<hash>, enumerated and loaded into a fresh catalog.
type fixture struct {
	t         *testing.T
	h         medium.Hash
	spec      testimg.Spec
	image     string
	loop      *testimg.Loop
	mountRoot string
	mount     string
	store     string
	url       string
	db        *pgxpool.Pool
}

func randomHash(t testing.TB) medium.Hash {
	b := make([]byte, 16)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return medium.MustParse(hex.EncodeToString(b))
}

// newMedium builds, mounts and loads spec.
func newMedium(t *testing.T, spec testimg.Spec) *fixture {
	t.Helper()
	return newMediumAt(t, spec, "")
}

// newMediumAt is newMedium with the catalog at url ("": a fresh database
// of the shared test cluster).
func newMediumAt(t *testing.T, spec testimg.Spec, url string) *fixture {
	t.Helper()
	testimg.RequireRoot(t)
	return newMediumImage(t, spec, testimg.Build(t, spec), url)
}

// newMediumImage is newMediumAt on image, built from spec and perhaps
// written to since.
func newMediumImage(t *testing.T, spec testimg.Spec, image, url string) *fixture {
	t.Helper()
	testimg.RequireRoot(t)
	f := &fixture{t: t, h: randomHash(t), spec: spec, image: image}
	dir := t.TempDir()
	f.mountRoot = filepath.Join(dir, "mnt")
	f.mount = f.h.MountPath(f.mountRoot)
	require.NoError(t, os.MkdirAll(f.mount, 0o755))
	f.loop = testimg.AttachLoop(t, f.image, 0, 0)
	require.NoError(t, testimg.TryMount(f.loop.Path, f.mount, "ext4", testimg.MountOptions("ext4")))
	t.Cleanup(func() { unmount(t, f.mount) })
	f.setStore(filepath.Join(dir, "store"))
	if url == "" {
		f.newCatalog()
	} else {
		f.url = url
		f.db = mustPool(t, url)
		f.load()
	}
	return f
}

// newCatalog gives the fixture a fresh database with the medium loaded.
func (f *fixture) newCatalog() {
	f.t.Helper()
	f.url = mustURL(f.t)
	f.db = mustPool(f.t, f.url)
	f.load()
}

func mustURL(t testing.TB) string { return pgtest.URL(t) }

func mustPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	db, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return db
}

func (f *fixture) load() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var raw bytes.Buffer
	_, err := enumerate.Walk(ctx, []string{f.mount}, enumerate.Options{Workers: 2}, &raw)
	require.NoError(f.t, err)
	_, err = loader.Load(ctx, f.db, string(f.h), &raw, loader.Options{ImagePath: f.image})
	require.NoError(f.t, err)
}

func unmount(t testing.TB, dir string) {
	for range 50 {
		err := unix.Unmount(dir, 0)
		if err == nil || errors.Is(err, unix.EINVAL) {
			return
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		t.Errorf("unmounting %s: %v", dir, err)
	}
}

// setStore points the fixture at a new, empty store directory.
func (f *fixture) setStore(dir string) {
	f.t.Helper()
	require.NoError(f.t, os.MkdirAll(dir, 0o755))
	f.store = dir
}

func (f *fixture) options() copier.Options {
	// One worker, as these tests count files and batches of one worker;
	// image_test.go and the process tests run several.
	return copier.Options{Medium: string(f.h), StoreRoot: f.store, MountRoot: f.mountRoot, WorkerID: "test-worker",
		Workers: 1, Logger: testLogger(f.t)}
}

func (f *fixture) run(o copier.Options) (copier.Stats, error) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return copier.Run(ctx, f.db, o)
}

func (f *fixture) mustRun(o copier.Options) copier.Stats {
	f.t.Helper()
	st, err := f.run(o)
	require.NoError(f.t, err)
	return st
}

// monitor is the seed's monitoring query.
func (f *fixture) monitor() (done, pending, claimed int64) {
	f.t.Helper()
	err := f.db.QueryRow(context.Background(), `
		SELECT
			COUNT(*) FILTER (WHERE copied = true) as done,
			COUNT(*) FILTER (WHERE copied = false AND claimed_by IS NULL) as pending,
			COUNT(*) FILTER (WHERE copied = false AND claimed_by IS NOT NULL) as claimed
		FROM inode WHERE medium_hash = $1`, string(f.h)).Scan(&done, &pending, &claimed)
	require.NoError(f.t, err)
	return done, pending, claimed
}

// entries maps each catalogued path ("/a/b") of the spec to its entry,
// hardlinks resolved to their target.
func (f *fixture) entries() map[string]testimg.Entry {
	byPath := map[string]testimg.Entry{}
	for _, e := range f.spec.Entries {
		if e.Kind == testimg.Hardlink {
			tgt := byPath["/"+e.Target]
			byPath["/"+e.Path] = tgt
			continue
		}
		byPath["/"+e.Path] = e
	}
	return byPath
}

func blake3Hex(b []byte) string {
	s := blake3.Sum256(b)
	return hex.EncodeToString(s[:])
}

// checkComplete checks the invariants of a finished copy: every file inode
// copied with a valid blob, every path in the tree with the right content
// (a hardlink to its blob), directories and symlinks recreated, every blob
// re-hashing to its name with mode 0644, nothing claimed, no temporary file.
func (f *fixture) checkComplete() {
	t := f.t
	t.Helper()
	ctx := context.Background()
	done, pending, claimed := f.monitor()
	require.Zero(t, pending, "pending")
	require.Zero(t, claimed, "claimed")
	require.Positive(t, done)

	var notOK int
	require.NoError(t, f.db.QueryRow(ctx, `SELECT count(*) FROM inode WHERE medium_hash = $1 AND fs_type = 'f'
		AND NOT (copied AND status = 'success' AND (blobid IS NOT NULL OR claimed_by = 'EXCLUDED') AND (claimed_by IS NULL OR claimed_by = 'EXCLUDED'))`,
		string(f.h)).Scan(&notOK))
	require.Zero(t, notOK, "file inodes not copied")

	rep, err := copier.VerifyStore(ctx, f.db, copier.VerifyOptions{StoreRoot: f.store})
	require.NoError(t, err)
	require.False(t, rep.Failed(), "store verification: %+v", rep.Problems)

	ents := f.entries()
	rows, err := f.db.Query(ctx, `SELECT p.path, i.fs_type, coalesce(i.blobid, '') FROM path p JOIN inode i USING (medium_hash, dev, ino)
		WHERE p.medium_hash = $1 AND p.exclude_reason IS NULL`, string(f.h))
	require.NoError(t, err)
	defer rows.Close()
	n := 0
	for rows.Next() {
		var p []byte
		var typ, blob string
		require.NoError(t, rows.Scan(&p, &typ, &blob))
		n++
		tp := filepath.Join(f.store, "archived", string(f.h), string(p))
		e, known := ents[string(p)]
		switch typ {
		case "f":
			got, err := os.ReadFile(tp)
			require.NoError(t, err, "tree file %q", p)
			if known {
				require.Equal(t, blake3Hex(e.Content()), blob, "blob of %q", p)
			}
			require.Equal(t, blob, blake3Hex(got), "tree content of %q", p)
			var a, b unix.Stat_t
			require.NoError(t, unix.Lstat(tp, &a))
			require.NoError(t, unix.Lstat(filepath.Join(f.store, "by-hash", blob[0:2], blob[2:4], blob), &b))
			require.Equal(t, b.Ino, a.Ino, "tree path %q is a hardlink to its blob", p)
		case "d":
			st, err := os.Lstat(tp)
			require.NoError(t, err, "tree dir %q", p)
			require.True(t, st.IsDir(), "%q", p)
		case "l":
			target, err := os.Readlink(tp)
			require.NoError(t, err, "tree symlink %q", p)
			if known {
				require.Equal(t, e.Target, target, "%q", p)
			}
		}
	}
	require.NoError(t, rows.Err())
	require.Positive(t, n)
	f.checkNoTemps()
}

// checkNoTemps fails on any temporary file left in the store, and on any
// blob that is not a 0644 regular file.
func (f *fixture) checkNoTemps() {
	t := f.t
	t.Helper()
	err := filepath.WalkDir(f.store, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") || strings.HasPrefix(d.Name(), ".ntt-tmp-") {
			return fmt.Errorf("temporary file left: %s", p)
		}
		if strings.Contains(p, "/by-hash/") && d.Type().IsRegular() {
			st, err := os.Lstat(p)
			if err != nil {
				return err
			}
			if st.Mode().Perm() != 0o644 {
				return fmt.Errorf("blob %s has mode %v", p, st.Mode())
			}
		}
		return nil
	})
	require.NoError(t, err)
}
