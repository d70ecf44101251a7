package extfs

import (
	"bytes"
	"os"
	"os/exec"
	"testing"

	"github.com/HRDAG/ntt/internal/extfs/extfstest"
	"github.com/HRDAG/ntt/internal/testimg"
)

// fuzzSeedSpec makes spec a small fuzz seed of size bytes: 1 KiB blocks,
// 32 inodes, no journal, no reserved descriptor blocks, no flex_bg (ext4).
func fuzzSeedSpec(spec testimg.Spec, size int64) testimg.Spec {
	spec.BlockSize, spec.Size, spec.Inodes = 1024, size, 32
	spec.Features = append(spec.Features[:len(spec.Features):len(spec.Features)], "^has_journal", "^resize_inode")
	if spec.FSType != "ext2" && spec.FSType != "ext3" {
		spec.Features = append(spec.Features, "^flex_bg")
	}
	return spec
}

// Whatever bytes a device holds, the direct reader returns an error or a
// tree whose walk ends, lists no more entries than it parsed, and reads no
// more than the device's size of directories.
func FuzzExtScan(f *testing.F) {
	if _, err := exec.LookPath("mkfs.ext4"); err == nil {
		for _, tc := range extfstest.DirectLayouts {
			// Four files of 0, 100, 200 and 300 bytes.
			spec := testimg.Spec{Label: "fuzz", Entries: []testimg.Entry{
				{Path: "a/one", Kind: testimg.File},
				{Path: "a/two", Kind: testimg.File, Size: 100, Seed: 1},
				{Path: "b/c/three", Kind: testimg.File, Size: 200, Seed: 2},
				{Path: "d/four", Kind: testimg.File, Size: 300, Seed: 3},
			}}
			spec.FSType, spec.InodeSize, spec.Features = tc.Spec.FSType, tc.Spec.InodeSize, tc.Spec.Features
			b, err := os.ReadFile(testimg.Build(f, fuzzSeedSpec(spec, 256<<10)))
			if err != nil {
				f.Fatal(err)
			}
			if _, err := Scan(bytes.NewReader(b), int64(len(b)), nil, nil); err != nil {
				f.Fatalf("%s: seed not read: %v", tc.Name, err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		tree, err := Scan(bytes.NewReader(data), size, nil, nil)
		if err != nil {
			return
		}
		if tree.DirBytes > size {
			t.Fatalf("%d directory bytes read from a %d-byte device", tree.DirBytes, size)
		}
		if err := tree.Walk(nil); err != nil {
			return
		}
		n := 0
		tree.Walk(func(rel []byte, ino uint32, in *Inode) error {
			n++
			if len(rel) == 0 || !knownType(in.mode) {
				t.Fatalf("entry %q of inode %d, mode %#o", rel, ino, in.mode)
			}
			return nil
		})
		if n > len(tree.ents) {
			t.Fatalf("%d entries walked, %d parsed", n, len(tree.ents))
		}
	})
}
