package ntfs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/imagefstest"
	"github.com/HRDAG/ntt/imagefs/ntfs"
	"github.com/HRDAG/ntt/internal/testimg"
)

// seedSpec is a 2 MiB volume of 512-byte clusters whose files are small
// enough to be resident in their MFT records, so that the MFT (which
// mkntfs puts at byte 16384) holds the whole tree: a directory, a
// hardlink, a stream, an Interix symlink, a small non-resident file and a
// deleted one.
func seedSpec() testimg.NTFSSpec {
	s := testimg.NTFSSpec{Size: 2 << 20, ClusterSize: 512, Label: "Seed"}
	e := func(p string, k testimg.Kind, size int64, target string) testimg.NTFSStep {
		return testimg.NTFSStep{Entry: testimg.Entry{Path: p, Kind: k, Size: size, Target: target, Seed: uint64(len(s.Steps) + 1)}}
	}
	s.Steps = append(s.Steps,
		e("a", testimg.File, 100, ""),
		e("d", testimg.Dir, 0, ""),
		e("d/b", testimg.File, 300, ""),
		e("d/c", testimg.Hardlink, 0, "a"),
		e("l", testimg.Symlink, 0, "d/b"),
		e("n", testimg.File, 1500, ""),
		e("x", testimg.File, 10, ""))
	st := e("a", testimg.File, 20, "")
	st.Stream = "s"
	del := e("x", testimg.File, 0, "")
	del.Delete = true
	return testimg.NTFSSpec{Size: s.Size, ClusterSize: s.ClusterSize, Label: s.Label, Steps: append(s.Steps, st, del)}
}

// fuzzSeeds are the seed volume cut after its MFT (so the reader also
// meets an image shorter than its volume).
func fuzzSeeds(t testing.TB) [][]byte {
	p := filepath.Join(t.TempDir(), "seed.img")
	if err := testimg.BuildNTFSImage(p, seedSpec()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	cut := b[:128<<10]
	end := len(cut)
	for end > 0 && cut[end-1] == 0 {
		end--
	}
	return [][]byte{cut[:(end+511)/512*512]}
}

// FuzzVolume opens any bytes as an NTFS volume, walks it whole and reads
// every file and stream: it must never panic, hang or allocate without
// bound, and what it returns keeps the imagefs invariants.
func FuzzVolume(f *testing.F) {
	testimg.RequireNTFSTools(f)
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkVolume(t, data)
	})
}

func checkVolume(t *testing.T, data []byte) int {
	opts := imagefs.Options{Report: func(p *imagefs.Problem) {
		if p.Kind == "" {
			t.Fatalf("a problem without a kind: %v", p)
		}
	}}
	v, err := ntfs.Open(bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		var fe *ntfs.FormatError
		if !errors.As(err, &fe) && !errors.Is(err, imagefs.ErrCorrupt) {
			t.Fatalf("Open: not a FormatError: %v", err)
		}
		return 0
	}
	_ = v.Info()
	return imagefstest.CheckWalks(t, v, &opts, "fdl")
}

// TestFuzzSeeds: the seed is a small real volume, read whole: every entry
// of the tree (the root, a, its stream, d, d/b, d/c with a's stream, l, n).
func TestFuzzSeeds(t *testing.T) {
	testimg.RequireNTFSTools(t)
	for i, s := range fuzzSeeds(t) {
		if len(s) > 128<<10 {
			t.Errorf("seed %d is %d bytes", i, len(s))
		}
		if n := checkVolume(t, s); n != 9 {
			t.Errorf("seed %d: %d entries, want 9", i, n)
		}
	}
}

// FuzzLZNT1 decompresses any bytes as a compression unit: it must never
// panic or write past the unit, and a chunk stored uncompressed comes out
// as it went in.
func FuzzLZNT1(f *testing.F) {
	f.Add([]byte{})
	f.Add(storedChunk([]byte("hello, world")))
	f.Add(abcChunk)
	f.Fuzz(func(t *testing.T, src []byte) {
		dst := make([]byte, 16*4096)
		n, _ := ntfs.DecompressLZNT1(dst, src)
		if n < 0 || n > len(dst) {
			t.Fatalf("%d bytes out of a %d-byte unit", n, len(dst))
		}
	})
}

// abcChunk is a compressed chunk of 8 bytes (header 0xB005) and the end
// marker: flags 0x08, the literals "abc", then at output position 3 the
// token 0x2005 — 12 length bits below position 16, so 3 bytes back
// ((0x2005>>12)+1), 8 long ((0x2005&0xfff)+3): "abcabcabcab".
var abcChunk = []byte{0x05, 0xb0, 0x08, 'a', 'b', 'c', 0x05, 0x20, 0, 0}

func storedChunk(b []byte) []byte {
	h := len(b) + 2 - 3 // length minus 3, header included; bit 15 clear
	return append([]byte{byte(h), byte(h>>8) | 0x30}, b...)
}

// TestLZNT1 decodes a hand-made compressed chunk and a stored one.
func TestLZNT1(t *testing.T) {
	dst := make([]byte, 4096)
	n, err := ntfs.DecompressLZNT1(dst, abcChunk)
	if err != nil || n != 4096 || string(dst[:11]) != "abcabcabcab" || dst[11] != 0 {
		t.Errorf("compressed chunk: %d %v %q", n, err, dst[:12])
	}
	n, err = ntfs.DecompressLZNT1(dst, storedChunk([]byte("hello")))
	if err != nil || n != 4096 || string(dst[:5]) != "hello" || dst[5] != 0 {
		t.Errorf("stored chunk: %d %v %q", n, err, dst[:6])
	}
	if _, err := ntfs.DecompressLZNT1(dst, []byte{0x02, 0xb0, 0x01, 0x00, 0x10}); err == nil {
		t.Errorf("a back-reference before the chunk's start decoded")
	}
}
