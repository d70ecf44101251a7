package fat

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/testimg"
)

// sample builds the sample image of a FAT width, and returns it opened
// (undamaged) with its entries by path.
func sample(t *testing.T, bits, files int) (testimg.FATSpec, string, *opened, map[string]*imagefs.Entry) {
	t.Helper()
	spec := testimg.FATSample(bits, files)
	img := testimg.BuildFAT(t, spec)
	o := openImage(t, img, "")
	return spec, img, o, byPath(o.walk(t))
}

func clusterAt(g *geometry, off int64) uint32 {
	return uint32((off-g.dataOff)/g.clusterSize) + 2
}

// clusters lists an entry's clusters in chain order.
func clusters(g *geometry, e *imagefs.Entry) []uint32 {
	var out []uint32
	for _, r := range e.Runs {
		for o := r.Offset; o < r.Offset+r.Length; o += g.clusterSize {
			out = append(out, clusterAt(g, o))
		}
	}
	return out
}

// setFAT writes cluster c's entry in FAT number fat (0, 1) of the image.
func setFAT(t *testing.T, img string, g *geometry, fat int, c, val uint32) {
	t.Helper()
	off := g.fatOff[fat] + g.entryOffset(c)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	b := make([]byte, 4)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	switch g.bits {
	case 12:
		v := uint32(le.Uint16(b))
		if c&1 == 1 {
			v = v&0x000F | val<<4
		} else {
			v = v&0xF000 | val&0x0FFF
		}
		le.PutUint16(b, uint16(v))
		b = b[:2]
	case 16:
		le.PutUint16(b, uint16(val))
		b = b[:2]
	default:
		le.PutUint32(b, le.Uint32(b)&0xF0000000|val)
	}
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
}

func setBothFATs(t *testing.T, img string, g *geometry, c, val uint32) {
	for i := range g.fatOff {
		setFAT(t, img, g, i, c, val)
	}
}

// setCluster points a directory record at cluster c.
func setCluster(t *testing.T, img string, id uint64, c uint32) {
	t.Helper()
	b := make([]byte, 2)
	le.PutUint16(b, uint16(c>>16))
	require.NoError(t, testimg.WriteAt(img, int64(id)+20, b))
	le.PutUint16(b, uint16(c))
	require.NoError(t, testimg.WriteAt(img, int64(id)+26, b))
}

// garbage is deterministic noise of n bytes whose 32-byte records never
// start with 0x00 (which would end a directory early).
func garbage(seed uint64, n int) []byte {
	b := make([]byte, n)
	testimg.ContentAt(seed, b, 0)
	for i := 0; i < n; i += dirEntrySize {
		if b[i] == 0 {
			b[i] = 'G'
		}
	}
	return b
}

// TestTruncatedImage: an image cut short reads what lies before the cut;
// a file with bytes past it fails with ErrBeyondEnd, never zeros; the cut
// and the directories lost to it are reported.
func TestTruncatedImage(t *testing.T) {
	spec, img, _, got := sample(t, 12, 60)
	// Cut inside big.bin, after the root's first files and before
	// everything written after it (DOCS, many).
	cut := got["big.bin"].Runs[0].Offset + 1000
	require.NoError(t, testimg.Truncate(img, cut))
	o := openImage(t, img, "")
	require.Len(t, o.probs.find("truncated"), 1)
	require.Equal(t, cut, o.probs.find("truncated")[0].Offset)
	want := testimg.FATTree(spec)
	intact, failed := 0, 0
	listed := byPath(o.walk(t))
	for p, e := range listed {
		if p == "" || e.Type != 'f' {
			continue
		}
		past := false
		for _, r := range e.Runs {
			past = past || r.Offset+r.Length > cut
		}
		b, err := o.read(e)
		if !past {
			require.NoError(t, err, p)
			require.Equal(t, want[p].Content(), b, p)
			intact++
			continue
		}
		require.ErrorIs(t, err, imagefs.ErrBeyondEnd, p)
		var re *imagefs.ReadError
		require.ErrorAs(t, err, &re)
		require.GreaterOrEqual(t, re.Offset, cut, p)
		require.Equal(t, want[p].Content()[:len(b)], b, "%s: what was read before the cut", p)
		failed++
	}
	require.GreaterOrEqual(t, intact, 8)
	require.GreaterOrEqual(t, failed, 1)
	require.Contains(t, listed, "big.bin")
	// The directories written after big.bin lie past the cut: their
	// loss is reported, naming them.
	truncated := ""
	for _, p := range o.probs.find("truncated") {
		truncated += p.Detail
	}
	for p := range want {
		if _, ok := listed[p]; !ok {
			top := strings.SplitN(p, "/", 2)[0]
			require.Contains(t, []string{"DOCS", "many"}, top, p)
			require.Contains(t, truncated, fmt.Sprintf("%q", top), p)
		}
	}

	// A FAT32 image cut inside its first FAT: the root directory lies past
	// the cut; nothing is listed, nothing panics, the cut is reported.
	_, img32, o32, _ := sample(t, 32, 5)
	cut = o32.v.geo.fatOff[0] + 4096
	require.NoError(t, testimg.Truncate(img32, cut))
	o = openImage(t, img32, "")
	require.Equal(t, cut, o.probs.find("truncated")[0].Offset)
	ws := o.walk(t)
	require.Len(t, ws, 1, "only the root")
	require.NotEmpty(t, o.probs.find("unreadable_dir"), o.probs)
}

