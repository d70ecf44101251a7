package enumerate

import (
	"bytes"
	"encoding/binary"
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
)

// debugfsW runs debugfs -w on img with the commands, one a line.
func debugfsW(t *testing.T, img string, cmds ...string) {
	t.Helper()
	cmd := exec.Command("debugfs", "-w", "-f", "-", img)
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Logf("debugfs: %s", out)
}

// debugfsR runs one read-only debugfs request and returns its output.
func debugfsR(t *testing.T, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).CombinedOutput()
	require.NoError(t, err, "%s", out)
	return string(out)
}

// debugfsBmap runs a debugfs bmap request and returns the block number it
// prints on its last line.
func debugfsBmap(t *testing.T, img, req string) string {
	t.Helper()
	out := strings.TrimSpace(debugfsR(t, img, req))
	return out[strings.LastIndexByte(out, '\n')+1:]
}

// requireAgrees walks mnt directly (or falling back) and requires find's
// records; it returns the result to say which it did.
func requireAgrees(t *testing.T, mnt string) Result {
	t.Helper()
	want, stderr := findRecords(t, mnt)
	got, res, _ := walkRecords(t, []string{mnt}, Options{})
	t.Logf("find stderr: %q; direct roots %q, skipped %q", stderr, res.Direct.Roots, res.Direct.Skipped)
	requireSameRecords(t, want, got)
	return res
}

func reviewSpec(features ...string) testimg.Spec {
	spec := smallSpec("review", "a/one", "a/two", "b/three", "c/four")
	spec.Features = features
	return spec
}

func mountReview(t *testing.T, img, fstype string) string {
	return testimg.MountImage(t, img, 0, 0, fstype)
}

// reviewCase is an image made with mkfs features and then changed with
// debugfs -w; the scan must read it directly (why "") or fall back with a
// reason containing why (the kernel refuses something the scan would
// otherwise have listed). Either way the records must be find's.
type reviewCase struct {
	name     string
	features []string
	cmds     func(t *testing.T, img string) []string
	why      string // "" : read directly
}

func runReviewCases(t *testing.T, cases []reviewCase) {
	testimg.RequireRoot(t)
	extfstest.RequireE2fsTools(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := testimg.Build(t, reviewSpec(tc.features...))
			if tc.cmds != nil {
				debugfsW(t, img, tc.cmds(t, img)...)
			}
			mnt := mountReview(t, img, "ext4")
			res := requireAgrees(t, mnt)
			if tc.why == "" {
				require.Equal(t, []string{mnt}, res.Direct.Roots, "skipped: %q", res.Direct.Skipped)
				return
			}
			require.Empty(t, res.Direct.Roots)
			require.Len(t, res.Direct.Skipped, 1)
			require.Contains(t, res.Direct.Skipped[0], tc.why)
		})
	}
}

func debugfsCmds(cmds ...string) func(*testing.T, string) []string {
	return func(*testing.T, string) []string { return cmds }
}

// Features the scan reads or refuses as a whole.
func TestReviewFeatures(t *testing.T) {
	runReviewCases(t, []reviewCase{
		{name: "plain"},
		{name: "bigalloc", features: []string{"bigalloc"}},
		{name: "inline_data", features: []string{"inline_data"}, why: "incompatible features 0x8000"},
		{name: "meta_bg", features: []string{"meta_bg", "^resize_inode"}, why: "meta_bg"},
		// dir_nlink: a directory's link count of 1 is what lstat says too.
		{name: "directory nlink 1", cmds: debugfsCmds("sif /a links_count 1")},
	})
}

// An inode whose i_extra_isize is 0 in a 256-byte inode: ext4_iget takes
// 32 and reads the extra time fields, so a time past 2038 is lstat's.
func TestReviewExtraIsizeZero(t *testing.T) {
	runReviewCases(t, []reviewCase{
		{name: "mtime 2050", cmds: debugfsCmds("sif /a/two mtime 20500101000000", "sif /a/two extra_isize 0")},
		{name: "mtime 1960", cmds: debugfsCmds("sif /a/two mtime 19600101000000", "sif /a/two extra_isize 0")},
	})
}

