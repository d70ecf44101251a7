package hfs_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/hfs"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
)

// plusWant is what a sample HFS+ volume holds at a path.
type plusWant struct {
	typ    byte
	data   []byte
	rsrc   []byte
	target string
	nlink  uint64
}

func seeded(seed uint64, n int) []byte {
	b := make([]byte, n)
	testimg.ContentAt(seed, b, 0)
	return b
}

// plusSample builds an HFS+ volume (HFSX if hfsx) of 4 KiB blocks with
// nFiles files in a directory of their own, and returns it with what a
// reader must find.
func plusSample(hfsx bool, nFiles int) ([]byte, map[string]plusWant) {
	b := newPlusBuilder(4096, 1024)
	b.hfsx = hfsx
	want := map[string]plusWant{"/": {typ: 'd'}}
	file := func(parent uint32, dir, name string, f plusFile) uint32 {
		want[dir+"/"+name] = plusWant{typ: 'f', data: f.data, rsrc: f.rsrc, nlink: 1}
		return b.file(parent, name, f)
	}
	dir := func(parent uint32, path, name string) uint32 {
		want[path+"/"+name] = plusWant{typ: 'd'}
		return b.dir(parent, name)
	}
	file(2, "", "hello.txt", plusFile{data: []byte("hello world\n")})
	file(2, "", "empty", plusFile{})
	b.file(2, "a/b", plusFile{data: []byte("a slash\n")})
	want["/a:b"] = plusWant{typ: 'f', data: []byte("a slash\n"), nlink: 1}
	// Stored decomposed (NFD), as macOS stores it; read as stored.
	file(2, "", "A\u0308rger \u00fcber \u03c0", plusFile{data: seeded(1, 5000)})
	docs := dir(2, "", "Docs")
	sub := dir(docs, "/Docs", "Sub Dir")
	file(sub, "/Docs/Sub Dir", "deep.txt", plusFile{data: seeded(2, 12)})
	dir(docs, "/Docs", "empty dir")
	file(2, "", "with rsrc", plusFile{data: seeded(3, 900), rsrc: seeded(4, 7000)})
	file(docs, "/Docs", "rsrc only", plusFile{rsrc: seeded(5, 300)})
	// Ten one-block extents, two of them in extents-overflow records,
	// for both forks.
	file(2, "", "fragmented", plusFile{data: seeded(6, 10*4096-100), rsrc: seeded(7, 9*4096+1), gap: true})
	b.file(2, "link", plusFile{data: []byte("Docs/Sub Dir/deep.txt"), typ: "slnk", creator: "rhap", mode: 0o120755})
	want["/link"] = plusWant{typ: 'l', target: "Docs/Sub Dir/deep.txt", nlink: 1}
	b.file(2, "fifo", plusFile{mode: 0o010644})
	want["/fifo"] = plusWant{typ: 'p', nlink: 1}
	hl := seeded(8, 3000)
	b.hardlinks(hl, map[uint32]string{2: "hardlink one", docs: "hardlink two"})
	want["/hardlink one"] = plusWant{typ: 'f', data: hl, nlink: 2}
	want["/Docs/hardlink two"] = plusWant{typ: 'f', data: hl, nlink: 2}
	b.dir(2, ".HFS+ Private Directory Data\r")
	b.file(2, ".journal", plusFile{data: make([]byte, 4096)})
	b.file(2, ".journal_info_block", plusFile{data: make([]byte, 512)})
	c3 := bytes.Repeat([]byte("compressible text "), 400)
	b.compressed(2, "compressed inline", c3, 3)
	want["/compressed inline"] = plusWant{typ: 'f', data: c3, nlink: 1}
	c4 := seeded(9, 150000)
	for i := 0; i < len(c4); i += 3 {
		c4[i] = 0 // compressible, but not all of it
	}
	b.compressed(docs, "compressed in rsrc", c4, 4)
	want["/Docs/compressed in rsrc"] = plusWant{typ: 'f', data: c4, nlink: 1}
	if nFiles > 0 {
		many := dir(2, "", "many")
		for i := 0; i < nFiles; i++ {
			file(many, "/many", fmt.Sprintf("file %04d with a long name", i), plusFile{data: seeded(uint64(100+i), i*37%3000)})
		}
	}
	if hfsx {
		file(2, "", "HELLO.TXT", plusFile{data: []byte("upper case\n")})
	}
	return b.build(), want
}

