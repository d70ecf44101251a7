package iso9660

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/HRDAG/ntt/imagefs"
)

// Records and System Use entries built by hand, for what the mastering
// tools do not write on demand: multi-extent files (a file over 4 GiB;
// building one with xorriso writes 4 GiB), interleaved files, the long
// TF form, CE loops, conflicting serial numbers, zisofs.

const rootBlock = 18

// craft is a volume of 2048-byte blocks: PVD at 16, terminator at 17, root
// directory at 18.
type craft struct {
	img      []byte
	problems []*imagefs.Problem
}

func newCraft(blocks int) *craft {
	c := &craft{img: make([]byte, blocks*2048)}
	p := c.img[16*2048:]
	p[0] = 1
	copy(p[1:], "CD001")
	p[6] = 1
	copy(p[40:72], "CRAFTED                         ")
	both32(p[80:], uint32(blocks))
	binary.LittleEndian.PutUint16(p[128:], 2048)
	binary.BigEndian.PutUint16(p[130:], 2048)
	t := c.img[17*2048:]
	t[0] = 255
	copy(t[1:], "CD001")
	t[6] = 1
	return c
}

func both32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b, v)
	binary.BigEndian.PutUint32(b[4:], v)
}

// rec builds a directory record.
func rec(name string, extent, size uint32, flags byte, su ...[]byte) []byte {
	n := 33 + len(name)
	if len(name)%2 == 0 {
		n++
	}
	area := bytes.Join(su, nil)
	b := make([]byte, n+len(area))
	b[0] = byte(len(b))
	both32(b[2:], extent)
	both32(b[10:], size)
	copy(b[18:], []byte{120, 6, 15, 12, 0, 0, 0}) // 2020-06-15 12:00:00 UTC
	b[25] = flags
	b[28], b[31] = 1, 1 // volume sequence number 1
	b[32] = byte(len(name))
	copy(b[33:], name)
	copy(b[n:], area)
	return b
}

// dir lays out a directory at block: "." (with dotSU) and "..", then recs,
// none crossing a 2048-byte sector. It returns the directory's size.
func (c *craft) dir(block int, parent int, dotSU []byte, recs ...[]byte) uint32 {
	all := append([][]byte{rec("\x00", uint32(block), 0, 2, dotSU), rec("\x01", uint32(parent), 2048, 2)}, recs...)
	pos := block * 2048
	for _, r := range all {
		if (pos%2048)+len(r) > 2048 {
			pos += 2048 - pos%2048
		}
		copy(c.img[pos:], r)
		pos += len(r)
	}
	size := uint32((pos - block*2048 + 2047) / 2048 * 2048)
	both32(c.img[block*2048+10:], size)
	return size
}

// root lays out the root directory and points the PVD at it.
func (c *craft) root(dotSU []byte, recs ...[]byte) {
	size := c.dir(rootBlock, rootBlock, dotSU, recs...)
	copy(c.img[16*2048+156:], rec("\x00", rootBlock, size, 2))
}

