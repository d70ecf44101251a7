package hfs

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/HRDAG/ntt/imagefs"
)

// Compressed files (decmpfs, macOS 10.6 and later): a file whose BSD
// flags hold UF_COMPRESSED, or whose data fork is empty, and which has a
// com.apple.decmpfs attribute, keeps its content compressed — in the
// attribute after its 16-byte header (types 3, 7, 11, …) or in its
// resource fork (types 4, 8, 12, …). The header is little-endian: magic
// "fpmc", compression type, uncompressed size.

// ErrCompression: a compressed file's content is in a decmpfs form this
// reader does not decode (LZVN, LZFSE, an attribute in a fork of its own).
var ErrCompression = errors.New("decmpfs compression not decoded by this reader (only zlib, types 3 and 4)")

// ufCompressed is UF_COMPRESSED in HFSPlusBSDInfo.ownerFlags.
const ufCompressed = 0x20

// blockSize of the compressed content of a type 4 resource fork: every
// block but the last decodes to 64 KiB.
const decmpBlock = 64 << 10

// maxCompressedSize bounds the uncompressed size a decmpfs header may give.
const maxCompressedSize = 1 << 40

var le = binary.LittleEndian

// decmp is a compressed file's decmpfs header and attribute.
type decmp struct {
	typ  uint32
	size int64
	a    attr
}

// inFork reports whether the compressed content lies in the resource fork
// (the even types of Apple's scheme from 4 on: 4 zlib, 8 LZVN, 12 LZFSE,
// 14 LZBITMAP).
func (d decmp) inFork() bool { return d.typ >= 4 && d.typ%2 == 0 }

// compressed returns r's decmpfs header: ok if r has the attribute and is
// compressed, err if the attribute does not check out.
func (v *PlusVolume) compressed(r *record) (d decmp, ok bool, err error) {
	a, has := v.decmpfs[r.id]
	if !has || (r.data[41]&ufCompressed == 0 && be.Uint64(r.data[88:]) != 0) {
		return d, false, nil
	}
	d.a = a
	switch {
	case a.fork:
		return d, true, fmt.Errorf("its com.apple.decmpfs attribute is in a fork of its own: %w", ErrCompression)
	case len(a.data) < 16 || string(a.data[:4]) != "fpmc":
		return d, true, fmt.Errorf("its com.apple.decmpfs attribute has no 'fpmc' header: %w", imagefs.ErrCorrupt)
	}
	d.typ = le.Uint32(a.data[4:])
	if n := le.Uint64(a.data[8:]); n > maxCompressedSize {
		return d, true, fmt.Errorf("its com.apple.decmpfs header gives %d bytes: %w", n, imagefs.ErrCorrupt)
	} else {
		d.size = int64(n)
	}
	return d, true, nil
}

// openCompressed returns a reader of a compressed file's content. What
// cannot be decoded fails with an *imagefs.ReadError at the volume offset
// of the attribute or of the resource fork's block: ErrCompression for a
// form not read, imagefs.ErrCorrupt for one that does not decode to its
// size.
func (v *PlusVolume) openCompressed(e *imagefs.Entry, r *record, d decmp) io.ReaderAt {
	fail := func(off int64, err error) io.ReaderAt {
		return &failReader{err: &imagefs.ReadError{Offset: off, Err: err}}
	}
	switch d.typ {
	case 3:
		b, err := inflate(d.a.data[16:], d.size)
		if err != nil {
			return fail(d.a.off, fmt.Errorf("the inline decmpfs content of CNID %d: %w", r.id, err))
		}
		return bytes.NewReader(b)
	case 4:
		fd := r.data[168 : 168+forkDataSize]
		fork := &imagefs.Entry{ID: imagefs.ForkID(uint64(r.id), 1), Size: v.forkSize(fd, "the resource fork of a compressed file", r.off), Runs: e.Runs}
		rr, _ := v.open(fork, r)
		z := &zlibFork{rsrc: rr, rsize: fork.Size, runs: e.Runs, size: d.size, cnid: r.id, recOff: r.off}
		if err := z.table(); err != nil {
			return &failReader{err: err}
		}
		return z
	}
	return fail(d.a.off, fmt.Errorf("CNID %d is compressed with decmpfs type %d: %w", r.id, d.typ, ErrCompression))
}

