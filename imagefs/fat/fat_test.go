package fat

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loopdev/probe"
)

// problems collects what a reader reports.
type problems struct {
	mu   sync.Mutex
	list []imagefs.Problem
}

func (p *problems) report(pr *imagefs.Problem) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = append(p.list, *pr)
}

func (p *problems) kinds() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := map[string]int{}
	for _, x := range p.list {
		m[x.Kind]++
	}
	return m
}

// find returns the problems of a kind.
func (p *problems) find(kind string) []imagefs.Problem {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []imagefs.Problem
	for _, x := range p.list {
		if x.Kind == kind {
			out = append(out, x)
		}
	}
	return out
}

func (p *problems) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var sb strings.Builder
	for _, x := range p.list {
		fmt.Fprintf(&sb, "\n  %v", &x)
	}
	return sb.String()
}

// opened is a volume opened from an image file (or a section of it).
type opened struct {
	v     *Volume
	r     io.ReaderAt
	size  int64
	probs *problems
	opts  imagefs.Options
}

func openImage(t testing.TB, path string, cp string) *opened {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	require.NoError(t, err)
	return openReader(t, f, st.Size(), cp)
}

func openReader(t testing.TB, r io.ReaderAt, size int64, cp string) *opened {
	t.Helper()
	o := &opened{r: r, size: size, probs: &problems{}}
	o.opts = imagefs.Options{CodePage: cp, Report: o.probs.report}
	v, err := Open(r, size, o.opts)
	require.NoError(t, err)
	o.v = v
	return o
}

// walked is one entry of a walk, with its path.
type walked struct {
	path string
	e    *imagefs.Entry
}

func (o *opened) walk(t testing.TB) []walked {
	t.Helper()
	var out []walked
	err := imagefs.Walk(context.Background(), o.v, &o.opts, func(p []byte, e *imagefs.Entry) error {
		out = append(out, walked{string(p), e})
		return nil
	})
	require.NoError(t, err)
	return out
}

func byPath(ws []walked) map[string]*imagefs.Entry {
	m := map[string]*imagefs.Entry{}
	for _, w := range ws {
		m[strings.TrimPrefix(w.path, "/")] = w.e
	}
	return m
}

// read reads a file's whole content through Open.
func (o *opened) read(e *imagefs.Entry) ([]byte, error) {
	r, err := o.v.Open(e)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, e.Size)
	n, err := r.ReadAt(buf, 0)
	if n == len(buf) && (err == nil || err == io.EOF) {
		return buf, nil
	}
	return buf[:n], err
}

// checkSpec compares a walk with the tree the spec put on the medium:
// the same paths, types, sizes, mtimes and bytes, directory link counts,
// unique IDs, nothing reported.
func checkSpec(t *testing.T, o *opened, spec testimg.FATSpec) {
	t.Helper()
	checkTree(t, o, spec)
	require.Empty(t, o.probs.list, "problems on an undamaged image:%s", o.probs)
}

// checkTree is checkSpec without the check that nothing was reported.
func checkTree(t *testing.T, o *opened, spec testimg.FATSpec) {
	t.Helper()
	ws := o.walk(t)
	got := byPath(ws)
	want := testimg.FATTree(spec)
	require.Equal(t, RootID, int(got[""].ID))
	delete(got, "")
	var gotPaths, wantPaths []string
	for p := range got {
		gotPaths = append(gotPaths, p)
	}
	for p := range want {
		wantPaths = append(wantPaths, p)
	}
	sort.Strings(gotPaths)
	sort.Strings(wantPaths)
	require.Equal(t, wantPaths, gotPaths, "listing")
	ids := map[uint64]string{}
	subdirs := map[string]uint64{}
	for p, e := range want {
		if e.Kind == testimg.Dir {
			parent := ""
			if i := strings.LastIndexByte(p, '/'); i >= 0 {
				parent = p[:i]
			}
			subdirs[parent]++
		}
	}
	for p, w := range want {
		e := got[p]
		if prev, dup := ids[e.ID]; dup {
			t.Errorf("%q and %q have the same ID %d", prev, p, e.ID)
		}
		ids[e.ID] = p
		if w.Kind == testimg.Dir {
			require.Equal(t, byte('d'), e.Type, p)
			require.Equal(t, 2+subdirs[p], e.Nlink, "link count of %q", p)
			continue
		}
		require.Equal(t, byte('f'), e.Type, p)
		require.Equal(t, uint64(1), e.Nlink, p)
		require.Equal(t, w.FileSize(), e.Size, p)
		require.True(t, w.Mtime.Equal(e.Mtime), "mtime of %q: %v, want %v", p, e.Mtime, w.Mtime)
		if e.Size == 0 {
			require.Empty(t, e.Runs, "an empty file has no runs: %q", p)
		}
		b, err := o.read(e)
		require.NoError(t, err, p)
		require.True(t, bytes.Equal(w.Content(), b), "content of %q differs", p)
	}
	require.Equal(t, 2+subdirs[""], ws[0].e.Nlink, "root link count")
}

