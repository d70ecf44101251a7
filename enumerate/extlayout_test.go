package enumerate

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/require"
)

// prefetchTree has directories of one block, and one ("big") of 700 long
// names: tens of blocks, an htree on ext4, an indirect block on ext2 with
// 1 KiB blocks.
func prefetchTree(spec testimg.Spec) (testimg.Spec, []string) {
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

var prefetchSpecs = []struct {
	name string
	spec testimg.Spec
}{
	{"ext4", testimg.Spec{}},
	{"ext4-no-csum", testimg.Spec{Features: []string{"^metadata_csum", "^uninit_bg"}}},
	{"ext2-1k", testimg.Spec{FSType: "ext2", BlockSize: 1024}},
}

// buildPrefetchImage builds prefetchTree on spec and reads its layout.
func buildPrefetchImage(t *testing.T, spec testimg.Spec) (img string, dirs []string, l *extLayout) {
	t.Helper()
	spec, dirs = prefetchTree(spec)
	img = testimg.Build(t, spec)
	f, err := os.Open(img)
	require.NoError(t, err)
	defer f.Close()
	fi, err := f.Stat()
	require.NoError(t, err)
	l, err = readExtLayout(f, fi.Size())
	require.NoError(t, err)
	return img, dirs, l
}

func requireE2fsTools(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "dumpe2fs", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, tool+" not found (scripts/deps.sh installs e2fsprogs)")
		}
	}
}

var (
	groupRE  = regexp.MustCompile(`(?m)^Group (\d+):.*?(\[[^\]]*\])?$`)
	itableRE = regexp.MustCompile(`Inode table at (\d+)-(\d+)`)
	unusedRE = regexp.MustCompile(`(\d+) unused inodes`)
)

// The inode-table ranges are where dumpe2fs says each group's table is,
// cut to the inodes in use (the whole table without group checksums), and
// the directory blocks found in them are the ones debugfs lists for every
// directory: all of them, except the blocks an ext2 indirect block points
// to (the indirect block itself is read ahead, not followed).
func TestExtLayoutMatchesE2fsprogs(t *testing.T) {
	requireE2fsTools(t)
	for _, tc := range prefetchSpecs {
		t.Run(tc.name, func(t *testing.T) {
			img, dirs, l := buildPrefetchImage(t, tc.spec)
			f, err := os.Open(img)
			require.NoError(t, err)
			defer f.Close()

			out, err := exec.Command("dumpe2fs", img).CombinedOutput()
			require.NoError(t, err, "%s", out)
			text := string(out)
			bs, _ := strconv.ParseInt(field(text, "Block size"), 10, 64)
			isz, _ := strconv.ParseInt(field(text, "Inode size"), 10, 64)
			ipg, _ := strconv.ParseInt(field(text, "Inodes per group"), 10, 64)
			require.Equal(t, bs, l.blockSize)
			require.Equal(t, isz, l.inodeSize)
			csum := strings.Contains(field(text, "Filesystem features"), "metadata_csum") ||
				strings.Contains(field(text, "Filesystem features"), "uninit_bg")
			require.Equal(t, tc.name != "ext4-no-csum" && tc.name != "ext2-1k", csum, "the specs cover both kinds")
			var want []itable
			groups := groupRE.FindAllStringSubmatchIndex(text, -1)
			require.NotEmpty(t, groups)
			for i, g := range groups {
				end := len(text)
				if i+1 < len(groups) {
					end = groups[i+1][0]
				}
				body := text[g[0]:end]
				num, _ := strconv.ParseInt(text[g[2]:g[3]], 10, 64)
				m := itableRE.FindStringSubmatch(body)
				require.NotNil(t, m, "group %d", num)
				start, _ := strconv.ParseInt(m[1], 10, 64)
				used := ipg
				if csum {
					if strings.Contains(body[:strings.IndexByte(body, '\n')], "INODE_UNINIT") {
						continue
					}
					u := unusedRE.FindStringSubmatch(body)
					require.NotNil(t, u, "group %d", num)
					n, _ := strconv.ParseInt(u[1], 10, 64)
					used -= n
				}
				if used > 0 {
					want = append(want, itable{span{start * bs, (used*isz + bs - 1) / bs * bs}, uint64(num*ipg + 1), used})
				}
			}
			slices.SortFunc(want, func(a, b itable) int { return cmpInt64(a.off, b.off) })
			require.Equal(t, want, l.itables)

			// Directory blocks: ours, from the inode tables, against debugfs.
			ours := map[int64]bool{}
			for _, it := range l.itables {
				buf := make([]byte, it.n)
				_, err := f.ReadAt(buf, it.off)
				require.NoError(t, err)
				for _, s := range l.dirSpans(buf, nil) {
					require.Zero(t, s.off%bs)
					require.Zero(t, s.n%bs)
					for b := s.off / bs; b < (s.off+s.n)/bs; b++ {
						ours[b] = true
					}
				}
			}
			theirs := map[int64]bool{}
			for _, d := range dirs {
				out, err := exec.Command("debugfs", "-R", "blocks "+d, img).Output()
				require.NoError(t, err)
				blocks := strings.Fields(string(out))
				require.NotEmpty(t, blocks, d)
				for k, s := range blocks {
					b, err := strconv.ParseInt(s, 10, 64)
					require.NoError(t, err)
					theirs[b] = true
					// ext2: blocks 0-11 are direct, the 13th listed is the
					// indirect block, the rest hang off it.
					if !(tc.name == "ext2-1k" && d == "/big" && k > 12) {
						require.True(t, ours[b], "%s block %d (#%d) not read ahead", d, b, k)
					}
				}
			}
			for b := range ours {
				require.True(t, theirs[b], "block %d read ahead but in no directory", b)
			}
		})
	}
}