// Damage the kernel refuses (lstat or lookup fails, or readdir and lookup
// disagree) where the scan listed the entries anyway: it must fall back.
func TestReviewDamageFallsBack(t *testing.T) {
	runReviewCases(t, []reviewCase{
		{name: "entry names the resize inode", cmds: debugfsCmds("ln <7> /a/resize"), why: "names reserved inode 7"},
		{name: "entry names the journal inode", cmds: debugfsCmds("ln <8> /a/journal"), why: "names reserved inode 8"},
		{name: "file extent header", cmds: debugfsCmds("sif /a/one block[0] 0x1234"), why: "inode 13: checksum mismatch or bad fields"},
		{name: "file extent past the end", cmds: debugfsCmds("sif /a/two block[5] 0x7fffffff"), why: "inode 14: checksum mismatch or bad fields"},
		{name: "directory block mapped twice", cmds: func(t *testing.T, img string) []string {
			p := debugfsBmap(t, img, "bmap /a 0")
			return []string{"sif /a block[0] 0x2F30A", "sif /a block[6] 0", "sif /a block[7] 1", "sif /a block[8] " + p}
		}, why: "inode 12: checksum mismatch or bad fields"},
		{name: "directory size not whole blocks", cmds: func(t *testing.T, img string) []string {
			var c []string
			for i := range 60 {
				c = append(c, fmt.Sprintf("write /dev/null /b/long-name-to-fill-the-block-%040d", i))
			}
			return append(c, "sif /b size 2048")
		}, why: "size 2048"},
	})
}

// Inodes ext4_iget refuses (lstat: EFSCORRUPTED) for more than their
// checksum or i_block: the scan listed them; it must fall back.
func TestReviewIgetRefusals(t *testing.T) {
	slow := strings.Repeat("s", 200)
	bad := func(ino int) string { return fmt.Sprintf("inode %d: checksum mismatch or bad fields", ino) }
	runReviewCases(t, []reviewCase{
		{name: "symlinks", cmds: debugfsCmds("cd /a", "symlink fast tgt", "symlink slow "+slow, "mknod cdev c 1 3", "mknod bdev b 7 0", "mknod pipe p")},
		{name: "slow symlink bad block", cmds: debugfsCmds("symlink /a/slow "+slow, "sif /a/slow block[5] 0x7fffffff"), why: bad(19)},
		{name: "fast symlink size 0", cmds: debugfsCmds("symlink /a/fast tgt", "sif /a/fast size 0"), why: bad(19)},
		{name: "fast symlink size past its NUL", cmds: debugfsCmds("symlink /a/fast tgt", "sif /a/fast size 10"), why: bad(19)},
		{name: "immutable symlink", cmds: debugfsCmds("symlink /a/fast tgt", "sif /a/fast flags 0x10"), why: bad(19)},
		{name: "casefold flag without the feature", cmds: debugfsCmds("sif /a flags 0x40080000"), why: bad(12)},
		{name: "xattr block outside", cmds: debugfsCmds("sif /a/one file_acl 0x7fffffff"), why: bad(13)},
		{name: "inline flag without the feature", cmds: debugfsCmds("sif /a/one flags 0x10000000"), why: bad(13)},
		{name: "ea_inode flag", cmds: debugfsCmds("sif /a/one flags 0x280000"), why: bad(13)},
		{name: "index flag without dir_index", features: []string{"^dir_index"}, cmds: debugfsCmds("sif /a flags 0x81000"), why: bad(12)},
		// Agreed before the review; kept as cases.
		{name: "encrypt flag without the feature", cmds: debugfsCmds("sif /a/one flags 0x80800")},
		{name: "regular file with the index flag", cmds: debugfsCmds("sif /a/one flags 0x81000")},
		{name: "orphan_file", features: []string{"orphan_file"}},
		{name: "sparse file of 7 GiB", cmds: debugfsCmds("sif /a/two size 0x1C0000000")},
		{name: "entry names an unused inode slot", cmds: debugfsCmds("ln <900> /a/unused"), why: "names inode 900, which is not in use"},
		{name: "entry names its directory", cmds: debugfsCmds("ln <12> /a/self"), why: "reached twice"},
		{name: "mode 0", cmds: debugfsCmds("sif /a/one mode 0"), why: "names inode 13, which is not in use"},
		{name: "mode of no type", cmds: debugfsCmds("sif /a/one mode 0170644"), why: "inode 13: mode 0170644"},
	})
}

