package testimg

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/testenv"
)

// requireTSK fails under CI, or skips, without The Sleuth Kit.
func requireTSK(t *testing.T) {
	t.Helper()
	for _, name := range []string{"fls", "icat", "fsstat", "tsk_recover"} {
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
	for p, f := range l.Files {
		if p == "" {
			continue
		}
		g, ok := got[p]
		if !ok {
			t.Errorf("fls does not list %q", p)
			continue
		}
		delete(got, p)
		want := map[Kind]string{File: "r/r", Dir: "d/d", Symlink: "l/l"}[f.Kind]
		if g.typ != want || g.inum != uint64(f.CNID) {
			t.Errorf("%q: fls says %s %d, want %s %d", p, g.typ, g.inum, want, f.CNID)
		}
		if f.Kind == Dir {
			continue
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
	} {
		if _, _, err := BuildHFSPlusBytes(spec); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
