package ntfs_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
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
		{name: "torn $Volume record", kind: "rescued",
			damage: func(img []byte) int64 {
				off := recordAt(img, 3)
				img[off+510] ^= 0xff
				return int64(le.Uint64(img[0x38:]))*4096 + 3*1024
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
		{name: "size past the runlist", kind: "corrupt", failing: []string{"/big.bin", "/hard 3", "/docs/hard 2"}, err: imagefs.ErrCorrupt,
			damage: func(img []byte) int64 {
				// big.bin's $DATA claims 20 MiB (allocated and data
				// size) over a runlist of its 300000 bytes: what the
				// runlist does not map must fail, not read as zeros.
				a := attrAt(t, img, recordAt(img, id("/big.bin")), 0x80)
				le.PutUint64(img[a+0x28:], 20<<20)
				le.PutUint64(img[a+0x30:], 20<<20)
				return a
			}},
		{name: "compression unit 2^31", kind: "corrupt", failing: []string{"/packed/text.txt"}, err: imagefs.ErrCorrupt,
			damage: func(img []byte) int64 {
				// A compression unit NTFS never writes: the stored
				// clusters are not the content, so reading must fail
				// rather than give them as it.
				a := attrAt(t, img, recordAt(img, id("/packed/text.txt")), 0x80)
				img[a+0x22] = 31
				return a
			}},
		{name: "extension records lost", kind: "corrupt", missing: []string{"/frag/a"},
			damage: func(img []byte) int64 {
				// Every extension record of frag/a torn: they hold its
				// $FILE_NAME (ntfs-3g moved it out with the $DATA
				// fragments), so frag/a is lost — reported at the first
				// torn record — never listed as a file of other bytes.
				base := id("/frag/a")
				first := int64(-2)
				for num := uint64(16); num < 4096; num++ {
					off := recordAt(img, num)
					if string(img[off:off+4]) == "FILE" && le.Uint64(img[off+0x20:])&(1<<48-1) == base {
						img[off+510] ^= 0xff
						if first < 0 {
							first = off
						}
					}
				}
				return first
			}},
		{name: "fragment records lost", kind: "corrupt", failing: []string{"/frag/b"}, err: imagefs.ErrCorrupt,
			damage: func(img []byte) int64 {
				// frag/b's extension records holding only later $DATA
				// fragments torn: it must fail where they began, not
				// read zeros.
				base := id("/frag/b")
				first := int64(-2)
				for num := uint64(16); num < 4096; num++ {
					off := recordAt(img, num)
					if string(img[off:off+4]) != "FILE" || le.Uint64(img[off+0x20:])&(1<<48-1) != base || findAttr(img, off, 0x30) >= 0 {
						continue
					}
					if a := findAttr(img, off, 0x80); a > 0 && le.Uint64(img[a+0x10:]) > 0 {
						img[off+510] ^= 0xff
						if first < 0 {
							first = off
						}
					}
				}
				return first
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
				} else if rec := fmt.Sprintf("MFT record %d", ref[p].e.ID&(1<<48-1)); !strings.Contains(g.err.Error(), rec) {
					t.Errorf("%q: read error %q does not name %s", p, g.err, rec)
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

// TestTruncatedMFT: an image cut inside the MFT is reported once for the
// volume and once for the range of records lost, and the resident files
// whose records lie before the cut (their content is in the record) are
// still read whole.
func TestTruncatedMFT(t *testing.T) {
	img := sampleImage(t)
	_, ref, _ := openWalk(t, img)
	lost := ref["/frag/a"].e.ID
	cut := img[:recordAt(img, lost)]
	_, got, probs := openWalk(t, cut)
	if offs := kinds(probs)["truncated"]; len(offs) != 2 || !contains(offs, int64(len(cut))) {
		t.Errorf("truncated problems at %v; want the volume's and one for the records from %d (at %d)", offs, lost, len(cut))
	}
	if _, ok := got["/frag/a"]; ok {
		t.Errorf("frag/a, whose record is cut off, is listed")
	}
	for _, p := range []string{"/small.txt", "/resident.bin", "/docs/a long name with spaces.and.dots"} { // resident
		if g := got[p]; g.e == nil || g.err != nil || string(g.data) != string(ref[p].data) {
			t.Errorf("%q, whose record lies before the cut, not read whole", p)
		}
	}
}

// refix applies an update sequence to a record (the inverse of the
// reader's fixup): each 512-byte stride's last two bytes are saved in the
// update sequence array and replaced by the update sequence number.
func refix(rec []byte) {
	usa := int(le.Uint16(rec[4:]))
	for i := 0; i < len(rec)/512; i++ {
		end := (i+1)*512 - 2
		copy(rec[usa+2+2*i:], rec[end:end+2])
		copy(rec[end:], rec[usa:usa+2])
	}
}

// unfix undoes refix.
func unfix(rec []byte) {
	usa := int(le.Uint16(rec[4:]))
	for i := 0; i < len(rec)/512; i++ {
		end := (i+1)*512 - 2
		copy(rec[end:end+2], rec[usa+2+2*i:])
	}
}

// splitMFT rewrites the sample's $MFT (one run of clusters) as two
// fragments, as Windows leaves an $MFT grown in pieces: record 0's $DATA
// maps its first 8 clusters (records 0–31), and an extension record (16)
// the rest, from VCN 8; with list, record 0 gets the $ATTRIBUTE_LIST that
// names that extension record.
func splitMFT(t *testing.T, img []byte, list bool) {
	t.Helper()
	const split = 8
	mftLCN := le.Uint64(img[0x30:])
	off0 := recordAt(img, 0)
	rec0 := img[off0 : off0+1024]
	unfix(rec0)
	seq0 := le.Uint16(rec0[0x10:])
	data := attrAt(t, img, off0, 0x80) - off0
	clusters := (le.Uint64(rec0[data+0x18:]) + 1)
	if clusters <= split || mftLCN+split > 127 {
		t.Fatalf("the $MFT: %d clusters at %d, cannot be split so", clusters, mftLCN)
	}
	le.PutUint64(rec0[data+0x18:], split-1) // last VCN
	ro := data + int64(le.Uint16(rec0[data+0x20:]))
	copy(rec0[ro:], []byte{0x11, split, byte(mftLCN), 0})
	if list {
		// Where the end marker is, the $ATTRIBUTE_LIST (resident, two
		// entries of 32 bytes: $DATA from VCN 0 in record 0, from VCN 8
		// in record 16).
		end := findAttr(rec0, 0, 0xFFFFFFFF)
		a := rec0[end:]
		clear(a[:88+8])
		le.PutUint32(a, 0x20)
		le.PutUint32(a[4:], 88)
		a[0x0A] = 0x18
		le.PutUint16(a[0x0E:], 9)
		le.PutUint32(a[0x10:], 64)
		le.PutUint16(a[0x14:], 0x18)
		for i, e := range []struct{ vcn, rec uint64 }{{0, 0}, {split, 16}} {
			v := a[0x18+32*i:]
			le.PutUint32(v, 0x80)
			le.PutUint16(v[4:], 32)
			v[7] = 0x1A
			le.PutUint64(v[8:], e.vcn)
			le.PutUint64(v[0x10:], e.rec|uint64(seq0)<<48)
		}
		le.PutUint32(a[88:], 0xFFFFFFFF)
		le.PutUint32(rec0[0x18:], uint32(end+88+8))
	}
	refix(rec0)

	// Record 16: an extension record of record 0 holding the $DATA
	// fragment from VCN 8.
	off16 := recordAt(img, 16)
	r := img[off16 : off16+1024]
	clear(r)
	copy(r, "FILE")
	le.PutUint16(r[4:], 0x30) // update sequence array
	le.PutUint16(r[6:], 3)
	le.PutUint16(r[0x30:], 7) // the update sequence number
	le.PutUint16(r[0x10:], 1)
	le.PutUint16(r[0x14:], 0x38)
	le.PutUint16(r[0x16:], 1) // in use
	le.PutUint32(r[0x18:], 0x88)
	le.PutUint32(r[0x1C:], 1024)
	le.PutUint64(r[0x20:], uint64(seq0)<<48) // base record 0
	le.PutUint32(r[0x2C:], 16)
	d := r[0x38:]
	le.PutUint32(d, 0x80)
	le.PutUint32(d[4:], 0x48)
	d[8] = 1
	le.PutUint16(d[0x0A:], 0x40)
	le.PutUint64(d[0x10:], split)
	le.PutUint64(d[0x18:], clusters-1)
	le.PutUint16(d[0x20:], 0x40)
	copy(d[0x40:], []byte{0x11, byte(clusters - split), byte(mftLCN + split), 0})
	le.PutUint32(r[0x80:], 0xFFFFFFFF)
	refix(r)
}

// TestFragmentedMFT: an $MFT whose runlist continues in an extension
// record (named by record 0's $ATTRIBUTE_LIST) is read whole — every
// entry and byte as from the one-run $MFT it was made of; without the
// list, only the records of the first fragment are read, and that is
// reported.
func TestFragmentedMFT(t *testing.T) {
	clean := sampleImage(t)
	v, ref, _ := openWalk(t, clean)
	records := v.Info().Records

	img := sampleImage(t)
	splitMFT(t, img, true)
	v, got, probs := openWalk(t, img)
	for _, p := range probs {
		t.Errorf("problem: %v", p)
	}
	if n := v.Info().Records; n != records {
		t.Errorf("%d MFT records read, want %d", n, records)
	}
	for p, w := range ref {
		if g, ok := got[p]; !ok || g.e.ID != w.e.ID || g.err != nil || string(g.data) != string(w.data) {
			t.Errorf("%q: not read as from the one-run $MFT", p)
		}
	}

	img = sampleImage(t)
	splitMFT(t, img, false)
	v, got, probs = openWalk(t, img)
	if n := v.Info().Records; n != 32 {
		t.Errorf("without the list: %d records read, want the first fragment's 32", n)
	}
	if len(kinds(probs)["corrupt"]) == 0 || len(got) >= len(ref) {
		t.Errorf("without the list: %d entries, problems %v; want fewer, reported", len(got), probs)
	}
}
