package copier_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// deviceSpec is a medium of small files, hardlinks, a sparse file, files
// past the block map's direct blocks, and one file above the size read
// from the device (it keeps the mount's direct reads).
func deviceSpec(base testimg.Spec) testimg.Spec {
	spec := base
	spec.Entries = []testimg.Entry{
		{Path: "a/empty", Kind: testimg.File},
		{Path: "a/small", Kind: testimg.File, Data: []byte("small\n")},
		{Path: "a/same", Kind: testimg.File, Data: []byte("small\n")},
		{Path: "a/blocks", Kind: testimg.File, Size: 1<<20 + 77, Seed: 3},
		{Path: "a/sparse", Kind: testimg.File, Size: 6 << 20, Seed: 4, Sparse: true},
		{Path: "b/c/d/deep", Kind: testimg.File, Size: 70000, Seed: 5},
		{Path: "b/link", Kind: testimg.Hardlink, Target: "a/small"},
		{Path: "b/sym", Kind: testimg.Symlink, Target: "../a/small"},
		{Path: "big", Kind: testimg.File, Size: 17 << 20, Seed: 6, Sparse: true},
		{Path: "kernel", Kind: testimg.Dir},
	}
	return spec
}

// kernelWrites writes, through a read-write mount of image, files laid out
// by the kernel's allocator as mke2fs -d does not: one of 40 pieces with
// holes between (more extents than an inode holds: an extent tree of
// depth 1; on ext2/3, indirect blocks with holes) and, where the
// filesystem has extents, preallocated files (unwritten extents inside the
// file and past its end). It returns their content by catalog path.
func kernelWrites(t *testing.T, image string, extents bool) map[string][]byte {
	t.Helper()
	loop := testimg.AttachLoopWritable(t, image)
	dir := t.TempDir()
	require.NoError(t, unix.Mount(loop.Path, dir, "ext4", 0, ""))
	mounted := true
	defer func() {
		if mounted {
			unmount(t, dir)
		}
	}()
	piece := func(i, n int) []byte {
		b := make([]byte, n)
		for k := range b {
			b[k] = byte(i*31 + k*7 + k>>8)
		}
		return b
	}
	want := map[string][]byte{}
	write := func(name string, fn func(f *os.File) []byte) {
		f, err := os.Create(filepath.Join(dir, "kernel", name))
		require.NoError(t, err)
		want["/kernel/"+name] = fn(f)
		require.NoError(t, f.Sync())
		require.NoError(t, f.Close())
	}
	write("fragmented", func(f *os.File) []byte {
		var all []byte
		for i := range 40 {
			all = append(all, make([]byte, 8192)...)
			all = append(all, piece(i, 8192)...)
			_, err := f.WriteAt(piece(i, 8192), int64(i)*16384+8192)
			require.NoError(t, err)
		}
		return all
	})
	if extents {
		// Every free block filled with bytes that are not zeros, then
		// freed, for the preallocations to take: an unwritten extent read
		// as its blocks would show them.
		filler, err := os.Create(filepath.Join(dir, "kernel", "filler"))
		require.NoError(t, err)
		chunk := bytes.Repeat([]byte{0xAA}, 1<<20)
		for {
			if _, err := filler.Write(chunk); err != nil {
				require.ErrorIs(t, err, unix.ENOSPC)
				break
			}
		}
		filler.Close()
		unix.Sync()
		require.NoError(t, os.Remove(filler.Name()))
		unix.Sync()
		write("prealloc", func(f *os.File) []byte {
			require.NoError(t, unix.Fallocate(int(f.Fd()), 0, 0, 1<<20))
			_, err := f.WriteAt(piece(99, 5000), 300<<10)
			require.NoError(t, err)
			all := make([]byte, 1<<20)
			copy(all[300<<10:], piece(99, 5000))
			return all
		})
		write("beyond-end", func(f *os.File) []byte {
			_, err := f.WriteAt(piece(7, 5000), 0)
			require.NoError(t, err)
			require.NoError(t, unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20))
			return piece(7, 5000)
		})
	}
	unmount(t, dir)
	mounted = false
	return want
}