var sampleFiles = 300 // files in the sample's "many" directory

// TestImagesFromTools: FAT12 floppy, FAT16 and FAT32 images made by
// mkfs.fat and mtools read back as the tree put on them, twice the same.
func TestImagesFromTools(t *testing.T) {
	for _, bits := range []int{12, 16, 32} {
		t.Run(fmt.Sprintf("FAT%d", bits), func(t *testing.T) {
			spec := testimg.FATSample(bits, sampleFiles)
			img := testimg.BuildFAT(t, spec)
			o := openImage(t, img, "")
			require.Equal(t, bits, o.v.Info().Bits)
			require.Equal(t, "NTT SAMPLE", o.v.Info().Label)
			checkSpec(t, o, spec)
			// The same image walked again, opened again: the same records.
			first := o.walk(t)
			again := openImage(t, img, "").walk(t)
			require.Equal(t, len(first), len(again))
			for i := range first {
				require.Equal(t, first[i].path, again[i].path)
				require.Equal(t, *first[i].e, *again[i].e, first[i].path)
			}
			// Through the registry, by probe's name for it.
			typ := probeType(t, img)
			require.Equal(t, "vfat", typ)
			f, err := os.Open(img)
			require.NoError(t, err)
			defer f.Close()
			fsys, err := imagefs.Open(typ, f, o.size, imagefs.Options{})
			require.NoError(t, err)
			require.Equal(t, "vfat", fsys.Type())
		})
	}
}

func probeType(t *testing.T, img string) string {
	t.Helper()
	f, err := os.Open(img)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	r, err := probe.Probe(f, st.Size())
	require.NoError(t, err)
	require.NotNil(t, r.Whole, "probe finds a whole-disk filesystem")
	return r.Whole.Type
}

// tskEntry is one line of fls -r -p.
type tskEntry struct {
	typ  string // "r/r", "d/d"
	inum uint64
	path string
}

var flsLine = regexp.MustCompile(`^([-a-zA-Z]/[-a-zA-Z]) (\* )?(\d+)(\(realloc\))?:\t(.*)$`)

// fls lists an image with The Sleuth Kit, without deleted, virtual and
// volume label entries.
func fls(t *testing.T, img string, offsetSectors int64) []tskEntry {
	t.Helper()
	args := []string{"-r", "-p", "-f", "fat"}
	if offsetSectors > 0 {
		args = append(args, "-o", strconv.FormatInt(offsetSectors, 10))
	}
	out, err := exec.Command("fls", append(args, img)...).Output()
	require.NoError(t, err, "fls %v", args)
	var list []tskEntry
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		m := flsLine.FindStringSubmatch(sc.Text())
		require.NotNil(t, m, "fls line %q", sc.Text())
		if m[2] != "" || strings.HasPrefix(m[1], "v/") || strings.HasPrefix(m[1], "V/") || strings.HasSuffix(m[5], "(Volume Label Entry)") {
			continue
		}
		n, _ := strconv.ParseUint(m[3], 10, 64)
		list = append(list, tskEntry{typ: m[1], inum: n, path: m[5]})
	}
	require.NoError(t, sc.Err())
	return list
}

// tskInode is The Sleuth Kit's inode number of the directory record at a
// volume offset: records are numbered from 3, from the first sector after
// the FATs.
func (o *opened) tskInode(id uint64) uint64 {
	base := o.v.geo.dataOff
	if o.v.geo.bits != 32 {
		base = o.v.geo.rootOff
	}
	return 3 + (id-uint64(base))/dirEntrySize
}

