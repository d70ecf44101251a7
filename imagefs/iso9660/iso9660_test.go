package iso9660

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
)

// requireTools skips the test (fails it under CI=true) unless every
// command is installed.
func requireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			testenv.SkipOrFail(t, n+" is not installed (scripts/deps.sh installs it)")
		}
	}
}

// treeSpec is the tree the tests put on every medium: nested and deep
// directories (11 levels, so mkisofs relocates), symlinks, hardlinks, empty
// files, a file of several blocks, names in several scripts and a few
// hundred small files. long adds a name of 200 bytes (Rock Ridge only:
// Joliet stops at 64 characters).
func treeSpec(long bool) testimg.Spec {
	t0 := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	es := []testimg.Entry{
		{Path: "", Kind: testimg.Dir, Mtime: t0},
		{Path: "docs", Kind: testimg.Dir, Mtime: t0.Add(time.Hour)},
		{Path: "docs/readme.txt", Kind: testimg.File, Data: []byte("hello, ISO 9660\n"), Mtime: time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC)},
		{Path: "docs/Mixed Case Name.TXT", Kind: testimg.File, Size: 5000, Seed: 1},
		{Path: "empty", Kind: testimg.File},
		{Path: "empty2", Kind: testimg.File, Mtime: time.Date(2038, 1, 19, 3, 14, 8, 0, time.UTC)},
		{Path: "big.bin", Kind: testimg.File, Size: 1<<20 + 123, Seed: 2},
		{Path: "hard/a", Kind: testimg.File, Size: 3000, Seed: 3},
		{Path: "hard/b", Kind: testimg.Hardlink, Target: "hard/a"},
		{Path: "hard/c", Kind: testimg.Hardlink, Target: "hard/a"},
		{Path: "links/rel", Kind: testimg.Symlink, Target: "../docs/readme.txt"},
		{Path: "links/abs", Kind: testimg.Symlink, Target: "/etc/passwd"},
		{Path: "links/dots", Kind: testimg.Symlink, Target: "../x/./y"},
		// genisoimage writes a broken SL for targets of more than about
		// 250 bytes (its entry length wraps at 256), so this one stays
		// under that; it still spills into a continuation area.
		{Path: "links/long", Kind: testimg.Symlink, Target: strings.Repeat("abcdefghij/", 17) + "end"},
		{Path: testimg.DeepPath(11, 6), Kind: testimg.File, Data: []byte("deep\n")},
		{Path: "unicode/grüße.txt", Kind: testimg.File, Data: []byte("grüße\n")},
		{Path: "unicode/日本語のファイル.txt", Kind: testimg.File, Data: []byte("日本語\n")},
		{Path: "unicode/Ελληνικά", Kind: testimg.File, Size: 100, Seed: 4},
	}
	if long {
		es = append(es, testimg.Entry{Path: "long/" + strings.Repeat("n", 196) + ".txt", Kind: testimg.File, Data: []byte("long\n")})
	}
	for i := range 300 {
		es = append(es, testimg.Entry{Path: fmt.Sprintf("many/f%03d.dat", i), Kind: testimg.File, Size: int64(i * 37 % 4000), Seed: uint64(100 + i)})
	}
	return testimg.Spec{Entries: es}
}

// listing is one walk of an image: its entries by path, and the problems
// reported.
type listing struct {
	fs       *FS
	entries  map[string]*imagefs.Entry
	order    []string
	problems []*imagefs.Problem
}