// pathBlobs is the catalog's blob of every file path.
func (f *fixture) pathBlobs() map[string]string {
	f.t.Helper()
	rows, err := f.db.Query(context.Background(), `SELECT p.path, coalesce(i.blobid, '') FROM path p JOIN inode i USING (medium_hash, dev, ino)
		WHERE p.medium_hash = $1 AND i.fs_type = 'f'`, string(f.h))
	require.NoError(f.t, err)
	defer rows.Close()
	m := map[string]string{}
	for rows.Next() {
		var p []byte
		var blob string
		require.NoError(f.t, rows.Scan(&p, &blob))
		m[string(p)] = blob
	}
	require.NoError(f.t, rows.Err())
	return m
}

// A mounted ext medium's files read straight from its block device are
// the files read through the mount, on every layout: extents (an extent
// tree, unwritten extents inside and past the end), block maps with their
// indirect blocks and holes, 1 and 4 KiB blocks, with and without
// metadata_csum. Every file up to 16 MiB is read from the device, the
// larger one through the mount; with KernelOnly none is. A filesystem the
// device reader refuses (inline_data) is read wholly through the mount,
// and the log says why.
func TestDeviceReadMatchesMount(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    testimg.Spec
		extents bool
		refused bool
	}{
		{"ext4", testimg.Spec{}, true, false},
		{"ext4-1k-no-csum", testimg.Spec{BlockSize: 1024, Features: []string{"^metadata_csum"}}, true, false},
		{"ext3-1k", testimg.Spec{FSType: "ext3", BlockSize: 1024}, false, false},
		{"ext2", testimg.Spec{FSType: "ext2"}, false, false},
		{"ext4-inline-data", testimg.Spec{Features: []string{"inline_data"}}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testimg.RequireRoot(t)
			spec := deviceSpec(tc.spec)
			blobs := map[bool]map[string]string{}
			read := map[bool]int64{}
			for _, kernelOnly := range []bool{true, false} {
				img := testimg.Build(t, spec)
				written := kernelWrites(t, img, tc.extents)
				f := newMediumImage(t, spec, img, "")
				o := f.options()
				o.KernelOnly = kernelOnly
				log, buf := captureLog(t)
				o.Logger = log
				st := f.mustRun(o)
				f.checkComplete()
				blobs[kernelOnly] = f.pathBlobs()
				read[kernelOnly] = st.BytesRead
				for p, content := range written {
					require.Equal(t, blake3Hex(content), blobs[kernelOnly][p], "%s (kernel only: %v)", p, kernelOnly)
				}
				var files int64
				require.NoError(t, f.db.QueryRow(context.Background(), `SELECT count(*) FROM inode
					WHERE medium_hash = $1 AND fs_type = 'f' AND size <= 16 << 20`, string(f.h)).Scan(&files))
				switch {
				case kernelOnly:
					require.Zero(t, st.FromDevice)
					require.Empty(t, buf.lines("reading files from the block device"))
				case tc.refused:
					require.Zero(t, st.FromDevice)
					require.Len(t, buf.lines("reading files through the mount"), 1)
				default:
					require.Len(t, buf.lines("reading files from the block device"), 1)
					require.Equal(t, files, st.FromDevice, "every file up to 16 MiB from the device")
					require.Equal(t, files+1, st.Copied)
				}
			}
			require.Equal(t, blobs[true], blobs[false])
			require.Equal(t, read[true], read[false], "each byte read once, from the device as through the mount")
		})
	}
}

