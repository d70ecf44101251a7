package extfs

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/extfs/extfstest"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/require"
)

// fileSpec has files of every shape a reader of content must map: empty,
// one block, many blocks past the block map's direct and single indirect
// blocks (1 KiB blocks: 12 + 256 before the double indirect one), sparse
// (content at both ends, a hole between), hardlinked; and names the
// lookup must refuse.
func fileSpec(base testimg.Spec) testimg.Spec {
	spec := testimg.Spec{FSType: base.FSType, BlockSize: base.BlockSize, InodeSize: base.InodeSize, Features: base.Features}
	spec.Entries = []testimg.Entry{
		{Path: "a", Kind: testimg.Dir},
		{Path: "a/empty", Kind: testimg.File},
		{Path: "a/small", Kind: testimg.File, Data: []byte("small file\n")},
		{Path: "a/blocks", Kind: testimg.File, Size: 1<<20 + 3333, Seed: 7},
		{Path: "a/sparse", Kind: testimg.File, Size: 6 << 20, Seed: 8, Sparse: true},
		{Path: "b", Kind: testimg.Dir},
		{Path: "b/c", Kind: testimg.Dir},
		{Path: "b/c/deep", Kind: testimg.File, Size: 5000, Seed: 9},
		{Path: "b/link", Kind: testimg.Hardlink, Target: "a/small"},
		{Path: "sym", Kind: testimg.Symlink, Target: "b"},
	}
	return spec
}

// On every layout, the files read by their extents or block maps from the
// image are the files the spec wrote, and names that are not regular files
// reached without a symlink are refused.
func TestExtFilesReadContent(t *testing.T) {
	extfstest.RequireE2fsTools(t)
	for _, tc := range extfstest.DirectLayouts {
		t.Run(tc.Name, func(t *testing.T) {
			spec := fileSpec(tc.Spec)
			img := testimg.Build(t, spec)
			f, err := os.Open(img)
			require.NoError(t, err)
			defer f.Close()
			st, err := f.Stat()
			require.NoError(t, err)
			x, err := ScanFiles(f, st.Size(), nil, 0, nil)
			require.NoError(t, err)
			files := 0
			for _, e := range spec.Entries {
				want := e
				switch e.Kind {
				case testimg.File:
				case testimg.Hardlink:
					for _, o := range spec.Entries {
						if o.Path == e.Target {
							want = o
						}
					}
				default:
					_, _, ok := x.LookupFile(e.Path)
					require.False(t, ok, "%s is not a regular file", e.Path)
					continue
				}
				ino, size, ok := x.LookupFile(e.Path)
				require.True(t, ok, e.Path)
				content := want.Content()
				require.EqualValues(t, len(content), size, e.Path)
				got := readExtFile(t, x, f, st.Size(), ino)
				require.True(t, bytes.Equal(content, got), "content of %s", e.Path)
				files++
			}
			require.Equal(t, 6, files)
			_, err = ScanFiles(f, st.Size(), nil, 8, nil)
			require.ErrorIs(t, err, errScan, "more inodes in use than asked for")
			for _, p := range []string{"sym/c/deep", "a/missing", "a", "a/small/x", "b/c"} {
				_, _, ok := x.LookupFile(p)
				require.False(t, ok, p)
			}
		})
	}
}

func readExtFile(t *testing.T, x *Files, dev io.ReaderAt, devSize int64, ino uint32) []byte {
	t.Helper()
	size, runs, err := x.FileRuns(ino)
	require.NoError(t, err, "inode %d", ino)
	var last int64
	for _, r := range runs {
		require.GreaterOrEqual(t, r.Logical, last, "runs in order")
		require.Positive(t, r.Length)
		last = r.Logical + r.Length
	}
	b := make([]byte, size)
	n, err := imagefs.NewRunReader(dev, devSize, runs, size).ReadAt(b, 0)
	if err == io.EOF && int64(n) == size {
		err = nil
	}
	require.NoError(t, err)
	return b
}

// Whatever bytes a device holds, reading its files ends: every lookup and
// every file's map returns, and no map names bytes past the device.
func FuzzExtFiles(f *testing.F) {
	if _, err := exec.LookPath("mkfs.ext4"); err == nil {
		for _, tc := range extfstest.DirectLayouts {
			spec := fileSpec(tc.Spec)
			spec.Entries[3].Size, spec.Entries[4].Size = 300<<10, 64<<10
			b, err := os.ReadFile(testimg.Build(f, fuzzSeedSpec(spec, 512<<10)))
			if err != nil {
				f.Fatal(err)
			}
			if _, err := ScanFiles(bytes.NewReader(b), int64(len(b)), nil, 0, nil); err != nil {
				f.Fatalf("%s: seed not read: %v", tc.Name, err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		x, err := ScanFiles(bytes.NewReader(data), size, nil, 1<<20, nil)
		if err != nil {
			return
		}
		x.t.Walk(func(rel []byte, ino uint32, in *Inode) error {
			got, fsize, ok := x.LookupFile(string(rel))
			if !ok {
				return nil
			}
			if got != ino || fsize != in.size {
				t.Fatalf("%q: inode %d size %d, walked %d size %d", rel, got, fsize, ino, in.size)
			}
			n, runs, err := x.FileRuns(ino)
			if err != nil {
				return nil
			}
			if n != in.size {
				t.Fatalf("inode %d: size %d, scanned %d", ino, n, in.size)
			}
			for _, r := range runs {
				if !r.Hole && (r.Offset < 0 || r.Offset+r.Length > size+x.t.l.blockSize) {
					t.Fatalf("inode %d: run %+v past a %d-byte device", ino, r, size)
				}
			}
			return nil
		})
	})
}
