package iso9660

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/testimg"
)

// damageSpec is the tree of the damage tests: the test tree without the
// 200-byte name, so that its Joliet view matches it too.
func damageSpec() testimg.Spec { return treeSpec(false) }

func genisoRJ(t *testing.T, spec testimg.Spec, extra ...string) string {
	t.Helper()
	requireTools(t, "genisoimage")
	argv := append(append(append([]string{}, geniso...), extra...), "-o", img, tree)
	return testimg.ISO(t, spec, argv...)
}

// copyImage gives the test its own copy of an image to damage.
func copyImage(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "damaged.iso")
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func garbage(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// specFiles maps the walk path of every regular file of spec to its bytes.
func specFiles(spec testimg.Spec) map[string][]byte {
	m := map[string][]byte{}
	byPath := map[string]testimg.Entry{}
	for _, e := range spec.Entries {
		byPath[e.Path] = e
		switch e.Kind {
		case testimg.File:
			m["/"+e.Path] = e.Content()
		case testimg.Hardlink:
			m["/"+e.Path] = byPath[e.Target].Content()
		}
	}
	return m
}

// readAll reads every regular file of a walk and checks that what reads is
// what was put on the medium: a file either reads whole and right, or fails
// with an error; never wrong bytes. It returns the failures by path.
func readAll(t *testing.T, l *listing, files map[string][]byte) map[string]error {
	t.Helper()
	fails := map[string]error{}
	for p, e := range l.entries {
		if e.Type != 'f' {
			continue
		}
		got, err := l.content(e)
		if err != nil {
			fails[p] = err
			continue
		}
		if want, ok := files[p]; ok && string(got) != string(want) {
			t.Errorf("%s: read %d bytes without error, but they are not what was put on the medium", p, len(got))
		}
	}
	return fails
}

func hasProblem(ps []*imagefs.Problem, kind string, lo, hi int64) bool {
	for _, p := range ps {
		if p.Kind == kind && p.Offset >= lo && p.Offset < hi {
			return true
		}
	}
	return false
}

// TestTruncated cuts a disc short twice: inside the file data (files past
// the cut fail with ErrBeyondEnd at the cut, the others read whole), and
// inside the directories (a directory past the cut is reported and the walk
// goes on).
func TestTruncated(t *testing.T) {
	spec := damageSpec()
	orig := genisoRJ(t, spec, "-R", "-J")
	files := specFiles(spec)
	full := openImage(t, orig, 0, -1, "")
	st, _ := os.Stat(orig)

	t.Run("data", func(t *testing.T) {
		cut := st.Size() * 6 / 10
		cut -= cut % 2048
		dmg := copyImage(t, orig)
		if err := testimg.Truncate(dmg, cut); err != nil {
			t.Fatal(err)
		}
		l := openImage(t, dmg, 0, -1, "")
		if !hasProblem(l.problems, "truncated", 16*2048, 17*2048) {
			t.Errorf("no truncated volume reported: %v", l.problems)
		}
		if len(l.entries) != len(full.entries) {
			t.Errorf("%d entries listed, %d on the whole disc", len(l.entries), len(full.entries))
		}
		fails := readAll(t, l, files)
		beyond := 0
		for p, e := range l.entries {
			if e.Type != 'f' {
				continue
			}
			past := false
			for _, r := range e.Runs {
				past = past || r.Offset+r.Length > cut
			}
			err := fails[p]
			var re *imagefs.ReadError
			switch {
			case past && !errors.Is(err, imagefs.ErrBeyondEnd):
				t.Errorf("%s lies past the cut but reads with error %v", p, err)
			case past && (!errors.As(err, &re) || re.Offset < cut):
				t.Errorf("%s: error %v does not name an offset at or past the cut %d", p, err, cut)
			case !past && err != nil:
				t.Errorf("%s lies before the cut but fails: %v", p, err)
			case past:
				beyond++
			}
		}
		if beyond == 0 {
			t.Error("no file lies past the cut: the test cuts nothing")
		}
		if !hasProblem(l.problems, "out_of_volume", 0, cut) {
			t.Errorf("files past the end not reported: %v", l.problems)
		}
	})

	t.Run("directories", func(t *testing.T) {
		// Cut in the middle of the directory records: after the root's.
		root, _ := full.fs.Root()
		cut := root.Runs[0].Offset + 3*2048
		dmg := copyImage(t, orig)
		if err := testimg.Truncate(dmg, cut); err != nil {
			t.Fatal(err)
		}
		l := openImage(t, dmg, 0, -1, "")
		if len(l.entries) < 5 {
			t.Errorf("only %d entries listed", len(l.entries))
		}
		unreadable := 0
		for _, p := range l.problems {
			if p.Kind == "unreadable_dir" {
				unreadable++
			}
		}
		if unreadable == 0 {
			t.Errorf("no directory past the cut reported: %v", l.problems)
		}
		fails := readAll(t, l, files)
		for p, err := range fails {
			if !errors.Is(err, imagefs.ErrBeyondEnd) {
				t.Errorf("%s: %v, want ErrBeyondEnd", p, err)
			}
		}
	})
}

// TestGarbageOverRoot overwrites the primary root directory. On a Rock
// Ridge + Joliet disc the Rock Ridge signature is gone with it, so the
// reader takes the Joliet tree, as Linux would, and every file still reads.
// On a Rock Ridge disc without Joliet the damage is reported with its
// offsets, whatever the garbage parses as is listed, and nothing panics.
func TestGarbageOverRoot(t *testing.T) {
	spec := damageSpec()
	for _, tc := range []struct {
		name   string
		args   []string
		joliet bool
	}{
		{"rock ridge and joliet", []string{"-R", "-J"}, true},
		{"rock ridge", []string{"-R"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := genisoRJ(t, spec, tc.args...)
			root, _ := openImage(t, orig, 0, -1, Primary).fs.Root()
			dmg := copyImage(t, orig)
			at := root.Runs[0].Offset
			if err := testimg.WriteAt(dmg, at, garbage(int(root.Runs[0].Length), 1)); err != nil {
				t.Fatal(err)
			}
			l := openImage(t, dmg, 0, -1, "")
			if tc.joliet {
				checkTree(t, l, spec, want{naming: Joliet, linkFiles: true})
				return
			}
			if l.fs.Naming() != Primary {
				t.Errorf("naming %s after the root's SP is gone, want primary", l.fs.Naming())
			}
			if !hasProblem(l.problems, "corrupt", at, at+root.Runs[0].Length) {
				t.Errorf("no damage reported in the root directory at %d: %v", at, l.problems)
			}
			readAll(t, l, nil)
		})
	}
}

// TestGarbageOverPathTables overwrites both path tables: the reader never
// uses them, so the walk is the undamaged one.
func TestGarbageOverPathTables(t *testing.T) {
	spec := damageSpec()
	orig := genisoRJ(t, spec, "-R", "-J")
	dmg := copyImage(t, orig)
	pvd := make([]byte, 2048)
	fh, err := os.Open(dmg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fh.ReadAt(pvd, 16*2048)
	fh.Close()
	if err != nil {
		t.Fatal(err)
	}
	size := int(binary.LittleEndian.Uint32(pvd[132:]))
	lpt := int64(binary.LittleEndian.Uint32(pvd[140:])) * 2048
	mpt := int64(binary.BigEndian.Uint32(pvd[148:])) * 2048
	if size == 0 || lpt == 0 || mpt == 0 {
		t.Fatalf("no path tables in the PVD: size %d, L %d, M %d", size, lpt, mpt)
	}
	for i, at := range []int64{lpt, mpt} {
		if err := testimg.WriteAt(dmg, at, garbage(size, uint64(i+2))); err != nil {
			t.Fatal(err)
		}
	}
	checkTree(t, openImage(t, dmg, 0, -1, ""), spec, want{naming: RockRidge, extra: []string{"/rr_moved"}, hardlinks: true, attrs: true})
}

// findRecord returns the volume offset of the record named name (its
// primary identifier) in the directory whose records start at dir.
func findRecord(t *testing.T, image string, dir, dirLen int64, name string) int64 {
	t.Helper()
	b := make([]byte, dirLen)
	fh, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.ReadAt(b, dir); err != nil {
		t.Fatal(err)
	}
	for pos := 0; pos < len(b); {
		if b[pos] == 0 {
			pos = (pos/2048 + 1) * 2048
			continue
		}
		rec, ok := parseRecord(b[pos:])
		if !ok {
			t.Fatalf("record at %d does not parse", dir+int64(pos))
		}
		if strings.EqualFold(string(rec.name), name) {
			return dir + int64(pos)
		}
		pos += rec.length
	}
	t.Fatalf("no record %q in the directory at %d", name, dir)
	return 0
}

// setExtent points a directory record at another block (both byte orders).
func setExtent(t *testing.T, image string, rec int64, block uint32) {
	t.Helper()
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b, block)
	binary.BigEndian.PutUint32(b[4:], block)
	if err := testimg.WriteAt(image, rec+2, b); err != nil {
		t.Fatal(err)
	}
}

// TestDirectoryPointsAtAncestor makes the record of /d000-x/d001-x point at
// /d000-x's own records, and another root record point at the root: the
// walk reports each cycle, does not enter it, and reads everything else.
func TestDirectoryPointsAtAncestor(t *testing.T) {
	spec := damageSpec()
	orig := genisoRJ(t, spec, "-R")
	full := openImage(t, orig, 0, -1, "")
	dmg := copyImage(t, orig)
	root := full.entries["/"]
	d0 := full.entries["/d000-x"]
	rec := findRecord(t, orig, d0.Runs[0].Offset, d0.Runs[0].Length, "D001_X")
	setExtent(t, dmg, rec, uint32(d0.Runs[0].Offset/2048))
	docs := findRecord(t, orig, root.Runs[0].Offset, root.Runs[0].Length, "DOCS")
	setExtent(t, dmg, docs, uint32(root.Runs[0].Offset/2048))

	l := openImage(t, dmg, 0, -1, "")
	cycles := 0
	for _, p := range l.problems {
		if p.Kind == "cycle" {
			cycles++
		}
	}
	if cycles != 2 {
		t.Errorf("%d cycles reported, want 2: %v", cycles, l.problems)
	}
	for p, e := range full.entries {
		gone := strings.HasPrefix(p, "/d000-x/d001-x/") || strings.HasPrefix(p, "/docs/")
		if _, ok := l.entries[p]; ok == gone {
			t.Errorf("%s: listed %v, want %v", p, ok, !gone)
		}
		_ = e
	}
	fails := readAll(t, l, specFiles(spec))
	if len(fails) > 0 {
		t.Errorf("files fail to read: %v", fails)
	}
}

// TestRecordPastSector makes the last record of the first sector of /many
// run past the sector's end: it is reported with its offset, the rest of
// that sector is lost, and the records of the following sectors are read.
func TestRecordPastSector(t *testing.T) {
	spec := damageSpec()
	orig := genisoRJ(t, spec, "-R")
	full := openImage(t, orig, 0, -1, "")
	many := full.entries["/many"]
	start := many.Runs[0].Offset
	b := make([]byte, 2048)
	fh, _ := os.Open(orig)
	fh.ReadAt(b, start)
	fh.Close()
	last := 0
	for pos := 0; pos < 2048 && b[pos] != 0; pos += int(b[pos]) {
		last = pos
	}
	dmg := copyImage(t, orig)
	if err := testimg.WriteAt(dmg, start+int64(last), []byte{255}); err != nil {
		t.Fatal(err)
	}
	l := openImage(t, dmg, 0, -1, "")
	if !hasProblem(l.problems, "corrupt", start+int64(last), start+int64(last)+1) {
		t.Errorf("no problem at the record's offset %d: %v", start+int64(last), l.problems)
	}
	lost := 0
	for p := range full.entries {
		if _, ok := l.entries[p]; !ok {
			lost++
			if path.Dir(p) != "/many" {
				t.Errorf("%s lost", p)
			}
		}
	}
	if lost != 1 {
		t.Errorf("%d entries lost, want the one record", lost)
	}
	if n := len(l.entries); n < len(full.entries)-1 {
		t.Errorf("%d entries, want %d", n, len(full.entries)-1)
	}
}
