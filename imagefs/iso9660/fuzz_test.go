package iso9660

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/testimg"
)

// seedSpec is a small tree with one of everything the reader treats
// specially, so that the seeds stay near 100 KB.
func seedSpec() testimg.Spec {
	return testimg.Spec{Entries: []testimg.Entry{
		{Path: "f", Kind: testimg.File, Data: []byte("hello\n")},
		{Path: "h", Kind: testimg.Hardlink, Target: "f"},
		{Path: "l", Kind: testimg.Symlink, Target: "../x/./f"},
		{Path: "e", Kind: testimg.File},
		{Path: "grüße", Kind: testimg.File, Data: []byte("ü")},
		{Path: testimg.DeepPath(9, 2), Kind: testimg.File, Data: []byte("deep")},
	}}
}

// fuzzSeeds masters the seed tree with each tool (no padding) and adds a
// crafted volume with multi-extent and interleaved files and Rock Ridge
// entries of every kind.
func fuzzSeeds(f *testing.F) [][]byte {
	requireTools(f, "xorriso", "genisoimage")
	dir := f.TempDir()
	var seeds [][]byte
	for i, argv := range [][]string{
		{"xorriso", "-as", "mkisofs", "-R", "-J", "-no-pad", "-o", img, tree},
		{"xorriso", "-outdev", img, "-compliance", "new_rr", "-hardlinks", "on", "-map", tree, "/"},
		append(append([]string{}, geniso...), "-R", "-J", "-no-pad", "-o", img, tree),
		append(append([]string{}, geniso...), "-no-pad", "-o", img, tree),
	} {
		p := filepath.Join(dir, fmt.Sprintf("seed%d.iso", i))
		if err := testimg.BuildISO(p, seedSpec(), argv...); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	c := newCraft(40)
	c.fill(30, 4096, 1)
	il := rec("IL.;1", 30, 5000, 0)
	il[26], il[27] = 1, 1
	c.root(append(sp(0), er()...),
		rec("BIG.;1", 30, 4096, 0x80, px(0o100644, 1), nm(1, "big-"), nm(0, "file")),
		rec("BIG.;1", 32, 100, 0),
		rec("LNK.;1", 0, 0, 0, px(0o120777, 1), sl(1, comp(8, ""), comp(1, "u")), sl(0, comp(0, "sr"), comp(4, ""))),
		rec("H.;1", 30, 10, 0, px(0o100644, 2, 5), ce(25, 0, 28)),
		il,
	)
	copy(c.img[25*2048:], nm(0, "continued"))
	return append(seeds, c.img)
}

// FuzzOpenWalk opens any bytes as a volume, walks it twice and reads every
// file: it must never panic, hang or allocate without bound, every entry
// must keep the seam's invariants, and both walks must agree.
func FuzzOpenWalk(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a := fuzzWalk(t, data)
		b := fuzzWalk(t, data)
		if a != b {
			t.Fatalf("two walks differ:\n%s\n----\n%s", a, b)
		}
	})
}

var errEnough = errors.New("enough entries")

// fuzzWalk walks a volume, reading up to 1 MiB of each file and 16 MiB in
// all (a file may legitimately repeat one extent many times), and returns a
// description of the walk.
func fuzzWalk(t *testing.T, data []byte) string {
	var problems int
	opts := imagefs.Options{Report: func(*imagefs.Problem) { problems++ }}
	fsys, err := Open(bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		return "error: " + err.Error()
	}
	var out bytes.Buffer
	n := 0
	readLeft := int64(16 << 20)
	buf := make([]byte, 64<<10)
	err = imagefs.Walk(context.Background(), fsys, &opts, func(p []byte, e *imagefs.Entry) error {
		// Many directories may share one extent (not a cycle, but a
		// walk that grows exponentially): stop the walk, not the reader.
		if n++; n > 2000 {
			return errEnough
		}
		if len(p) > 1 {
			if len(e.Name) == 0 || string(e.Name) == "." || string(e.Name) == ".." || bytes.ContainsAny(e.Name, "/\x00") {
				t.Fatalf("%q: bad name %q", p, e.Name)
			}
		}
		if bytes.IndexByte([]byte("fdlbcps"), e.Type) < 0 {
			t.Fatalf("%q: type %q", p, e.Type)
		}
		var logical int64
		for _, r := range e.Runs {
			if r.Length <= 0 || r.Logical < logical {
				t.Fatalf("%q: run %+v after logical %d", p, r, logical)
			}
			logical = r.Logical + r.Length
		}
		fmt.Fprintf(&out, "%s %c %d %d %d %d\n", p, e.Type, e.ID, e.Size, e.Nlink, len(e.Runs))
		if e.Type != 'f' {
			return nil
		}
		r, err := fsys.Open(e)
		if err != nil {
			fmt.Fprintf(&out, "open: %v\n", err)
			return nil
		}
		for off := int64(0); off < min(e.Size, 1<<20) && readLeft > 0; off += int64(len(buf)) {
			readLeft -= int64(len(buf))
			m, err := r.ReadAt(buf, off)
			if m < 0 || m > len(buf) {
				t.Fatalf("%q: ReadAt returned %d", p, m)
			}
			if err != nil {
				fmt.Fprintf(&out, "read at %d: %v\n", off, err)
				break
			}
		}
		return nil
	})
	fmt.Fprintf(&out, "walk: %v, %d problems\n", err, problems)
	return out.String()
}
