package ntfs_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
)

var le = binary.LittleEndian

// recordAt is the volume offset of MFT record num of img (mkntfs writes
// the MFT in one run at the cluster the boot sector gives).
func recordAt(img []byte, num uint64) int64 {
	cluster := int64(le.Uint16(img[0x0B:])) * int64(img[0x0D])
	return int64(le.Uint64(img[0x30:]))*cluster + int64(num)*1024
}

// attrAt is the offset in img of the first attribute of type typ in the
// record at off (fields away from the 512-byte stride ends read as stored).
func attrAt(t *testing.T, img []byte, off int64, typ uint32) int64 {
	p := findAttr(img, off, typ)
	if p < 0 {
		t.Fatalf("no attribute %#x in the record at %d", typ, off)
	}
	return p
}

// findAttr is attrAt's search, -1 if there is none.
func findAttr(img []byte, off int64, typ uint32) int64 {
	p := off + int64(le.Uint16(img[off+0x14:]))
	for p < off+1024 {
		at := le.Uint32(img[p:])
		if at == typ {
			return p
		}
		if at == 0xFFFFFFFF || le.Uint32(img[p+4:]) == 0 {
			break
		}
		p += int64(le.Uint32(img[p+4:]))
	}
	return -1
}

func kinds(probs []*imagefs.Problem) map[string][]int64 {
	out := map[string][]int64{}
	for _, p := range probs {
		out[p.Kind] = append(out[p.Kind], p.Offset)
	}
	return out
}

