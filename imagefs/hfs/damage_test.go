package hfs_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/hfs"
	"github.com/HRDAG/ntt/internal/testimg"
)

var be = binary.BigEndian

// layout is where a test volume keeps its catalog, read independently of
// the reader from the master directory block (the catalog in one extent,
// as hformat makes it).
type layout struct {
	alStart, blkSize int64
	catalog          int64   // byte offset of the catalog file
	leaves           []int64 // byte offsets of its leaf nodes, in chain order
}

func layoutOf(t testing.TB, img []byte) layout {
	t.Helper()
	m := img[1024:]
	l := layout{alStart: int64(be.Uint16(m[0x1c:])) * 512, blkSize: int64(be.Uint32(m[0x14:]))}
	l.catalog = l.alStart + int64(be.Uint16(m[0x96:]))*l.blkSize
	hdr := img[l.catalog+14:]
	for n := be.Uint32(hdr[10:]); n != 0 && len(l.leaves) < 1000; {
		off := l.catalog + int64(n)*512
		l.leaves = append(l.leaves, off)
		n = be.Uint32(img[off:])
	}
	return l
}

// fileRecord returns the offset of the data of the file record of name (in
// the catalog, whatever its parent).
func fileRecord(t testing.TB, img []byte, l layout, name string) int64 {
	t.Helper()
	return catalogRecord(t, img, l, name, 2)
}

// catalogRecord returns the offset of the data of the record of name and
// type typ (1 directory, 2 file).
func catalogRecord(t testing.TB, img []byte, l layout, name string, typ byte) int64 {
	t.Helper()
	key := append([]byte{byte(len(name))}, name...)
	for _, leaf := range l.leaves {
		node := img[leaf : leaf+512]
		if i := bytes.Index(node, key); i >= 6 && int(node[i-6]) >= 6+len(name) {
			d := i - 6 + 1 + int(node[i-6])
			d += d % 2
			if d < 512 && node[d] == typ {
				return leaf + int64(d)
			}
		}
	}
	t.Fatalf("no file record of %q", name)
	return 0
}

func kinds(probs []*imagefs.Problem) map[string][]int64 {
	out := map[string][]int64{}
	for _, p := range probs {
		out[p.Kind] = append(out[p.Kind], p.Offset)
	}
	return out
}

