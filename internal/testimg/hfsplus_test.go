package testimg

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/HRDAG/ntt/internal/testenv"
)

// requireTSK fails under CI, or skips, without The Sleuth Kit.
func requireTSK(t *testing.T) {
	t.Helper()
	for _, name := range []string{"fls", "icat", "istat", "fsstat", "tsk_recover"} {
		if _, err := exec.LookPath(name); err != nil {
			testenv.SkipOrFail(t, name+" is not installed (scripts/deps.sh installs sleuthkit)")
		}
	}
}

var tskLine = regexp.MustCompile(`^([-a-zA-Z]/[-a-zA-Z]) (\* )?(\d+)(\(realloc\))?:\t(.*)$`)

// tskRun runs a Sleuth Kit command and returns its standard output.
func tskRun(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// tskEntry is one name fls lists.
type tskEntry struct {
	typ  string
	inum uint64
}

// flsHFSPlus lists the volume with fls -r -p, without TSK's virtual files
// for the special files (CNIDs below 16 named $…).
func flsHFSPlus(t *testing.T, img string, extra ...string) map[string]tskEntry {
	t.Helper()
	out := tskRun(t, append(append([]string{"fls", "-r", "-p"}, extra...), img)...)
	got := map[string]tskEntry{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := tskLine.FindStringSubmatch(sc.Text())
		if m == nil {
			t.Fatalf("fls line %q", sc.Text())
		}
		if m[2] != "" {
			t.Errorf("fls lists a deleted name: %q", sc.Text())
		}
		inum, _ := strconv.ParseUint(m[3], 10, 64)
		if inum < hpFirstUserID && strings.HasPrefix(m[5], "$") {
			continue
		}
		if _, dup := got[m[5]]; dup {
			t.Errorf("fls lists %q twice", m[5])
		}
		got[m[5]] = tskEntry{m[1], inum}
	}
	return got
}

// checkTSK checks a built volume against The Sleuth Kit's reading of it:
// fsstat accepts it as fstype, fls lists exactly the layout's names with
// their types and CNIDs, tsk_recover (all at once) and icat (a few) return
// each file's data fork, and icat its resource fork, byte for byte.
func checkTSK(t *testing.T, img string, l *HFSPlusLayout, fstype string, extra ...string) {
	t.Helper()
	stat := tskRun(t, append(append([]string{"fsstat"}, extra...), img)...)
	if !bytes.Contains(stat, []byte("File System Type: "+fstype+"\n")) {
		t.Errorf("fsstat does not say %s:\n%s", fstype, stat)
	}
	got := flsHFSPlus(t, img, extra...)
	rec := filepath.Join(t.TempDir(), "recovered")
	tskRun(t, append(append([]string{"tsk_recover", "-e"}, extra...), img, rec)...)
	icats := 0
	istated := map[uint32]bool{}
	want := map[string]HFSPlusFile{}
	for p, f := range l.Files {
		want[p] = f
	}
	for p, f := range l.Private {
		want[strings.Map(func(r rune) rune { // TSK shows control characters as '^'
			if r < 0x20 {
				return '^'
			}
			return r
		}, p)] = f
	}
	for p, f := range want {
		if p == "" {
			continue
		}
		g, ok := got[p]
		if !ok {
			t.Errorf("fls does not list %q", p)
			continue
		}
		delete(got, p)
		typ := map[Kind]string{File: "r/r", Dir: "d/d", Symlink: "l/l"}[f.Kind]
		id := f.CNID
		if f.Inode != 0 {
			id = f.Inode // TSK follows a hardlink to its indirect node
		}
		if g.typ != typ || g.inum != uint64(id) {
			t.Errorf("%q: fls says %s %d, want %s %d", p, g.typ, g.inum, typ, id)
		}
		if f.Kind == Dir {
			continue
		}
		if f.Inode != 0 && !istated[f.Inode] {
			istated[f.Inode] = true
			st := tskRun(t, append(append([]string{"istat"}, extra...), img, strconv.FormatUint(uint64(f.Inode), 10))...)
			if line := fmt.Sprintf("Link count:\t%d\n", f.Nlink); !bytes.Contains(st, []byte(line)) {
				t.Errorf("%q: istat %d does not say %q:\n%s", p, f.Inode, line, st)
			}
		}
		data, err := os.ReadFile(filepath.Join(rec, p))
		if errors.Is(err, fs.ErrNotExist) && len(f.Data) == 0 {
			err = nil // tsk_recover writes no empty files
		}
		if err != nil {
			t.Errorf("%q: tsk_recover: %v", p, err)
		} else if !bytes.Equal(data, f.Data) {
			t.Errorf("%q: tsk_recover gives %d bytes, want %d", p, len(data), len(f.Data))
		}
		if len(f.Data) > 0 && icats < 8 {
			icats++ // icat too, for a few (each run costs 0.2 s)
			if data := tskRun(t, append(append([]string{"icat"}, extra...), img, strconv.FormatUint(g.inum, 10))...); !bytes.Equal(data, f.Data) {
				t.Errorf("%q: icat gives %d bytes, want %d", p, len(data), len(f.Data))
			}
		}
		if f.Rsrc != nil {
			rsrc := tskRun(t, append(append([]string{"icat"}, extra...), img, strconv.FormatUint(g.inum, 10)+"-4353")...)
			if !bytes.Equal(rsrc, f.Rsrc) {
				t.Errorf("%q: icat of the resource fork gives %d bytes, want %d", p, len(rsrc), len(f.Rsrc))
			}
		}
	}
	for p, g := range got {
		t.Errorf("fls lists %q (%s %d), not written", p, g.typ, g.inum)
	}
	checkBody(t, tskRun(t, append(append([]string{"fls", "-r", "-p", "-m", "/"}, extra...), img)...), want)
}

// checkBody checks fls's body-file lines (md5|name|inode|mode|uid|gid|
// size|atime|mtime|ctime|crtime) against the expected permission bits,
// owners, sizes, mtimes and symlink targets.
func checkBody(t *testing.T, body []byte, want map[string]HFSPlusFile) {
	t.Helper()
	seen := 0
	for _, line := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
		col := strings.Split(line, "|")
		if len(col) != 11 {
			t.Fatalf("fls -m line %q", line)
		}
		p := strings.TrimPrefix(col[1], "/")
		f, ok := want[p]
		if i := strings.Index(p, " -> "); !ok && i >= 0 {
			f, ok = want[p[:i]]
			if ok && p[i+4:] != string(f.Data) {
				t.Errorf("%q: fls -m shows the target %q, want %q", p[:i], p[i+4:], f.Data)
			}
		}
		if !ok {
			continue // TSK's virtual files
		}
		seen++
		perm := lsPerm(f.Mode)
		mtime := strconv.FormatInt(f.Mtime.Unix(), 10)
		if f.Mtime.Unix() < 0 {
			mtime = "0" // TSK shows Mac dates before 1970 as 0
		}
		size := strconv.Itoa(len(f.Data))
		if f.Kind == Dir {
			size = col[6]
		}
		if got := []string{col[3][len(col[3])-9:], col[4], col[5], col[6], col[8]}; !slices.Equal(got, []string{perm, strconv.Itoa(int(f.Uid)), strconv.Itoa(int(f.Gid)), size, mtime}) {
			t.Errorf("%q: fls -m says perm, uid, gid, size, mtime %q, want %q", p, got, []string{perm, strconv.Itoa(int(f.Uid)), strconv.Itoa(int(f.Gid)), size, mtime})
		}
	}
	if seen != len(want)-1 {
		t.Errorf("fls -m shows %d of the %d names", seen, len(want)-1)
	}
}