// TestLoopingChain: a file whose chain comes back to its first cluster
// (in both FATs) is reported as a loop at the FAT entry that points back;
// its runs hold the clusters before the loop and reading past them fails
// with ErrCorrupt.
func TestLoopingChain(t *testing.T) {
	for _, bits := range []int{12, 32} {
		t.Run(fmt.Sprintf("FAT%d", bits), func(t *testing.T) {
			spec, img, o, got := sample(t, bits, 5)
			g := o.v.geo
			big := got["big.bin"]
			cs := clusters(g, big)
			require.Greater(t, len(cs), 3)
			setBothFATs(t, img, g, cs[2], cs[0])
			o = openImage(t, img, "")
			e := byPath(o.walk(t))["big.bin"]
			loops := o.probs.find("loop")
			require.Len(t, loops, 1, o.probs)
			require.Equal(t, g.fatOff[0]+g.entryOffset(cs[2]), loops[0].Offset)
			require.Contains(t, loops[0].Detail, "big.bin")
			require.Equal(t, cs[:3], clusters(g, e))
			r, err := o.v.Open(e)
			require.NoError(t, err)
			want := testimg.FATTree(spec)["big.bin"].Content()
			n := 3 * int(g.clusterSize)
			buf := make([]byte, n+1)
			m, err := r.ReadAt(buf, 0)
			require.Equal(t, n, m)
			require.ErrorIs(t, err, imagefs.ErrCorrupt)
			require.Equal(t, want[:n], buf[:n])
			_, err = r.ReadAt(buf[:10], int64(n)+5)
			require.ErrorIs(t, err, imagefs.ErrCorrupt)
			// The rest of the medium is read.
			listed := byPath(o.walk(t))
			for p, w := range testimg.FATTree(spec) {
				if w.Kind == testimg.File && p != "big.bin" {
					x := listed[p]
					b, err := o.read(x)
					require.NoError(t, err, p)
					require.Equal(t, w.Content(), b, p)
				}
			}
		})
	}
}

