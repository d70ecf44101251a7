package hfs_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/hfs"
	"github.com/HRDAG/ntt/imagefs/imagefstest"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
)

func seeded(seed uint64, n int) []byte {
	b := make([]byte, n)
	testimg.ContentAt(seed, b, 0)
	return b
}

// writerSpec is testimg's HFS+ sample (nested folders, NFD and mixed-case
// names, 150 files over several leaf nodes, resource forks, symlinks,
// hardlinks, forks of up to 20 extents, decmpfs files) with a data fork of
// 12 extents, resource forks and a symlink more, and the journal's files
// and the private directories on the volume.
func writerSpec() testimg.HFSPlusSpec {
	spec := testimg.HFSPlusSample(0, 0)
	spec.Journaled = true
	spec.Entries = append(spec.Entries,
		testimg.HFSPlusEntry{Entry: testimg.Entry{Path: "Mac/with rsrc", Kind: testimg.File, Size: 5000, Seed: 3}, Rsrc: seeded(4, 9000)},
		testimg.HFSPlusEntry{Entry: testimg.Entry{Path: "Mac/rsrc only", Kind: testimg.File}, Rsrc: seeded(5, 100)},
		testimg.HFSPlusEntry{Entry: testimg.Entry{Path: "Mac/fragmented", Kind: testimg.File, Size: 12*4096 - 7, Seed: 6}, Fragments: 12},
		testimg.HFSPlusEntry{Entry: testimg.Entry{Path: "Mac/link", Kind: testimg.Symlink, Target: "../hello.txt"}},
	)
	return spec
}

// buildPlus builds spec's volume.
func buildPlus(t testing.TB, spec testimg.HFSPlusSpec) ([]byte, *testimg.HFSPlusLayout) {
	t.Helper()
	img, l, err := testimg.BuildHFSPlusBytes(spec)
	if err != nil {
		t.Fatal(err)
	}
	return img, l
}