// checkLayoutMatchesSpec checks the layout's expected files against the
// spec's entries themselves, so that a writer bug cannot make both sides
// agree.
func checkLayoutMatchesSpec(t *testing.T, spec HFSPlusSpec, l *HFSPlusLayout) {
	t.Helper()
	for _, e := range spec.Entries {
		f, ok := l.Files[e.Path]
		if !ok {
			t.Errorf("layout lacks %q", e.Path)
			continue
		}
		switch e.Kind {
		case File:
			if !bytes.Equal(f.Data, e.Content()) || !bytes.Equal(f.Rsrc, e.Rsrc) || f.Kind != File {
				t.Errorf("%q: layout's data or fork differs from the spec", e.Path)
			}
		case Symlink:
			if string(f.Data) != e.Target || f.Kind != Symlink {
				t.Errorf("%q: layout's target %q, want %q", e.Path, f.Data, e.Target)
			}
		}
		if e.Kind != Hardlink && f.Mode != e.StatMode() {
			t.Errorf("%q: mode %#o, want %#o", e.Path, f.Mode, e.StatMode())
		}
		if e.Kind == Hardlink {
			target := l.Files[e.Target]
			if f.Inode == 0 || f.Inode != target.Inode || !bytes.Equal(f.Data, target.Data) || f.Nlink < 2 {
				t.Errorf("%q: hardlink to %q: inode %d (target's %d), nlink %d", e.Path, e.Target, f.Inode, target.Inode, f.Nlink)
			}
		}
	}
}

