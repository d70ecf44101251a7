package hfs_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/hfs"
	"github.com/HRDAG/ntt/imagefs/imagefstest"
	"github.com/HRDAG/ntt/internal/testimg"
)

// seedSpec is an 800 KB volume (hformat's smallest) with nested
// directories, names with spaces, '/' and MacRoman letters, an empty file,
// and a file of five one-block extents (one extents-overflow record),
// written into the holes of deleted files of a full volume.
func seedSpec() testimg.HFSSpec {
	s := testimg.HFSSpec{Size: 800 << 10, Label: "Seed"}
	add := func(p string, k testimg.Kind, size int64, del bool) {
		i := len(s.Steps)
		s.Steps = append(s.Steps, testimg.HFSStep{Entry: testimg.Entry{Path: p, Kind: k, Size: size, Seed: uint64(i + 1)}, Delete: del})
	}
	add("a file", testimg.File, 700, false)
	add("empty", testimg.File, 0, false)
	add("x/y Ärger", testimg.File, 30, false)
	add("dir", testimg.Dir, 0, false)
	add("dir:sub", testimg.Dir, 0, false)
	add("dir:sub:f", testimg.File, 1500, false)
	for i := 0; i < 10; i++ {
		add(fmt.Sprintf("dir:s%d", i), testimg.File, 512, false)
	}
	s.Steps = append(s.Steps, testimg.HFSStep{Entry: testimg.Entry{Path: "filler"}, Fill: true})
	for i := 0; i < 10; i += 2 {
		add(fmt.Sprintf("dir:s%d", i), testimg.File, 0, true)
	}
	add("dir:frag", testimg.File, 5*512, false)
	add("filler", testimg.File, 0, true)
	return s
}

// fuzzSeeds are the seed volume cut after its last non-zero byte, but for
// the alternate master directory block at its end (so the
// reader also meets an image shorter than its volume), and the same with
// its allocation block count cut to fit (a whole, tiny volume).
func fuzzSeeds(t testing.TB) [][]byte {
	p := filepath.Join(t.TempDir(), "seed.img")
	if err := testimg.BuildHFSImage(p, seedSpec()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// The alternate master directory block, in the volume's last 1024
	// bytes, is not read: cut it too.
	clear(b[len(b)-1024:])
	end := len(b)
	for end > 0 && b[end-1] == 0 {
		end--
	}
	cut := b[:(end+511)/512*512]
	whole := bytes.Clone(cut)
	alStart := int(be.Uint16(whole[1024+0x1c:])) * 512
	be.PutUint16(whole[1024+0x12:], uint16((len(whole)-alStart)/512))
	return [][]byte{cut, whole, withFork(t, whole, "a file")}
}

// withFork returns img with a resource fork given to the file name: its
// record's filRLgLen and filRExtRec copied from its data fork's, so that
// the fork's bytes are the data fork's (hfsutils cannot write a fork but
// from MacBinary or BinHex).
func withFork(t testing.TB, img []byte, name string) []byte {
	out := bytes.Clone(img)
	d := fileRecord(t, out, layoutOf(t, out), name)
	copy(out[d+36:d+40], out[d+26:d+30]) // filRLgLen = filLgLen
	copy(out[d+40:d+44], out[d+30:d+34]) // filRPyLen = filPyLen
	copy(out[d+86:d+98], out[d+74:d+86]) // filRExtRec = filExtRec
	return out
}

// FuzzVolume opens any bytes as an HFS volume, walks it whole and reads
// every file: it must never panic, hang or allocate without bound, and what
// it returns keeps the imagefs invariants.
func FuzzVolume(f *testing.F) {
	testimg.RequireHFSTools(f)
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkVolume(t, data)
	})
}

func checkVolume(t *testing.T, data []byte) int {
	return checkOpened(t, data, "fd", func(r io.ReaderAt, size int64, opts imagefs.Options) (imagefs.FS, error) {
		v, err := hfs.Open(r, size, opts)
		if err != nil {
			return nil, err
		}
		_ = v.Info()
		return v, nil
	})
}

// checkOpened opens data with open and checks what it gives, as
// imagefstest.CheckWalks does, with entries of the given types; an error
// must be a FormatError, ErrWrappedHFSPlus, ErrCorrupt or a ReadError.
func checkOpened(t *testing.T, data []byte, types string, open func(io.ReaderAt, int64, imagefs.Options) (imagefs.FS, error)) int {
	opts := imagefs.Options{Report: func(p *imagefs.Problem) {
		if p.Kind == "" {
			t.Fatalf("a problem without a kind: %v", p)
		}
	}}
	v, err := open(bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		var fe *hfs.FormatError
		var re *imagefs.ReadError
		if !errors.As(err, &fe) && !errors.Is(err, hfs.ErrWrappedHFSPlus) && !errors.Is(err, imagefs.ErrCorrupt) && !errors.As(err, &re) {
			t.Fatalf("Open: not a FormatError, ErrWrappedHFSPlus, ErrCorrupt or ReadError: %v", err)
		}
		return 0
	}
	return imagefstest.CheckWalks(t, v, &opts, types)
}

