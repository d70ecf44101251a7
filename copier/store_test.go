package copier

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

func TestRelPath(t *testing.T) {
	good := map[string]string{
		"/":                    "",
		"/a":                   "a",
		"/a/b c/d":             "a/b c/d",
		"/...":                 "...",
		"/.hidden/..x":         ".hidden/..x",
		"/new\nline/\x1c/\xff": "new\nline/\x1c/\xff",
	}
	for in, want := range good {
		got, err := relPath([]byte(in))
		require.NoError(t, err, "%q", in)
		assert.Equal(t, want, got, "%q", in)
	}
	for _, in := range []string{"", "a", "a/b", "//", "/a/", "/a//b", "/..", "/a/../b", "/./a", "/a/.", "/a\x00b", "/a/.."} {
		_, err := relPath([]byte(in))
		require.Error(t, err, "%q", in)
		assert.ErrorIs(t, err, ErrBadPath, "%q", in)
		var pe *PathError
		assert.True(t, errors.As(err, &pe), "%q", in)
	}
}

func id(b []byte) string { s := blake3.Sum256(b); return hex.EncodeToString(s[:]) }

func openTestStore(t *testing.T) *Store {
	t.Helper()
	s, err := OpenStore(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpenStoreNeedsItsDirectory(t *testing.T) {
	_, err := OpenStore(filepath.Join(t.TempDir(), "not-mounted"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// EEXIST at the by-hash path is deduplication; a blob cut short (a crash
// before its data reached the disk) is replaced, not trusted.
func TestPutBytesDedupeAndRepair(t *testing.T) {
	s := openTestStore(t)
	data := []byte("some content\n")
	created, err := s.PutBytes(id(data), data)
	require.NoError(t, err)
	assert.True(t, created)
	created, err = s.PutBytes(id(data), data)
	require.NoError(t, err)
	assert.False(t, created)

	p := s.BlobFile(id(data))
	require.NoError(t, os.Truncate(p, 0))
	created, err = s.PutBytes(id(data), data)
	require.NoError(t, err)
	assert.True(t, created, "the short blob is replaced")
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, data, got)
	st, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())
	assertNoTemps(t, s.Root)
}

func assertNoTemps(t *testing.T, root string) {
	t.Helper()
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		require.NoError(t, err)
		assert.NotContains(t, fi.Name(), tmpPrefix, p)
		assert.NotContains(t, fi.Name(), ".ntt-tmp-", p)
		return nil
	})
}

// Without O_TMPFILE the store uses named temporary files, removes them,
// and removes those of dead processes when it opens.
func TestNamedTemporaryFallback(t *testing.T) {
	s := openTestStore(t)
	s.noTmp.Store(true)
	data := []byte("fallback\n")
	created, err := s.PutBytes(id(data), data)
	require.NoError(t, err)
	assert.True(t, created)
	created, err = s.PutBytes(id(data), data)
	require.NoError(t, err)
	assert.False(t, created)
	assertNoTemps(t, s.Root)

	// A dead process's leftover (pid 2^22+1 is above pid_max's default).
	stale := filepath.Join(s.Root, ByHashDir, fmt.Sprintf("%s%s-%d-1", tmpPrefix, s.host, 1<<22+1))
	require.NoError(t, os.WriteFile(stale, []byte("partial"), 0o644))
	mine := filepath.Join(s.Root, ByHashDir, fmt.Sprintf("%s%s-%d-1", tmpPrefix, "otherhost", 1<<22+1))
	require.NoError(t, os.WriteFile(mine, []byte("another host's"), 0o644))
	s2, err := OpenStore(s.Root)
	require.NoError(t, err)
	s2.Close()
	_, err = os.Stat(stale)
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = os.Stat(mine)
	assert.NoError(t, err, "another host's temporary file is not ours to remove")
}

// A blob with more paths than the filesystem allows links (EMLINK: 65,000
// on ext4) gets copies at the remaining paths, never a failure.
func TestTreeLinkEMLINKFallsBackToCopy(t *testing.T) {
	s := openTestStore(t)
	var sfs unix.Statfs_t
	require.NoError(t, unix.Statfs(s.Root, &sfs))
	if sfs.Type != unix.EXT4_SUPER_MAGIC {
		testenv.SkipOrFail(t, fmt.Sprintf("EMLINK fallback is tested on ext4 (65,000 links); %s is not ext4", s.Root))
	}
	data := []byte{}
	bid := id(data)
	_, err := s.PutBytes(bid, data)
	require.NoError(t, err)
	h := medium.MustParse("00000000000000000000000000e3b1c0")
	tr, err := s.openTree(h)
	require.NoError(t, err)
	defer tr.close()
	// Fill the blob's link count outside the tree, cheaply.
	fill := filepath.Join(s.Root, "fill")
	require.NoError(t, os.Mkdir(fill, 0o755))
	blob := s.BlobFile(bid)
	var err2 error
	for i := 0; ; i++ {
		if err2 = os.Link(blob, filepath.Join(fill, fmt.Sprint(i))); err2 != nil {
			break
		}
	}
	require.ErrorIs(t, err2, unix.EMLINK)

	c := tr.cursor()
	defer c.close()
	copied, err := c.link([]byte("/a/empty"), "a/empty", bid)
	require.NoError(t, err)
	assert.True(t, copied)
	tp := s.TreePath(string(h), []byte("/a/empty"))
	st, err := os.Stat(tp)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())
	assert.Zero(t, st.Size())
	// Again (a rerun): the copy is replaced by another copy, no error.
	copied, err = c.link([]byte("/a/empty"), "a/empty", bid)
	require.NoError(t, err)
	assert.True(t, copied)
	assertNoTemps(t, filepath.Join(s.Root, ArchivedDir))
}

// The tree is written beneath its root without following symlinks: a
// symlink the tree holds (recreated from the medium) is never a way out.
func TestTreeNeverFollowsSymlinks(t *testing.T) {
	s := openTestStore(t)
	data := []byte("x")
	_, err := s.PutBytes(id(data), data)
	require.NoError(t, err)
	h := medium.MustParse("00000000000000000000000000e3b1c1")
	tr, err := s.openTree(h)
	require.NoError(t, err)
	defer tr.close()
	outside := t.TempDir()
	c := tr.cursor()
	defer c.close()
	require.NoError(t, c.symlink([]byte("/escape"), "escape", outside))
	_, err = c.link([]byte("/escape/file"), "escape/file", id(data))
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrUnsafePath)
	entries, err := os.ReadDir(outside)
	require.NoError(t, err)
	assert.Empty(t, entries)
}