func openWalkPlus(t *testing.T, img []byte) (*hfs.PlusVolume, map[string]walked, []string, []*imagefs.Problem) {
	t.Helper()
	var probs []*imagefs.Problem
	opts := imagefs.Options{Report: func(p *imagefs.Problem) { probs = append(probs, p) }}
	v, err := hfs.OpenPlus(bytes.NewReader(img), int64(len(img)), opts)
	if err != nil {
		t.Fatalf("OpenPlus: %v", err)
	}
	got := map[string]walked{}
	var order []string
	err = imagefs.Walk(context.Background(), v, &opts, func(p []byte, e *imagefs.Entry) error {
		w := walked{e: e}
		if e.Type == 'f' {
			r, err := v.Open(e)
			if err != nil {
				t.Fatalf("Open %q: %v", p, err)
			}
			w.data, w.err = io.ReadAll(io.NewSectionReader(r, 0, e.Size))
		}
		got[string(p)] = w
		order = append(order, string(p))
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	return v, got, order, probs
}

// checkPlus compares a walk with what was put on the volume.
func checkPlus(t *testing.T, got map[string]walked, want map[string]plusWant) {
	t.Helper()
	n := 0
	for p, w := range want {
		n++
		g, ok := got[p]
		if !ok {
			t.Errorf("%q missing from the walk", p)
			continue
		}
		if g.e.Type != w.typ {
			t.Errorf("%q: type %c, want %c", p, g.e.Type, w.typ)
			continue
		}
		switch w.typ {
		case 'f':
			if g.err != nil || !bytes.Equal(g.data, w.data) || g.e.Nlink != w.nlink {
				t.Errorf("%q: %d bytes (%v), nlink %d; want %d bytes, nlink %d", p, len(g.data), g.err, g.e.Nlink, len(w.data), w.nlink)
			}
			fp := p + "/..namedfork/rsrc"
			f, ok := got[fp]
			if len(w.rsrc) == 0 {
				if ok {
					t.Errorf("%q: a resource fork where none was put", p)
				}
				continue
			}
			n++
			if !ok || f.err != nil || !bytes.Equal(f.data, w.rsrc) || f.e.ID != imagefs.ForkID(g.e.ID, 1) {
				t.Errorf("%q: resource fork %+v (%v), want %d bytes", fp, f.e, f.err, len(w.rsrc))
			}
		case 'l':
			if string(g.e.Target) != w.target || g.e.Size != int64(len(w.target)) {
				t.Errorf("%q: target %q, want %q", p, g.e.Target, w.target)
			}
		}
	}
	if len(got) != n {
		var extra []string
		for p := range got {
			if _, ok := want[p]; !ok && !bytes.Contains([]byte(p), []byte("/..namedfork/")) {
				extra = append(extra, p)
			}
		}
		t.Errorf("walk has %d entries, want %d; not put: %q", len(got), n, extra)
	}
}

func TestPlusVolume(t *testing.T) {
	img, want := plusSample(false, 0)
	v, got, _, probs := openWalkPlus(t, img)
	if len(probs) != 0 {
		t.Errorf("problems on a sound volume: %v", probs)
	}
	checkPlus(t, got, want)
	info := v.Info()
	if info.Label != "Test" || info.Signature != "H+" || info.CaseSensitive || info.Wrapped || info.BlockSize != 4096 {
		t.Errorf("info %+v", info)
	}
	// Identity: the CNID; both names of the hardlink share the indirect
	// node's.
	if a, b := got["/hardlink one"].e, got["/Docs/hardlink two"].e; a.ID != b.ID || a.ID == 0 {
		t.Errorf("hardlinks: ids %d and %d", a.ID, b.ID)
	}
	if got["/"].e.ID != hfs.RootID || got["/"].e.Nlink != 2+1 {
		t.Errorf("root %+v: want CNID 2 and nlink 3 (Docs; the private directories not counted)", got["/"].e)
	}
	// HFS+ dates are UTC seconds since 1904.
	if m := got["/hello.txt"].e.Mtime; m.Before(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)) || m.After(time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("mtime %v", m)
	}
	// Fragmented forks: ten runs each, read whole above.
	if f := got["/fragmented"]; len(f.e.Runs) != 10 || len(f.e.Forks[0].Runs) != 10 {
		t.Errorf("fragmented: %d and %d runs, want 10 and 10", len(f.e.Runs), len(f.e.Forks[0].Runs))
	}
	// Compressed files: Encoded, their resource fork (type 4) not a fork.
	c4 := got["/Docs/compressed in rsrc"].e
	if !c4.Encoded || len(c4.Forks) != 0 || len(c4.Runs) == 0 || !got["/compressed inline"].e.Encoded {
		t.Errorf("compressed: %+v", c4)
	}
	// Registered for probe's type.
	fsys, err := imagefs.Open("hfsplus", bytes.NewReader(img), int64(len(img)), imagefs.Options{})
	if err != nil || fsys.Type() != "hfsplus" {
		t.Fatalf("imagefs.Open hfsplus: %v", err)
	}
}

// TestPlusWrapped: the same volume embedded in an HFS wrapper reads the
// same, every offset counted from the wrapper's start.
func TestPlusWrapped(t *testing.T) {
	img, want := plusSample(false, 0)
	w := wrap(img, 4096)
	v, got, _, probs := openWalkPlus(t, w)
	if len(probs) != 0 {
		t.Errorf("problems: %v", probs)
	}
	checkPlus(t, got, want)
	if info := v.Info(); !info.Wrapped || info.Offset != 8*512+2*4096 {
		t.Errorf("info %+v", info)
	}
	_, bare, _, _ := openWalkPlus(t, img)
	for p, g := range got {
		for i, r := range g.e.Runs {
			if br := bare[p].e.Runs[i]; r.Offset != br.Offset+8*512+2*4096 {
				t.Fatalf("%q: run at %d, bare at %d", p, r.Offset, br.Offset)
			}
		}
	}
	// The HFS reader leaves it to this one.
	if _, err := hfs.Open(bytes.NewReader(w), int64(len(w)), imagefs.Options{}); err == nil {
		t.Error("hfs.Open read a wrapper")
	}
}

// TestPlusHFSX: an HFSX volume with binary key order holds names that
// differ only in case.
func TestPlusHFSX(t *testing.T) {
	img, want := plusSample(true, 0)
	v, got, _, probs := openWalkPlus(t, img)
	if len(probs) != 0 {
		t.Errorf("problems: %v", probs)
	}
	checkPlus(t, got, want)
	if info := v.Info(); info.Signature != "HX" || !info.CaseSensitive {
		t.Errorf("info %+v", info)
	}
}

var flsLine = regexp.MustCompile(`^([-a-zA-Z]/[-a-zA-Z]) (\* )?(\d+)(\(realloc\))?:\t(.*)$`)

// TestPlusTSK: The Sleuth Kit (fls, icat), the reference HFS+ reader,
// lists the same paths with the same CNIDs (a hardlink's the indirect
// node's) and gives the same bytes of every file — a compressed file's
// decoded — and of every resource fork (icat's attribute 4353), on a bare
// and on a wrapped volume of the test builder and on one of
// testimg.WriteHFSPlus; the private directories, the journal files and
// TSK's special files ($CatalogFile …) aside.
func TestPlusTSK(t *testing.T) {
	for _, n := range []string{"fls", "icat"} {
		if _, err := exec.LookPath(n); err != nil {
			testenv.SkipOrFail(t, n+" is not installed (scripts/deps.sh installs sleuthkit)")
		}
	}
	bare, _ := plusSample(false, 40)
	sample, _, err := testimg.BuildHFSPlusBytes(writerSpec())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		img  []byte
	}{{"bare", bare}, {"wrapped", wrap(bare, 4096)}, {"writer", sample}} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "plus.img")
			if err := os.WriteFile(path, c.img, 0o644); err != nil {
				t.Fatal(err)
			}
			_, got, _, _ := openWalkPlus(t, c.img)
			out, err := exec.Command("fls", "-r", "-p", path).Output()
			if err != nil {
				t.Fatalf("fls: %v", err)
			}
			seen := map[string]bool{}
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				m := flsLine.FindStringSubmatch(l)
				if m == nil {
					t.Fatalf("fls line %q", l)
				}
				p := "/" + m[5]
				if strings.HasPrefix(m[5], "$") || strings.HasPrefix(m[5], "^^^^HFS+ Private Data") ||
					strings.HasPrefix(m[5], ".HFS+ Private Directory Data") || strings.HasPrefix(m[5], ".journal") {
					continue
				}
				seen[p] = true
				g, ok := got[p]
				if !ok {
					t.Errorf("fls lists %q, the reader does not", p)
					continue
				}
				if id, _ := strconv.ParseUint(m[3], 10, 64); id != g.e.ID {
					t.Errorf("%q: fls gives CNID %d, the reader %d", p, id, g.e.ID)
				}
				// icat is slow: of the directories of many files, every
				// tenth is compared.
				if g.e.Type == 'f' && (!strings.HasPrefix(p, "/many/") || strings.HasSuffix(p, "0")) {
					icat := func(addr string) []byte {
						b, err := exec.Command("icat", path, addr).Output()
						if err != nil {
							t.Fatalf("icat %s: %v", addr, err)
						}
						return b
					}
					if b := icat(m[3]); !bytes.Equal(b, g.data) {
						t.Errorf("%q: icat gives %d bytes, the reader %d", p, len(b), len(g.data))
					}
					if f, ok := got[p+"/..namedfork/rsrc"]; ok {
						if b := icat(m[3] + "-4353"); !bytes.Equal(b, f.data) {
							t.Errorf("%q: icat gives a resource fork of %d bytes, the reader %d", p, len(b), len(f.data))
						}
					}
				}
			}
			for p := range got {
				if p != "/" && !strings.Contains(p, "/..namedfork/") && !seen[p] {
					t.Errorf("the reader lists %q, fls does not", p)
				}
			}
			if len(seen) < 20 {
				t.Errorf("compared %d entries", len(seen))
			}
		})
	}
}