// TestAgainstSleuthKit: the same paths, the same records (our IDs are The
// Sleuth Kit's inode numbers in another unit) and the same bytes as fls
// and icat give.
func TestAgainstSleuthKit(t *testing.T) {
	testimg.RequireFATTools(t, "fls", "icat")
	for _, bits := range []int{12, 16, 32} {
		t.Run(fmt.Sprintf("FAT%d", bits), func(t *testing.T) {
			img := testimg.BuildFAT(t, testimg.FATSample(bits, 40))
			o := openImage(t, img, "")
			compareTSK(t, o, img, 0)
		})
	}
}

func compareTSK(t *testing.T, o *opened, img string, offsetSectors int64) {
	t.Helper()
	got := byPath(o.walk(t))
	delete(got, "")
	tsk := fls(t, img, offsetSectors)
	require.Equal(t, len(got), len(tsk), "entries: ours %d, fls %d", len(got), len(tsk))
	for _, te := range tsk {
		e := got[te.path]
		if e == nil && len(te.path)-strings.LastIndexByte(te.path, '/') > 190 {
			// The Sleuth Kit cuts long names of about 200 characters
			// and more (mdir shows them whole, as we do).
			for p, x := range got {
				if strings.HasPrefix(p, te.path) {
					e = x
				}
			}
		}
		require.NotNil(t, e, "fls lists %q, we do not", te.path)
		require.Equal(t, te.inum, o.tskInode(e.ID), "record of %q", te.path)
		if te.typ == "d/d" {
			require.Equal(t, byte('d'), e.Type, te.path)
			continue
		}
		require.Equal(t, "r/r", te.typ, te.path)
		require.Equal(t, byte('f'), e.Type, te.path)
		args := []string{"-f", "fat"}
		if offsetSectors > 0 {
			args = append(args, "-o", strconv.FormatInt(offsetSectors, 10))
		}
		want, err := exec.Command("icat", append(args, img, strconv.FormatUint(te.inum, 10))...).Output()
		require.NoError(t, err, "icat %q", te.path)
		b, err := o.read(e)
		require.NoError(t, err, te.path)
		require.True(t, bytes.Equal(want, b), "content of %q differs from icat's", te.path)
	}
}

// TestZipDisk: a FAT16 Zip disk (MBR, filesystem in slot 4 at sector 32)
// is found by probe and read through a section of the image.
func TestZipDisk(t *testing.T) {
	testimg.RequireFATTools(t, "fls", "icat")
	spec := testimg.FATSample(16, 30)
	fsImg := testimg.BuildFAT(t, spec)
	disk := filepath.Join(t.TempDir(), "zip.img")
	start, size, err := testimg.FATZipDisk(disk, fsImg)
	require.NoError(t, err)
	f, err := os.Open(disk)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	res, err := probe.Probe(f, st.Size())
	require.NoError(t, err)
	require.Nil(t, res.Whole, "a Zip disk is a partitioned disk")
	var part *probe.Partition
	for i := range res.Partitions {
		if res.Partitions[i].Num == 4 {
			part = &res.Partitions[i]
		}
	}
	require.NotNil(t, part, "probe finds partition 4: %+v", res.Partitions)
	require.Equal(t, start, part.Start)
	require.Equal(t, size, part.Size)
	require.NotNil(t, part.Content)
	require.Equal(t, "vfat", part.Content.Type)
	o := openReader(t, io.NewSectionReader(f, part.Start, part.Size), part.Size, "")
	checkSpec(t, o, spec)
	compareTSK(t, o, disk, start/512)
}

