package hfs

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/HRDAG/ntt/imagefs"
)

// Type is the probe type name this reader registers for.
const Type = "hfs"

// RootID is the root directory's CNID, as HFS numbers it.
const RootID = 2

// CNIDs of the B-tree files, whose overflow extents are keyed by them.
const (
	extentsCNID = 3
	catalogCNID = 4
)

func init() {
	imagefs.Register(imagefs.Driver{
		Types: []string{Type},
		Open: func(r io.ReaderAt, size int64, opts imagefs.Options) (imagefs.FS, error) {
			return Open(r, size, opts)
		},
	})
}

var (
	// ErrNotHFS: the master directory block is not one of classic HFS
	// (always inside a *FormatError naming the field).
	ErrNotHFS = errors.New("not a valid HFS master directory block")
	// ErrWrappedHFSPlus: the HFS volume is only a wrapper around an
	// embedded HFS+ volume, which the hfsplus reader reads, not this one.
	ErrWrappedHFSPlus = errors.New("an HFS wrapper around an embedded HFS+ volume: not read by the HFS reader (probe type hfsplus)")
)

// FormatError is a master directory block (HFS) or volume header (HFS+)
// field that does not check out: its byte offset on the volume, its name
// in Inside Macintosh or TN1150, its value and why. It wraps ErrNotHFS
// (HFS) or ErrNotHFSPlus (HFS+), and imagefs.ErrCorrupt.
type FormatError struct {
	Offset int64
	Field  string
	Value  int64
	Msg    string
	// Plus marks a field of an HFS+ volume (or of the HFS wrapper around
	// it, read by the HFS+ reader).
	Plus bool
}

func (e *FormatError) Error() string {
	if e.Plus {
		return fmt.Sprintf("hfsplus: volume header field %s at byte offset %d is %d: %s", e.Field, e.Offset, e.Value, e.Msg)
	}
	return fmt.Sprintf("hfs: master directory block field %s at byte offset %d is %d: %s", e.Field, e.Offset, e.Value, e.Msg)
}

// Unwrap lets errors.Is find ErrNotHFS or ErrNotHFSPlus, and
// imagefs.ErrCorrupt.
func (e *FormatError) Unwrap() []error {
	if e.Plus {
		return []error{ErrNotHFSPlus, imagefs.ErrCorrupt}
	}
	return []error{ErrNotHFS, imagefs.ErrCorrupt}
}

// The master directory block lies at byte 1024.
const mdbOffset = 1024

// macEpoch is HFS's time zero. HFS stores local time without a zone; it
// is taken as UTC.
var macEpoch = time.Date(1904, 1, 1, 0, 0, 0, 0, time.UTC)

func macTime(s uint32) time.Time { return macEpoch.Add(time.Duration(s) * time.Second) }

// Volume is a classic HFS volume opened from an image. Everything it needs
// is read at Open; its methods may be called from several goroutines.
type Volume struct {
	size       int64
	opts       imagefs.Options
	label      []byte
	lsMod      time.Time
	allocation // block 0 at drAlBlSt; readSize: the allocation area's end, or the image's
	catalog
}

// Info describes a volume.
type Info struct {
	Label          string // the volume name, UTF-8
	BlockSize      int64  // allocation block size in bytes
	Blocks         uint32 // allocation blocks
	AllocStart     int64  // byte offset of allocation block 0
	CatalogRecords int    // file and directory records read
}

// Info returns the volume's layout.
func (v *Volume) Info() Info {
	l, _ := DecodeName(v.label)
	return Info{Label: string(l), BlockSize: v.blkSize, Blocks: v.nBlocks, AllocStart: v.base, CatalogRecords: v.records()}
}