// writerSpec is testimg's HFS+ sample with resource forks, a symlink and
// data and resource forks in more than eight extents.
func writerSpec() testimg.HFSPlusSpec {
	spec := testimg.HFSPlusSample(0, 0)
	spec.Entries = append(spec.Entries,
		testimg.HFSPlusEntry{Entry: testimg.Entry{Path: "Mac/with rsrc", Kind: testimg.File, Size: 5000, Seed: 3}, Rsrc: seeded(4, 9000)},
		testimg.HFSPlusEntry{Entry: testimg.Entry{Path: "Mac/rsrc only", Kind: testimg.File}, Rsrc: seeded(5, 100)},
		testimg.HFSPlusEntry{Entry: testimg.Entry{Path: "Mac/fragmented", Kind: testimg.File, Size: 12*4096 - 7, Seed: 6}, Fragments: 12},
		testimg.HFSPlusEntry{Entry: testimg.Entry{Path: "Mac/link", Kind: testimg.Symlink, Target: "../hello.txt"}},
	)
	return spec
}

// TestPlusWriterVolumes: volumes of testimg.WriteHFSPlus (its sample, with
// block and node sizes from 512 to 32 KiB) read as written — every path,
// type, CNID, mtime, data fork, resource fork and symlink target of its
// layout, and nothing else.
func TestPlusWriterVolumes(t *testing.T) {
	for _, sz := range [][2]int{{0, 0}, {512, 512}, {4096, 8192}, {65536, 32768}} {
		t.Run(fmt.Sprintf("block %d node %d", sz[0], sz[1]), func(t *testing.T) {
			spec := writerSpec()
			spec.BlockSize, spec.NodeSize = sz[0], sz[1]
			for i := range spec.Entries {
				if e := &spec.Entries[i]; e.Fragments > 0 && sz[0] > 4096 {
					e.Size = int64(e.Fragments*sz[0] - 7) // a block per fragment
				}
			}
			img, l, err := testimg.BuildHFSPlusBytes(spec)
			if err != nil {
				t.Fatal(err)
			}
			v, got, _, probs := openWalkPlus(t, img)
			if len(probs) != 0 {
				t.Errorf("problems on a sound volume: %v", probs)
			}
			if v.Info().Label != "NTT sample" {
				t.Errorf("label %q", v.Info().Label)
			}
			n := 0
			for p, f := range l.Files {
				n++
				g, ok := got["/"+p]
				if !ok {
					t.Errorf("%q missing from the walk", p)
					continue
				}
				typ := map[testimg.Kind]byte{testimg.File: 'f', testimg.Dir: 'd', testimg.Symlink: 'l'}[f.Kind]
				if g.e.Type != typ || g.e.ID != uint64(f.CNID) || !g.e.Mtime.Equal(f.Mtime) {
					t.Errorf("%q: %c id %d mtime %v; want %c %d %v", p, g.e.Type, g.e.ID, g.e.Mtime, typ, f.CNID, f.Mtime)
				}
				switch typ {
				case 'f':
					if g.err != nil || !bytes.Equal(g.data, f.Data) {
						t.Errorf("%q: %d bytes (%v), want %d", p, len(g.data), g.err, len(f.Data))
					}
					fk, ok := got["/"+p+"/..namedfork/rsrc"]
					if len(f.Rsrc) > 0 {
						n++
						if !ok || fk.err != nil || !bytes.Equal(fk.data, f.Rsrc) {
							t.Errorf("%q: resource fork differs", p)
						}
					} else if ok {
						t.Errorf("%q: a resource fork where none was put", p)
					}
				case 'l':
					if string(g.e.Target) != string(f.Data) {
						t.Errorf("%q: target %q, want %q", p, g.e.Target, f.Data)
					}
				}
			}
			if len(got) != n {
				t.Errorf("walk has %d entries, the layout %d", len(got), n)
			}
			if f := got["/Mac/fragmented"]; len(f.e.Runs) != 12 {
				t.Errorf("fragmented: %d runs, want 12", len(f.e.Runs))
			}
		})
	}
}