// TestCodePages: an 8.3 name with no long name is decoded with the chosen
// code page, as mtools (cp850) wrote it; an unknown code page is an error.
func TestCodePages(t *testing.T) {
	testimg.RequireFATTools(t)
	spec := testimg.FATSpec{Bits: 12, Entries: []testimg.Entry{
		{Path: "ÁB.TXT", Kind: testimg.File, Data: []byte("acute")},
		{Path: "ÄRGER.TXT", Kind: testimg.File, Data: []byte("umlaut")},
		{Path: "lower.txt", Kind: testimg.File, Data: []byte("lower")},
		{Path: "MiXeD.TxT", Kind: testimg.File, Data: []byte("mixed")},
	}}
	img := testimg.BuildFAT(t, spec)
	names := func(cp string) []string {
		var out []string
		for _, w := range openImage(t, img, cp).walk(t)[1:] {
			out = append(out, w.path)
		}
		return out
	}
	// 0xB5 is Á in cp850, ╡ in cp437; 0x8E is Ä in both.
	require.Equal(t, []string{"/ÁB.TXT", "/ÄRGER.TXT", "/lower.txt", "/MiXeD.TxT"}, names("cp850"))
	require.Equal(t, []string{"/╡B.TXT", "/ÄRGER.TXT", "/lower.txt", "/MiXeD.TxT"}, names(""))
	require.Equal(t, names(""), names("CP437"))
	// The first two have no long name: their records are what was decoded.
	o := openImage(t, img, "cp850")
	root, _ := o.v.Root()
	recs, err := o.v.dirContent(root, false)
	require.NoError(t, err)
	require.Equal(t, []byte("\xb5B      TXT"), recs[0].b[:11])
	require.Equal(t, []byte("\x8eRGER   TXT"), recs[1].b[:11])
	// lower.txt is an 8.3 record with the case flags, no long name.
	require.Equal(t, []byte("LOWER   TXT"), recs[2].b[:11])
	require.Equal(t, byte(lowerBase|lowerExt), recs[2].b[12])
	// mdir, in UTF-8 with mtools' cp850, agrees.
	cmd := exec.Command("mdir", "-i", img, "::/")
	cmd.Env = testimg.MtoolsEnv()
	out, err := cmd.Output()
	require.NoError(t, err)
	require.Contains(t, string(out), "ÁB       TXT")

	f, err := os.Open(img)
	require.NoError(t, err)
	defer f.Close()
	_, err = Open(f, 1474560, imagefs.Options{CodePage: "cp1252"})
	require.ErrorIs(t, err, ErrCodePage)
}

// TestShortNames: the 8.3 decoding rules on records made by hand.
func TestShortNames(t *testing.T) {
	v := &Volume{cp: codePages["cp437"]}
	for _, tc := range []struct {
		raw   string
		flags byte
		want  string
	}{
		{"README  TXT", 0, "README.TXT"},
		{"README  TXT", lowerBase, "readme.TXT"},
		{"README  TXT", lowerExt, "README.txt"},
		{"NOEXT      ", lowerBase | lowerExt, "noext"},
		{"\x05BC     TXT", 0, "σBC.TXT"},           // 0x05 stands for 0xE5 (σ in cp437)
		{"\x8eRGER   TXT", lowerBase, "ärger.TXT"}, // lowercase in the code page
		{"A B     C  ", 0, "A B.C"},
	} {
		require.Equal(t, tc.want, v.shortName([]byte(tc.raw), tc.flags), "%q", tc.raw)
	}
	require.Equal(t, []byte("a\u2215b\u2400c"), cleanName("a/b\x00c"))
}