// TestDamage damages the sample volume the ways rescued disks are damaged
// and checks that each is reported as a Problem at the damaged structure's
// offset, that the damaged part is left out or fails to read with a typed
// error (never zeros), and that everything else is still read whole.
func TestDamage(t *testing.T) {
	clean := sampleImage(t)
	_, ref, _ := openWalk(t, clean)
	id := func(p string) uint64 { return ref[p].e.ID }
	cases := []struct {
		name    string
		damage  func(img []byte) int64 // returns the offset the problem must name
		kind    string                 // "": damage found only by reading
		missing []string               // paths no longer listed
		failing []string               // paths whose reading fails with a ReadError
		err     error
	}{
		{name: "torn record", kind: "corrupt", missing: []string{"/docs/sub/Größe ÄÖÜ.txt"},
			damage: func(img []byte) int64 {
				off := recordAt(img, id("/docs/sub/Größe ÄÖÜ.txt"))
				img[off+510] ^= 0xff // the stride's end no longer holds the update sequence number
				return off
			}},
		{name: "torn $MFT record", kind: "rescued",
			damage: func(img []byte) int64 {
				off := recordAt(img, 0)
				img[off+1022] ^= 0xff
				return int64(le.Uint64(img[0x38:])) * 4096 // read from $MFTMirr
			}},
		{name: "run past the volume", kind: "out_of_volume", failing: []string{"/big.bin", "/hard 3", "/docs/hard 2"}, err: imagefs.ErrBeyondEnd,
			damage: func(img []byte) int64 {
				a := attrAt(t, img, recordAt(img, id("/big.bin")), 0x80)
				rl := a + int64(le.Uint16(img[a+0x20:]))
				h := img[rl]
				nl, ol := int64(h&0x0F), int64(h>>4)
				for i := int64(0); i < ol; i++ {
					img[rl+1+nl+i] = 0xff
				}
				img[rl+nl+ol] = 0x7f // the largest positive LCN that many bytes hold
				return a
			}},
		{name: "parent cycle", kind: "cycle", missing: []string{"/docs", "/docs/sub", "/docs/hard 2"},
			damage: func(img []byte) int64 {
				// docs's $FILE_NAME names its own subdirectory as parent.
				sub := id("/docs/sub")
				off := recordAt(img, id("/docs"))
				a := attrAt(t, img, off, 0x30)
				v := a + int64(le.Uint16(img[a+0x14:]))
				seq := le.Uint16(img[recordAt(img, sub)+0x10:])
				le.PutUint64(img[v:], sub|uint64(seq)<<48)
				return off // the scan meets docs first, and again through sub
			}},
		{name: "bad LZNT1", kind: "", failing: []string{"/packed/text.txt"}, err: imagefs.ErrCorrupt,
			damage: func(img []byte) int64 {
				// The first chunk's first token becomes a back-reference,
				// with nothing before it to refer to.
				off := ref["/packed/text.txt"].e.Runs[0].Offset
				img[off+2] = 0x01
				return -1
			}},
		{name: "fragment gap", kind: "corrupt", failing: []string{"/frag/a"}, err: imagefs.ErrCorrupt,
			damage: func(img []byte) int64 {
				// The second $DATA fragment of frag/a (in an extension
				// record) starts one cluster late.
				base := id("/frag/a")
				for num := uint64(16); num < 4096; num++ {
					off := recordAt(img, num)
					if string(img[off:off+4]) != "FILE" || le.Uint64(img[off+0x20:])&(1<<48-1) != base {
						continue
					}
					a := findAttr(img, off, 0x80)
					if a > 0 && le.Uint64(img[a+0x10:]) > 0 {
						img[a+0x10]++
						return a
					}
				}
				return -2 // no second fragment: the problem is not found
			}},
		{name: "orphan", kind: "orphaned", missing: []string{"/packed", "/packed/text.txt"},
			damage: func(img []byte) int64 {
				// packed's $FILE_NAME names a parent with another sequence.
				off := recordAt(img, id("/packed"))
				a := attrAt(t, img, off, 0x30)
				v := a + int64(le.Uint16(img[a+0x14:]))
				img[v+6] ^= 0x40
				return off
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := sampleImage(t)
			at := c.damage(img)
			_, got, probs := openWalk(t, img)
			if offs := kinds(probs)[c.kind]; c.kind != "" && (len(offs) == 0 || !contains(offs, at)) {
				t.Errorf("problems %v; want %q at offset %d", probs, c.kind, at)
			}
			for _, p := range c.missing {
				if _, ok := got[p]; ok {
					t.Errorf("%q still listed", p)
				}
			}
			gone := map[string]bool{}
			for _, p := range append(c.missing, c.failing...) {
				gone[p] = true
			}
			for _, p := range c.failing {
				var re *imagefs.ReadError
				if g := got[p]; !errors.As(g.err, &re) || !errors.Is(g.err, c.err) {
					t.Errorf("%q: read error %v, want a ReadError wrapping %v", p, g.err, c.err)
				}
			}
			for p, w := range ref {
				if gone[p] || under(p, c.missing) || under(p, c.failing) {
					continue
				}
				g, ok := got[p]
				if !ok || g.e.Type != w.e.Type || g.err != nil || string(g.data) != string(w.data) {
					t.Errorf("%q: not read as on the undamaged volume", p)
				}
			}
		})
	}
}

func contains(s []int64, v int64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// under reports whether p is one of dirs or below one (a fork included).
func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if len(p) > len(d) && p[:len(d)] == d && p[len(d)] == '/' {
			return true
		}
	}
	return false
}

// TestTruncated: an image cut short is reported and read as far as it
// goes; a file whose clusters lie past the cut fails with ErrBeyondEnd.
func TestTruncated(t *testing.T) {
	img := sampleImage(t)
	_, ref, _ := openWalk(t, img)
	cut := img[:12<<20]
	_, got, probs := openWalk(t, cut)
	if len(kinds(probs)["truncated"]) == 0 {
		t.Errorf("problems %v; want truncated", probs)
	}
	failed := 0
	for p, w := range ref {
		g := got[p]
		if g.e == nil {
			t.Errorf("%q not listed", p)
			continue
		}
		if g.err != nil {
			if !errors.Is(g.err, imagefs.ErrBeyondEnd) {
				t.Errorf("%q: %v", p, g.err)
			}
			failed++
		} else if string(g.data) != string(w.data) {
			t.Errorf("%q read differently", p)
		}
	}
	if failed == 0 {
		t.Errorf("no file lies past byte %d", len(cut))
	}
}