// kernelGrown builds an ext4 image, runs prepare on it (tune2fs), mounts
// it read-write, runs fill on it and unmounts it cleanly.
func kernelGrown(t *testing.T, spec testimg.Spec, prepare func(img string), fill func(rw string)) string {
	t.Helper()
	if len(spec.Entries) == 0 {
		spec.Entries = []testimg.Entry{{Path: "seed", Kind: testimg.File, Data: []byte("x")}}
	}
	img := testimg.Build(t, spec)
	if prepare != nil {
		prepare(img)
	}
	rw := t.TempDir()
	out, err := exec.Command("mount", "-t", "ext4", "-o", "loop,rw", img, rw).CombinedOutput()
	require.NoError(t, err, "%s", out)
	mounted := true
	defer func() {
		if mounted {
			exec.Command("umount", rw).Run()
		}
	}()
	fill(rw)
	out, err = exec.Command("umount", rw).CombinedOutput()
	require.NoError(t, err, "%s", out)
	mounted = false
	return img
}

// In a hash-indexed directory the kernel finds an entry (readdir, lookup)
// only in the leaf its name's hash leads to. A directory the kernel grew
// is read directly, with each hash (half_md4, tea, legacy; names with
// bytes above 0x7F, whose hash depends on signed or unsigned chars); a
// superblock whose hash seed or hash signedness changed afterwards makes
// the kernel miss entries (readdir skips them or lstat does not find
// them): the scan, which listed them all, must fall back.
func TestReviewHtreeHashes(t *testing.T) {
	testimg.RequireRoot(t)
	extfstest.RequireE2fsTools(t)
	for _, tc := range []struct {
		alg      string
		unsigned bool
		spec     testimg.Spec
		n        int
	}{
		{"half_md4", false, testimg.Spec{Size: 32 << 20}, 1500},
		{"tea", false, testimg.Spec{Size: 32 << 20}, 1500},
		{"legacy", false, testimg.Spec{Size: 32 << 20}, 1500},
		{"half_md4", true, testimg.Spec{Size: 32 << 20}, 1500},
		{"tea", true, testimg.Spec{Size: 32 << 20}, 1500},
		// Two levels of index blocks: 1 KiB blocks, 8000 entries.
		{"half_md4", false, testimg.Spec{Size: 64 << 20, BlockSize: 1024}, 8000},
	} {
		alg := tc.alg
		name := fmt.Sprintf("%s-unsigned=%v-%d", alg, tc.unsigned, tc.n)
		t.Run(name, func(t *testing.T) {
			img := kernelGrown(t, tc.spec, func(img string) {
				out, err := exec.Command("tune2fs", "-E", "hash_alg="+alg, img).CombinedOutput()
				require.NoError(t, err, "%s", out)
				if tc.unsigned {
					debugfsW(t, img, "ssv flags 2")
				}
			}, func(rw string) {
				require.NoError(t, os.Mkdir(filepath.Join(rw, "big"), 0o755))
				for i := range tc.n {
					name := fmt.Sprintf("file-%05d", i)
					if i%2 == 0 {
						name += "-\xc3\xa9\xff"
					}
					require.NoError(t, os.WriteFile(filepath.Join(rw, "big", name), nil, 0o644))
				}
			})
			out := debugfsR(t, img, "htree /big")
			require.Contains(t, out, "Hash Version: ", "%.300s", out)
			if tc.n > 5000 {
				require.Contains(t, out, "Indirect levels: 1", "%.300s", out)
			}
			t.Run("as grown", func(t *testing.T) {
				mnt := mountReview(t, img, "ext4")
				res := requireAgrees(t, mnt)
				require.Equal(t, []string{mnt}, res.Direct.Roots, "skipped: %q", res.Direct.Skipped)
			})
			for _, tc := range []struct {
				name string
				cmd  string
				why  string
			}{
				{"seed changed", "ssv hash_seed 01234567-89ab-cdef-0123-456789abcdef", map[bool]string{true: "", false: "is not where its hash leads"}[alg == "legacy"]}, // legacy takes no seed
				{"signedness flipped", map[bool]string{false: "ssv flags 2", true: "ssv flags 1"}[tc.unsigned], "is not where its hash leads"},
				{"neither signed nor unsigned", "ssv flags 0", "neither signed nor unsigned"},
				{"default hash changed", "ssv def_hash_version tea", ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					c := filepath.Join(t.TempDir(), "c.img")
					out, err := exec.Command("cp", "--sparse=always", img, c).CombinedOutput()
					require.NoError(t, err, "%s", out)
					debugfsW(t, c, tc.cmd)
					mnt := mountReview(t, c, "ext4")
					res := requireAgrees(t, mnt)
					if tc.why == "" {
						require.Equal(t, []string{mnt}, res.Direct.Roots, "skipped: %q", res.Direct.Skipped)
						return
					}
					require.Empty(t, res.Direct.Roots)
					require.Contains(t, res.Direct.Skipped[0], tc.why)
				})
			}
		})
	}
}

