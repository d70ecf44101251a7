package hfs_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/hfs"
)

// plusLeaves are the volume offsets of the catalog's leaf nodes, in chain
// order, and the catalog's offset, read from the volume header (the
// builder's catalog is one extent of 4 KiB nodes).
func plusLeaves(t *testing.T, img []byte) (catalog int64, leaves []int64) {
	t.Helper()
	vh := img[1024:]
	catalog = int64(be.Uint32(vh[0x110+16:])) * int64(be.Uint32(vh[40:]))
	for n := be.Uint32(img[catalog+14+10:]); n != 0 && len(leaves) < 1000; {
		off := catalog + int64(n)*4096
		leaves = append(leaves, off)
		n = be.Uint32(img[off:])
	}
	return catalog, leaves
}

// plusRecord is the volume offset of the data of the catalog record of
// name (UTF-16 key) of record type typ.
func plusRecord(t *testing.T, img []byte, name string, typ uint16) int64 {
	t.Helper()
	_, leaves := plusLeaves(t, img)
	key := uniBytes(name)
	for _, leaf := range leaves {
		node := img[leaf : leaf+4096]
		for i := 0; ; {
			j := bytes.Index(node[i:], key)
			if j < 0 {
				break
			}
			d := i + j + len(key)
			d += d % 2
			if d+2 < len(node) && be.Uint16(node[d:]) == typ {
				return leaf + int64(d)
			}
			i += j + 1
		}
	}
	t.Fatalf("no record of %q", name)
	return 0
}

