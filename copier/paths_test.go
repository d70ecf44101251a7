package copier_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loader"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A catalog whose paths were tampered with to escape the mount — "..", a
// symlinked directory, a symlink to a host file, another filesystem mounted
// inside the medium — never makes the copier read outside the mount: those
// inodes fail as path_error (failed_retryable), no byte of the host file
// reaches the store. Once the catalog is fixed, reset-failed (a dry run
// first) puts them back and the next run copies them.
func TestTamperedPathsNeverLeaveTheMount(t *testing.T) {
	secretDir := t.TempDir()
	nonce := make([]byte, 16)
	rand.Read(nonce)
	secret := []byte("HOST SECRET " + hex.EncodeToString(nonce) + "\n")
	secretFile := filepath.Join(secretDir, "secret")
	require.NoError(t, os.WriteFile(secretFile, secret, 0o644))

	victim := func(name string) testimg.Entry {
		return testimg.Entry{Path: name, Kind: testimg.File, Data: []byte("victim " + name + "\n")}
	}
	f := newMedium(t, testimg.Spec{Entries: []testimg.Entry{
		{Path: "real/file", Kind: testimg.File, Data: []byte("inside\n")},
		{Path: "link-dir", Kind: testimg.Symlink, Target: "real"},
		{Path: "abs", Kind: testimg.Symlink, Target: secretFile},
		{Path: "sub", Kind: testimg.Dir},
		victim("v-dotdot"), victim("v-linkdir"), victim("v-abs"), victim("v-xdev"), victim("v-empty"),
		victim("v-hardlink"),
	}})
	// Another filesystem inside the medium's mount, holding the secret.
	sub := filepath.Join(f.mount, "sub")
	require.NoError(t, unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { unmount(t, sub) })
	require.NoError(t, os.WriteFile(filepath.Join(sub, "secret"), secret, 0o644))

	ctx := context.Background()
	rel, err := filepath.Rel(f.mount, secretFile)
	require.NoError(t, err)
	tamper := map[string]string{
		"/v-dotdot":  "/real/../" + rel, // climbs out of the mount
		"/v-linkdir": "/link-dir/file",  // through a symlinked directory
		"/v-abs":     "/abs",            // a symlink to a host file
		"/v-xdev":    "/sub/secret",     // into another filesystem
		"/v-empty":   "/real//file",     // an empty component
	}
	// The file inode v-abs takes the symlink's name.
	_, err = f.db.Exec(ctx, `DELETE FROM path WHERE medium_hash = $1 AND path = '/abs'`, string(f.h))
	require.NoError(t, err)
	for from, to := range tamper {
		tag, err := f.db.Exec(ctx, `UPDATE path SET path = $3 WHERE medium_hash = $1 AND path = $2`, string(f.h), []byte(from), []byte(to))
		require.NoError(t, err, "%s → %s", from, to)
		require.Equal(t, int64(1), tag.RowsAffected(), from)
	}
	// A second name for v-hardlink's inode, through the symlinked directory.
	_, err = f.db.Exec(ctx, `INSERT INTO path (medium_hash, dev, ino, path)
		SELECT medium_hash, dev, ino, '\x2f6c696e6b2d6469722f78'::bytea FROM path WHERE medium_hash = $1 AND path = '/v-hardlink'`, string(f.h))
	require.NoError(t, err) // '/link-dir/x'

	st := f.mustRun(f.options())
	assert.Equal(t, int64(6), st.GaveUp, "every tampered inode given up")

	rows, err := f.db.Query(ctx, `SELECT p.path, i.copied, i.status, coalesce(i.error_type, ''), i.claimed_by IS NULL, i.blobid IS NULL, i.errors
		FROM path p JOIN inode i USING (medium_hash, dev, ino) WHERE p.medium_hash = $1 AND i.fs_type = 'f'`, string(f.h))
	require.NoError(t, err)
	failed := 0
	for rows.Next() {
		var p []byte
		var copied, unclaimed, noBlob bool
		var status, etype string
		var errs []string
		require.NoError(t, rows.Scan(&p, &copied, &status, &etype, &unclaimed, &noBlob, &errs))
		if string(p) == "/real/file" {
			assert.Equal(t, "success", status)
			continue
		}
		failed++
		assert.True(t, copied && unclaimed && noBlob, "%q", p)
		assert.Equal(t, "failed_retryable", status, "%q", p)
		assert.Equal(t, "path_error", etype, "%q", p)
		require.Len(t, errs, 1, "%q", p)
		want := "leaves the mount or passes through a symlink"
		if bytes.Contains(p, []byte("..")) || bytes.Contains(p, []byte("//")) {
			want = "not a clean path"
		}
		assert.Contains(t, errs[0], want, "%q", p)
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, 7, failed) // v-hardlink's inode has two paths

	// Not one byte of the secret in the store.
	_, err = os.Stat(filepath.Join(f.store, "by-hash", blake3Hex(secret)[0:2], blake3Hex(secret)[2:4], blake3Hex(secret)))
	assert.ErrorIs(t, err, fs.ErrNotExist)
	filepath.WalkDir(f.store, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			assert.False(t, bytes.Contains(b, secret), "%s holds the secret", p)
		}
		return nil
	})

	// Fix the catalog; reset: dry run first, then for real; copy again.
	for from, to := range tamper {
		_, err := f.db.Exec(ctx, `UPDATE path SET path = $2 WHERE medium_hash = $1 AND path = $3`, string(f.h), []byte(from), []byte(to))
		require.NoError(t, err)
	}
	_, err = f.db.Exec(ctx, `DELETE FROM path WHERE medium_hash = $1 AND path = '/link-dir/x'`, string(f.h))
	require.NoError(t, err)

	res, err := copier.ResetFailed(ctx, f.db, string(f.h), copier.ResetOptions{})
	require.NoError(t, err)
	assert.False(t, res.Applied)
	assert.Equal(t, int64(6), res.Total)
	assert.Equal(t, map[string]int64{"path_error": 6}, res.ByErrorType)
	_, pending, _ := f.monitor()
	assert.Zero(t, pending, "a dry run changes nothing")

	res, err = copier.ResetFailed(ctx, f.db, string(f.h), copier.ResetOptions{ErrorType: "io_error", Apply: true})
	require.NoError(t, err)
	assert.Zero(t, res.Total, "only the error type asked for")
	res, err = copier.ResetFailed(ctx, f.db, string(f.h), copier.ResetOptions{ErrorType: "path_error", Apply: true})
	require.NoError(t, err)
	assert.Equal(t, int64(6), res.Total)
	_, pending, _ = f.monitor()
	assert.Equal(t, int64(6), pending)

	st = f.mustRun(f.options())
	assert.Equal(t, int64(6), st.Copied)
	unmount(t, sub) // the tree check reads the medium's own "sub"
	f.checkComplete()

	_, err = copier.ResetFailed(ctx, f.db, string(f.h), copier.ResetOptions{ErrorType: "bogus"})
	assert.ErrorIs(t, err, copier.ErrInvalidOptions)
}