// inflate decodes one zlib unit to exactly want bytes: a unit whose first
// byte has 0xF in its low nibble is stored raw after it.
func inflate(b []byte, want int64) ([]byte, error) {
	if len(b) == 0 && want == 0 {
		return nil, nil
	}
	if len(b) > 0 && b[0]&0x0f == 0x0f {
		b = b[1:]
		if int64(len(b)) != want {
			return nil, fmt.Errorf("a raw unit of %d bytes, want %d: %w", len(b), want, imagefs.ErrCorrupt)
		}
		return b, nil
	}
	zr, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("zlib: %v: %w", err, imagefs.ErrCorrupt)
	}
	// Bounded by want+1: a unit that decodes longer is damage, not
	// something to hold.
	var out bytes.Buffer
	if _, err := io.Copy(&out, io.LimitReader(zr, want+1)); err != nil {
		return nil, fmt.Errorf("zlib: %v: %w", err, imagefs.ErrCorrupt)
	}
	if int64(out.Len()) != want {
		return nil, fmt.Errorf("a zlib unit decodes to %d bytes, want %d: %w", out.Len(), want, imagefs.ErrCorrupt)
	}
	return out.Bytes(), nil
}

// zlibFork reads the content of a decmpfs type 4 file from its resource
// fork: a resource fork header whose data offset (big-endian, at 0) points
// to a 4-byte length, then a table of little-endian block count and
// (offset, length) pairs, offsets counted from the table, each block a
// zlib unit of 64 KiB of content (the last one shorter).
type zlibFork struct {
	rsrc   io.ReaderAt
	rsize  int64
	runs   []imagefs.Run
	size   int64
	cnid   uint32
	recOff int64
	base   int64
	blocks [][2]uint32

	mu     sync.Mutex
	cached int // index of the block in buf, -1 none
	buf    []byte
}

// volOff is the volume offset of byte off of the resource fork, for
// errors (the record's when the runs do not map it).
func (z *zlibFork) volOff(off int64) int64 {
	for _, r := range z.runs {
		if off >= r.Logical && off < r.Logical+r.Length {
			return r.Offset + off - r.Logical
		}
	}
	return z.recOff
}

func (z *zlibFork) corrupt(off int64, format string, args ...any) error {
	return &imagefs.ReadError{Offset: z.volOff(off), Err: fmt.Errorf("the compressed resource fork of CNID %d: %s: %w", z.cnid, fmt.Sprintf(format, args...), imagefs.ErrCorrupt)}
}

// table reads and checks the block table: as many blocks as the size
// needs, each inside the fork.
func (z *zlibFork) table() error {
	z.cached = -1
	if z.rsize < 8 {
		return z.corrupt(0, "a resource fork of %d bytes holds no block table", z.rsize)
	}
	var b [8]byte
	if _, err := z.rsrc.ReadAt(b[:4], 0); err != nil {
		return err
	}
	z.base = int64(be.Uint32(b[:])) + 4
	if z.base+4 > z.rsize {
		return z.corrupt(0, "the data offset %d lies past the fork's %d bytes", z.base-4, z.rsize)
	}
	if _, err := z.rsrc.ReadAt(b[:4], z.base); err != nil {
		return err
	}
	n := int64(le.Uint32(b[:]))
	want := (z.size + decmpBlock - 1) / decmpBlock
	if n != want || z.base+4+8*n > z.rsize {
		return z.corrupt(z.base, "a table of %d blocks for %d bytes of content (want %d) in a fork of %d bytes", n, z.size, want, z.rsize)
	}
	tab := make([]byte, 8*n)
	if _, err := z.rsrc.ReadAt(tab, z.base+4); err != nil {
		return err
	}
	z.blocks = make([][2]uint32, n)
	for i := range z.blocks {
		off, l := le.Uint32(tab[8*i:]), le.Uint32(tab[8*i+4:])
		if z.base+int64(off)+int64(l) > z.rsize || l > 2*decmpBlock {
			return z.corrupt(z.base+4+8*int64(i), "block %d of %d bytes at %d lies past the fork's %d bytes", i, l, off, z.rsize)
		}
		z.blocks[i] = [2]uint32{off, l}
	}
	return nil
}

// block returns block i decoded; z.mu is held.
func (z *zlibFork) block(i int) ([]byte, error) {
	if z.cached == i {
		return z.buf, nil
	}
	off := z.base + int64(z.blocks[i][0])
	raw := make([]byte, z.blocks[i][1])
	if _, err := z.rsrc.ReadAt(raw, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	want := min(int64(decmpBlock), z.size-int64(i)*decmpBlock)
	b, err := inflate(raw, want)
	if err != nil {
		return nil, &imagefs.ReadError{Offset: z.volOff(off), Err: fmt.Errorf("block %d of the compressed resource fork of CNID %d: %w", i, z.cnid, err)}
	}
	z.cached, z.buf = i, b
	return b, nil
}

func (z *zlibFork) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("hfsplus: negative offset")
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	n := 0
	for n < len(p) && off+int64(n) < z.size {
		pos := off + int64(n)
		b, err := z.block(int(pos / decmpBlock))
		if err != nil {
			return n, err
		}
		n += copy(p[n:], b[pos%decmpBlock:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// failReader fails every read with err.
type failReader struct{ err error }

func (f *failReader) ReadAt([]byte, int64) (int, error) { return 0, f.err }