// Open reads the master directory block and the extents-overflow and
// catalog B-trees of the HFS volume r of size bytes. Damage on the way is
// reported through opts.Report; a master directory block that does not
// check out is a *FormatError; a wrapper around HFS+ is ErrWrappedHFSPlus;
// a catalog header node that does not check out wraps imagefs.ErrCorrupt,
// one that cannot be read an *imagefs.ReadError.
func Open(r io.ReaderAt, size int64, opts imagefs.Options) (*Volume, error) {
	if size < mdbOffset+512 {
		return nil, &FormatError{Offset: 0, Field: "volume size", Value: size, Msg: "the volume is shorter than its master directory block"}
	}
	m := make([]byte, 512)
	if _, err := r.ReadAt(m, mdbOffset); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("hfs: reading the master directory block: %w", err)
	}
	bad := func(off int, field string, val int64, msg string) error {
		return &FormatError{Offset: mdbOffset + int64(off), Field: field, Value: val, Msg: msg}
	}
	if string(m[0:2]) != "BD" {
		return nil, bad(0, "drSigWord", int64(be.Uint16(m)), "not the HFS signature 'BD'")
	}
	if string(m[0x7c:0x7e]) == "H+" {
		return nil, fmt.Errorf("hfs: %w", ErrWrappedHFSPlus)
	}
	v := &Volume{size: size, opts: opts}
	v.allocation = allocation{r: r, report: &v.opts, maxFABN: 0xffff, overflow: map[extKey][]extent{}}
	v.catalog = newCatalog(&v.opts)
	v.nBlocks = uint32(be.Uint16(m[0x12:]))
	v.blkSize = int64(be.Uint32(m[0x14:]))
	v.base = int64(be.Uint16(m[0x1c:])) * 512
	v.lsMod = macTime(be.Uint32(m[0x06:]))
	switch {
	case v.nBlocks == 0:
		return nil, bad(0x12, "drNmAlBlks", 0, "no allocation blocks")
	case v.blkSize == 0 || v.blkSize%512 != 0 || v.blkSize > 1<<30:
		return nil, bad(0x14, "drAlBlkSiz", v.blkSize, "not a positive multiple of 512")
	case v.base < mdbOffset+512:
		return nil, bad(0x1c, "drAlBlSt", v.base/512, "the allocation area starts before the end of the master directory block")
	case v.base >= size:
		return nil, bad(0x1c, "drAlBlSt", v.base/512, "the allocation area starts past the end of the volume")
	}
	if n := int(m[0x24]); n <= 27 {
		v.label = append([]byte(nil), m[0x25:0x25+n]...)
	}
	end := v.base + int64(v.nBlocks)*v.blkSize
	v.readSize = min(end, size)
	if end > size {
		opts.Reportf(size, "truncated", "the image ends at byte %d, the master directory block gives the allocation area up to byte %d: content past the end cannot be read", size, end)
	}
	xtSize := int64(be.Uint32(m[0x82:]))
	ctSize := int64(be.Uint32(m[0x92:]))
	for _, f := range []struct {
		off  int
		name string
		val  int64
	}{{0x82, "drXTFlSize", xtSize}, {0x92, "drCTFlSize", ctSize}} {
		if f.val < nodeSize || f.val%nodeSize != 0 || f.val > end-v.base {
			return nil, bad(f.off, f.name, f.val, "not a multiple of 512 B-tree nodes inside the allocation area")
		}
	}

	// The extents-overflow file has only its three extents.
	xt := v.btree("extents overflow", extentsCNID, extents(m[0x86:]), xtSize, mdbOffset+0x86, false)
	if err := xt.header(); err != nil {
		opts.Reportf(xt.nodeOffset(0), "corrupt", "%v; no extents-overflow records are read", err)
	} else {
		xt.leaves(v.addOverflow)
	}
	ct := v.btree("catalog", catalogCNID, extents(m[0x96:]), ctSize, mdbOffset+0x96, false)
	if err := ct.header(); err != nil {
		return nil, fmt.Errorf("hfs: %w", err)
	}
	ct.leaves(v.addCatalog)
	v.rescueDirs(hfsDirData)
	if v.dirs[RootID] == nil {
		opts.Reportf(-1, "corrupt", "the catalog has no record of the root directory (CNID 2); its entries are still listed")
	}
	return v, nil
}

// hfsDirData is the data of a directory record rescued from its thread:
// its valence and CNID, all dates the Mac epoch.
func hfsDirData(cnid uint32, valence int) []byte {
	data := make([]byte, 70)
	data[0] = 1
	be.PutUint16(data[4:], uint16(min(valence, 0xffff)))
	be.PutUint32(data[6:], cnid)
	return data
}

// addOverflow keeps one extents-overflow leaf record.
func (v *Volume) addOverflow(rec []byte, off int64) {
	key, data, ok := recordKey(rec)
	if !ok || len(key) < 7 || len(data) < 12 {
		v.opts.Reportf(off, "corrupt", "an extents-overflow record of %d bytes does not check out; left out", len(rec))
		return
	}
	v.allocation.addOverflow(extKey{key[0], be.Uint32(key[1:]), uint32(be.Uint16(key[5:]))}, extents(data), off)
}

