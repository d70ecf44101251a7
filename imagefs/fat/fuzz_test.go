package fat

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/imagefstest"
	"github.com/HRDAG/ntt/internal/testimg"
)

// fuzzSeeds are small FAT images made by mkfs.fat and mtools (root
// directories of 16 records): a 40 KiB FAT12, a FAT16 cut after its last written byte (so the reader also meets
// an image shorter than its volume) and a FAT32 shrunk to its first 126
// clusters (mtools writes no FAT32 of fewer than 65525 clusters, whose
// FATs alone are half a megabyte: too big for the fuzzer to mutate and
// minimise quickly).
func fuzzSeeds(t testing.TB) [][]byte {
	files := []testimg.Entry{
		{Path: "A.TXT", Kind: testimg.File, Data: []byte("short name")},
		{Path: "lower.txt", Kind: testimg.File, Data: []byte("case flags")},
		{Path: "A long name ÄÖÜ ελληνικά.txt", Kind: testimg.File, Size: 1500, Seed: 1},
		{Path: "empty", Kind: testimg.File},
		{Path: "dir", Kind: testimg.Dir},
		{Path: "dir/sub", Kind: testimg.Dir},
		{Path: "dir/sub/f.bin", Kind: testimg.File, Size: 3000, Seed: 2},
		{Path: "dir/deleted.txt", Kind: testimg.File, Data: []byte("gone")},
	}
	var seeds [][]byte
	for _, s := range []testimg.FATSpec{
		{Bits: 12, Size: 40 << 10, RootEntries: 16, Label: "SEED12"},
		{Bits: 16, Size: 2200 << 10, SectorsPerCluster: 1, RootEntries: 16, Label: "SEED16"},
		{Bits: 32, Size: 33 << 20, SectorsPerCluster: 1, Label: "SEED32"},
	} {
		s.Entries = files
		s.Deleted = []string{"dir/deleted.txt"}
		p := filepath.Join(t.TempDir(), "seed.img")
		if err := testimg.BuildFATImage(p, s); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if s.Bits == 32 {
			b = shrinkFAT32(t, b, 126)
		}
		end := len(b)
		for end > 0 && b[end-1] == 0 {
			end--
		}
		seeds = append(seeds, b[:(end+511)/512*512])
	}
	return seeds
}

// shrinkFAT32 keeps the first n clusters (n ≤ 126, what one FAT sector holds) of a
// FAT32 image with 512-byte sectors and clusters whose files all lie in
// them: the boot sector gets one-sector FATs and a volume of n clusters.
func shrinkFAT32(t testing.TB, b []byte, n int) []byte {
	g, err := parseBootSector(b)
	if err != nil || g.sectorSize != 512 || g.clusterSize != 512 || n > 126 {
		t.Fatalf("shrinkFAT32: not a FAT32 image of 512-byte clusters: %v", err)
	}
	reserved := int(le.Uint16(b[14:]))
	out := make([]byte, (reserved+2+n)*512)
	copy(out, b[:reserved*512])
	le.PutUint32(out[36:], 1)                    // BPB_FATSz32
	le.PutUint32(out[32:], uint32(reserved+2+n)) // BPB_TotSec32
	fat := b[g.fatOff[0] : g.fatOff[0]+512]
	copy(out[reserved*512:], fat)
	copy(out[(reserved+1)*512:], fat)
	copy(out[(reserved+2)*512:], b[g.dataOff:g.dataOff+int64(n)*512])
	return out
}

// FuzzVolume opens any bytes as a FAT volume, walks it whole and reads
// every file: it must never panic, hang or allocate without bound, and
// what it returns keeps the imagefs invariants.
func FuzzVolume(f *testing.F) {
	testimg.RequireFATTools(f)
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkVolume(t, data)
	})
}

func checkVolume(t *testing.T, data []byte) {
	nprob := 0
	opts := imagefs.Options{Report: func(p *imagefs.Problem) {
		nprob++
		if p.Kind == "" {
			t.Fatalf("a problem without a kind: %v", p)
		}
	}}
	v, err := Open(bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Fatalf("Open: not a FormatError: %v", err)
		}
		return
	}
	_ = v.Info()
	imagefstest.CheckWalks(t, v, &opts, "fd")
}

// TestFuzzSeeds: the seeds are real volumes, read whole as cut (what lies
// past the cut is zeros on the full image, so every byte is there).
func TestFuzzSeeds(t *testing.T) {
	testimg.RequireFATTools(t)
	for i, s := range fuzzSeeds(t) {
		o := openReader(t, bytes.NewReader(s), int64(len(s)), "")
		got := byPath(o.walk(t))
		if len(got) != 8 {
			t.Fatalf("seed %d: %d entries, want 8: %v", i, len(got), got)
		}
		b, err := o.read(got["dir/sub/f.bin"])
		if err != nil || !bytes.Equal(b, (testimg.Entry{Size: 3000, Seed: 2, Kind: testimg.File}).Content()) {
			t.Fatalf("seed %d: dir/sub/f.bin: %v", i, err)
		}
		for _, p := range o.probs.list {
			if p.Kind != "truncated" {
				t.Fatalf("seed %d: %v", i, &p)
			}
		}
		checkVolume(t, s)
	}
}