var etbRE = regexp.MustCompile(`\(ETB0\):(\d+)`)

// A directory's extent tree below the inode: the kernel checks each
// index or leaf block it reads (its header, its depth, its checksum under
// metadata_csum) and readdir fails on one that does not pass.
func TestReviewDirectoryExtentBlocks(t *testing.T) {
	testimg.RequireRoot(t)
	extfstest.RequireE2fsTools(t)
	img := kernelGrown(t, testimg.Spec{Size: 64 << 20}, nil, func(rw string) {
		for d := range 3 {
			require.NoError(t, os.Mkdir(filepath.Join(rw, fmt.Sprintf("big%d", d)), 0o755))
		}
		for i := range 2500 {
			for d := range 3 {
				require.NoError(t, os.WriteFile(filepath.Join(rw, fmt.Sprintf("big%d", d), fmt.Sprintf("f%05d-%s", i, strings.Repeat("n", i%40))), nil, 0o644))
			}
		}
	})
	m := etbRE.FindStringSubmatch(debugfsR(t, img, "stat /big1"))
	require.NotNil(t, m, "an extent tree below the inode")
	etb, _ := strconv.ParseInt(m[1], 10, 64)
	t.Run("as grown", func(t *testing.T) {
		mnt := mountReview(t, img, "ext4")
		res := requireAgrees(t, mnt)
		require.Equal(t, []string{mnt}, res.Direct.Roots, "skipped: %q", res.Direct.Skipped)
	})
	for _, tc := range []struct {
		name string
		off  func(hdr []byte) int64 // byte of the block to flip
		why  string
	}{
		{"checksum", func(hdr []byte) int64 { return 12 + 12*int64(binary.LittleEndian.Uint16(hdr[4:])) }, "extent block checksum mismatch"},
		{"eh_max", func(hdr []byte) int64 { return 5 }, "extent block"},
		{"depth", func(hdr []byte) int64 { return 6 }, "bad extent header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := filepath.Join(t.TempDir(), "c.img")
			out, err := exec.Command("cp", "--sparse=always", img, c).CombinedOutput()
			require.NoError(t, err, "%s", out)
			f, err := os.OpenFile(c, os.O_RDWR, 0)
			require.NoError(t, err)
			hdr := make([]byte, 12)
			_, err = f.ReadAt(hdr, etb*4096)
			require.NoError(t, err)
			off := etb*4096 + tc.off(hdr)
			b := make([]byte, 1)
			_, err = f.ReadAt(b, off)
			require.NoError(t, err)
			b[0] ^= 0x01
			_, err = f.WriteAt(b, off)
			require.NoError(t, err)
			require.NoError(t, f.Close())
			mnt := mountReview(t, c, "ext4")
			res := requireAgrees(t, mnt)
			require.Empty(t, res.Direct.Roots)
			require.Contains(t, res.Direct.Skipped[0], tc.why)
		})
	}
}