func openImage(t testing.TB, img string, off, size int64, want Naming) *listing {
	t.Helper()
	fh, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	if size < 0 {
		st, err := fh.Stat()
		if err != nil {
			t.Fatal(err)
		}
		size = st.Size() - off
	}
	l := &listing{entries: map[string]*imagefs.Entry{}}
	var mu sync.Mutex
	opts := imagefs.Options{Report: func(p *imagefs.Problem) {
		mu.Lock()
		l.problems = append(l.problems, p)
		mu.Unlock()
	}}
	l.fs, err = OpenNaming(io.NewSectionReader(fh, off, size), size, opts, want)
	if err != nil {
		t.Fatalf("%s: %v", img, err)
	}
	err = imagefs.Walk(context.Background(), l.fs, &opts, func(p []byte, e *imagefs.Entry) error {
		if _, dup := l.entries[string(p)]; dup {
			t.Errorf("path %q listed twice", p)
		}
		l.entries[string(p)] = e
		l.order = append(l.order, string(p))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// content reads an entry's whole content through the reader.
func (l *listing) content(e *imagefs.Entry) ([]byte, error) {
	r, err := l.fs.Open(e)
	if err != nil {
		return nil, err
	}
	b := make([]byte, e.Size)
	n, err := r.ReadAt(b, 0)
	if n == len(b) {
		return b, nil
	}
	return b[:n], err
}

// want says how a medium shows the spec's tree.
type want struct {
	naming    Naming
	extra     []string // paths the tool adds (rr_moved)
	noLinks   bool     // symlinks are not on the medium (no Rock Ridge)
	linkFiles bool     // symlinks are empty files (the Joliet tree of a Rock Ridge disc)
	hardlinks bool     // hardlinks share an ID and count their names
	attrs     bool     // Rock Ridge attributes: link counts
	maxDepth  int      // directories deeper than this many names are left off (Joliet without relocation)
}

// checkTree compares a walk with the spec put on the medium: the same
// paths, types, sizes, mtimes, symlink targets and bytes.
func checkTree(t *testing.T, l *listing, spec testimg.Spec, w want) {
	t.Helper()
	if l.fs.Naming() != w.naming {
		t.Errorf("naming = %s, want %s", l.fs.Naming(), w.naming)
	}
	if len(l.problems) > 0 {
		t.Errorf("problems reported on an undamaged image: %v", l.problems)
	}
	type exp struct {
		e      testimg.Entry
		target string
		noTime bool
	}
	wantPaths := map[string]exp{"/": {e: testimg.Entry{Kind: testimg.Dir}}}
	byPath := map[string]testimg.Entry{}
	groups := map[string][]string{}
	for _, e := range spec.Entries {
		p := "/" + e.Path
		if e.Path == "" {
			wantPaths["/"] = exp{e: e}
			continue
		}
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := wantPaths[d]; !ok {
				wantPaths[d] = exp{e: testimg.Entry{Path: d[1:], Kind: testimg.Dir}}
			}
		}
		if e.Kind == testimg.Symlink && w.noLinks {
			continue
		}
		byPath[e.Path] = e
		if e.Kind == testimg.Symlink && w.linkFiles {
			// Dated as the link's target (genisoimage stats through it).
			wantPaths[p] = exp{e: testimg.Entry{Path: e.Path, Kind: testimg.File}, noTime: true}
			continue
		}
		if e.Kind == testimg.Hardlink {
			target := byPath[e.Target]
			groups[e.Target] = append(groups[e.Target], p)
			wantPaths[p] = exp{e: target, target: e.Target}
			continue
		}
		wantPaths[p] = exp{e: e}
	}
	if w.maxDepth > 0 {
		for p, x := range wantPaths {
			d := p
			if x.e.Kind != testimg.Dir {
				d = path.Dir(p)
			}
			if strings.Count(d, "/") > w.maxDepth {
				delete(wantPaths, p)
			}
		}
	}
	for _, x := range w.extra {
		wantPaths[x] = exp{e: testimg.Entry{Kind: testimg.Dir, Path: "?"}}
	}
	for p := range l.entries {
		if _, ok := wantPaths[p]; !ok {
			t.Errorf("%s: on the medium but not in the tree", p)
		}
	}
	group := map[string]string{} // path → its hardlink group's first path
	for first, others := range groups {
		group["/"+first] = first
		for _, o := range others {
			group[o] = first
		}
	}
	ids := map[uint64]string{}
	for p, x := range wantPaths {
		e, ok := l.entries[p]
		if !ok {
			t.Errorf("%s: in the tree but not listed", p)
			continue
		}
		if x.e.Path == "?" {
			continue
		}
		if prev, dup := ids[e.ID]; dup && !(w.hardlinks && group[p] != "" && group[p] == group[prev]) {
			t.Errorf("%s: ID %d also belongs to %s", p, e.ID, prev)
		}
		ids[e.ID] = p
		wantType := map[testimg.Kind]byte{testimg.File: 'f', testimg.Dir: 'd', testimg.Symlink: 'l'}[x.e.Kind]
		if e.Type != wantType {
			t.Errorf("%s: type %c, want %c", p, e.Type, wantType)
			continue
		}
		if !x.noTime {
			if got, want := e.Mtime.Unix(), mtimeOf(x.e).Unix(); got != want && !(p == "/" && x.e.Mtime.IsZero()) {
				t.Errorf("%s: mtime %v, want %v", p, e.Mtime.UTC(), mtimeOf(x.e).UTC())
			}
		}
		switch e.Type {
		case 'f':
			data, err := l.content(e)
			if err != nil {
				t.Errorf("%s: reading: %v", p, err)
			} else if !bytes.Equal(data, x.e.Content()) {
				t.Errorf("%s: %d bytes differ from the %d put on the medium", p, len(data), x.e.FileSize())
			}
		case 'l':
			if string(e.Target) != x.e.Target || e.Size != int64(len(x.e.Target)) {
				t.Errorf("%s: target %q (size %d), want %q", p, e.Target, e.Size, x.e.Target)
			}
		}
	}
	if w.hardlinks {
		for first, others := range groups {
			a := l.entries["/"+first]
			for _, o := range others {
				b := l.entries[o]
				if a == nil || b == nil {
					continue
				}
				if a.ID != b.ID {
					t.Errorf("hardlinks /%s and %s: IDs %d and %d differ", first, o, a.ID, b.ID)
				}
				if w.attrs && (a.Nlink != uint64(len(others)+1) || b.Nlink != a.Nlink) {
					t.Errorf("hardlinks /%s and %s: nlink %d and %d, want %d", first, o, a.Nlink, b.Nlink, len(others)+1)
				}
			}
		}
	}
}

func mtimeOf(e testimg.Entry) time.Time {
	if e.Mtime.IsZero() {
		return testimg.DefaultMtime
	}
	return e.Mtime
}

// tskEntry is one line of fls -r -p.
type tskEntry struct {
	typ  string // "r", "d", …
	inum string
	path string
}

// fls lists an image with The Sleuth Kit (sector offset off), leaving out
// the orphan files it invents from unreferenced extents.
func fls(t *testing.T, img string, off int64) (entries []tskEntry, orphans int) {
	t.Helper()
	out, err := exec.Command("fls", "-r", "-p", "-o", strconv.FormatInt(off, 10), img).Output()
	if err != nil {
		t.Fatalf("fls %s: %v", img, err)
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		meta, p, ok := strings.Cut(line, "\t")
		if !ok {
			t.Fatalf("fls: line %q", line)
		}
		f := strings.Fields(meta)
		if strings.HasPrefix(p, "$OrphanFiles") {
			if p != "$OrphanFiles" {
				orphans++
			}
			continue
		}
		entries = append(entries, tskEntry{typ: f[0][strings.Index(f[0], "/")+1:], inum: strings.TrimSuffix(f[len(f)-1], ":"), path: "/" + p})
	}
	return entries, orphans
}

// checkTSK compares a walk with The Sleuth Kit's, which reads the Joliet
// tree when there is one and the primary tree otherwise (never Rock
// Ridge): every path fls lists is listed with the same type and, for a
// regular file, the bytes tsk_recover extracts; and every entry the reader
// lists, fls lists (leaving out the orphan files TSK invents from records
// that share an extent).
func checkTSK(t *testing.T, img string, sectorOff int64, l *listing) {
	t.Helper()
	entries, _ := fls(t, img, sectorOff)
	dir := t.TempDir()
	if out, err := exec.Command("tsk_recover", "-a", "-o", strconv.FormatInt(sectorOff, 10), img, dir).CombinedOutput(); err != nil {
		t.Fatalf("tsk_recover %s: %v\n%s", img, err, out)
	}
	lower := l.fs.Naming() == Primary
	ours := map[string]*imagefs.Entry{}
	for p, e := range l.entries {
		if lower {
			p = strings.ToLower(p)
		}
		ours[p] = e
	}
	matched := 0
	for _, te := range entries {
		p := te.path
		if lower {
			p = strings.ToLower(p)
		}
		e, ok := ours[p]
		if !ok {
			t.Errorf("TSK lists %s (%s %s); the reader does not", te.path, te.typ, te.inum)
			continue
		}
		matched++
		switch {
		case te.typ == "d" && e.Type != 'd', te.typ == "r" && e.Type != 'f' && e.Type != 'l':
			t.Errorf("%s: TSK type %s, reader %c", te.path, te.typ, e.Type)
		case te.typ == "r" && e.Type == 'f':
			want, err := os.ReadFile(dir + te.path)
			if os.IsNotExist(err) && e.Size == 0 {
				continue // tsk_recover writes no empty files
			}
			if err != nil {
				t.Errorf("%s: extracted by tsk_recover: %v", te.path, err)
				continue
			}
			got, err := l.content(e)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: reader gives %d bytes (%v), TSK %d, and they differ", te.path, len(got), err, len(want))
			}
		}
	}
	if missing := len(l.entries) - 1 - matched; missing != 0 {
		t.Errorf("the reader lists %d entries TSK does not", missing)
	}
	if matched < 10 {
		t.Errorf("only %d entries matched TSK's listing", matched)
	}
}

// tsksorted is for error messages.
func tsksorted(m map[string]*imagefs.Entry) []string {
	out := make([]string, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