// TestHFSPlusSample builds the sample volume in each block and node size
// and checks it against The Sleuth Kit.
func TestHFSPlusSample(t *testing.T) {
	requireTSK(t)
	for _, c := range []struct{ bs, ns int }{{0, 0}, {512, 512}, {4096, 512}, {512, 4096}} {
		t.Run(strconv.Itoa(c.bs)+"-"+strconv.Itoa(c.ns), func(t *testing.T) {
			spec := HFSPlusSample(c.bs, c.ns)
			img, l := HFSPlus(t, spec)
			checkLayoutMatchesSpec(t, spec, l)
			checkTSK(t, img, l, "HFS+")
			checkRuns(t, img, l)
			// frag/nine and frag/twenty keep extents 9.. in the
			// extents-overflow file: 1 + 2 records.
			raw, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			checkCatalogOrder(t, raw, l, false)
			if n := binary.BigEndian.Uint32(raw[l.Extents+14+6:]); n != 3 {
				t.Errorf("extents-overflow file holds %d records, want 3", n)
			}
			// The catalog has index levels: 2 in 4096-byte nodes, 3 in 512.
			depth := binary.BigEndian.Uint16(raw[l.Catalog+14:])
			if want := map[int]uint16{0: 2, 4096: 2, 512: 3}[c.ns]; depth != want {
				t.Errorf("catalog depth %d, want %d", depth, want)
			}
		})
	}
}

