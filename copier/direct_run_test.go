package copier_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A large file on a mounted medium is read with O_DIRECT (direct.go): it is
// stored byte for byte, its pages are not left in the page cache (the small
// files' are: they are read through it), and the read-ahead's advice does
// not read its first bytes a second time.
func TestLargeFileReadDirect(t *testing.T) {
	es := []testimg.Entry{
		{Path: "big.bin", Kind: testimg.File, Size: 20<<20 + 123, Seed: 31},
		{Path: "d/big2.bin", Kind: testimg.File, Size: 17 << 20, Seed: 32},
	}
	for i := range 3 {
		es = append(es, testimg.Entry{Path: "s" + string(rune('a'+i)), Kind: testimg.File, Size: 64 << 10, Seed: uint64(40 + i)})
	}
	f := newMedium(t, testimg.Spec{BlockSize: 4096, Size: 64 << 20, Entries: es})
	for _, e := range es {
		require.Zero(t, copier.ResidentPages(t, filepath.Join(f.mount, e.Path)), "%s: cached before the run", e.Path)
	}
	o := f.options()
	o.KernelOnly = true // the small files' pages through the mount (from the device, they are the device's)
	st := f.mustRun(o)
	f.checkComplete()
	assert.Equal(t, int64(len(es)), st.Copied)

	for _, e := range es {
		src := filepath.Join(f.mount, e.Path)
		got, err := os.ReadFile(filepath.Join(f.store, "archived", string(f.h), e.Path))
		require.NoError(t, err, e.Path)
		assert.Equal(t, blake3Hex(e.Content()), blake3Hex(got), e.Path)
		if e.Size > 16<<20 {
			assert.LessOrEqual(t, copier.ResidentPages(t, src), 1, "%s: read around the page cache (at most its tail)", e.Path)
		} else {
			assert.Equal(t, int((e.Size+4095)/4096), copier.ResidentPages(t, src), "%s: a small file is read through the cache", e.Path)
		}
	}
	assert.Equal(t, st.BytesRead, int64(20<<20+123+17<<20+3*64<<10), "each byte read once")
}

// A large file read with O_DIRECT whose second half lies past the end of a
// truncated image fails to read, as it would through the cache: it is not
// stored, it is skipped as past the end after its retries with an I/O
// error, and the files before the cut are copied.
func TestLargeFileReadDirectPastTheEnd(t *testing.T) {
	var es []testimg.Entry
	for i := range 4 {
		es = append(es, testimg.Entry{Path: "s" + string(rune('a'+i)), Kind: testimg.File, Size: 8 << 10, Seed: uint64(60 + i)})
	}
	es = append(es, testimg.Entry{Path: "big.bin", Kind: testimg.File, Size: 24 << 20, Seed: 51})
	f := newMedium(t, testimg.Spec{BlockSize: 4096, Size: 40 << 20, Entries: es})
	start, end := extentOf(t, filepath.Join(f.mount, "big.bin"))
	cut := (start + end) / 2 &^ 4095
	var before int64 // small files wholly before the cut; the others are past it
	for _, e := range es[:4] {
		s, en := extentOf(t, filepath.Join(f.mount, e.Path))
		require.True(t, en <= start || s >= end, "%s lies inside big.bin's extent", e.Path)
		if en <= cut {
			before++
		}
	}
	require.NoError(t, testimg.Truncate(f.image, cut))
	fd, err := unix.Open(f.loop.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, unix.IoctlSetInt(fd, unix.LOOP_SET_CAPACITY, 0))
	unix.Close(fd)

	o := f.options()
	o.Policy, o.Damage = f.policy(t), nil
	st := f.mustRun(o)
	assert.Equal(t, before, st.Copied, "the files before the cut")
	assert.Equal(t, 1+4-before, st.Skipped, "big.bin and the files past the cut")

	var claimedBy, status, etype string
	var blob *string
	require.NoError(t, f.db.QueryRow(context.Background(), `SELECT i.claimed_by, i.status, i.error_type, i.blobid
		FROM inode i JOIN path p USING (medium_hash, dev, ino) WHERE p.medium_hash = $1 AND p.path = '/big.bin'`,
		string(f.h)).Scan(&claimedBy, &status, &etype, &blob))
	assert.Equal(t, "DIAGNOSTIC_SKIP:BEYOND_EOF", claimedBy, "big.bin: half of it is past the end")
	assert.Equal(t, "failed_permanent", status)
	assert.Equal(t, "io_error", etype)
	assert.Nil(t, blob, "no blob for big.bin")
	_, err = os.Stat(filepath.Join(f.store, "archived", string(f.h), "big.bin"))
	assert.ErrorIs(t, err, os.ErrNotExist, "no tree entry for big.bin")
}