// Read from the device, a catalog whose paths were tampered with — through
// a symlinked directory, a symlink to a host file, a name of another
// inode, a second name through a symlink — fails exactly as through the
// mount (path_error, the kernel's reason), and nothing else is copied
// from anywhere but the medium.
func TestDeviceReadTamperedPathsFailAsMount(t *testing.T) {
	secret := []byte("HOST SECRET device read\n")
	secretFile := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secretFile, secret, 0o644))
	errs := map[bool]map[string]string{}
	for _, kernelOnly := range []bool{true, false} {
		f := newMedium(t, testimg.Spec{Entries: []testimg.Entry{
			{Path: "real/file", Kind: testimg.File, Data: []byte("inside\n")},
			{Path: "real/other", Kind: testimg.File, Data: []byte("other inode\n")},
			{Path: "link-dir", Kind: testimg.Symlink, Target: "real"},
			{Path: "abs", Kind: testimg.Symlink, Target: secretFile},
			{Path: "v-linkdir", Kind: testimg.File, Data: []byte("victim 1\n")},
			{Path: "v-abs", Kind: testimg.File, Data: []byte("victim 2\n")},
			{Path: "v-other", Kind: testimg.File, Data: []byte("victim 3\n")},
			{Path: "v-hardlink", Kind: testimg.File, Data: []byte("victim 4\n")},
		}})
		ctx := context.Background()
		_, err := f.db.Exec(ctx, `DELETE FROM path WHERE medium_hash = $1 AND path IN ('/abs', '/real/other')`, string(f.h))
		require.NoError(t, err)
		for from, to := range map[string]string{"/v-linkdir": "/link-dir/file", "/v-abs": "/abs", "/v-other": "/real/other"} {
			tag, err := f.db.Exec(ctx, `UPDATE path SET path = $3 WHERE medium_hash = $1 AND path = $2`, string(f.h), []byte(from), []byte(to))
			require.NoError(t, err)
			require.EqualValues(t, 1, tag.RowsAffected())
		}
		_, err = f.db.Exec(ctx, `INSERT INTO path (medium_hash, dev, ino, path)
			SELECT medium_hash, dev, ino, '/link-dir/x'::bytea FROM path WHERE medium_hash = $1 AND path = '/v-hardlink'`, string(f.h))
		require.NoError(t, err)

		o := f.options()
		o.KernelOnly = kernelOnly
		st := f.mustRun(o)
		require.EqualValues(t, 4, st.GaveUp)
		require.EqualValues(t, 1, st.Copied)
		if kernelOnly {
			require.Zero(t, st.FromDevice)
		} else {
			require.EqualValues(t, 1, st.FromDevice, "the untampered file from the device")
		}
		rows, err := f.db.Query(ctx, `SELECT p.path, i.status, coalesce(i.error_type, ''), coalesce(i.errors[1], '')
			FROM path p JOIN inode i USING (medium_hash, dev, ino) WHERE p.medium_hash = $1 AND i.fs_type = 'f'`, string(f.h))
		require.NoError(t, err)
		got := map[string]string{}
		for rows.Next() {
			var p []byte
			var status, etype, last string
			require.NoError(t, rows.Scan(&p, &status, &etype, &last))
			_, last, _ = strings.Cut(last, " ") // the time it failed
			got[string(p)] = status + " " + etype + " " + strings.ReplaceAll(last, f.mount, "MOUNT")
		}
		require.NoError(t, rows.Err())
		errs[kernelOnly] = got
		filepath.WalkDir(f.store, func(p string, d os.DirEntry, err error) error {
			require.NoError(t, err)
			if d.Type().IsRegular() {
				b, err := os.ReadFile(p)
				require.NoError(t, err)
				require.False(t, bytes.Contains(b, secret), "%s holds the secret", p)
			}
			return nil
		})
	}
	require.Equal(t, "success  ", errs[false]["/real/file"])
	require.Contains(t, errs[false]["/link-dir/file"], "path_error")
	require.Contains(t, errs[false]["/real/other"], "does not match the catalog")
	require.Equal(t, errs[true], errs[false])
}

// The device is scanned in the background while the run prepares the
// catalog: a run that fails meanwhile (here, a store that cannot be
// opened) stops the scan and leaves no descriptor of the device open.
func TestDeviceScanEndsWithTheRun(t *testing.T) {
	testimg.RequireRoot(t)
	f := newMedium(t, deviceSpec(testimg.Spec{}))
	deviceFDs := func() (n int) {
		fds, err := os.ReadDir("/proc/self/fd")
		require.NoError(t, err)
		for _, fd := range fds {
			if target, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); target == f.loop.Path {
				n++
			}
		}
		return n
	}
	before := deviceFDs() // the loop device's own, held by the fixture
	o := f.options()
	o.StoreRoot = filepath.Join(t.TempDir(), "not-a-directory")
	require.NoError(t, os.WriteFile(o.StoreRoot, nil, 0o644))
	for range 20 {
		_, err := f.run(o)
		require.ErrorContains(t, err, o.StoreRoot)
		require.Equal(t, before, deviceFDs(), "descriptors open on the medium's device after the run")
	}
}
