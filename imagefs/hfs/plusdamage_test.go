package hfs_test

import (
	"bytes"
	"errors"
	"testing"
	"unicode/utf16"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/hfs"
	"github.com/HRDAG/ntt/internal/testimg"
)

// uniBytes is a name as an HFS+ key holds it: UTF-16BE after its length.
func uniBytes(s string) []byte {
	u := utf16.Encode([]rune(s))
	out := be.AppendUint16(nil, uint16(len(u)))
	for _, c := range u {
		out = be.AppendUint16(out, c)
	}
	return out
}

// plusLeaves are the volume offsets of the catalog's leaf nodes, in chain
// order, and the catalog's offset and node size, read from the volume
// header of a bare volume (testimg's catalog is one extent).
func plusLeaves(t *testing.T, img []byte) (catalog int64, nodeSize int64, leaves []int64) {
	t.Helper()
	vh := img[1024:]
	catalog = int64(be.Uint32(vh[0x110+16:])) * int64(be.Uint32(vh[40:]))
	nodeSize = int64(be.Uint16(img[catalog+14+18:]))
	for n := be.Uint32(img[catalog+14+10:]); n != 0 && len(leaves) < 1000; {
		off := catalog + int64(n)*nodeSize
		leaves = append(leaves, off)
		n = be.Uint32(img[off:])
	}
	return catalog, nodeSize, leaves
}

// plusRecord is the volume offset of the data of the catalog record of
// name of record type typ (1 folder, 2 file).
func plusRecord(t *testing.T, img []byte, name string, typ uint16) int64 {
	t.Helper()
	_, ns, leaves := plusLeaves(t, img)
	key := uniBytes(name)
	for _, leaf := range leaves {
		node := img[leaf : leaf+ns]
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

// recordStart is the volume offset of the record (its key) whose data is
// at data and whose name is name.
func recordStart(data int64, name string) int64 { return data - int64(len(uniBytes(name))) - 4 - 2 }

func TestPlusDamage(t *testing.T) {
	clean, _ := buildPlus(t, writerSpec())
	catalog, ns, leaves := plusLeaves(t, clean)
	if len(leaves) < 4 {
		t.Fatalf("%d catalog leaves: the test wants several", len(leaves))
	}
	_, whole, _, _ := openWalkPlus(t, clean)

	t.Run("garbage over a leaf node", func(t *testing.T) {
		img := bytes.Clone(clean)
		bad := leaves[2]
		for i := int64(0); i < ns; i++ {
			img[bad+i] = byte(i*7 + 3)
		}
		_, got, _, probs := openWalkPlus(t, img)
		k := kinds(probs)
		// (A hardlink whose indirect node was in the lost leaf is
		// reported too.)
		if len(k["corrupt"]) == 0 || k["corrupt"][0] != bad || len(k["rescued"]) != 1 {
			t.Errorf("problems %v, want corrupt at %d and the rest rescued", probs, bad)
		}
		if len(got) < len(whole)-30 || len(got) >= len(whole) {
			t.Errorf("%d entries of %d", len(got), len(whole))
		}
	})
	t.Run("leaf chain loops", func(t *testing.T) {
		img := bytes.Clone(clean)
		be.PutUint32(img[leaves[2]:], uint32((leaves[1]-catalog)/ns))
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
		if k := kinds(probs); len(k["out_of_volume"]) == 0 || k["out_of_volume"][0] != recordStart(rec, "hello.txt") {
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
		e := whole["/compressed/rsrc"].e
		// The resource fork: header (256 bytes), the data's length (4),
		// the block count (4), the table; the first block after it.
		rsrc := e.Runs[0].Offset
		table := rsrc + 256 + 4
		at := table + int64(le32(img[table+4:]))
		for i := int64(2); i < 40; i++ {
			img[at+i] ^= 0x55
		}
		_, got, _, _ := openWalkPlus(t, img)
		w := got["/compressed/rsrc"]
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
		n := 0
		for p, w := range got {
			if errors.Is(w.err, hfs.ErrCompression) {
				n++
				if !w.e.Encoded {
					t.Errorf("%q: not Encoded", p)
				}
			}
		}
		if n != 1 {
			t.Errorf("%d files fail with ErrCompression, want 1", n)
		}
	})
	t.Run("hardlink without its node", func(t *testing.T) {
		img := bytes.Clone(clean)
		rec := plusRecord(t, img, "lone-link", 2)
		be.PutUint32(img[rec+44:], 99999) // iNodeNum
		_, got, _, probs := openWalkPlus(t, img)
		if k := kinds(probs); len(k["corrupt"]) != 1 || k["corrupt"][0] != recordStart(rec, "lone-link") {
			t.Errorf("problems %v, want one corrupt at the link", probs)
		}
		if a, b := got["/hard/lone-link"].e, got["/hard/lone"].e; a.Size != 0 || b.Nlink != 1 || a.ID == b.ID {
			t.Errorf("hardlinks: %+v, %+v", a, b)
		}
	})
	t.Run("a folder its own parent", func(t *testing.T) {
		img := bytes.Clone(clean)
		rec := plusRecord(t, img, "c", 1)
		key := recordStart(rec, "c")
		be.PutUint32(img[key+2:], uint32(whole["/a/b/c"].e.ID))
		_, got, _, probs := openWalkPlus(t, img)
		if k := kinds(probs); len(k["cycle"]) != 1 || k["cycle"][0] != key {
			t.Errorf("problems %v, want one cycle at %d", probs, key)
		}
		if len(got) != len(whole)-4 {
			t.Errorf("%d entries of %d, want all but c, d, e and deep.txt", len(got), len(whole))
		}
	})
	t.Run("truncated", func(t *testing.T) {
		cut := clean[:whole["/frag/twenty"].e.Runs[3].Offset]
		_, got, _, probs := openWalkPlus(t, cut)
		if k := kinds(probs); len(k["truncated"]) != 1 || k["truncated"][0] != int64(len(cut)) {
			t.Errorf("problems %v, want truncated at %d", probs, len(cut))
		}
		if w := got["/frag/twenty"]; !errors.Is(w.err, imagefs.ErrBeyondEnd) || int64(len(w.data)) != whole["/frag/twenty"].e.Runs[3].Logical {
			t.Errorf("frag/twenty: %d bytes, %v", len(w.data), w.err)
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
	t.Run("wrapper of no HFS+", func(t *testing.T) {
		spec := writerSpec()
		spec.Wrapped = true
		img, _ := buildPlus(t, spec)
		copy(img[1024+0x7c:], "\x00\x00") // drEmbedSigWord
		_, err := hfs.OpenPlus(bytes.NewReader(img), int64(len(img)), imagefs.Options{})
		var fe *hfs.FormatError
		if !errors.As(err, &fe) || fe.Field != "drEmbedSigWord" {
			t.Errorf("OpenPlus: %v, want a FormatError for drEmbedSigWord", err)
		}
	})
	_ = testimg.NotCompressed
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