// TestHFSPlusSameBytes: one spec, one image.
func TestHFSPlusSameBytes(t *testing.T) {
	a, _, err := BuildHFSPlusBytes(HFSPlusSample(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := BuildHFSPlusBytes(HFSPlusSample(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("two builds of the sample differ")
	}
}

// TestHFSPlusRefuses: input the format cannot hold is an error, never a
// hang or a panic.
func TestHFSPlusRefuses(t *testing.T) {
	long := strings.Repeat("n", 255)
	for name, spec := range map[string]HFSPlusSpec{
		"255-unit name, 512-byte nodes": {NodeSize: 512, Entries: []HFSPlusEntry{{Entry: Entry{Path: long, Kind: File}}}},
		"256-unit name":                 {Entries: []HFSPlusEntry{{Entry: Entry{Path: long + "x", Kind: File}}}},
		"not UTF-8":                     {Entries: []HFSPlusEntry{{Entry: Entry{Path: "caf\xe9", Kind: File}}}},
		"block size 1000":               {BlockSize: 1000},
		"node size 256":                 {NodeSize: 256},
		"fragments past the blocks":     {Entries: []HFSPlusEntry{{Entry: Entry{Path: "f", Kind: File, Data: []byte("x")}, Fragments: 2}}},
		"one name twice by case":        {Entries: []HFSPlusEntry{{Entry: Entry{Path: "a", Kind: File}}, {Entry: Entry{Path: "A", Kind: File}}}},
		"too small":                     {Size: 64 * 1024, Entries: []HFSPlusEntry{{Entry: Entry{Path: "f", Kind: File, Size: 1 << 20}}}},
		"date before 1904":              {Entries: []HFSPlusEntry{{Entry: Entry{Path: "f", Kind: File, Mtime: DefaultMtime.AddDate(-200, 0, 0)}}}},
		"file as a folder":              {Entries: []HFSPlusEntry{{Entry: Entry{Path: "f", Kind: File}}, {Entry: Entry{Path: "f/g", Kind: File}}}},
		"fifo":                          {Entries: []HFSPlusEntry{{Entry: Entry{Path: "p", Kind: FIFO}}}},
		"over 1 GiB":                    {Size: 2 << 30},
		"inline decmpfs over a node":    {Entries: []HFSPlusEntry{{Entry: Entry{Path: "f", Kind: File, Size: 5000, Seed: 1}, Compress: DecmpfsInline}}},
		"compressed with a fork":        {Entries: []HFSPlusEntry{{Entry: Entry{Path: "f", Kind: File, Data: []byte("x")}, Rsrc: []byte("r"), Compress: DecmpfsRsrc}}},
		"hardlink to the root":          {Entries: []HFSPlusEntry{{Entry: Entry{Path: "l", Kind: Hardlink, Target: ""}}}},
		"folder link in itself":         {Entries: []HFSPlusEntry{{Entry: Entry{Path: "d", Kind: Dir}}, {Entry: Entry{Path: "d/l", Kind: Hardlink, Target: "d"}}}},
		"hardlink to a symlink":         {Entries: []HFSPlusEntry{{Entry: Entry{Path: "s", Kind: Symlink, Target: "x"}}, {Entry: Entry{Path: "l", Kind: Hardlink, Target: "s"}}}},
		"hardlink to nothing":           {Entries: []HFSPlusEntry{{Entry: Entry{Path: "l", Kind: Hardlink, Target: "d"}}}},
	} {
		if _, _, err := BuildHFSPlusBytes(spec); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestHFSX builds the sample as HFSX (case-sensitive, binary order) with
// names that differ only in case, journaled, and checks it with TSK.
func TestHFSX(t *testing.T) {
	requireTSK(t)
	for _, ns := range []int{4096, 512} {
		t.Run(strconv.Itoa(ns), func(t *testing.T) {
			spec := HFSPlusSample(0, ns)
			spec.CaseSensitive = true
			spec.Journaled = true
			spec.Entries = append(spec.Entries,
				HFSPlusEntry{Entry: Entry{Path: "APPLE", Kind: File, Data: []byte("upper\n")}},
				HFSPlusEntry{Entry: Entry{Path: "Apple", Kind: File, Data: []byte("title\n")}},
				HFSPlusEntry{Entry: Entry{Path: "cherry/CAFE\u0301.TXT", Kind: Dir}})
			img, l := HFSPlus(t, spec)
			checkLayoutMatchesSpec(t, spec, l)
			checkTSK(t, img, l, "HFSX")
			raw, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			checkCatalogOrder(t, raw, l, true)
			stat := string(tskRun(t, "fsstat", img))
			for _, s := range []string{"Case Sensitive: yes\n", "Last Mounted By: Mac OS X, Journaled\n", fmt.Sprintf("Journal Info Block: %d\n", journalCheck(t, img))} {
				if !strings.Contains(stat, s) {
					t.Errorf("fsstat does not say %q:\n%s", s, stat)
				}
			}
			if _, ok := l.Private[".journal"]; !ok {
				t.Error("no .journal")
			}
		})
	}
}

// journalCheck reads the journal info block's number from the volume
// header, checks that the block points at an empty journal ("JNLx",
// start == end) and returns the number.
func journalCheck(t *testing.T, img string) uint32 {
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.BigEndian.Uint32(raw[1024+12:])
	bs := binary.BigEndian.Uint32(raw[1024+40:])
	jib := raw[int64(n)*int64(bs):]
	off := binary.BigEndian.Uint64(jib[36:])
	if n == 0 || binary.BigEndian.Uint32(jib) != 1 || off == 0 || off >= uint64(len(raw)) {
		t.Fatalf("journal info block %d: flags %#x, journal at %d", n, binary.BigEndian.Uint32(jib), off)
	}
	jh := raw[off:]
	if string(jh[:4]) != "xLNJ" || binary.LittleEndian.Uint64(jh[8:]) != binary.LittleEndian.Uint64(jh[16:]) {
		t.Errorf("journal at %d: magic %q, start %d, end %d", off, jh[:4], binary.LittleEndian.Uint64(jh[8:]), binary.LittleEndian.Uint64(jh[16:]))
	}
	return n
}

// TestHFSPlusWrapped builds the sample inside an HFS wrapper: TSK finds the
// embedded volume where the layout says and reads it whole; hfsutils mount
// the wrapper as the classic volume it is (its root empty, no free space).
func TestHFSPlusWrapped(t *testing.T) {
	requireTSK(t)
	RequireHFSTools(t, "hls")
	for _, bs := range []int{4096, 512} {
		t.Run(strconv.Itoa(bs), func(t *testing.T) {
			spec := HFSPlusSample(bs, 0)
			spec.Wrapped = true
			spec.Label = "Wrapped"
			spec.Size = 2 << 20 // hfsutils mount nothing under 800 KiB
			img, l := HFSPlus(t, spec)
			if l.Offset == 0 {
				t.Fatal("layout says the volume is at offset 0")
			}
			checkRuns(t, img, l)
			checkTSK(t, img, l, "HFS+")
			stat := string(tskRun(t, "fsstat", img))
			if s := fmt.Sprintf("embedded in an HFS wrapper at offset %d\n", l.Offset); !strings.Contains(stat, s) {
				t.Errorf("fsstat does not say %q:\n%s", s, stat)
			}
			home := t.TempDir()
			hfsutil := func(args ...string) string {
				cmd := exec.Command(args[0], args[1:]...)
				cmd.Env = append(cmd.Environ(), "HOME="+home, "TZ=UTC", "LC_ALL=C")
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
				}
				return string(out)
			}
			hfsutil("hmount", img)
			defer hfsutil("humount")
			if out := hfsutil("hls", "-a"); strings.TrimSpace(out) != "" {
				t.Errorf("hls lists the wrapper's root as %q, want it empty", out)
			}
			if out := hfsutil("hvol"); !strings.Contains(out, `Volume name is "Wrapped"`) || !strings.Contains(out, "Volume has 0 bytes free") {
				t.Errorf("hvol: %s", out)
			}
		})
	}
}

// lsPerm is ls's rwx string of st_mode's permission bits, with setuid,
// setgid and sticky as s/S, s/S and t/T.
func lsPerm(mode uint32) string {
	b := []byte(fs.FileMode(mode & 0o777).String()[1:])
	for _, x := range []struct {
		bit  uint32
		at   int
		l, u byte
	}{{0o4000, 2, 's', 'S'}, {0o2000, 5, 's', 'S'}, {0o1000, 8, 't', 'T'}} {
		if mode&x.bit != 0 {
			if b[x.at] == 'x' {
				b[x.at] = x.l
			} else {
				b[x.at] = x.u
			}
		}
	}
	return string(b)
}

// TestHFSPlusLongNames fills one folder with names of every length class
// in 512-byte nodes: names whose records fit build (and TSK lists them
// all); longer ones are an error (a record over a node, or index records
// so big that a level would not shrink) — promptly, never a hang.
func TestHFSPlusLongNames(t *testing.T) {
	requireTSK(t)
	for _, n := range []int{100, 117, 118, 119, 120, 200, 255} {
		spec := HFSPlusSpec{NodeSize: 512, BlockSize: 512}
		for i := 0; i < 40; i++ {
			name := fmt.Sprintf("%03d", i) + strings.Repeat("x", n-3)
			spec.Entries = append(spec.Entries, HFSPlusEntry{Entry: Entry{Path: "d/" + name, Kind: File, Data: []byte(name[:3])}})
		}
		start := time.Now()
		img, l, err := BuildHFSPlusBytes(spec)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%d units: %v to build", n, d)
		}
		if n <= 117 {
			if err != nil {
				t.Fatalf("%d-unit names: %v", n, err)
			}
			p := filepath.Join(t.TempDir(), "long.img")
			if err := os.WriteFile(p, img, 0o644); err != nil {
				t.Fatal(err)
			}
			checkTSK(t, p, l, "HFS+")
		} else if err == nil {
			t.Errorf("%d-unit names in 512-byte nodes: no error", n)
		}
	}
}

// TestHFSPlusFold checks the case folding against TN1150's table at the
// points that tell it apart from a plain lowercase: NUL sorts last, the
// ignorables are skipped, precomposed letters are left alone (HFS+ names
// are decomposed) and the non-decomposable ones are folded.
func TestHFSPlusFold(t *testing.T) {
	for c, want := range map[uint16]uint16{
		0: 0xFFFF, 'A': 'a', 'z': 'z', '_': '_', 0xC6: 0xE6, 0xC9: 0xC9, 0xD0: 0xF0, 0xD8: 0xF8,
		0x130: 0x130, 0x141: 0x142, 0x1C5: 0x1C6, 0x1CD: 0x1CD, 0x391: 0x3B1, 0x386: 0x386,
		0x401: 0x401, 0x402: 0x452, 0x410: 0x430, 0x531: 0x561, 0x10A0: 0x10D0,
		0x200D: 0, 0x202A: 0, 0xFEFF: 0, 0x2160: 0x2170, 0xFF21: 0xFF41, 0x4E00: 0x4E00,
	} {
		if got := hfsPlusFold(c); got != want {
			t.Errorf("fold(%#04x) = %#04x, want %#04x", c, got, want)
		}
	}
	u := func(s string) []uint16 { n, _ := hfsPlusName(s); return n }
	for _, c := range []struct {
		a, b      string
		fold, bin int
	}{
		{"Ωmega", "αlpha", 1, -1}, // ω > α, but Ω < α
		{"Жук", "аист", 1, -1},
		{"apple", "APPLE", 0, 1},
		{"zw\u200dj", "zwj", 0, 1},
		{"a", "ab", -1, -1},
		{"a\x00", "ab", 1, -1}, // NUL folds to 0xFFFF
	} {
		if got := hfsPlusCompareFolded(u(c.a), u(c.b)); got != c.fold {
			t.Errorf("folded %q vs %q = %d, want %d", c.a, c.b, got, c.fold)
		}
		if got := hfsPlusCompareBinary(u(c.a), u(c.b)); got != c.bin {
			t.Errorf("binary %q vs %q = %d, want %d", c.a, c.b, got, c.bin)
		}
	}
}

// checkCatalogOrder reads the catalog B-tree of a built volume back from
// its bytes: the leaf chain from the header's first leaf holds every leaf
// record, in strictly increasing key order (parent ID, then names as the
// volume compares them), and each index record's key is the first key of
// the node it points to. TSK finds a folder's records by parent ID alone,
// so this is what checks the name order.
func checkCatalogOrder(t *testing.T, raw []byte, l *HFSPlusLayout, caseSensitive bool) {
	t.Helper()
	be := binary.BigEndian
	cat := raw[l.Catalog : l.Catalog+l.CatalogLen]
	ns := int(be.Uint16(cat[14+18:]))
	node := func(n uint32) []byte { return cat[int(n)*ns : int(n+1)*ns] }
	recs := func(nd []byte) [][]byte {
		var out [][]byte
		for i := 0; i < int(be.Uint16(nd[10:])); i++ {
			a, b := be.Uint16(nd[ns-2*(i+1):]), be.Uint16(nd[ns-2*(i+2):])
			out = append(out, nd[a:b])
		}
		return out
	}
	type key struct {
		parent uint32
		name   []uint16
	}
	parse := func(r []byte) key {
		k := key{parent: be.Uint32(r[2:])}
		for i := 0; i < int(be.Uint16(r[6:])); i++ {
			k.name = append(k.name, be.Uint16(r[8+2*i:]))
		}
		return k
	}
	cmp := hfsPlusCompareFolded
	if caseSensitive {
		cmp = hfsPlusCompareBinary
	}
	less := func(a, b key) bool { return a.parent < b.parent || a.parent == b.parent && cmp(a.name, b.name) < 0 }
	var prev *key
	n, count := be.Uint32(cat[14+10:]), 0
	for steps := 0; n != 0; steps++ {
		if steps > len(cat)/ns {
			t.Fatal("catalog leaf chain loops")
		}
		for _, r := range recs(node(n)) {
			k := parse(r)
			if prev != nil && !less(*prev, k) {
				t.Errorf("catalog leaf %d: key %d/%q not after %d/%q", n, k.parent, string(utf16.Decode(k.name)), prev.parent, string(utf16.Decode(prev.name)))
			}
			prev = &k
			count++
		}
		n = be.Uint32(node(n))
	}
	if want := int(be.Uint32(cat[14+6:])); count != want {
		t.Errorf("leaf chain holds %d records, header says %d", count, want)
	}
	// Index records point at nodes whose first key they are.
	for i := 1; i < len(cat)/ns; i++ {
		nd := node(uint32(i))
		if nd[8] != btIndexKind || be.Uint16(nd[10:]) == 0 {
			continue
		}
		for _, r := range recs(nd) {
			kl := 2 + int(be.Uint16(r))
			child := recs(node(be.Uint32(r[kl:])))
			if len(child) == 0 || !bytes.Equal(child[0][:2+int(be.Uint16(child[0]))], r[:kl]) {
				t.Errorf("index node %d: a key is not its child's first key", i)
			}
		}
	}
}

// checkRuns reads every fork back from the image through the layout's
// runs: a file's data fork (unless compressed) is its Data, its resource
// fork its Rsrc.
func checkRuns(t *testing.T, img string, l *HFSPlusLayout) {
	t.Helper()
	raw, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string, runs []HFSPlusRun) []byte {
		var out []byte
		for _, r := range runs {
			if r.Logical != int64(len(out)) || r.Length <= 0 || r.Offset < l.Offset || r.Offset+r.Length > int64(len(raw)) {
				t.Errorf("%q: run %+v out of place", p, r)
				return nil
			}
			out = append(out, raw[r.Offset:r.Offset+r.Length]...)
		}
		return out
	}
	for p, f := range l.Files {
		if f.Kind == Dir {
			continue
		}
		if data := read(p, f.DataRuns); f.Compression == NotCompressed && !bytes.Equal(data, f.Data) {
			t.Errorf("%q: its runs hold %d bytes, not its data (%d)", p, len(data), len(f.Data))
		} else if f.Compression != NotCompressed && len(data) != 0 {
			t.Errorf("%q: compressed, and its data fork has %d bytes", p, len(data))
		}
		if rsrc := read(p, f.RsrcRuns); f.Compression == NotCompressed && !bytes.Equal(rsrc, f.Rsrc) {
			t.Errorf("%q: its resource runs hold %d bytes, not its fork (%d)", p, len(rsrc), len(f.Rsrc))
		}
	}
}
