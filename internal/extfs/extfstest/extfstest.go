// Package extfstest holds what the tests of extfs and of enumerate's
// direct walk and read-ahead share: the ext layouts they build images in
// (with internal/testimg) and the check that e2fsprogs is there.
package extfstest

import (
	"fmt"
	"os/exec"
	"testing"

	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
)

// RequireE2fsTools skips the test (fails it under CI) unless mkfs.ext4,
// dumpe2fs and debugfs are installed.
func RequireE2fsTools(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "dumpe2fs", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, tool+" not found (scripts/deps.sh installs e2fsprogs)")
		}
	}
}

// Layout is one ext layout of the tests: a name and the Spec fields that
// make it (FSType, BlockSize, InodeSize, Features).
type Layout struct {
	Name string
	Spec testimg.Spec
}

// DirectLayouts are the ext layouts the direct reader must read exactly as
// the kernel does: both inode sizes, 1, 2 and 4 KiB blocks, block maps
// (ext2, ext3) and extents, with and without metadata_csum, flex_bg and
// 64bit, large_dir.
var DirectLayouts = []Layout{
	{"ext4", testimg.Spec{}},
	{"ext4-no-csum", testimg.Spec{Features: []string{"^metadata_csum", "^uninit_bg"}}},
	{"ext4-128-inodes-32bit", testimg.Spec{InodeSize: 128, Features: []string{"^64bit", "^flex_bg"}}},
	{"ext4-1k-largedir", testimg.Spec{BlockSize: 1024, Features: []string{"large_dir"}}},
	{"ext3-2k", testimg.Spec{FSType: "ext3", BlockSize: 2048}},
	{"ext2-1k", testimg.Spec{FSType: "ext2", BlockSize: 1024}},
}

// PrefetchLayouts are the layouts the read-ahead is tested on: with and
// without group checksums (bg_itable_unused), extents and a block map.
var PrefetchLayouts = []Layout{
	{"ext4", testimg.Spec{}},
	{"ext4-no-csum", testimg.Spec{Features: []string{"^metadata_csum", "^uninit_bg"}}},
	{"ext2-1k", testimg.Spec{FSType: "ext2", BlockSize: 1024}},
}

// PrefetchTree adds to spec directories of one block, and one ("big") of
// 700 long names: tens of blocks, an htree on ext4, an indirect block on
// ext2 with 1 KiB blocks. It returns the spec and its directories' paths
// ("/", "/lost+found", "/big", …).
func PrefetchTree(spec testimg.Spec) (testimg.Spec, []string) {
	dirs := []string{"/", "/lost+found", "/big"}
	spec.Entries = append(spec.Entries, testimg.Entry{Path: "big", Kind: testimg.Dir})
	for i := range 700 {
		spec.Entries = append(spec.Entries, testimg.Entry{Path: fmt.Sprintf("big/a-rather-long-file-name-%04d", i), Kind: testimg.File})
	}
	for d := range 12 {
		for s := range 2 {
			dir := fmt.Sprintf("d%02d/s%d", d, s)
			if s == 0 {
				dirs = append(dirs, fmt.Sprintf("/d%02d", d))
			}
			dirs = append(dirs, "/"+dir)
			for f := range 30 {
				spec.Entries = append(spec.Entries, testimg.Entry{Path: fmt.Sprintf("%s/f%02d", dir, f), Kind: testimg.File, Data: []byte{byte(f)}})
			}
		}
	}
	return spec, dirs
}
