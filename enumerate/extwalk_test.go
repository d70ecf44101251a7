package enumerate

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/extfs/extfstest"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// directSpec is every kind of entry, deep nesting and a path beyond
// PATH_MAX, plus hardlinks and a directory of many entries.
func directSpec(base testimg.Spec) testimg.Spec {
	spec := everyKindDeep()
	spec.FSType, spec.BlockSize, spec.InodeSize, spec.Features = base.FSType, base.BlockSize, base.InodeSize, base.Features
	if spec.FSType == "ext2" || spec.InodeSize == 128 {
		// 32-bit seconds only: leave out the times those layouts cannot hold.
		kept := spec.Entries[:0]
		for _, e := range spec.Entries {
			if e.Mtime.IsZero() || e.Mtime.Nanosecond() == 0 && e.Mtime.Unix() >= -1<<31 && e.Mtime.Unix() < 1<<31 {
				kept = append(kept, e)
			}
		}
		spec.Entries = kept
	}
	for i := range 600 {
		spec.Entries = append(spec.Entries, testimg.Entry{Path: fmt.Sprintf("many/entry-with-a-longer-name-%04d", i), Kind: testimg.File, Size: int64(i % 7)})
	}
	spec.Entries = append(spec.Entries,
		testimg.Entry{Path: "links/one", Kind: testimg.File, Data: []byte("linked\n")},
		testimg.Entry{Path: "links/two", Kind: testimg.Hardlink, Target: "links/one"},
		testimg.Entry{Path: "many/three", Kind: testimg.Hardlink, Target: "links/one"},
	)
	return spec
}

// requireDirect walks mnt directly and through system calls and requires
// the same records, and find's.
func requireDirect(t *testing.T, mnt string) Result {
	t.Helper()
	want, stderr := findRecords(t, mnt)
	require.Empty(t, stderr)
	kernel, kres, _ := walkRecords(t, []string{mnt}, Options{KernelOnly: true})
	require.Empty(t, kres.Direct.Roots)
	requireSameRecords(t, want, kernel)
	got, res, raw := walkRecords(t, []string{mnt}, Options{})
	require.Equal(t, []string{mnt}, res.Direct.Roots, "skipped: %q", res.Direct.Skipped)
	require.Empty(t, res.Direct.Skipped)
	requireSameRecords(t, want, got)
	require.EqualValues(t, len(want), res.Records)
	require.EqualValues(t, len(raw), res.Bytes)
	require.Zero(t, res.Errors)
	require.Positive(t, res.Direct.InodeTableBytes)
	require.Positive(t, res.Direct.DirectoryBytes)
	require.True(t, strings.HasPrefix(res.Direct.Devices[0], "/dev/loop"), res.Direct.Devices[0])
	first, err := NewReader(bytes.NewReader(raw)).Read()
	require.NoError(t, err)
	require.Equal(t, mnt, string(first.Path), "the root comes first")
	return res
}

// On every layout, reading the device gives the records lstat gives.
func TestDirectMatchesKernel(t *testing.T) {
	testimg.RequireRoot(t)
	extfstest.RequireE2fsTools(t)
	for _, tc := range extfstest.DirectLayouts {
		t.Run(tc.Name, func(t *testing.T) {
			fstype := tc.Spec.FSType
			if fstype == "" {
				fstype = "ext4"
			}
			mnt := testimg.MountImage(t, testimg.Build(t, directSpec(tc.Spec)), 0, 0, fstype)
			requireDirect(t, mnt)
		})
	}
}