// addCatalog keeps one catalog leaf record of a file or a directory, and
// the directory threads (which name a directory's parent and name).
func (v *Volume) addCatalog(rec []byte, off int64) {
	key, data, ok := recordKey(rec)
	if !ok || len(key) < 6 || int(key[5]) > 31 || 6+int(key[5]) > len(key) || len(data) < 2 {
		v.opts.Reportf(off, "corrupt", "a catalog record of %d bytes has a key that does not check out; left out", len(rec))
		return
	}
	r := &record{parent: be.Uint32(key[1:]), name: append([]byte(nil), key[6:6+int(key[5])]...), off: off, size: int64(len(rec))}
	switch data[0] {
	case 1:
		if len(data) < 70 {
			v.opts.Reportf(off, "corrupt", "directory record %q of %d bytes, want 70; left out", r.name, len(data))
			return
		}
		r.dir = true
		r.data = append([]byte(nil), data[:70]...)
		r.id = be.Uint32(r.data[6:])
	case 2:
		if len(data) < 102 {
			v.opts.Reportf(off, "corrupt", "file record %q of %d bytes, want 102; left out", r.name, len(data))
			return
		}
		r.data = append([]byte(nil), data[:102]...)
		r.id = be.Uint32(r.data[20:])
	case 3:
		// A directory thread: its key is (CNID, ""), its data names the
		// directory's parent and name; kept to rescue a directory whose
		// own record is lost.
		if len(data) >= 15 && int(data[14]) <= 31 && 15+int(data[14]) <= len(data) {
			v.addThread(r.parent, &record{parent: be.Uint32(data[10:]), name: append([]byte(nil), data[15:15+int(data[14])]...), off: off, size: int64(len(rec))})
		}
		return
	case 4:
		return
	default:
		v.opts.Reportf(off, "corrupt", "catalog record %q of unknown type %d; left out", r.name, data[0])
		return
	}
	// One record per CNID: a second directory record (damage) would list
	// the same entries again, under another name.
	v.add(r)
}

// Type returns "hfs".
func (v *Volume) Type() string { return Type }

// Root returns the root directory (CNID 2).
func (v *Volume) Root() (*imagefs.Entry, error) {
	if r := v.dirs[RootID]; r != nil {
		e := v.entry(r)
		e.Name = nil
		return e, nil
	}
	return &imagefs.Entry{ID: RootID, Type: 'd', Mtime: v.lsMod, Nlink: 2 + v.subdirs(RootID)}, nil
}

// ReadDir returns the files and directories whose catalog records name dir
// as their parent, in catalog (key) order.
func (v *Volume) ReadDir(dir *imagefs.Entry) ([]*imagefs.Entry, error) {
	if dir == nil || dir.Type != 'd' || dir.ID > 0xffffffff {
		return nil, fmt.Errorf("hfs: ReadDir of a non-directory")
	}
	recs := v.children[uint32(dir.ID)]
	out := make([]*imagefs.Entry, 0, len(recs))
	for _, r := range recs {
		out = append(out, v.entry(r))
	}
	return out, nil
}

func (v *Volume) entry(r *record) *imagefs.Entry {
	id := r.cnid()
	name, changed := DecodeName(r.name)
	switch {
	case len(name) == 0 || string(name) == "." || string(name) == "..":
		v.opts.Reportf(r.off, "bad_name", "CNID %d has the name %q; named %s", id, r.name, placeholderName(id))
		name = placeholderName(id)
	case changed:
		v.opts.Reportf(r.off, "bad_name", "CNID %d: a NUL in the name %q is shown as U+2400", id, r.name)
	}
	if r.dir {
		e := &imagefs.Entry{ID: uint64(id), Type: 'd', Name: name, Size: int64(be.Uint16(r.data[4:])) + 2,
			Mtime: macTime(be.Uint32(r.data[14:])), Nlink: 2 + v.subdirs(id)}
		if r.off >= 0 {
			e.Runs = []imagefs.Run{{Offset: r.off, Length: r.size}}
		}
		return e
	}
	size := int64(be.Uint32(r.data[26:]))
	runs, _ := v.forkRuns(extents(r.data[74:]), id, 0, size, fmt.Sprintf("the data fork of %q", name), r.off)
	e := &imagefs.Entry{ID: uint64(id), Type: 'f', Name: name, Size: size,
		Mtime: macTime(be.Uint32(r.data[48:])), Nlink: 1, Runs: runs}
	if rsize := int64(be.Uint32(r.data[36:])); rsize > 0 {
		f := &imagefs.Entry{ID: imagefs.ForkID(uint64(id), 1), Type: 'f', Name: []byte(imagefs.ResourceFork),
			Size: rsize, Mtime: e.Mtime, Nlink: 1}
		f.Runs, _ = v.forkRuns(extents(r.data[86:]), id, 0xff, rsize, fmt.Sprintf("the resource fork of %q", name), r.off)
		e.Forks = []*imagefs.Entry{f}
	}
	return e
}

// Open returns a reader of a file's data fork, or of the resource fork
// its Forks hold. If the fork's extents cover fewer bytes than its size,
// reading the missing tail fails with imagefs.ErrCorrupt (never zeros); a
// run past the image or the allocation area fails with
// imagefs.ErrBeyondEnd.
func (v *Volume) Open(e *imagefs.Entry) (io.ReaderAt, error) {
	if e == nil || e.Type != 'f' {
		return nil, fmt.Errorf("hfs: Open of a non-file")
	}
	return v.forkReader(e, v.fileOff(uint32(e.ID))), nil
}

// fileOff is the volume offset of file cnid's record (-1: none).
func (v *Volume) fileOff(cnid uint32) int64 {
	if r := v.files[cnid]; r != nil {
		return r.off
	}
	return -1
}