// TestLongNameChecks: a long name is used only when complete and matching.
func TestLongNameChecks(t *testing.T) {
	short := []byte("LONGNA~1TXT")
	sum := shortChecksum(short)
	slot := func(ord byte, sum byte, s string) record {
		b := make([]byte, 32)
		b[0], b[11], b[13] = ord, attrLongName, sum
		u := make([]uint16, 13)
		for i := range u {
			u[i] = 0xFFFF
		}
		rs := []rune(s)
		for i := 0; i < len(rs) && i < 13; i++ {
			u[i] = uint16(rs[i])
		}
		if len(rs) < 13 {
			u[len(rs)] = 0
		}
		for i := 0; i < 5; i++ {
			le.PutUint16(b[1+2*i:], u[i])
		}
		for i := 0; i < 6; i++ {
			le.PutUint16(b[14+2*i:], u[5+i])
		}
		for i := 0; i < 2; i++ {
			le.PutUint16(b[28+2*i:], u[11+i])
		}
		return record{b: b, off: 64}
	}
	shortRec := func() record {
		b := make([]byte, 32)
		copy(b, short)
		le.PutUint16(b[24:], 0x21)
		return record{b: b, off: 128}
	}
	v := &Volume{cp: codePages["cp437"]}
	var probs problems
	v.opts.Report = probs.report
	parse := func(recs ...record) string {
		ps := v.parseDir(recs, false, true)
		require.Len(t, ps, 1)
		return ps[0].name
	}
	require.Equal(t, "long name bits.txt", parse(slot(0x42, sum, "s.txt"), slot(0x01, sum, "long name bit"), shortRec()))
	require.Empty(t, probs.list)
	// Wrong checksum: the short name.
	require.Equal(t, "LONGNA~1.TXT", parse(slot(0x41, sum+1, "x.txt"), shortRec()))
	require.Len(t, probs.find("lfn_mismatch"), 1)
	// Missing slot 1: orphan.
	require.Equal(t, "LONGNA~1.TXT", parse(slot(0x42, sum, "ts.txt"), shortRec()))
	// A slot without the first part.
	require.Equal(t, "LONGNA~1.TXT", parse(slot(0x01, sum, "abc"), shortRec()))
	// A long name "..": the short name.
	require.Equal(t, "LONGNA~1.TXT", parse(slot(0x41, sum, ".."), shortRec()))
	// '/' inside a long name is replaced when it becomes an Entry name.
	require.Equal(t, "a/b", parse(slot(0x41, sum, "a/b"), shortRec()))
	require.Equal(t, []byte("a\u2215b"), cleanName("a/b"))
	require.Len(t, probs.find("lfn_mismatch"), 4)
}

// TestBootSectorChecks: every BPB field that does not check out is a
// FormatError naming its offset and value.
func TestBootSectorChecks(t *testing.T) {
	testimg.RequireFATTools(t)
	good := testimg.BuildFAT(t, testimg.FATSpec{Bits: 16})
	img, err := os.ReadFile(good)
	require.NoError(t, err)
	_, err = Open(bytes.NewReader(img), int64(len(img)), imagefs.Options{})
	require.NoError(t, err)
	for _, tc := range []struct {
		off   int
		val   []byte
		field string
		value int64
	}{
		{11, []byte{0xE8, 0x03}, "BPB_BytsPerSec", 1000},
		{11, []byte{0x00, 0x01}, "BPB_BytsPerSec", 256},
		{13, []byte{3}, "BPB_SecPerClus", 3},
		{13, []byte{0}, "BPB_SecPerClus", 0},
		{14, []byte{0, 0}, "BPB_RsvdSecCnt", 0},
		{16, []byte{0}, "BPB_NumFATs", 0},
		{16, []byte{3}, "BPB_NumFATs", 3},
		{17, []byte{0, 0}, "BPB_RootEntCnt", 0},
		{19, []byte{0, 0}, "BPB_TotSec32", 0}, // mkfs.fat puts 16 MiB in TotSec16; with it 0, TotSec32 (0) counts
		{21, []byte{0x12}, "BPB_Media", 0x12},
		{19, []byte{40, 0}, "BPB_TotSec16", 40},
	} {
		bad := append([]byte(nil), img...)
		copy(bad[tc.off:], tc.val)
		_, err := Open(bytes.NewReader(bad), int64(len(bad)), imagefs.Options{})
		var fe *FormatError
		require.ErrorAs(t, err, &fe, "%s = %v", tc.field, tc.val)
		require.Equal(t, tc.field, fe.Field)
		require.Equal(t, tc.value, fe.Value)
		require.ErrorIs(t, err, ErrNotFAT)
		require.ErrorIs(t, err, imagefs.ErrCorrupt)
		require.Contains(t, err.Error(), "byte offset")
	}
	_, err = Open(bytes.NewReader(img[:100]), 100, imagefs.Options{})
	require.ErrorIs(t, err, ErrNotFAT)
}

func TestDOSTime(t *testing.T) {
	_, ok := dosTime(0, 0)
	require.False(t, ok, "date 0 has month 0")
	tm, ok := dosTime(0x5D84, 0x862F) // mtools' 2026-12-04 16:49:30
	require.True(t, ok)
	require.Equal(t, "2026-12-04T16:49:30Z", tm.Format("2006-01-02T15:04:05Z07:00"))
	_, ok = dosTime(2<<5|30, 0) // 30 February 1980
	require.False(t, ok)
	_, ok = dosTime(1<<5|1, 24<<11)
	require.False(t, ok)
}