// TestShortAndLongChain: a chain that ends before the size is reported and
// its missing tail fails to read; a chain longer than the size is reported
// and cut at it.
func TestShortAndLongChain(t *testing.T) {
	spec, img, o, got := sample(t, 16, 5)
	g := o.v.geo
	cs := clusters(g, got["big.bin"])
	setBothFATs(t, img, g, cs[9], g.badMark()+8) // end of chain after 10 clusters
	mixed := got["Mixed Case Name.Document"]
	require.Equal(t, int64(5000), mixed.Size)
	size := make([]byte, 4)
	le.PutUint32(size, 100)
	require.NoError(t, testimg.WriteAt(img, int64(mixed.ID)+28, size))

	o = openImage(t, img, "")
	got = byPath(o.walk(t))
	tree := testimg.FATTree(spec)
	short := o.probs.find("short_chain")
	require.Len(t, short, 1, o.probs)
	require.Equal(t, g.fatOff[0]+g.entryOffset(cs[9]), short[0].Offset)
	b, err := o.read(got["big.bin"])
	require.ErrorIs(t, err, imagefs.ErrCorrupt)
	require.Equal(t, tree["big.bin"].Content()[:10*g.clusterSize], b)

	long := o.probs.find("long_chain")
	require.Len(t, long, 1, o.probs)
	require.Equal(t, g.fatOff[0]+g.entryOffset(clusters(g, mixed)[0]), long[0].Offset)
	b, err = o.read(got["Mixed Case Name.Document"])
	require.NoError(t, err)
	require.Equal(t, tree["Mixed Case Name.Document"].Content()[:100], b)
	require.Equal(t, int64(100), got["Mixed Case Name.Document"].Runs[0].Length)
}

// TestDirectoryPointsAtAncestor: a directory record holding its parent's
// cluster, or cluster 0 (the root), is a cycle the walk reports and does
// not enter; everything else is read.
func TestDirectoryPointsAtAncestor(t *testing.T) {
	for _, bits := range []int{12, 32} {
		t.Run(fmt.Sprintf("FAT%d", bits), func(t *testing.T) {
			spec, img, o, got := sample(t, bits, 10)
			g := o.v.geo
			parent := clusters(g, got["DOCS/Sub Dir"])[0]
			setCluster(t, img, got["DOCS/Sub Dir/deeper"].ID, parent)
			setCluster(t, img, got["DOCS/empty dir"].ID, 0)
			o = openImage(t, img, "")
			after := byPath(o.walk(t))
			cycles := o.probs.find("cycle")
			require.Len(t, cycles, 2, o.probs)
			require.Contains(t, cycles[0].Detail+cycles[1].Detail, "/DOCS/Sub Dir/deeper")
			require.Contains(t, cycles[0].Detail+cycles[1].Detail, "/DOCS/empty dir")
			require.NotContains(t, after, "DOCS/Sub Dir/deeper/deepest")
			require.Contains(t, after, "DOCS/Sub Dir/deeper")
			for p, w := range testimg.FATTree(spec) {
				if strings.HasPrefix(p, "DOCS/Sub Dir/deeper/") {
					continue
				}
				require.Contains(t, after, p)
				if w.Kind == testimg.File {
					b, err := o.read(after[p])
					require.NoError(t, err, p)
					require.Equal(t, w.Content(), b, p)
				}
			}
		})
	}
}

// TestGarbageOverRoot: noise over the first sector of a FAT16 root
// directory: its records are reported or read as the damage they are, and
// the records after it are read; a long name that lost its first slots
// falls back to its 8.3 name.
func TestGarbageOverRoot(t *testing.T) {
	spec, img, o, got := sample(t, 16, 20)
	g := o.v.geo
	require.NoError(t, testimg.WriteAt(img, g.rootOff, garbage(7, 512)))
	o = openImage(t, img, "")
	after := byPath(o.walk(t))
	inGarbage := 0
	for _, p := range o.probs.list {
		if p.Offset >= g.rootOff && p.Offset < g.rootOff+512 {
			inGarbage++
		}
	}
	require.Greater(t, inGarbage, 0, "problems inside the garbage:%s", o.probs)
	tree := testimg.FATTree(spec)
	long := strings.Repeat("L", 200) + ".long"
	// Everything whose record lies after the garbage is read whole.
	checked := 0
	for p, e := range got {
		top := strings.SplitN(p, "/", 2)[0]
		if p == "" || p == long || got[top].ID < uint64(g.rootOff+512) {
			continue
		}
		x := after[p]
		require.NotNil(t, x, p)
		require.Equal(t, e.ID, x.ID, p)
		if e.Type == 'f' {
			b, err := o.read(x)
			require.NoError(t, err, p)
			require.Equal(t, tree[p].Content(), b, p)
		}
		checked++
	}
	require.Greater(t, checked, 30)
	// The 205-character name started inside the garbage: its remaining
	// slots are orphans, and the file is there under its 8.3 name.
	require.Less(t, got[long].ID, uint64(g.rootOff+32*32))
	var short *imagefs.Entry
	for p, e := range after {
		if strings.HasPrefix(p, "LLLLLL~") {
			short = e
		}
	}
	require.NotNil(t, short, "the file under its 8.3 name")
	require.Equal(t, got[long].ID, short.ID)
	b, err := o.read(short)
	require.NoError(t, err)
	require.Equal(t, tree[long].Content(), b)
	require.NotEmpty(t, o.probs.find("lfn_mismatch"))
}