func TestPlusDamage(t *testing.T) {
	clean, _ := plusSample(false, 100)
	catalog, leaves := plusLeaves(t, clean)
	if len(leaves) < 4 {
		t.Fatalf("%d catalog leaves: the test wants several", len(leaves))
	}
	_, whole, _, _ := openWalkPlus(t, clean)

	t.Run("garbage over a leaf node", func(t *testing.T) {
		img := bytes.Clone(clean)
		bad := leaves[2]
		for i := int64(0); i < 4096; i++ {
			img[bad+i] = byte(i*7 + 3)
		}
		_, got, _, probs := openWalkPlus(t, img)
		k := kinds(probs)
		if len(k["corrupt"]) != 1 || k["corrupt"][0] != bad || len(k["rescued"]) != 1 {
			t.Errorf("problems %v, want one corrupt at %d and the rest rescued", probs, bad)
		}
		if len(got) < len(whole)-20 || len(got) >= len(whole) {
			t.Errorf("%d entries of %d", len(got), len(whole))
		}
	})
	t.Run("leaf chain loops", func(t *testing.T) {
		img := bytes.Clone(clean)
		be.PutUint32(img[leaves[2]:], uint32((leaves[1]-catalog)/4096))
		_, got, _, probs := openWalkPlus(t, img)
		if k := kinds(probs); len(k["loop"]) != 1 || k["loop"][0] != leaves[1] {
			t.Errorf("problems %v, want one loop at %d", probs, leaves[1])
		}
		if len(got) != len(whole) {
			t.Errorf("%d entries of %d", len(got), len(whole))
		}
	})
	t.Run("node size", func(t *testing.T) {
		img := bytes.Clone(clean)
		be.PutUint16(img[catalog+14+18:], 3000) // not a power of two
		_, err := hfs.OpenPlus(bytes.NewReader(img), int64(len(img)), imagefs.Options{})
		if !errors.Is(err, imagefs.ErrCorrupt) {
			t.Errorf("OpenPlus: %v, want ErrCorrupt", err)
		}
	})
	t.Run("extent past the volume", func(t *testing.T) {
		img := bytes.Clone(clean)
		rec := plusRecord(t, img, "hello.txt", 2)
		be.PutUint32(img[rec+88+16:], 0xfffffff0) // first extent's start block
		_, got, _, probs := openWalkPlus(t, img)
		if k := kinds(probs); len(k["out_of_volume"]) == 0 || k["out_of_volume"][0] != rec-int64(2+len(uniBytes("hello.txt"))+4) {
			t.Errorf("problems %v, want out_of_volume at the record", probs)
		}
		if w := got["/hello.txt"]; !errors.Is(w.err, imagefs.ErrBeyondEnd) {
			t.Errorf("reading /hello.txt: %v, want ErrBeyondEnd", w.err)
		}
		if len(got) != len(whole) {
			t.Errorf("%d entries of %d", len(got), len(whole))
		}
	})
	t.Run("fork larger than its extents", func(t *testing.T) {
		img := bytes.Clone(clean)
		rec := plusRecord(t, img, "hello.txt", 2)
		be.PutUint64(img[rec+88:], 1<<20) // logicalSize: 1 MiB in one block
		_, got, _, _ := openWalkPlus(t, img)
		w := got["/hello.txt"]
		var re *imagefs.ReadError
		if w.e.Size != 1<<20 || !errors.Is(w.err, imagefs.ErrCorrupt) || !errors.As(w.err, &re) || len(w.data) != 4096 {
			t.Errorf("size %d, %d bytes read, %v: want 1 MiB listed, one block read, then ErrCorrupt", w.e.Size, len(w.data), w.err)
		}
	})
	t.Run("compressed block corrupt", func(t *testing.T) {
		img := bytes.Clone(clean)
		e := whole["/Docs/compressed in rsrc"].e
		// The first block's zlib stream starts after the resource header
		// (256), the length (4), the count (4) and three table entries.
		at := e.Runs[0].Offset + 256 + 4 + 4 + 3*8
		for i := int64(2); i < 40; i++ {
			img[at+i] ^= 0x55
		}
		_, got, _, _ := openWalkPlus(t, img)
		w := got["/Docs/compressed in rsrc"]
		var re *imagefs.ReadError
		if !errors.Is(w.err, imagefs.ErrCorrupt) || !errors.As(w.err, &re) || re.Offset != at {
			t.Errorf("reading: %v, want ErrCorrupt at %d", w.err, at)
		}
	})
	t.Run("unknown compression", func(t *testing.T) {
		img := bytes.Clone(clean)
		i := bytes.Index(img, []byte("fpmc\x03\x00\x00\x00"))
		img[i+4] = 11 // LZFSE
		_, got, _, _ := openWalkPlus(t, img)
		if w := got["/compressed inline"]; !errors.Is(w.err, hfs.ErrCompression) {
			t.Errorf("reading: %v, want ErrCompression", w.err)
		}
	})
	t.Run("hardlink without its node", func(t *testing.T) {
		img := bytes.Clone(clean)
		rec := plusRecord(t, img, "hardlink one", 2)
		be.PutUint32(img[rec+44:], 99999) // iNodeNum
		_, got, _, probs := openWalkPlus(t, img)
		if k := kinds(probs); len(k["corrupt"]) != 1 {
			t.Errorf("problems %v, want one corrupt", probs)
		}
		if a, b := got["/hardlink one"].e, got["/Docs/hardlink two"].e; a.Size != 0 || b.Nlink != 1 || a.ID == b.ID {
			t.Errorf("hardlinks: %+v, %+v", a, b)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		cut := clean[:whole["/fragmented"].e.Runs[3].Offset]
		_, got, _, probs := openWalkPlus(t, cut)
		if k := kinds(probs); len(k["truncated"]) != 1 || k["truncated"][0] != int64(len(cut)) {
			t.Errorf("problems %v, want truncated at %d", probs, len(cut))
		}
		if w := got["/fragmented"]; !errors.Is(w.err, imagefs.ErrBeyondEnd) || len(w.data) != 3*4096 {
			t.Errorf("fragmented: %d bytes, %v", len(w.data), w.err)
		}
	})
	t.Run("not HFS+", func(t *testing.T) {
		img := bytes.Clone(clean)
		be.PutUint32(img[1024+40:], 3000) // blockSize
		_, err := hfs.OpenPlus(bytes.NewReader(img), int64(len(img)), imagefs.Options{})
		var fe *hfs.FormatError
		if !errors.As(err, &fe) || fe.Field != "blockSize" || !errors.Is(err, hfs.ErrNotHFSPlus) {
			t.Errorf("OpenPlus: %v, want a FormatError for blockSize", err)
		}
	})
}