// fill writes a recognisable pattern over n bytes at block.
func (c *craft) fill(block, n int, seed byte) []byte {
	b := c.img[block*2048 : block*2048+n]
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// System Use entries.
func sue(sig string, data ...byte) []byte {
	return append([]byte{sig[0], sig[1], byte(4 + len(data)), 1}, data...)
}
func sp(skip byte) []byte { return sue("SP", 0xBE, 0xEF, skip) }
func er() []byte {
	id := "RRIP_1991A"
	return sue("ER", append([]byte{byte(len(id)), 0, 0, 1}, id...)...)
}
func px(mode, nlink uint32, serial ...uint32) []byte {
	b := make([]byte, 32+8*len(serial))
	both32(b, mode)
	both32(b[8:], nlink)
	for i, s := range serial {
		both32(b[32+8*i:], s)
	}
	return sue("PX", b...)
}
func nm(flags byte, name string) []byte { return sue("NM", append([]byte{flags}, name...)...) }
func ce(block, off, n uint32) []byte {
	b := make([]byte, 24)
	both32(b, block)
	both32(b[8:], off)
	both32(b[16:], n)
	return sue("CE", b...)
}

// comp is one SL component.
func comp(flags byte, text string) []byte { return append([]byte{flags, byte(len(text))}, text...) }
func sl(flags byte, comps ...[]byte) []byte {
	return sue("SL", append([]byte{flags}, bytes.Join(comps, nil)...)...)
}

// open opens the volume; the problems it reports gather in c.problems.
func (c *craft) open(t *testing.T) *FS {
	t.Helper()
	f, err := Open(bytes.NewReader(c.img), int64(len(c.img)), imagefs.Options{Report: func(p *imagefs.Problem) { c.problems = append(c.problems, p) }})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func list(t *testing.T, f *FS) map[string]*imagefs.Entry {
	t.Helper()
	m := map[string]*imagefs.Entry{}
	err := imagefs.Walk(context.Background(), f, &f.opts, func(p []byte, e *imagefs.Entry) error {
		m[string(p)] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func read(t *testing.T, f *FS, e *imagefs.Entry) ([]byte, error) {
	t.Helper()
	r, err := f.Open(e)
	if err != nil {
		return nil, err
	}
	b := make([]byte, e.Size)
	n, err := r.ReadAt(b, 0)
	if n == len(b) {
		err = nil
	}
	return b[:n], err
}

// TestMultiExtent: a file in three extents (the multi-extent flag on all
// records but the last) is one entry of three runs, read in order; a
// multi-extent file whose final record is missing is reported and keeps
// the parts it has.
func TestMultiExtent(t *testing.T) {
	c := newCraft(64)
	var want []byte
	want = append(want, c.fill(30, 4096, 1)...)
	want = append(want, c.fill(40, 2048, 2)...)
	want = append(want, c.fill(50, 100, 3)...)
	c.fill(52, 2048, 4)
	c.root(nil,
		rec("BIG.;1", 30, 4096, 0x80),
		rec("BIG.;1", 40, 2048, 0x80),
		rec("BIG.;1", 50, 100, 0),
		rec("CUT.;1", 52, 2048, 0x80),
		rec("NEXT.;1", 50, 100, 0),
	)
	f := c.open(t)
	m := list(t, f)
	ps := c.problems
	big := m["/big"]
	if big == nil {
		t.Fatalf("no /big: %v", m)
	}
	if big.Size != 6244 || len(big.Runs) != 3 || big.Runs[1].Logical != 4096 || big.Runs[2].Offset != 50*2048 {
		t.Errorf("big: size %d, runs %+v", big.Size, big.Runs)
	}
	if got, err := read(t, f, big); err != nil || !bytes.Equal(got, want) {
		t.Errorf("big reads %d bytes (%v), not the three extents", len(got), err)
	}
	if cut := m["/cut"]; cut == nil || cut.Size != 2048 {
		t.Errorf("cut: %+v", cut)
	}
	if m["/next"] == nil {
		t.Error("the record after an unfinished multi-extent file is lost")
	}
	if !hasProblem(ps, "corrupt", rootBlock*2048, rootBlock*2048+2048) {
		t.Errorf("the unfinished multi-extent file is not reported: %v", ps)
	}
	if len(m) != 4 {
		t.Errorf("%d entries: %v", len(m), m)
	}
}

// TestInterleaved: a file of unit 1 block and gap 2 blocks is laid out as
// one run per unit.
func TestInterleaved(t *testing.T) {
	c := newCraft(64)
	var want []byte
	want = append(want, c.fill(30, 2048, 1)...)
	want = append(want, c.fill(33, 2048, 2)...)
	want = append(want, c.fill(36, 904, 3)...)
	r := rec("IL.;1", 30, 5000, 0)
	r[26], r[27] = 1, 2
	c.root(nil, r)
	f := c.open(t)
	e := list(t, f)["/il"]
	ps := c.problems
	if e == nil || len(e.Runs) != 3 || e.Runs[2].Offset != 36*2048 || e.Size != 5000 {
		t.Fatalf("interleaved file: %+v", e)
	}
	if got, err := read(t, f, e); err != nil || !bytes.Equal(got, want) {
		t.Errorf("interleaved file reads %d bytes (%v), not its units", len(got), err)
	}
	if len(ps) > 0 {
		t.Errorf("problems: %v", ps)
	}
}

// TestRockRidgeEntries: PX in both sizes, TF in both forms, NM continued
// across entries and into a continuation area, SL components of every kind
// and continued components, hardlinks by serial, a CE that points at
// itself, a CE past the volume, zisofs.
func TestRockRidgeEntries(t *testing.T) {
	c := newCraft(64)
	// A continuation area at block 25 offset 100: the rest of a name.
	cont := append(nm(0, "-continued"), sue("ST")...)
	copy(c.img[25*2048+100:], cont)
	// A CE that points at itself (block 26, offset 0).
	copy(c.img[26*2048:], ce(26, 0, 28))

	short := []byte{0x02, 121, 1, 2, 3, 4, 5, 0} // modify only: 2021-01-02 03:04:05 UTC
	// Long form, creation then modify; the modify time is at GMT-2.
	long := append([]byte{0x83}, "1999123123595800\x04"...)
	long = append(long, "2022030405060700\xF8"...)
	c.fill(30, 10, 1)
	c.fill(31, 20, 2)
	c.root(append(sp(0), er()...),
		rec("A.;1", 30, 10, 0, px(0o100644, 1), nm(1, "name-"), nm(1, "in-"), nm(0, "parts"), sue("TF", short...)),
		rec("B.;1", 30, 10, 0, px(0o100644, 1), nm(1, "spill"), ce(25, 100, uint32(len(cont))), sue("TF", long...)),
		rec("LNK.;1", 0, 0, 0, px(0o120777, 1),
			sl(1, comp(8, ""), comp(0, "usr"), comp(1, "lo")),
			sl(0, comp(0, "cal"), comp(2, ""), comp(4, ""), comp(0, "bin"))),
		rec("H1.;1", 31, 20, 0, px(0o100644, 2, 77)),
		rec("H2.;1", 31, 20, 0, px(0o100644, 2, 77)),
		rec("H3.;1", 30, 10, 0, px(0o100644, 2, 77)),
		rec("LOOP.;1", 30, 10, 0, px(0o100644, 1), ce(26, 0, 28)),
		rec("FAR.;1", 30, 10, 0, px(0o100644, 1), ce(9999, 0, 28)),
		rec("Z.;1", 30, 10, 0, px(0o100644, 1), sue("ZF", make([]byte, 12)...)),
		rec("FIFO.;1", 0, 0, 0, px(0o010644, 1)),
	)
	f := c.open(t)
	if f.Naming() != RockRidge {
		t.Fatalf("naming %s", f.Naming())
	}
	m := list(t, f)
	ps := c.problems
	if e := m["/name-in-parts"]; e == nil || !e.Mtime.Equal(time.Date(2021, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("NM in parts with a short TF: %+v (have %v)", e, keys(m))
	}
	if e := m["/spill-continued"]; e == nil || !e.Mtime.Equal(time.Date(2022, 3, 4, 7, 6, 7, 0, time.UTC)) {
		t.Errorf("NM into a continuation area with a long TF: %+v", e)
	}
	if e := m["/lnk"]; e == nil || e.Type != 'l' || string(e.Target) != "/usr/local/./../bin" || e.Size != int64(len("/usr/local/./../bin")) {
		t.Errorf("symlink: %+v", e)
	}
	h1, h2, h3 := m["/h1"], m["/h2"], m["/h3"]
	if h1 == nil || h2 == nil || h3 == nil || h1.ID != h2.ID || h1.Nlink != 2 || h3.ID == h1.ID {
		t.Errorf("hardlinks by serial: h1 %+v h2 %+v h3 %+v", h1, h2, h3)
	}
	if !hasProblem(ps, "corrupt", rootBlock*2048, rootBlock*2048+4096) {
		t.Errorf("a serial shared by other content not reported: %v", ps)
	}
	if m["/loop"] == nil || !hasProblem(ps, "loop", 26*2048, 27*2048) {
		t.Errorf("CE loop: %v", ps)
	}
	if m["/far"] == nil || !hasProblem(ps, "out_of_volume", rootBlock*2048, rootBlock*2048+4096) {
		t.Errorf("CE past the volume: %v", ps)
	}
	if z := m["/z"]; z == nil {
		t.Error("zisofs file not listed")
	} else if _, err := f.Open(z); !errors.Is(err, ErrUnsupported) {
		t.Errorf("zisofs file opens with %v, want ErrUnsupported", err)
	}
	if e := m["/fifo"]; e == nil || e.Type != 'p' || e.Size != 0 {
		t.Errorf("fifo: %+v", e)
	}
}

// TestPXSizes: the 36-byte PX of RRIP 1.10 and the 44-byte one of 1.12
// give the same mode and link count; only the latter has a serial.
func TestPXSizes(t *testing.T) {
	for _, tc := range []struct {
		entry  []byte
		serial bool
	}{{px(0o100600, 3), false}, {px(0o100600, 3, 9), true}} {
		f := &FS{bs: 2048}
		rr := f.parseSU(tc.entry, 0, subject{what: "test"}, nil)
		if !rr.px || rr.mode != 0o100600 || rr.nlink != 3 || rr.hasSerial != tc.serial || (tc.serial && rr.serial != 9) {
			t.Errorf("PX of %d bytes: %+v", len(tc.entry), rr)
		}
	}
}

// TestRecordPastExtent: a record that runs past the end of its directory's
// data length is reported and not read.
func TestRecordPastExtent(t *testing.T) {
	c := newCraft(64)
	c.fill(30, 10, 1)
	c.root(nil, rec("A.;1", 30, 10, 0), rec("B.;1", 30, 10, 0))
	// Shrink the root to end inside B's record: "." 34, ".." 34, A 38.
	both32(c.img[16*2048+156+10:], 34+34+38+10)
	f := c.open(t)
	m := list(t, f)
	ps := c.problems
	if m["/a"] == nil || m["/b"] != nil {
		t.Errorf("entries %v", keys(m))
	}
	if !hasProblem(ps, "corrupt", rootBlock*2048+106, rootBlock*2048+107) {
		t.Errorf("record past the extent not reported at its offset: %v", ps)
	}
}

// TestNotISO: a volume without CD001 at sector 16 is ErrNotISO9660.
func TestNotISO(t *testing.T) {
	for _, size := range []int{0, 100, 40000} {
		_, err := Open(bytes.NewReader(make([]byte, size)), int64(size), imagefs.Options{})
		if !errors.Is(err, ErrNotISO9660) {
			t.Errorf("%d zero bytes: %v", size, err)
		}
	}
}

// TestRegistered: the driver is found by probe's type name.
func TestRegistered(t *testing.T) {
	c := newCraft(32)
	c.root(nil)
	fsys, err := imagefs.Open("iso9660", bytes.NewReader(c.img), int64(len(c.img)), imagefs.Options{})
	if err != nil || fsys.Type() != "iso9660" {
		t.Fatalf("imagefs.Open: %v", err)
	}
}

func keys(m map[string]*imagefs.Entry) []string { return tsksorted(m) }

// sparseVolume is a large volume that is all zeros past its first bytes.
type sparseVolume struct {
	head []byte
	size int64
}

func (v sparseVolume) ReadAt(p []byte, off int64) (int, error) {
	if off >= v.size {
		return 0, io.EOF
	}
	n := len(p)
	if rem := v.size - off; int64(n) > rem {
		n = int(rem)
	}
	clear(p[:n])
	if off < int64(len(v.head)) {
		copy(p, v.head[off:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestTooManyRuns: an interleaved file of one-block units over 4 GiB would
// take more than maxRuns runs; it is listed with its recorded size and
// reported, and opening it fails with ErrUnsupported rather than reading a
// part of it as if it were whole.
func TestTooManyRuns(t *testing.T) {
	c := newCraft(40)
	r := rec("MANY.;1", 30, 0xFFFFF800, 0)
	r[26], r[27] = 1, 0
	c.root(nil, r, rec("OK.;1", 30, 10, 0))
	var ps []*imagefs.Problem
	vol := sparseVolume{head: c.img, size: 5 << 30}
	f, err := Open(vol, vol.size, imagefs.Options{Report: func(p *imagefs.Problem) { ps = append(ps, p) }})
	if err != nil {
		t.Fatal(err)
	}
	m := list(t, f)
	e := m["/many"]
	if e == nil || e.Size != 0xFFFFF800 || len(e.Runs) != maxRuns {
		t.Fatalf("many: %+v", e)
	}
	if _, err := f.Open(e); !errors.Is(err, ErrUnsupported) {
		t.Errorf("opening it: %v, want ErrUnsupported", err)
	}
	if !hasProblem(ps, "unsupported", rootBlock*2048, rootBlock*2048+2048) {
		t.Errorf("not reported: %v", ps)
	}
	if ok := m["/ok"]; ok == nil {
		t.Error("the next file is lost")
	} else if _, err := f.Open(ok); err != nil {
		t.Errorf("the next file: %v", err)
	}
}

// TestOpenNaming: asking for a tree the volume lacks is ErrNoTree; asking
// for the primary tree of a Rock Ridge volume gives the mapped primary names.
func TestOpenNaming(t *testing.T) {
	c := newCraft(40)
	c.fill(30, 10, 1)
	c.root(append(sp(0), er()...), rec("FILE.TXT;1", 30, 10, 0, px(0o100644, 1), nm(0, "Real Name.txt")))
	r := bytes.NewReader(c.img)
	for _, n := range []Naming{Joliet, "bogus"} {
		if _, err := OpenNaming(r, int64(len(c.img)), imagefs.Options{}, n); err == nil {
			t.Errorf("%s: opened", n)
		} else if n == Joliet && !errors.Is(err, ErrNoTree) {
			t.Errorf("%s: %v, want ErrNoTree", n, err)
		}
	}
	for n, want := range map[Naming]string{RockRidge: "/Real Name.txt", Primary: "/file.txt", "": "/Real Name.txt"} {
		f, err := OpenNaming(r, int64(len(c.img)), imagefs.Options{}, n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if list(t, f)[want] == nil {
			t.Errorf("%q: no %s", n, want)
		}
	}
	plain := newCraft(40)
	plain.root(nil)
	if _, err := OpenNaming(bytes.NewReader(plain.img), int64(len(plain.img)), imagefs.Options{}, RockRidge); !errors.Is(err, ErrNoTree) {
		t.Errorf("Rock Ridge of a plain volume: %v, want ErrNoTree", err)
	}
}