// TestGarbageOverFAT1: with noise over the first FAT, every chain is taken
// from the second; the mismatch is reported, and every file reads whole.
func TestGarbageOverFAT1(t *testing.T) {
	for _, bits := range []int{12, 16} {
		t.Run(fmt.Sprintf("FAT%d", bits), func(t *testing.T) {
			spec, img, o, _ := sample(t, bits, 50)
			g := o.v.geo
			n := int(g.fatBytes) - 4
			require.NoError(t, testimg.WriteAt(img, g.fatOff[0]+4, garbage(uint64(bits), n)))
			o = openImage(t, img, "")
			checkTree(t, o, spec)
			mm := o.probs.find("fat_mismatch")
			require.Len(t, o.probs.list, 1, "one report, at Open:%s", o.probs)
			require.Len(t, mm, 1)
			require.Equal(t, g.fatOff[0]+4, mm[0].Offset, "first difference")
			require.Contains(t, mm[0].Detail, "FAT2 is used")
		})
	}
}

// failingReader fails reads that touch [from, to) with EIO, as a bad
// sector of a device does.
type failingReader struct {
	r        io.ReaderAt
	from, to int64
}

func (f *failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off < f.to && off+int64(len(p)) > f.from {
		return 0, syscall.EIO
	}
	return f.r.ReadAt(p, off)
}

// TestUnreadableFAT1: a FAT1 sector that cannot be read costs nothing when
// FAT2 is whole.
func TestUnreadableFAT1(t *testing.T) {
	spec, img, o, _ := sample(t, 12, 30)
	g := o.v.geo
	f, err := os.Open(img)
	require.NoError(t, err)
	defer f.Close()
	bad := &failingReader{r: f, from: g.fatOff[0] + 512, to: g.fatOff[0] + 1024}
	o = openReader(t, bad, o.size, "")
	checkTree(t, o, spec)
	require.Len(t, o.probs.list, 1, o.probs)
	p := o.probs.find("fat_mismatch")[0]
	require.True(t, p.Offset >= bad.from && p.Offset < bad.to, "%v", &p)
	require.Contains(t, p.Detail, "FAT2 is used")
}

// TestReadErrorsAreTyped: what Open's readers return wraps the imagefs
// sentinels, so diagnose can classify them.
func TestReadErrorsAreTyped(t *testing.T) {
	sf := imagefs.NewShortReader(bytes.NewReader(make([]byte, 10)), 10, 20, 99, "a chain cut short")
	buf := make([]byte, 20)
	n, err := sf.ReadAt(buf, 0)
	require.Equal(t, 10, n)
	var re *imagefs.ReadError
	require.True(t, errors.As(err, &re))
	require.Equal(t, int64(99), re.Offset)
	require.ErrorIs(t, err, imagefs.ErrCorrupt)
	_, err = sf.ReadAt(buf, 20)
	require.Equal(t, io.EOF, err)
}

// TestCrossLinkedChains: records that all name one long chain cost a
// listing at most its budget; the files past it are reported and fail to
// read (never read as zeros or as another file's tail).
func TestCrossLinkedChains(t *testing.T) {
	spec, img, o, got := sample(t, 12, 60)
	g := o.v.geo
	big := got["big.bin"]
	first := clusters(g, big)[0]
	size := make([]byte, 4)
	le.PutUint32(size, uint32(big.Size))
	for p, e := range got {
		if strings.HasPrefix(p, "many/") {
			setCluster(t, img, e.ID, first)
			require.NoError(t, testimg.WriteAt(img, int64(e.ID)+28, size))
		}
	}
	o = openImage(t, img, "")
	after := byPath(o.walk(t))
	want := testimg.FATTree(spec)["big.bin"].Content()
	whole, failed := 0, 0
	for p, e := range after {
		if !strings.HasPrefix(p, "many/") {
			continue
		}
		b, err := o.read(e)
		if err == nil {
			require.Equal(t, want, b, p)
			whole++
			continue
		}
		require.ErrorIs(t, err, imagefs.ErrCorrupt, p)
		failed++
	}
	require.Equal(t, 60, whole+failed)
	require.Greater(t, whole, 0)
	require.Greater(t, failed, 0)
	require.NotEmpty(t, o.probs.find("cross_linked"))
}