// TestFuzzSeeds: the seeds are small real volumes, read whole (what lies
// past the cut is zeros on the full image), with the fragmented file's
// extents-overflow record.
func TestFuzzSeeds(t *testing.T) {
	testimg.RequireHFSTools(t)
	spec := seedSpec()
	want := testimg.HFSTree(spec)
	for i, s := range fuzzSeeds(t) {
		if len(s) > 64<<10 {
			t.Errorf("seed %d is %d bytes", i, len(s))
		}
		forks := 0
		if i == 2 {
			forks = 1 // "a file"'s resource fork
		}
		if n := checkVolume(t, s); n != len(want)+1+forks {
			t.Errorf("seed %d: %d entries, want %d", i, n, len(want)+1+forks)
		}
		_, got, _, _ := openWalk(t, s)
		if i == 2 {
			if f := got["/a file/..namedfork/rsrc"]; f.err != nil || !bytes.Equal(f.data, got["/a file"].data) {
				t.Errorf("seed %d: the resource fork of /a file: %d bytes, %v", i, len(f.data), f.err)
			}
		}
		for p, e := range want {
			g := got["/"+p]
			if e.Kind == testimg.File && (g.err != nil || !bytes.Equal(g.data, e.Content())) {
				t.Errorf("seed %d: %q: %d bytes, %v", i, p, len(g.data), g.err)
			}
		}
		if f := got["/dir/frag"]; f.e == nil || len(f.e.Runs) != 5 {
			t.Errorf("seed %d: /dir/frag: %+v, want 5 runs", i, f.e)
		}
	}
}

// plusSeedSpec is a small HFS+ volume (512-byte blocks and B-tree nodes)
// with one of each thing the HFS+ reader reads: nested folders, a
// decomposed name, a resource fork, a fork of ten extents (two in an
// extents-overflow record), a symlink, a hardlink, files compressed inline
// and in their resource fork, and the journal's files.
func plusSeedSpec(wrapped bool) testimg.HFSPlusSpec {
	f := func(p string, size int64, seed uint64) testimg.HFSPlusEntry {
		return testimg.HFSPlusEntry{Entry: testimg.Entry{Path: p, Kind: testimg.File, Size: size, Seed: seed}}
	}
	c := bytes.Repeat([]byte("abc"), 100)
	return testimg.HFSPlusSpec{BlockSize: 512, NodeSize: 512, Journaled: true, Wrapped: wrapped, Entries: []testimg.HFSPlusEntry{
		f("dir/sub/f", 700, 1),
		{Entry: testimg.Entry{Path: "A\u0308 r", Kind: testimg.File, Size: 30, Seed: 2}, Rsrc: seeded(3, 40)},
		{Entry: testimg.Entry{Path: "dir/frag", Kind: testimg.File, Size: 10*512 - 5, Seed: 4}, Fragments: 10},
		{Entry: testimg.Entry{Path: "link", Kind: testimg.Symlink, Target: "dir/sub/f"}},
		f("h1", 100, 5),
		{Entry: testimg.Entry{Path: "dir/sub/h2", Kind: testimg.Hardlink, Target: "h1"}},
		{Entry: testimg.Entry{Path: "c3", Kind: testimg.File, Data: c}, Compress: testimg.DecmpfsInline},
		{Entry: testimg.Entry{Path: "dir/c4", Kind: testimg.File, Data: c}, Compress: testimg.DecmpfsRsrc},
	}}
}

// plusFuzzSeeds are the seed volume, bare and wrapped in HFS.
func plusFuzzSeeds(t testing.TB) [][]byte {
	var out [][]byte
	for _, w := range []bool{false, true} {
		img, _ := buildPlus(t, plusSeedSpec(w))
		out = append(out, img)
	}
	return out
}

// FuzzPlusVolume opens any bytes as an HFS+ volume (or an HFS wrapper of
// one), walks it whole and reads every file and fork: it must never
// panic, hang or allocate without bound, and what it returns keeps the
// imagefs invariants.
func FuzzPlusVolume(f *testing.F) {
	for _, s := range plusFuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkPlusVolume(t, data)
	})
}

func checkPlusVolume(t *testing.T, data []byte) int {
	return checkOpened(t, data, "fdlp", func(r io.ReaderAt, size int64, opts imagefs.Options) (imagefs.FS, error) {
		v, err := hfs.OpenPlus(r, size, opts)
		if err != nil {
			return nil, err
		}
		_ = v.Info()
		return v, nil
	})
}

// TestPlusFuzzSeeds: the seeds are small and read whole.
func TestPlusFuzzSeeds(t *testing.T) {
	for i, s := range plusFuzzSeeds(t) {
		if len(s) > 128<<10 {
			t.Errorf("seed %d is %d bytes", i, len(s))
		}
		_, l := buildPlus(t, plusSeedSpec(i == 1))
		want := len(l.Files) + 1 // and the resource fork
		if n := checkPlusVolume(t, s); n != want {
			t.Errorf("seed %d: %d entries, want %d", i, n, want)
		}
		_, got, _, probs := openWalkPlus(t, s)
		checkLayout(t, got, l, notEntered(t, probs))
	}
}