func buildBig(t *testing.T) []byte {
	t.Helper()
	img, err := os.ReadFile(testimg.BuildHFS(t, bigSpec(300)))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestDamage(t *testing.T) {
	testimg.RequireHFSTools(t)
	clean := buildBig(t)
	l := layoutOf(t, clean)
	if len(l.leaves) < 4 {
		t.Fatalf("%d catalog leaves: the test wants several", len(l.leaves))
	}
	_, whole, _, _ := openWalk(t, clean)

	t.Run("garbage over a leaf node", func(t *testing.T) {
		img := bytes.Clone(clean)
		bad := l.leaves[2]
		for i := int64(0); i < 512; i++ {
			img[bad+i] = byte(i*7 + 3)
		}
		_, got, _, probs := openWalk(t, img)
		if k := kinds(probs); len(k["corrupt"]) != 1 || k["corrupt"][0] != bad {
			t.Errorf("problems %v, want one corrupt at %d", probs, bad)
		}
		// The records of the other leaves are read (those after it found
		// in the node map); a leaf holds a few records only.
		if len(got) < len(whole)-8 || len(got) >= len(whole) {
			t.Errorf("%d entries of %d", len(got), len(whole))
		}
	})
	t.Run("leaf chain loops", func(t *testing.T) {
		img := bytes.Clone(clean)
		// The third leaf links back to the second.
		be.PutUint32(img[l.leaves[2]:], uint32((l.leaves[1]-l.catalog)/512))
		_, got, _, probs := openWalk(t, img)
		if k := kinds(probs); len(k["loop"]) != 1 || k["loop"][0] != l.leaves[1] {
			t.Errorf("problems %v, want one loop at %d", probs, l.leaves[1])
		}
		if len(got) != len(whole) {
			t.Errorf("%d entries of %d", len(got), len(whole))
		}
	})
	t.Run("record offsets out of order", func(t *testing.T) {
		img := bytes.Clone(clean)
		leaf := l.leaves[1]
		be.PutUint16(img[leaf+512-4:], 600) // record 1 past the node
		_, _, _, probs := openWalk(t, img)
		if k := kinds(probs); len(k["corrupt"]) != 1 || k["corrupt"][0] != leaf {
			t.Errorf("problems %v, want one corrupt at %d", probs, leaf)
		}
	})
	t.Run("leaf of the wrong height", func(t *testing.T) {
		img := bytes.Clone(clean)
		leaf := l.leaves[1]
		img[leaf+9] = 2 // ndNHeight
		_, got, _, probs := openWalk(t, img)
		k := kinds(probs)
		if len(k["corrupt"]) != 1 || k["corrupt"][0] != leaf || len(k["rescued"]) == 0 {
			t.Errorf("problems %v, want one corrupt at %d and the rest rescued", probs, leaf)
		}
		if len(got) < len(whole)-8 || len(got) >= len(whole) {
			t.Errorf("%d entries of %d", len(got), len(whole))
		}
	})
	t.Run("garbage over the extents-overflow header", func(t *testing.T) {
		img := bytes.Clone(clean)
		xt := l.alStart + int64(be.Uint16(img[1024+0x86:]))*l.blkSize
		for i := int64(0); i < 512; i++ {
			img[xt+i] = 0xA5
		}
		_, got, _, probs := openWalk(t, img)
		if k := kinds(probs); len(k["corrupt"]) != 1 || k["corrupt"][0] != xt {
			t.Errorf("problems %v, want one corrupt at %d", probs, xt)
		}
		if len(got) != len(whole) {
			t.Errorf("%d entries of %d", len(got), len(whole))
		}
		// The fragmented file keeps the 3 extents of its record; reading
		// past them fails.
		f := got["/frag/fragmented"]
		if len(f.e.Runs) != 3 || !errors.Is(f.err, imagefs.ErrCorrupt) || len(f.data) != 3*512 {
			t.Errorf("fragmented file: %d runs, %d bytes read, %v; want 3 runs, 1536 bytes and ErrCorrupt", len(f.e.Runs), len(f.data), f.err)
		}
	})
	t.Run("directory record lost", func(t *testing.T) {
		img := bytes.Clone(clean)
		rec := catalogRecord(t, img, l, "Docs", 1)
		img[rec] = 9 // no such record type
		_, got, _, probs := openWalk(t, img)
		k := kinds(probs)
		if len(k["corrupt"]) != 1 || len(k["rescued"]) != 1 {
			t.Errorf("problems %v, want the record corrupt and the directory rescued", probs)
		}
		// Listed from its thread, with everything below it.
		if len(got) != len(whole) {
			t.Errorf("%d entries of %d", len(got), len(whole))
		}
		d := got["/Docs"]
		if d.e == nil || d.e.ID != whole["/Docs"].e.ID || !d.e.Mtime.Equal(time.Date(1904, 1, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("/Docs: %+v", d.e)
		}
	})
	t.Run("extent past the volume", func(t *testing.T) {
		img := bytes.Clone(clean)
		rec := fileRecord(t, img, l, "ReadMe")
		be.PutUint16(img[rec+74:], 0xfff0) // first extent's start block
		_, got, _, probs := openWalk(t, img)
		if k := kinds(probs); len(k["out_of_volume"]) == 0 || k["out_of_volume"][0] >= rec || k["out_of_volume"][0] < rec-40 {
			t.Errorf("problems %v, want out_of_volume at the record, before %d", probs, rec)
		}
		w := got["/ReadMe"]
		if !errors.Is(w.err, imagefs.ErrBeyondEnd) {
			t.Errorf("reading /ReadMe: %v, want ErrBeyondEnd", w.err)
		}
		if len(got) != len(whole) {
			t.Errorf("%d entries of %d", len(got), len(whole))
		}
	})
	t.Run("extents shorter than the file", func(t *testing.T) {
		img := bytes.Clone(clean)
		rec := fileRecord(t, img, l, "with spaces in it.txt")
		be.PutUint32(img[rec+26:], 1<<20) // filLgLen: 1 MiB
		_, got, _, _ := openWalk(t, img)
		w := got["/with spaces in it.txt"]
		var re *imagefs.ReadError
		if !errors.Is(w.err, imagefs.ErrCorrupt) || !errors.As(w.err, &re) || re.Offset >= rec || re.Offset < rec-40 {
			t.Errorf("reading the short file: %v, want ErrCorrupt at its record", w.err)
		}
		if w.e.Size != 1<<20 {
			t.Errorf("size %d", w.e.Size)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		// Cut inside big.bin: it and what lies after it cannot be read.
		cut := clean[:whole["/big.bin"].e.Runs[0].Offset+1000]
		_, got, _, probs := openWalk(t, cut)
		if k := kinds(probs); len(k["truncated"]) != 1 || k["truncated"][0] != int64(len(cut)) {
			t.Errorf("problems %v, want truncated at %d", probs, len(cut))
		}
		beyond, whole2 := 0, 0
		for p, w := range got {
			switch {
			case errors.Is(w.err, imagefs.ErrBeyondEnd):
				beyond++
			case w.err == nil && w.e.Type == 'f':
				if want := whole[p]; !bytes.Equal(w.data, want.data) {
					t.Errorf("%q read differently from the truncated image", p)
				}
				whole2++
			case w.err != nil:
				t.Errorf("%q: %v", p, w.err)
			}
		}
		if beyond == 0 || whole2 == 0 || len(got) != len(whole) {
			t.Errorf("%d files cut, %d whole, %d entries of %d", beyond, whole2, len(got), len(whole))
		}
	})
	t.Run("HFS wrapper of HFS+", func(t *testing.T) {
		img := bytes.Clone(clean)
		copy(img[1024+0x7c:], "H+")
		_, err := hfs.Open(bytes.NewReader(img), int64(len(img)), imagefs.Options{})
		if !errors.Is(err, hfs.ErrWrappedHFSPlus) {
			t.Errorf("Open: %v, want ErrWrappedHFSPlus", err)
		}
	})
	t.Run("not HFS", func(t *testing.T) {
		img := bytes.Clone(clean)
		be.PutUint32(img[1024+0x14:], 1000) // drAlBlkSiz not a multiple of 512
		_, err := hfs.Open(bytes.NewReader(img), int64(len(img)), imagefs.Options{})
		var fe *hfs.FormatError
		if !errors.As(err, &fe) || fe.Field != "drAlBlkSiz" || !errors.Is(err, hfs.ErrNotHFS) {
			t.Errorf("Open: %v, want a FormatError for drAlBlkSiz", err)
		}
	})
	_ = io.EOF
}

// A resource fork is read like the data fork, and its damage is found
// like the data fork's: an extent past the allocation area is reported at
// its file record, naming the fork, and reading it fails with
// ErrBeyondEnd; extents that cover less than filRLgLen read the covered
// part and fail past it with ErrCorrupt, never zeros.
func TestResourceForkDamage(t *testing.T) {
	testimg.RequireHFSTools(t)
	seed := fuzzSeeds(t)[1]
	clean := withFork(t, seed, "a file")
	d := fileRecord(t, clean, layoutOf(t, clean), "a file")
	_, got, _, probs := openWalk(t, clean)
	if len(probs) != 0 {
		t.Fatalf("problems on the clean volume: %v", probs)
	}
	data := got["/a file"].data
	f := got["/a file/..namedfork/rsrc"]
	if f.e == nil || f.err != nil || !bytes.Equal(f.data, data) || f.e.ID != imagefs.ForkID(got["/a file"].e.ID, 1) {
		t.Fatalf("the resource fork: %+v", f)
	}

	t.Run("extent past the volume", func(t *testing.T) {
		img := bytes.Clone(clean)
		be.PutUint16(img[d+86:], 0xfff0) // first resource extent's start block
		_, got, _, probs := openWalk(t, img)
		// Reported at the file's catalog record, whose key (at most 38
		// bytes) comes before the data at d.
		k := kinds(probs)
		if len(probs) != 1 || len(k["out_of_volume"]) != 1 || k["out_of_volume"][0] < d-38 || k["out_of_volume"][0] >= d ||
			!strings.Contains(probs[0].Detail, `the resource fork of "a file"`) {
			t.Errorf("problems %v, want one out_of_volume at the record before byte %d naming the resource fork", probs, d)
		}
		if f := got["/a file/..namedfork/rsrc"]; !errors.Is(f.err, imagefs.ErrBeyondEnd) {
			t.Errorf("reading the fork: %v, want ErrBeyondEnd", f.err)
		}
		if !bytes.Equal(got["/a file"].data, data) {
			t.Errorf("the data fork changed")
		}
	})
	t.Run("extents short of the size", func(t *testing.T) {
		img := bytes.Clone(clean)
		covered := int64(be.Uint16(img[d+88:])) * layoutOf(t, img).blkSize
		be.PutUint32(img[d+36:], uint32(covered+4096)) // filRLgLen past the extents
		_, got, _, _ := openWalk(t, img)
		f := got["/a file/..namedfork/rsrc"]
		var re *imagefs.ReadError
		if !errors.Is(f.err, imagefs.ErrCorrupt) || !errors.As(f.err, &re) {
			t.Errorf("reading the fork: %v, want an ErrCorrupt ReadError", f.err)
		}
		if int64(len(f.data)) != covered || !bytes.Equal(f.data[:len(data)], data) {
			t.Errorf("read %d bytes before the error, want the %d the extents cover", len(f.data), covered)
		}
	})
}
