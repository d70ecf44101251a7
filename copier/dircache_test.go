package copier

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// TestDirCacheBounded: the cache keeps no more than dirCacheMax idle
// directories open, never closes one that is held, refuses (and does not
// keep) a directory that will not open beneath the base, and closes all.
func TestDirCacheBounded(t *testing.T) {
	root := t.TempDir()
	const n = 3 * dirCacheMax
	for i := range n {
		require.NoError(t, os.MkdirAll(filepath.Join(root, fmt.Sprintf("d%03d/e", i)), 0o755))
	}
	require.NoError(t, os.Symlink("d000", filepath.Join(root, "link")))
	base, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(base)

	before := openFDs(t)
	var c dirCache
	held, ok := c.get(base, "d000/e")
	require.True(t, ok)
	for i := 1; i < n; i++ {
		e, ok := c.get(base, fmt.Sprintf("d%03d/e", i))
		require.True(t, ok)
		c.put(e)
		require.LessOrEqual(t, openFDs(t)-before, dirCacheMax+1, "after %d directories", i)
	}
	// The held directory survived every eviction.
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(held.fd, &st))
	require.Equal(t, uint32(unix.S_IFDIR), st.Mode&unix.S_IFMT)
	again, ok := c.get(base, "d000/e")
	require.True(t, ok)
	require.Same(t, held, again, "a held directory is found, not opened twice")
	c.put(again)
	c.put(held)

	// A symlinked directory does not open beneath the base, and is not kept.
	_, ok = c.get(base, "link/e")
	require.False(t, ok)
	_, kept := c.m[dirKey{base, "link/e"}]
	require.False(t, kept)
	_, ok = c.get(base, "../"+filepath.Base(root))
	require.False(t, ok, "a directory outside the base")

	c.close()
	require.Equal(t, before, openFDs(t), "close closes every directory")
}