// Directories the kernel grew itself: hashed (htree) directories of
// thousands of entries, an extent tree deeper than the inode, entries
// removed again (holes in the blocks' records), and files whose names were
// reused; after a clean unmount, mounted read-only, read directly.
func TestDirectKernelGrownDirectories(t *testing.T) {
	testimg.RequireRoot(t)
	extfstest.RequireE2fsTools(t)
	for _, tc := range []struct {
		name string
		spec testimg.Spec
	}{
		{"ext4", testimg.Spec{Size: 64 << 20}},
		{"ext3-1k", testimg.Spec{FSType: "ext3", BlockSize: 1024, Size: 64 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			spec.Entries = []testimg.Entry{{Path: "seed", Kind: testimg.File, Data: []byte("x")}}
			img := testimg.Build(t, spec)
			rw := t.TempDir()
			fstype := tc.spec.FSType
			if fstype == "" {
				fstype = "ext4"
			}
			out, err := exec.Command("mount", "-t", fstype, "-o", "loop,rw", img, rw).CombinedOutput()
			require.NoError(t, err, "%s", out)
			mounted := true
			defer func() {
				if mounted {
					exec.Command("umount", rw).Run()
				}
			}()
			name := func(i int) string { return fmt.Sprintf("f%05d-%s", i, strings.Repeat("n", i%40)) }
			for d := range 3 {
				require.NoError(t, os.Mkdir(filepath.Join(rw, fmt.Sprintf("big%d", d)), 0o755))
			}
			// Round robin over the directories, so that their blocks
			// interleave: more extents than the inode holds.
			for i := range 3000 {
				for d := range 3 {
					require.NoError(t, os.WriteFile(filepath.Join(rw, fmt.Sprintf("big%d", d), name(i)), nil, 0o644))
				}
			}
			for d := range 3 {
				dir := filepath.Join(rw, fmt.Sprintf("big%d", d))
				for i := 0; i < 3000; i += 3 {
					require.NoError(t, os.Remove(filepath.Join(dir, name(i))))
				}
				require.NoError(t, os.Symlink(strings.Repeat("t", 200), filepath.Join(dir, "slow-symlink")))
				require.NoError(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
			}
			out, err = exec.Command("umount", rw).CombinedOutput()
			require.NoError(t, err, "%s", out)
			mounted = false
			if fstype == "ext4" {
				out, err = exec.Command("debugfs", "-R", "stat /big0", img).CombinedOutput()
				require.NoError(t, err, "%s", out)
				m := regexp.MustCompile(`Flags: 0x([0-9a-f]+)`).FindStringSubmatch(string(out))
				require.NotNil(t, m, "%s", out)
				flags, _ := strconv.ParseUint(m[1], 16, 32)
				require.NotZero(t, flags&0x1000, "a hashed directory: %s", out)
				require.Contains(t, string(out), "(ETB0)", "an extent tree below the inode: %s", out)
			}
			// A copy whose index names one leaf twice and another not at
			// all: the kernel lists the directory through its index, so
			// the scan, which reads the blocks, must not vouch for it.
			bad := filepath.Join(t.TempDir(), "bad.img")
			out, err = exec.Command("cp", "--sparse=always", img, bad).CombinedOutput()
			require.NoError(t, err, "%s", out)
			out, err = exec.Command("debugfs", "-R", "bmap /big1 0", bad).CombinedOutput()
			require.NoError(t, err, "%s", out)
			rootBlk, err := strconv.ParseInt(strings.TrimSpace(string(out[strings.LastIndexByte(strings.TrimSpace(string(out)), '\n')+1:])), 10, 64)
			require.NoError(t, err, "%s", out)
			bs := int64(4096)
			if tc.spec.BlockSize != 0 {
				bs = int64(tc.spec.BlockSize)
			}
			entry2 := make([]byte, 4)
			f, err := os.OpenFile(bad, os.O_RDWR, 0)
			require.NoError(t, err)
			_, err = f.ReadAt(entry2, rootBlk*bs+0x34) // entries[2].block
			require.NoError(t, err)
			_, err = f.WriteAt(entry2, rootBlk*bs+0x2C) // over entries[1].block
			require.NoError(t, err)
			require.NoError(t, f.Close())

			mnt := testimg.MountImage(t, img, 0, 0, fstype)
			res := requireDirect(t, mnt)
			require.EqualValues(t, 3*2003+3, res.Records) // root, seed, lost+found, 3 × (dir + 2000 + 2)

			mnt = testimg.MountImage(t, bad, 0, 0, fstype)
			want, _ := findRecords(t, mnt)
			got, res, _ := walkRecords(t, []string{mnt}, Options{})
			requireSameRecords(t, want, got)
			require.Empty(t, res.Direct.Roots)
			require.Len(t, res.Direct.Skipped, 1)
			require.Regexp(t, `htree (block checksum mismatch|.*named)`, res.Direct.Skipped[0])
		})
	}
}

// What the direct reader cannot vouch for is walked through system calls,
// with the reason in Result.Direct.Skipped: a read-write mount, a
// journal left to recover, a root that is not the filesystem's, an
// inode whose checksum does not match (the kernel refuses to stat it: the
// walk must report that, not list it).
func TestDirectFallsBack(t *testing.T) {
	testimg.RequireRoot(t)
	extfstest.RequireE2fsTools(t)
	check := func(t *testing.T, mnt, why string) {
		t.Helper()
		want, _ := findRecords(t, mnt)
		got, res, _ := walkRecords(t, []string{mnt}, Options{})
		requireSameRecords(t, want, got)
		require.Empty(t, res.Direct.Roots)
		require.Len(t, res.Direct.Skipped, 1)
		require.Contains(t, res.Direct.Skipped[0], why)
	}
	spec := smallSpec("fallback", "a/one", "a/two", "b/three")

	t.Run("read-write", func(t *testing.T) {
		img := testimg.Build(t, spec)
		rw := t.TempDir()
		out, err := exec.Command("mount", "-t", "ext4", "-o", "loop,rw", img, rw).CombinedOutput()
		require.NoError(t, err, "%s", out)
		defer exec.Command("umount", rw).Run()
		check(t, rw, "mounted read-write")
	})
	t.Run("subdirectory", func(t *testing.T) {
		mnt := testimg.MountImage(t, testimg.Build(t, spec), 0, 0, "ext4")
		check(t, filepath.Join(mnt, "a"), "not the root of an ext filesystem")
	})
	t.Run("journal to recover", func(t *testing.T) {
		img := testimg.Build(t, spec)
		require.NoError(t, testimg.MarkJournalDirty(img))
		mnt := testimg.MountImage(t, img, 0, 0, "ext4")
		check(t, mnt, "incompatible features 0x4")
	})
	t.Run("inode checksum", func(t *testing.T) {
		img := testimg.Build(t, spec)
		off := inodeOffset(t, img, "/a/two")
		b := make([]byte, 1)
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		require.NoError(t, err)
		_, err = f.ReadAt(b, off+0x10) // a byte of the mtime
		require.NoError(t, err)
		b[0] ^= 0x55
		_, err = f.WriteAt(b, off+0x10)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		mnt := testimg.MountImage(t, img, 0, 0, "ext4")
		want, stderr := findRecords(t, mnt)
		require.Contains(t, stderr, "two", "the kernel refuses the inode")
		var reported []*EntryError
		got, res, _ := walkRecords(t, []string{mnt}, Options{OnError: func(e *EntryError) error {
			reported = append(reported, e)
			return nil
		}})
		requireSameRecords(t, want, got)
		require.Empty(t, res.Direct.Roots)
		require.Contains(t, res.Direct.Skipped[0], "checksum mismatch")
		require.Len(t, reported, 1)
		require.Equal(t, mnt+"/a/two", reported[0].Path)
	})
}

var imapRE = regexp.MustCompile(`located at block (\d+), offset 0x([0-9a-f]+)`)

// inodeOffset is the byte offset in img of the inode of path (debugfs imap).
func inodeOffset(t *testing.T, img, path string) int64 {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "imap "+path, img).CombinedOutput()
	require.NoError(t, err, "%s", out)
	m := imapRE.FindStringSubmatch(string(out))
	require.NotNil(t, m, "%s", out)
	blk, _ := strconv.ParseInt(m[1], 10, 64)
	off, _ := strconv.ParseInt(m[2], 16, 64)
	return blk*4096 + off
}
