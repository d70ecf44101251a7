package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loader"
	"github.com/stretchr/testify/require"
)

// hashOf names a test medium as the seed's are named: an md5 in hex.
func hashOf(name string) string {
	s := md5.Sum([]byte(name))
	return hex.EncodeToString(s[:])
}

// oldFile writes a file whose mtime is an hour ago (long settled).
func oldFile(t *testing.T, p string, data []byte) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, data, 0o644))
	settled(t, p)
}

func settled(t *testing.T, p string) {
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(p, old, old))
}

// smallMedium builds a real ext4 image <dir>/<hash>.img holding files
// (path → seed), settled.
func smallMedium(t *testing.T, dir, name string, files map[string]uint64) (string, string) {
	h, img, _ := smallMediumSpec(t, dir, name, files)
	return h, img
}

func smallMediumSpec(t *testing.T, dir, name string, files map[string]uint64) (string, string, []testimg.Entry) {
	t.Helper()
	h := hashOf(name)
	var e []testimg.Entry
	for p, seed := range files {
		e = append(e, testimg.Entry{Path: p, Kind: testimg.File, Seed: seed, Size: int64(1000 + seed*37%5000)})
	}
	img := filepath.Join(dir, h+".img")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, testimg.BuildImage(img, testimg.Spec{FSType: "ext4", Size: 4 << 20, Entries: e}))
	settled(t, img)
	return h, img, e
}

// loadByHand loads a raw enumeration of a tiny tree (a directory and n
// files) for h with the real loader, as the load phase would: the medium
// is then "loaded".
func loadByHand(t *testing.T, e *env, h string, n int) {
	t.Helper()
	var raw bytes.Buffer
	root := "/mnt/ntt/" + h
	rec := func(typ string, ino int, size int64, p string) {
		fmt.Fprintf(&raw, "%s\x1c2049\x1c%d\x1c1\x1c%d\x1c1700000000\x1c%s\x00", typ, ino, size, p)
	}
	rec("d", 2, 4096, root)
	for i := 0; i < n; i++ {
		rec("f", 100+i, int64(10*i+1), fmt.Sprintf("%s/f%d", root, i))
	}
	_, err := loader.Load(context.Background(), e.db, h, &raw, loader.Options{})
	require.NoError(t, err)
}

// copyByHand marks k of the medium's files copied (k of them new blobs),
// as the copier's commit does.
func copyByHand(t *testing.T, e *env, h string, k int) {
	_, err := e.db.Exec(context.Background(), `
		UPDATE inode SET copied = true, status = 'success', processed_at = now(), by_hash_created = (ino % 2 = 0),
		       blobid = lpad(to_hex(ino), 64, '0')
		WHERE medium_hash = $1 AND fs_type = 'f' AND ino < 100 + $2`, h, k)
	require.NoError(t, err)
	if k > 0 {
		_, err = e.db.Exec(context.Background(), `UPDATE inode SET copied = true, claimed_by = 'NON_FILE', status = 'success' WHERE medium_hash = $1 AND fs_type = 'd'`, h)
		require.NoError(t, err)
	}
}

