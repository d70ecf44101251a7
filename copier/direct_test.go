package copier

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// residentPages counts the pages of the file at p that are in the page
// cache (mincore over a mapping of it).
func residentPages(t *testing.T, p string) int {
	t.Helper()
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	fi, err := f.Stat()
	require.NoError(t, err)
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	require.NoError(t, err)
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		require.NoError(t, errno, "mincore %s", p)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// evict writes the file at p to disk and drops its pages from the cache.
func evict(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Sync())
	require.NoError(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED))
	require.Zero(t, residentPages(t, p), "the test cannot empty the cache of %s", p)
}

// readAll reads r to its end the way stream does: whole chunks of size
// bytes, carved from one aligned buffer, shifted by skew bytes.
func readAll(t *testing.T, r io.Reader, size, skew int) []byte {
	t.Helper()
	buf := alignedBuf(size + skew)[skew:]
	var out []byte
	for {
		n, err := readFull(r, buf)
		out = append(out, buf[:n]...)
		require.NoError(t, err)
		if n < len(buf) {
			return out
		}
	}
}

// A large file read through directReader yields exactly its bytes whatever
// its tail, leaves its pages out of the cache (the point of O_DIRECT), and
// still reads right from a buffer O_DIRECT refuses.
func TestDirectReaderBytesAndCache(t *testing.T) {
	dir := t.TempDir()
	page := os.Getpagesize()
	for _, size := range []int{4096, 1 << 20, 1<<20 + 1, 3<<20 + 4095, 17<<20 + 123} {
		content := make([]byte, size)
		rng := rand.New(rand.NewPCG(uint64(size), 7))
		for i := range content {
			content[i] = byte(rng.Uint32())
		}
		p := filepath.Join(dir, "f")
		require.NoError(t, os.WriteFile(p, content, 0o644))

		for _, skew := range []int{0, 1} {
			evict(t, p)
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			require.NoError(t, err)
			d, err := readDirect(fd)
			if err != nil {
				unix.Close(fd)
				testenv.SkipOrFail(t, "the temporary directory's filesystem refuses O_DIRECT: "+err.Error())
			}
			got := readAll(t, d, directChunk, skew)
			unix.Close(fd)
			require.True(t, bytes.Equal(content, got), "size %d skew %d: %d bytes read", size, skew, len(got))
			if skew == 0 {
				// At most the tail's page went through the cache, and only a
				// short read turned O_DIRECT off.
				assert.LessOrEqual(t, residentPages(t, p), 1, "size %d: read with O_DIRECT", size)
				assert.Equal(t, size%directChunk == 0, d.direct, "size %d: O_DIRECT left on", size)
			} else {
				// A buffer O_DIRECT cannot use: read through the cache
				// (refused with EINVAL, or the kernel's own fallback). Not
				// required whole: under -race, 766 of 769 pages were
				// resident in 2 of 9 runs (cause not found); an O_DIRECT
				// read leaves at most the tail's page.
				pages := (size + page - 1) / page
				assert.GreaterOrEqual(t, residentPages(t, p), max(1, pages*9/10), "size %d: read through the cache", size)
			}
		}
	}
}