// TestActiveFAT: a FAT32 volume with mirroring off (BPB_ExtFlags bit 7)
// uses its active FAT only; the other copy is not a mirror, so its
// content is neither used nor reported.
func TestActiveFAT(t *testing.T) {
	spec, img, o, _ := sample(t, 32, 10)
	g := o.v.geo
	require.NoError(t, testimg.WriteAt(img, 40, []byte{0x81, 0x00})) // active FAT: number 1 (FAT2)
	require.NoError(t, testimg.WriteAt(img, g.fatOff[0]+8, garbage(3, int(g.fatBytes)-8)))
	o = openImage(t, img, "")
	checkSpec(t, o, spec)
	// With mirroring on again, the garbage in FAT1 is seen and FAT2 is
	// used for its fewer impossible entries.
	require.NoError(t, testimg.WriteAt(img, 40, []byte{0x00, 0x00}))
	o = openImage(t, img, "")
	checkTree(t, o, spec)
	require.Len(t, o.probs.find("fat_mismatch"), 1)
	require.Contains(t, o.probs.find("fat_mismatch")[0].Detail, "FAT2 is used")
}

// TestBadRecords: an invalid date gives the zero time and a report at the
// date's offset; a record with control bytes in its 8.3 name is left out
// and reported; the other entries are unchanged.
func TestBadRecords(t *testing.T) {
	spec, img, o, got := sample(t, 16, 5)
	readme, lower := got["README.TXT"], got["lower.txt"]
	require.NoError(t, testimg.WriteAt(img, int64(readme.ID)+24, []byte{0xA0, 0x01})) // month 13
	require.NoError(t, testimg.WriteAt(img, int64(lower.ID)+1, []byte{0x01}))         // "L\x01WER   TXT"
	o = openImage(t, img, "")
	after := byPath(o.walk(t))
	require.True(t, after["README.TXT"].Mtime.IsZero())
	bt := o.probs.find("bad_time")
	require.Len(t, bt, 1, o.probs)
	require.Equal(t, int64(readme.ID)+22, bt[0].Offset)
	require.NotContains(t, after, "lower.txt")
	be := o.probs.find("bad_entry")
	require.Len(t, be, 1, o.probs)
	require.Equal(t, int64(lower.ID), be[0].Offset)
	require.Len(t, o.probs.list, 2, o.probs)
	tree := testimg.FATTree(spec)
	require.Len(t, after, len(tree)) // the root in, lower.txt out
	b, err := o.read(after["README.TXT"])
	require.NoError(t, err)
	require.Equal(t, tree["README.TXT"].Content(), b)
}

// TestSizeIsTheBound: a volume is its size, whatever the reader holds
// past it (a whole disk whose next partition follows): nothing past it is
// read, as if the image were cut there.
func TestSizeIsTheBound(t *testing.T) {
	_, img, _, got := sample(t, 12, 20)
	cut := got["big.bin"].Runs[0].Offset + 1000
	f, err := os.Open(img)
	require.NoError(t, err)
	defer f.Close()
	o := openReader(t, f, cut, "")
	listed := byPath(o.walk(t))
	_, err = o.read(listed["big.bin"])
	require.ErrorIs(t, err, imagefs.ErrBeyondEnd)
	require.NotContains(t, listed, "DOCS/Sub Dir")
	require.Contains(t, listed, "DOCS")
	var truncated []string
	for _, p := range o.probs.find("truncated") {
		truncated = append(truncated, p.Detail)
	}
	require.Len(t, truncated, 3, o.probs) // the volume, DOCS, many
}