func (e *env) status(args ...string) (int, string, string) {
	var out, errb strings.Builder
	code := run(append([]string{"status", "--db", e.url, "--images", e.images, "--work", e.work}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// TestStatusEveryState puts one medium in each state — a real archived run,
// real files, a real imaging process, catalog rows written by the real
// loader — and checks status's table and JSON.
func TestStatusEveryState(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	// Nothing yet: an empty table, not an error.
	require.NoError(t, os.MkdirAll(e.images, 0o755))
	code, out, errs := e.status()
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "No media")

	archived, img := smallMedium(t, e.images, "archived", map[string]uint64{"a.txt": 1, "b/c.txt": 2, "b/d.txt": 2})
	code, _, errs = e.pipeline(img)
	require.Equal(t, 0, code, errs)

	ready := hashOf("ready")
	oldFile(t, filepath.Join(e.images, ready+".img"), make([]byte, 8192))

	settling := hashOf("settling")
	require.NoError(t, os.WriteFile(filepath.Join(e.images, settling+".img"), make([]byte, 4096), 0o644))

	imaging := hashOf("imaging")
	startImager(t, filepath.Join(e.images, imaging+".img"), filepath.Join(e.images, imaging+".map"))
	settled(t, filepath.Join(e.images, imaging+".img")) // quiet, yet open for writing

	enumerated := hashOf("enumerated")
	oldFile(t, filepath.Join(e.images, enumerated+".img"), make([]byte, 4096))
	oldFile(t, filepath.Join(e.work, medium.MustParse(enumerated).RawFileName()), []byte("d\x1c1\x1c2\x1c1\x1c0\x1c0\x1c/x\x00"))

	failedH := hashOf("failed")
	oldFile(t, filepath.Join(e.images, failedH+".img"), make([]byte, 4096))
	require.NoError(t, schema.MergeProblem(ctx, e.db, medium.MustParse(failedH), "mount_failed", map[string]any{"error": "no filesystem found", "phase": "mount"}))
	// A warning is not a failure; a resolved failure is history.
	require.NoError(t, schema.MergeProblem(ctx, e.db, medium.MustParse(ready), "enum_failed", map[string]any{"error": "old"}))
	_, err := schema.ResolveProblems(ctx, e.db, medium.MustParse(ready), "enum_failed")
	require.NoError(t, err)

	states := map[string]string{}
	for _, c := range []struct {
		name   string
		copied int
	}{{"loaded", 0}, {"copying", 2}, {"copied", 4}} {
		h := hashOf(c.name)
		oldFile(t, filepath.Join(e.images, h+".img"), make([]byte, 4096))
		loadByHand(t, e, h, 4)
		copyByHand(t, e, h, c.copied)
		states[h] = c.name
	}
	missing := hashOf("missing")
	require.NoError(t, schema.MergeProblem(ctx, e.db, medium.MustParse(missing), "load_failed", map[string]any{"error": "x"}))
	_, err = e.db.Exec(ctx, `UPDATE medium SET problems = NULL WHERE medium_hash = $1`, missing)
	require.NoError(t, err)

	code, out, errs = e.status("--json")
	require.Equal(t, 0, code, errs)
	var got []mediumStatus
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	by := map[string]mediumStatus{}
	for _, s := range got {
		by[string(s.Hash)] = s
	}
	want := map[string]string{archived: stateArchived, ready: stateReady, settling: stateSettling, imaging: stateImaging,
		enumerated: stateEnumerated, failedH: stateFailed, missing: stateMissing}
	for h, st := range states {
		want[h] = st
	}
	require.Len(t, got, len(want), out)
	for h, st := range want {
		require.Equal(t, st, by[h].State, "medium %s: %+v", h, by[h])
	}
	require.Equal(t, "mount_failed", by[failedH].Detail)
	require.Equal(t, "no filesystem found", by[failedH].Problem.Error)
	require.Nil(t, by[ready].Problem, "a resolved flag is not the last problem")
	require.Equal(t, 50.0, by[hashOf("copying")].CopiedPct)
	require.Equal(t, int64(4), by[hashOf("copying")].Files)
	require.Equal(t, 50.0, by[hashOf("copied")].DedupPct, "two of four files found their blob already stored")
	require.Equal(t, int64(3), by[archived].Files)
	require.Equal(t, int64(8192), by[ready].ImageBytes)
	require.NotEmpty(t, by[imaging].Writers)

	code, out, errs = e.status()
	require.Equal(t, 0, code, errs)
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			lines[f[0]] = l
		}
	}
	require.Contains(t, lines[hashOf("copying")], "copying 50 %")
	require.Contains(t, lines[failedH], "failed: mount_failed")
	require.Contains(t, lines[failedH], "no filesystem found")
	require.Contains(t, lines[imaging], "imaging")
	require.Contains(t, lines[imaging], imaging+".img")
	require.Contains(t, lines[archived], "archived")
	require.Contains(t, out, "10 media: 1 archived, 1 copied, 1 copying, 1 loaded, 1 enumerated, 1 ready, 1 settling, 1 imaging, 1 failed, 1 missing")

	// Status changed nothing: the ready medium is still not in the catalog.
	var n int
	require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*) FROM medium WHERE medium_hash = $1 AND health IS NOT NULL`, ready).Scan(&n))
	require.Zero(t, n)

	// Bad input: a missing images directory is a clear error.
	var o, eb strings.Builder
	code = run([]string{"status", "--db", e.url, "--images", filepath.Join(e.dir, "nope")}, &o, &eb)
	require.Equal(t, 1, code)
	require.Contains(t, eb.String(), "nope")
}