// Directory blocks punched out (holes): readdir and lookup skip them, as
// the scan does.
func TestReviewDirectoryHoles(t *testing.T) {
	fill := func(dir string) []string {
		var c []string
		for i := range 300 {
			c = append(c, fmt.Sprintf("write /dev/null %s/long-name-to-fill-the-blocks-%040d", dir, i))
		}
		return c
	}
	runReviewCases(t, []reviewCase{
		{name: "linear directory hole", features: []string{"^dir_index"}, cmds: func(t *testing.T, img string) []string {
			return append(fill("/b"), "punch /b 1 1")
		}},
		{name: "directory hole, dir_index", cmds: func(t *testing.T, img string) []string {
			return append(fill("/b"), "punch /b 1 1")
		}},
		{name: "directory hole at block 0", features: []string{"^dir_index"}, cmds: func(t *testing.T, img string) []string {
			return append(fill("/b"), "punch /b 0 0")
		}},
	})
}

// patchEntryOfOne sets the byte at offset rel from the name "one" in the
// first directory block of /a (a 4 KiB-block image without metadata_csum,
// so the change is not caught by a checksum): -1 is the entry's file
// type, -2 its name length.
func patchEntryOfOne(t *testing.T, img string, rel int, v byte) {
	t.Helper()
	p := debugfsBmap(t, img, "bmap /a 0")
	blk, err := strconv.ParseInt(p, 10, 64)
	require.NoError(t, err, p)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	require.NoError(t, err)
	b := make([]byte, 4096)
	_, err = f.ReadAt(b, blk*4096)
	require.NoError(t, err)
	i := bytes.Index(b, []byte("one"))
	require.Greater(t, i, -rel-1, "no entry named one in /a's first block")
	b[i+rel] = v
	_, err = f.WriteAt(b, blk*4096)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// A directory entry whose file type says directory for a regular file:
// lstat gives the inode's type, and so do the scan and the kernel walk.
func TestReviewFileTypeDisagrees(t *testing.T) {
	testimg.RequireRoot(t)
	extfstest.RequireE2fsTools(t)
	img := testimg.Build(t, reviewSpec("^metadata_csum"))
	patchEntryOfOne(t, img, -1, 2) // file_type: directory
	mnt := mountReview(t, img, "ext4")
	requireAgrees(t, mnt)
	kernel, _, _ := walkRecords(t, []string{mnt}, Options{KernelOnly: true})
	want, _ := findRecords(t, mnt)
	requireSameRecords(t, want, kernel)
}

// Cases that agreed: extended attributes (in the inode, in a block, in
// ea_inode inodes), uninit_bg without metadata_csum.
func TestReviewXattrsAndGroups(t *testing.T) {
	big := strings.Repeat("v", 3000)
	runReviewCases(t, []reviewCase{
		{name: "xattrs in inode and block", cmds: debugfsCmds("ea_set /a/one user.small v", "ea_set /a/two user.big "+big, "ea_set /a user.big "+big)},
		{name: "uninit_bg without metadata_csum", features: []string{"^metadata_csum", "uninit_bg"}},
		{name: "ea_inode", features: []string{"ea_inode"}, cmds: debugfsCmds("ea_set /a/two user.big "+big+big, "symlink /a/fast tgt", "ea_set /a/fast user.big "+big+big)},
	})
}

// An entry of name length 0 naming a live inode: the kernel's readdir
// fails with EIO there, and the walk through system calls reports it; the
// scan skipped the entry and reported nothing. It must fall back.
func TestReviewEntryWithoutName(t *testing.T) {
	testimg.RequireRoot(t)
	extfstest.RequireE2fsTools(t)
	img := testimg.Build(t, reviewSpec("^metadata_csum"))
	patchEntryOfOne(t, img, -2, 0) // name_len
	mnt := mountReview(t, img, "ext4")
	_, stderr := findRecords(t, mnt)
	require.Contains(t, stderr, "Input/output error")
	res := requireAgrees(t, mnt)
	require.Empty(t, res.Direct.Roots)
	require.Contains(t, res.Direct.Skipped[0], "entry of no name")
	_, kres, _ := walkRecords(t, []string{mnt}, Options{KernelOnly: true})
	require.Positive(t, kres.Errors)
	require.Equal(t, kres.Errors, res.Errors)
}

// An extent or block pointer into the filesystem's metadata (the
// kernel's system zone, block_validity: superblock and descriptors,
// bitmaps, inode tables, the journal): ext4_iget refuses the inode, or
// readdir the directory; the scan listed them.
func TestReviewSystemZone(t *testing.T) {
	bad := func(ino int) string { return fmt.Sprintf("inode %d: checksum mismatch or bad fields", ino) }
	runReviewCases(t, []reviewCase{
		{name: "file extent into the inode table", cmds: func(t *testing.T, img string) []string {
			out := debugfsR(t, img, "imap /a/one")
			m := imapRE.FindStringSubmatch(out)
			require.NotNil(t, m, out)
			return []string{"sif /a/two block[5] " + m[1]}
		}, why: bad(14)},
		{name: "file extent into the group descriptors", cmds: debugfsCmds("sif /a/two block[5] 1"), why: bad(14)},
		{name: "directory extent into a block bitmap", cmds: func(t *testing.T, img string) []string {
			out := debugfsR(t, img, "stats")
			m := regexp.MustCompile(`block bitmap at (\d+)`).FindStringSubmatch(out)
			require.NotNil(t, m, out)
			return []string{"sif /c block[5] " + m[1]}
		}, why: bad(17)},
		{name: "file extent into the journal", cmds: func(t *testing.T, img string) []string {
			return []string{"sif /a/two block[5] " + debugfsBmap(t, img, "bmap <8> 3")}
		}, why: bad(14)},
		{name: "ext3 block pointer into the journal", features: []string{"^extent", "^64bit", "^flex_bg", "^metadata_csum", "^extra_isize", "^huge_file", "^dir_nlink"}, cmds: func(t *testing.T, img string) []string {
			return []string{"sif /a/two block[0] " + debugfsBmap(t, img, "bmap <8> 20")}
		}, why: bad(14)},
	})
}

// dir_nlink: a directory of more than 65000 subdirectories, grown by the
// kernel, has a link count of 1 on disk, and lstat says 1: read directly.
func TestReviewDirNlink(t *testing.T) {
	testimg.RequireRoot(t)
	extfstest.RequireE2fsTools(t)
	img := kernelGrown(t, testimg.Spec{BlockSize: 1024, Size: 200 << 20, Inodes: 70000}, nil, func(rw string) {
		require.NoError(t, os.Mkdir(filepath.Join(rw, "wide"), 0o755))
		for i := range 65010 {
			require.NoError(t, os.Mkdir(filepath.Join(rw, "wide", fmt.Sprintf("d%05d", i)), 0o755))
		}
	})
	require.Regexp(t, `Links: 1\b`, debugfsR(t, img, "stat /wide"))
	mnt := mountReview(t, img, "ext4")
	res := requireAgrees(t, mnt)
	require.Equal(t, []string{mnt}, res.Direct.Roots, "skipped: %q", res.Direct.Skipped)
}
