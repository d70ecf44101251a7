package extfs

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/extfs/extfstest"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/require"
)

// buildPrefetchImage builds extfstest.PrefetchTree on spec and reads its
// layout.
func buildPrefetchImage(t *testing.T, spec testimg.Spec) (img string, dirs []string, l *Layout) {
	t.Helper()
	spec, dirs = extfstest.PrefetchTree(spec)
	img = testimg.Build(t, spec)
	f, err := os.Open(img)
	require.NoError(t, err)
	defer f.Close()
	fi, err := f.Stat()
	require.NoError(t, err)
	l, err = ReadLayout(f, fi.Size())
	require.NoError(t, err)
	return img, dirs, l
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
	extfstest.RequireE2fsTools(t)
	for _, tc := range extfstest.PrefetchLayouts {
		t.Run(tc.Name, func(t *testing.T) {
			img, dirs, l := buildPrefetchImage(t, tc.Spec)
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
			require.Equal(t, tc.Name != "ext4-no-csum" && tc.Name != "ext2-1k", csum, "the specs cover both kinds")
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
					want = append(want, itable{Span{start * bs, (used*isz + bs - 1) / bs * bs}, uint64(num*ipg + 1), used})
				}
			}
			slices.SortFunc(want, func(a, b itable) int { return cmpInt64(a.Off, b.Off) })
			require.Equal(t, want, l.itables)

			// Directory blocks: ours, from the inode tables, against debugfs.
			ours := map[int64]bool{}
			for _, it := range l.itables {
				buf := make([]byte, it.N)
				_, err := f.ReadAt(buf, it.Off)
				require.NoError(t, err)
				for _, s := range l.DirSpans(buf, nil) {
					require.Zero(t, s.Off%bs)
					require.Zero(t, s.N%bs)
					for b := s.Off / bs; b < (s.Off+s.N)/bs; b++ {
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
					if !(tc.Name == "ext2-1k" && d == "/big" && k > 12) {
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
// say, ReadLayout and DirSpans neither panic nor give a range outside
// the device, and inode-table ranges are whole blocks that do not overlap
// (so that what the prefetcher reads is bounded by the device size).
func FuzzExtLayout(f *testing.F) {
	if _, err := exec.LookPath("mkfs.ext4"); err == nil {
		// Small filesystems (1 KiB blocks, 128 inodes, no flex_bg, so the
		// first inode table follows its descriptors), cut after the first
		// inode table's used part: superblock, descriptors and inodes in a
		// few tens of KiB the fuzzer can mutate quickly.
		for _, tc := range extfstest.PrefetchLayouts {
			spec, _ := extfstest.PrefetchTree(tc.Spec)
			spec.Entries = spec.Entries[:40]
			spec.BlockSize, spec.Size, spec.Inodes = 1024, 4<<20, 128
			spec.Features = append(slices.Clone(spec.Features), "^flex_bg", "^has_journal")
			img := testimg.Build(f, spec)
			b, err := os.ReadFile(img)
			if err != nil {
				f.Fatal(err)
			}
			l, err := ReadLayout(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				f.Fatal(err)
			}
			if cut := l.itables[0].Off + l.itables[0].N; cut <= 128<<10 {
				f.Add(b[:cut])
			} else {
				f.Fatalf("%s: seed of %d bytes", tc.Name, cut)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		l, err := ReadLayout(bytes.NewReader(data), size)
		if err != nil {
			return
		}
		if l.blocks*l.blockSize > size {
			t.Fatalf("%d blocks of %d bytes on a %d-byte device", l.blocks, l.blockSize, size)
		}
		var total int64
		for i, it := range l.itables {
			if i > 0 && it.Off < l.itables[i-1].Off+l.itables[i-1].N {
				t.Fatalf("inode tables %+v and %+v overlap", l.itables[i-1], it)
			}
			if it.Off < 0 || it.N <= 0 || it.Off+it.N > size || it.Off%l.blockSize != 0 || it.N%l.blockSize != 0 {
				t.Fatalf("inode table range %+v on a %d-byte device", it, size)
			}
			total += it.N
			var spans []Span
			spans = l.DirSpans(data[it.Off:it.Off+it.N], spans)
			for _, s := range spans {
				if s.Off <= 0 || s.N <= 0 || s.Off+s.N > l.blocks*l.blockSize {
					t.Fatalf("directory range %+v past %d blocks", s, l.blocks)
				}
			}
		}
		if total != l.itableSize {
			t.Fatalf("itableSize %d, ranges add up to %d", l.itableSize, total)
		}
	})
}