func field(dump, name string) string {
	for _, line := range strings.Split(dump, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// FuzzExtLayout: whatever the superblock, group descriptors and inodes
// say, readExtLayout and dirSpans neither panic nor give a range outside
// the device, and inode-table ranges are whole blocks that do not overlap
// (so that what the prefetcher reads is bounded by the device size).
func FuzzExtLayout(f *testing.F) {
	if _, err := exec.LookPath("mkfs.ext4"); err == nil {
		// Small filesystems (1 KiB blocks, 128 inodes, no flex_bg, so the
		// first inode table follows its descriptors), cut after the first
		// inode table's used part: superblock, descriptors and inodes in a
		// few tens of KiB the fuzzer can mutate quickly.
		for _, tc := range prefetchSpecs {
			spec, _ := prefetchTree(tc.spec)
			spec.Entries = spec.Entries[:40]
			spec.BlockSize, spec.Size, spec.Inodes = 1024, 4<<20, 128
			spec.Features = append(slices.Clone(spec.Features), "^flex_bg", "^has_journal")
			img := testimg.Build(f, spec)
			b, err := os.ReadFile(img)
			if err != nil {
				f.Fatal(err)
			}
			l, err := readExtLayout(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				f.Fatal(err)
			}
			if cut := l.itables[0].off + l.itables[0].n; cut <= 128<<10 {
				f.Add(b[:cut])
			} else {
				f.Fatalf("%s: seed of %d bytes", tc.name, cut)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		l, err := readExtLayout(bytes.NewReader(data), size)
		if err != nil {
			return
		}
		if l.blocks*l.blockSize > size {
			t.Fatalf("%d blocks of %d bytes on a %d-byte device", l.blocks, l.blockSize, size)
		}
		var total int64
		for i, it := range l.itables {
			if i > 0 && it.off < l.itables[i-1].off+l.itables[i-1].n {
				t.Fatalf("inode tables %+v and %+v overlap", l.itables[i-1], it)
			}
			if it.off < 0 || it.n <= 0 || it.off+it.n > size || it.off%l.blockSize != 0 || it.n%l.blockSize != 0 {
				t.Fatalf("inode table range %+v on a %d-byte device", it, size)
			}
			total += it.n
			var spans []span
			spans = l.dirSpans(data[it.off:it.off+it.n], spans)
			for _, s := range spans {
				if s.off <= 0 || s.n <= 0 || s.off+s.n > l.blocks*l.blockSize {
					t.Fatalf("directory range %+v past %d blocks", s, l.blocks)
				}
			}
		}
		if total != l.itableSize {
			t.Fatalf("itableSize %d, ranges add up to %d", l.itableSize, total)
		}
	})
}