// buildPlusFile is buildPlus with the volume also written to a file of
// the test's, for the tools and functions that take a path.
func buildPlusFile(t testing.TB, spec testimg.HFSPlusSpec) ([]byte, *testimg.HFSPlusLayout, string) {
	t.Helper()
	img, l := buildPlus(t, spec)
	path := filepath.Join(t.TempDir(), "plus.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return img, l, path
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
	imagefstest.ReadWalk(t, v, &opts, func(p string, e *imagefs.Entry, data []byte, err error) {
		got[p] = walked{e: e, data: data, err: err}
		order = append(order, p)
	})
	return v, got, order, probs
}

// notEntered are the directories the walk listed but did not enter again
// (a hardlinked directory's later names), from its cross_linked problems;
// any other problem fails t.
func notEntered(t *testing.T, probs []*imagefs.Problem) []string {
	t.Helper()
	var out []string
	for _, p := range probs {
		m := regexp.MustCompile(`^directory "/([^"]*)" \(id \d+\) holds a directory already walked`).FindStringSubmatch(p.Detail)
		if p.Kind != "cross_linked" || m == nil {
			t.Errorf("problem on a sound volume: %v", p)
			continue
		}
		out = append(out, m[1])
	}
	return out
}

// below reports whether p lies below one of dirs.
func below(p string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// checkLayout compares a walk with the layout of the volume written:
// every path, type, ID (the CNID; a hardlink's its indirect node's, a
// hardlinked directory's its own), link count, mtime, data fork (a
// compressed file's decoded), resource fork and symlink target, and
// nothing else (the private directories and the journal's files are not
// presented). What lies below a hardlinked directory's later names
// (skip), which the walk does not enter again, is not looked for.
func checkLayout(t *testing.T, got map[string]walked, l *testimg.HFSPlusLayout, skip []string) {
	t.Helper()
	n := 0
	for p, f := range l.Files {
		if below(p, skip) {
			continue
		}
		n++
		g, ok := got["/"+p]
		if !ok {
			t.Errorf("%q missing from the walk", p)
			continue
		}
		typ := map[testimg.Kind]byte{testimg.File: 'f', testimg.Dir: 'd', testimg.Symlink: 'l'}[f.Kind]
		id, nlink := f.CNID, uint64(1)
		if f.Inode != 0 {
			id, nlink = f.Inode, uint64(f.Nlink)
		}
		if g.e.Type != typ || g.e.ID != uint64(id) || !g.e.Mtime.Equal(f.Mtime) || (typ == 'f' && g.e.Nlink != nlink) {
			t.Errorf("%q: %c id %d mtime %v nlink %d; want %c %d %v %d", p, g.e.Type, g.e.ID, g.e.Mtime, g.e.Nlink, typ, id, f.Mtime, nlink)
		}
		switch typ {
		case 'f':
			if g.err != nil || !bytes.Equal(g.data, f.Data) {
				t.Errorf("%q: %d bytes (%v), want %d", p, len(g.data), g.err, len(f.Data))
			}
			if (f.Compression != testimg.NotCompressed) != g.e.Encoded {
				t.Errorf("%q: compression %v, Encoded %v", p, f.Compression, g.e.Encoded)
			}
			// The runs are where the writer put the fork (a type 4 file's:
			// its compressed resource fork; type 3's are its attribute).
			want := f.DataRuns
			if f.Compression == testimg.DecmpfsRsrc {
				want = f.RsrcRuns
			}
			if f.Compression != testimg.DecmpfsInline && !sameRuns(g.e.Runs, want) {
				t.Errorf("%q: runs %v, the writer's %v", p, g.e.Runs, want)
			}
			if len(g.e.Forks) == 1 && !sameRuns(g.e.Forks[0].Runs, f.RsrcRuns) {
				t.Errorf("%q: resource fork runs %v, the writer's %v", p, g.e.Forks[0].Runs, f.RsrcRuns)
			}
			fk, ok := got["/"+p+"/..namedfork/rsrc"]
			if len(f.Rsrc) > 0 {
				n++
				if !ok || fk.err != nil || !bytes.Equal(fk.data, f.Rsrc) || fk.e.ID != imagefs.ForkID(g.e.ID, 1) || len(g.e.Forks) != 1 {
					t.Errorf("%q: resource fork differs", p)
				}
			} else if ok {
				t.Errorf("%q: a resource fork where none was put", p)
			}
		case 'd':
			// 2 + its subdirectories (the root's hidden ones not counted).
			sub := uint64(0)
			for q, h := range l.Files {
				if h.Kind == testimg.Dir && q != "" && q[:max(0, strings.LastIndexByte(q, '/'))] == p {
					sub++
				}
			}
			if g.e.Nlink != 2+sub {
				t.Errorf("%q: nlink %d, want %d", p, g.e.Nlink, 2+sub)
			}
		case 'l':
			if string(g.e.Target) != string(f.Data) || g.e.Size != int64(len(f.Data)) {
				t.Errorf("%q: target %q, want %q", p, g.e.Target, f.Data)
			}
		}
	}
	if len(got) != n {
		var extra []string
		for p := range got {
			if _, ok := l.Files[strings.TrimPrefix(p, "/")]; !ok && p != "/" && !strings.Contains(p, "/..namedfork/") {
				extra = append(extra, p)
			}
		}
		t.Errorf("walk has %d entries, the layout %d; not written: %q", len(got), n, extra)
	}
}

// TestPlusWriterVolumes: volumes of testimg.WriteHFSPlus (blocks of 512 B
// to 64 KiB, nodes of 512 B to 32 KiB; HFSX; wrapped in HFS) read as
// written.
func TestPlusWriterVolumes(t *testing.T) {
	for _, c := range []struct {
		block, node   int
		hfsx, wrapped bool
	}{{0, 0, false, false}, {512, 512, false, false}, {4096, 8192, false, false}, {65536, 32768, false, false},
		{0, 0, true, false}, {0, 0, false, true}} {
		t.Run(fmt.Sprintf("block %d node %d HFSX %v wrapped %v", c.block, c.node, c.hfsx, c.wrapped), func(t *testing.T) {
			spec := writerSpec()
			spec.BlockSize, spec.NodeSize = c.block, c.node
			spec.CaseSensitive, spec.Wrapped = c.hfsx, c.wrapped
			for i := range spec.Entries {
				if e := &spec.Entries[i]; e.Fragments > 0 && c.block > 4096 {
					e.Size = int64(e.Fragments*c.block - 7) // a block per fragment
				}
			}
			if c.hfsx {
				// Names that differ only in case: one name on HFS+.
				spec.Entries = append(spec.Entries, testimg.HFSPlusEntry{Entry: testimg.Entry{Path: "HELLO.TXT", Kind: testimg.File, Data: []byte("upper\n")}})
			}
			img, l := buildPlus(t, spec)
			v, got, _, probs := openWalkPlus(t, img)
			skip := notEntered(t, probs)
			if len(skip) != 1 || skip[0] != "backup/2021" {
				t.Errorf("not entered again: %q, want the folder hardlink backup/2021", skip)
			}
			checkLayout(t, got, l, skip)
			info := v.Info()
			if info.Label != "NTT sample" || info.CaseSensitive != c.hfsx || !info.Journaled || info.Wrapped != c.wrapped || info.Offset != l.Offset {
				t.Errorf("info %+v, layout offset %d", info, l.Offset)
			}
			if r := got["/"].e; r.ID != hfs.RootID || r.Type != 'd' {
				t.Errorf("root %+v", r)
			}
			if f := got["/Mac/fragmented"]; len(f.e.Runs) != 12 {
				t.Errorf("fragmented: %d runs, want 12", len(f.e.Runs))
			}
			if f := got["/frag/twenty"]; len(f.e.Runs) != 20 {
				t.Errorf("frag/twenty: %d runs, want 20", len(f.e.Runs))
			}
			// The runs of the wrapped volume are offsets in the wrapper.
			if c.wrapped {
				spec.Wrapped = false
				bare, _ := buildPlus(t, spec)
				_, b, _, _ := openWalkPlus(t, bare)
				for p, g := range got {
					for i, r := range g.e.Runs {
						if br := b[p].e.Runs[i]; r.Offset != br.Offset+l.Offset {
							t.Fatalf("%q: run at %d, unwrapped at %d", p, r.Offset, br.Offset)
						}
					}
				}
				if _, err := hfs.Open(bytes.NewReader(img), int64(len(img)), imagefs.Options{}); err == nil {
					t.Error("the HFS reader read a wrapper")
				}
			}
			// Registered for probe's type.
			fsys, err := imagefs.Open("hfsplus", bytes.NewReader(img), int64(len(img)), imagefs.Options{})
			if err != nil || fsys.Type() != "hfsplus" {
				t.Fatalf("imagefs.Open hfsplus: %v", err)
			}
		})
	}
}

// TestPlusSpecialFiles: a file record whose BSD mode is a FIFO, a socket,
// a character or a block device is listed as one, without content.
func TestPlusSpecialFiles(t *testing.T) {
	img, _ := buildPlus(t, writerSpec())
	for mode, typ := range map[uint16]byte{0o010644: 'p', 0o140755: 's', 0o020600: 'c', 0o060600: 'b'} {
		b := bytes.Clone(img)
		rec := plusRecord(t, b, "one-byte", 2)
		be.PutUint16(b[rec+42:], mode)
		_, got, _, probs := openWalkPlus(t, b)
		notEntered(t, probs)
		if e := got["/one-byte"].e; e == nil || e.Type != typ || e.Size != 0 || len(e.Runs) != 0 {
			t.Errorf("mode %o: %+v; want type %c", mode, e, typ)
		}
	}
}

var flsLine = regexp.MustCompile(`^([-a-zA-Z]/[-a-zA-Z]) (\* )?(\d+)(\(realloc\))?:\t(.*)$`)

// TestPlusTSK: The Sleuth Kit (fls, icat), the reference HFS+ reader,
// lists the same paths with the same CNIDs (a hardlink's the indirect
// node's) and gives the same bytes of every file — a compressed file's
// decoded — and of every resource fork (icat's attribute 4353), on a bare
// and on a wrapped volume; the private directories, the journal's files
// and TSK's special files ($CatalogFile …) aside.
func TestPlusTSK(t *testing.T) {
	for _, n := range []string{"fls", "icat"} {
		if _, err := exec.LookPath(n); err != nil {
			testenv.SkipOrFail(t, n+" is not installed (scripts/deps.sh installs sleuthkit)")
		}
	}
	for _, wrapped := range []bool{false, true} {
		t.Run(fmt.Sprintf("wrapped %v", wrapped), func(t *testing.T) {
			spec := writerSpec()
			spec.Wrapped = wrapped
			img, l, path := buildPlusFile(t, spec)
			_, got, _, probs := openWalkPlus(t, img)
			skip := notEntered(t, probs)
			out, err := exec.Command("fls", "-r", "-p", path).Output()
			if err != nil {
				t.Fatalf("fls: %v", err)
			}
			seen := map[string]bool{}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				m := flsLine.FindStringSubmatch(line)
				if m == nil {
					t.Fatalf("fls line %q", line)
				}
				p := "/" + m[5]
				if strings.HasPrefix(m[5], "$") || strings.HasPrefix(m[5], "^^^^HFS+ Private Data") ||
					strings.HasPrefix(m[5], ".HFS+ Private Directory Data") || strings.HasPrefix(m[5], ".journal") || below(m[5], skip) {
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
				// icat is slow: of the folder of many files, every tenth
				// is compared.
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
			want := 0
			for p := range l.Files {
				if p != "" && !below(p, skip) {
					want++
				}
			}
			if len(seen) != want {
				t.Errorf("compared %d entries of %d", len(seen), want)
			}
		})
	}
}

// TestPlusMedium: a bare and a wrapped HFS+ volume are probed as
// "hfsplus" and read by this reader through imagefs.OpenMediumFile, whole.
func TestPlusMedium(t *testing.T) {
	for _, wrapped := range []bool{false, true} {
		t.Run(fmt.Sprintf("wrapped %v", wrapped), func(t *testing.T) {
			spec := writerSpec()
			spec.Wrapped = wrapped
			_, l, path := buildPlusFile(t, spec)
			var probs []*imagefs.MediumProblem
			m, err := imagefs.OpenMediumFile(context.Background(), path, imagefs.MediumOptions{
				Medium: "0123456789abcdef0123456789abcdef", Report: func(p *imagefs.MediumProblem) { probs = append(probs, p) }})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if len(m.Volumes) != 1 || m.Volumes[0].FSType != "hfsplus" {
				t.Fatalf("volumes %+v, want one hfsplus", m.Volumes)
			}
			n := 0
			if err := m.Walk(context.Background(), m.Volumes[0], func(p []byte, e *imagefs.Entry) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			want := 0
			for p, f := range l.Files {
				if !below(p, []string{"backup/2021"}) {
					want++
					if len(f.Rsrc) > 0 {
						want++
					}
				}
			}
			// The folder hardlink backup/2021 is not entered again.
			if n != want || len(probs) != 1 || probs[0].Kind != "cross_linked" {
				t.Errorf("%d entries, want %d; problems %v", n, want, probs)
			}
		})
	}
}

func sameRuns(a []imagefs.Run, b []testimg.HFSPlusRun) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Hole || a[i].Logical != b[i].Logical || a[i].Offset != b[i].Offset || a[i].Length != b[i].Length {
			return false
		}
	}
	return true
}