// NON_FILE and EXCLUDED rows are never claimed; a path excluded by an
// ignore pattern is not in the tree; an inode that reaches the copier with
// no usable path is marked EXCLUDED instead of being claimed forever.
func TestNonFileAndExcludedNeverClaimed(t *testing.T) {
	testimg.RequireRoot(t)
	f := &fixture{t: t}
	*f = *newMedium(t, testimg.Spec{Entries: []testimg.Entry{
		{Path: "keep", Kind: testimg.File, Data: []byte("keep\n")},
		{Path: "Trash/junk", Kind: testimg.File, Data: []byte("junk\n")},
		{Path: "both", Kind: testimg.File, Data: []byte("both\n")},
		{Path: "Trash/both", Kind: testimg.Hardlink, Target: "both"},
		{Path: "fifo", Kind: testimg.FIFO},
		{Path: "link", Kind: testimg.Symlink, Target: "keep"},
		{Path: "lonely", Kind: testimg.File, Data: []byte("lonely\n")},
	}})
	ctx := context.Background()
	// Reload with an ignore pattern.
	m, err := enumerate.NewMatcher([]string{"/Trash/"})
	require.NoError(t, err)
	var raw bytes.Buffer
	_, err = enumerate.Walk(ctx, []string{f.mount}, enumerate.Options{}, &raw)
	require.NoError(t, err)
	_, err = loader.Load(ctx, f.db, string(f.h), &raw, loader.Options{Mode: loader.Replace, Ignore: m})
	require.NoError(t, err)
	// A loader bug: an inode with no path at all, still pending.
	_, err = f.db.Exec(ctx, `DELETE FROM path WHERE medium_hash = $1 AND path = '/lonely'`, string(f.h))
	require.NoError(t, err)

	type row struct {
		ClaimedBy *string
		Status    string
		Processed bool
	}
	snapshot := func() map[string]row {
		rows, err := f.db.Query(ctx, `SELECT i.fs_type || ':' || i.ino, i.claimed_by, i.status, i.processed_at IS NOT NULL FROM inode i
			WHERE i.medium_hash = $1 AND i.claimed_by IN ('NON_FILE', 'EXCLUDED')`, string(f.h))
		require.NoError(t, err)
		out := map[string]row{}
		for rows.Next() {
			var k string
			var r row
			require.NoError(t, rows.Scan(&k, &r.ClaimedBy, &r.Status, &r.Processed))
			out[k] = r
		}
		require.NoError(t, rows.Err())
		return out
	}
	before := snapshot()
	require.NotEmpty(t, before)

	st := f.mustRun(f.options())
	assert.Equal(t, int64(2), st.Copied, "keep and both")
	assert.Equal(t, int64(1), st.Excluded, "lonely")
	after := snapshot()
	for k, r := range before {
		assert.Equal(t, r, after[k], "NON_FILE/EXCLUDED row %s untouched", k)
	}
	assert.Len(t, after, len(before)+1, "lonely is now EXCLUDED")

	tree := filepath.Join(f.store, "archived", string(f.h))
	for _, p := range []string{"keep", "both"} {
		_, err := os.Stat(filepath.Join(tree, p))
		assert.NoError(t, err, p)
	}
	for _, p := range []string{"Trash/junk", "Trash/both", "lonely", "fifo"} {
		_, err := os.Lstat(filepath.Join(tree, p))
		assert.ErrorIs(t, err, fs.ErrNotExist, p)
	}
	target, err := os.Readlink(filepath.Join(tree, "link"))
	require.NoError(t, err)
	assert.Equal(t, "keep", target)
	_, pending, claimed := f.monitor()
	assert.Zero(t, pending)
	assert.Zero(t, claimed)
}
