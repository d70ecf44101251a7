package hfs

import (
	"errors"
	"fmt"
	"io"
	"slices"
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

// FormatError is a master directory block field that does not check out:
// its byte offset on the volume, its name in Inside Macintosh, its value
// and why. It wraps ErrNotHFS and imagefs.ErrCorrupt.
type FormatError struct {
	Offset int64
	Field  string
	Value  int64
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("hfs: master directory block field %s at byte offset %d is %d: %s", e.Field, e.Offset, e.Value, e.Msg)
}

// Unwrap lets errors.Is find ErrNotHFS and imagefs.ErrCorrupt.
func (e *FormatError) Unwrap() []error { return []error{ErrNotHFS, imagefs.ErrCorrupt} }

// The master directory block lies at byte 1024.
const mdbOffset = 1024

// macEpoch is HFS's time zero. HFS stores local time without a zone; it
// is taken as UTC.
var macEpoch = time.Date(1904, 1, 1, 0, 0, 0, 0, time.UTC)

func macTime(s uint32) time.Time { return macEpoch.Add(time.Duration(s) * time.Second) }

// extent is an HFS extent descriptor: a start allocation block and a count.
type extent struct{ start, count uint16 }

func extents(b []byte) [3]extent {
	var x [3]extent
	for i := range x {
		x[i] = extent{be.Uint16(b[4*i:]), be.Uint16(b[4*i+2:])}
	}
	return x
}

// extKey keys an extents-overflow record: fork (0 data, 0xFF resource),
// file CNID, the first file allocation block the record maps.
type extKey struct {
	fork  byte
	cnid  uint32
	start uint16
}

// record is one catalog leaf record of a file or directory.
type record struct {
	parent uint32
	name   []byte // raw MacRoman
	dir    bool
	data   []byte // the record's data (70 bytes for a directory, 102 for a file)
	off    int64  // volume byte offset of the record (-1: not mapped)
	size   int64  // the record's length in bytes
}

func (r *record) cnid() uint32 {
	if r.dir {
		return be.Uint32(r.data[6:])
	}
	return be.Uint32(r.data[20:])
}

// Volume is a classic HFS volume opened from an image. Everything it needs
// is read at Open; its methods may be called from several goroutines.
type Volume struct {
	r        io.ReaderAt
	size     int64
	readSize int64 // where content may be read: the allocation area's end, or the image's
	opts     imagefs.Options
	label    []byte
	blkSize  int64
	alStart  int64 // byte offset of allocation block 0
	nBlocks  uint32
	lsMod    time.Time
	overflow map[extKey][3]extent
	children map[uint32][]*record // by parent CNID, in catalog order
	dirs     map[uint32]*record   // directory records by their CNID
	fileOff  map[uint32]int64     // file records' volume offsets by CNID
	threads  map[uint32]*record   // directory thread records by the directory's CNID
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
	n := 0
	for _, c := range v.children {
		n += len(c)
	}
	l, _ := DecodeName(v.label)
	return Info{Label: string(l), BlockSize: v.blkSize, Blocks: v.nBlocks, AllocStart: v.alStart, CatalogRecords: n}
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
	v := &Volume{r: r, size: size, opts: opts, overflow: map[extKey][3]extent{},
		children: map[uint32][]*record{}, dirs: map[uint32]*record{}, fileOff: map[uint32]int64{}, threads: map[uint32]*record{}}
	v.nBlocks = uint32(be.Uint16(m[0x12:]))
	v.blkSize = int64(be.Uint32(m[0x14:]))
	v.alStart = int64(be.Uint16(m[0x1c:])) * 512
	v.lsMod = macTime(be.Uint32(m[0x06:]))
	switch {
	case v.nBlocks == 0:
		return nil, bad(0x12, "drNmAlBlks", 0, "no allocation blocks")
	case v.blkSize == 0 || v.blkSize%512 != 0 || v.blkSize > 1<<30:
		return nil, bad(0x14, "drAlBlkSiz", v.blkSize, "not a positive multiple of 512")
	case v.alStart < mdbOffset+512:
		return nil, bad(0x1c, "drAlBlSt", v.alStart/512, "the allocation area starts before the end of the master directory block")
	case v.alStart >= size:
		return nil, bad(0x1c, "drAlBlSt", v.alStart/512, "the allocation area starts past the end of the volume")
	}
	if n := int(m[0x24]); n <= 27 {
		v.label = append([]byte(nil), m[0x25:0x25+n]...)
	}
	end := v.alStart + int64(v.nBlocks)*v.blkSize
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
		if f.val < nodeSize || f.val%nodeSize != 0 || f.val > end-v.alStart {
			return nil, bad(f.off, f.name, f.val, "not a multiple of 512 B-tree nodes inside the allocation area")
		}
	}

	// The extents-overflow file has only its three extents.
	xt := v.btree("extents overflow", extentsCNID, extents(m[0x86:]), xtSize, mdbOffset+0x86)
	if err := xt.header(); err != nil {
		opts.Reportf(xt.nodeOffset(0), "corrupt", "%v; no extents-overflow records are read", err)
	} else {
		xt.leaves(v.addOverflow)
	}
	ct := v.btree("catalog", catalogCNID, extents(m[0x96:]), ctSize, mdbOffset+0x96)
	if err := ct.header(); err != nil {
		return nil, fmt.Errorf("hfs: %w", err)
	}
	ct.leaves(v.addCatalog)
	v.rescueDirs()
	if v.dirs[RootID] == nil {
		opts.Reportf(-1, "corrupt", "the catalog has no record of the root directory (CNID 2); its entries are still listed")
	}
	return v, nil
}

// rescueDirs finds the directories whose entries were read but whose own
// record was not (it lay in a lost leaf node): a directory with a thread
// record is put back under the parent and name its thread gives, with the
// Mac epoch as its mtime (Kind "rescued"); the entries of one without are
// reported as orphaned (Kind "orphaned"), not reachable from the root.
func (v *Volume) rescueDirs() {
	parents := make([]uint32, 0, len(v.children))
	for p := range v.children {
		parents = append(parents, p)
	}
	slices.Sort(parents) // reports and rescued entries in a stable order
	for _, p := range parents {
		if p == 1 || v.dirs[p] != nil {
			continue // 1 is the root's parent, which has no record
		}
		th := v.threads[p]
		if th == nil || th.parent == p || v.isFile(p) {
			v.opts.Reportf(v.children[p][0].off, "orphaned", "%d catalog records name directory CNID %d as their parent, which has neither a directory record nor a thread; not reachable from the root", len(v.children[p]), p)
			continue
		}
		data := make([]byte, 70)
		data[0] = 1
		be.PutUint16(data[4:], uint16(min(len(v.children[p]), 0xffff)))
		be.PutUint32(data[6:], p)
		r := &record{parent: th.parent, name: th.name, dir: true, data: data, off: th.off, size: th.size}
		v.dirs[p] = r
		v.children[th.parent] = append(v.children[th.parent], r)
		v.opts.Reportf(th.off, "rescued", "directory CNID %d %q has no directory record; listed from its thread record", p, th.name)
	}
}

// btree opens the B-tree file cnid whose first extents are first and
// whose size is size bytes.
func (v *Volume) btree(name string, cnid uint32, first [3]extent, size int64, recOff int64) *btree {
	runs, covered := v.forkRuns(first, cnid, 0, size, name+" file", recOff)
	if covered < size {
		size = covered - covered%nodeSize
	}
	return &btree{name: name, file: imagefs.NewRunReader(v.r, v.readSize, runs, size), runs: runs,
		nodes: uint32(min(size/nodeSize, 1<<32-1)), opts: &v.opts}
}

// maxRuns bounds the extents of one fork (a 65535-block volume has at most
// that many).
const maxRuns = 65536

// forkRuns maps a fork of size bytes: its three first extents, then the
// extents-overflow records of (fork, cnid) from the block where the
// previous ones end, until size is covered. An extent past the allocation
// area is reported and kept (reading it fails with ErrBeyondEnd). It
// returns the runs, trimmed to size, and how many bytes they cover.
func (v *Volume) forkRuns(first [3]extent, cnid uint32, fork byte, size int64, what string, recOff int64) ([]imagefs.Run, int64) {
	var runs []imagefs.Run
	var covered int64
	fabn := uint32(0)
	x, ok := first, true
	for ok && covered < size && len(runs) < maxRuns {
		for _, e := range x {
			if e.count == 0 || covered >= size {
				ok = false
				break
			}
			if uint32(e.start)+uint32(e.count) > v.nBlocks {
				v.opts.Reportf(recOff, "out_of_volume", "%s (CNID %d): extent of blocks %d+%d runs past the %d allocation blocks of the volume", what, cnid, e.start, e.count, v.nBlocks)
			}
			n := min(int64(e.count)*v.blkSize, size-covered)
			runs = append(runs, imagefs.Run{Logical: covered, Offset: v.alStart + int64(e.start)*v.blkSize, Length: n})
			covered += n
			fabn += uint32(e.count)
		}
		if !ok || covered >= size || fabn > 0xffff {
			break
		}
		x, ok = v.overflow[extKey{fork, cnid, uint16(fabn)}]
	}
	return runs, covered
}

// addOverflow keeps one extents-overflow leaf record.
func (v *Volume) addOverflow(rec []byte, off int64) {
	key, data, ok := recordKey(rec)
	if !ok || len(key) < 7 || len(data) < 12 {
		v.opts.Reportf(off, "corrupt", "an extents-overflow record of %d bytes does not check out; left out", len(rec))
		return
	}
	k := extKey{key[0], be.Uint32(key[1:]), be.Uint16(key[5:])}
	if _, dup := v.overflow[k]; dup {
		v.opts.Reportf(off, "corrupt", "a second extents-overflow record for CNID %d fork %#x block %d; left out", k.cnid, k.fork, k.start)
		return
	}
	v.overflow[k] = extents(data)
}

// addCatalog keeps one catalog leaf record of a file or a directory;
// thread records (which name a CNID's parent) are not needed for a walk.
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
		// One record per directory CNID: a second one (damage) would
		// list the same entries again, under another name.
		if !v.claim(r, off) {
			return
		}
		v.dirs[r.cnid()] = r
	case 2:
		if len(data) < 102 {
			v.opts.Reportf(off, "corrupt", "file record %q of %d bytes, want 102; left out", r.name, len(data))
			return
		}
		r.data = append([]byte(nil), data[:102]...)
		if !v.claim(r, off) {
			return
		}
		v.fileOff[r.cnid()] = off
	case 3:
		// A directory thread: its key is (CNID, ""), its data names the
		// directory's parent and name; kept to rescue a directory whose
		// own record is lost.
		if len(data) >= 15 && int(data[14]) <= 31 && 15+int(data[14]) <= len(data) {
			if _, dup := v.threads[r.parent]; !dup {
				v.threads[r.parent] = &record{parent: be.Uint32(data[10:]), name: append([]byte(nil), data[15:15+int(data[14])]...), off: off, size: int64(len(rec))}
			}
		}
		return
	case 4:
		return
	default:
		v.opts.Reportf(off, "corrupt", "catalog record %q of unknown type %d; left out", r.name, data[0])
		return
	}
	v.children[r.parent] = append(v.children[r.parent], r)
}

// claim takes r's CNID for r: a CNID is one file or directory, so a second
// record with a CNID already taken (damage) is reported and left out — no
// ID stands for two contents, no directory is entered twice.
func (v *Volume) claim(r *record, off int64) bool {
	id := r.cnid()
	if v.dirs[id] != nil || v.isFile(id) || (id == RootID && !r.dir) {
		v.opts.Reportf(off, "cross_linked", "catalog record %q has CNID %d, already the CNID of another record (or the root's); left out", r.name, id)
		return false
	}
	return true
}

func (v *Volume) isFile(id uint32) bool { _, ok := v.fileOff[id]; return ok }

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

func (v *Volume) subdirs(cnid uint32) uint64 {
	n := uint64(0)
	for _, c := range v.children[cnid] {
		if c.dir {
			n++
		}
	}
	return n
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
	// The resource fork: filRLgLen at 36, filRExtRec at 86, overflow
	// extents under fork type 0xFF.
	if rsize := int64(be.Uint32(r.data[36:])); rsize > 0 {
		rruns, _ := v.forkRuns(extents(r.data[86:]), id, 0xff, rsize, fmt.Sprintf("the resource fork of %q", name), r.off)
		e.Forks = []*imagefs.Entry{{ID: imagefs.ForkID(uint64(id), 1), Type: 'f', Name: []byte(imagefs.ResourceFork),
			Size: rsize, Mtime: e.Mtime, Nlink: 1, Runs: rruns}}
	}
	return e
}

// Open returns a reader of a file's data fork, or of its resource fork
// (the Entry in its Forks). If its extents cover fewer bytes than its
// size, reading the missing tail fails with imagefs.ErrCorrupt (never
// zeros); a run past the image or the allocation area fails with
// imagefs.ErrBeyondEnd.
func (v *Volume) Open(e *imagefs.Entry) (io.ReaderAt, error) {
	if e == nil || e.Type != 'f' {
		return nil, fmt.Errorf("hfs: Open of a non-file")
	}
	rr := imagefs.NewRunReader(v.r, v.readSize, e.Runs, e.Size)
	var covered int64
	for _, r := range e.Runs {
		covered = max(covered, r.Logical+r.Length)
	}
	if covered >= e.Size {
		return rr, nil
	}
	fork := "data"
	if e.ID>>32 != 0 { // imagefs.ForkID: the file's CNID below bit 32
		fork = "resource"
	}
	return imagefs.NewShortReader(rr, covered, e.Size, v.fileOff[uint32(e.ID)],
		fmt.Sprintf("the extents of CNID %d end %d bytes into a %s fork of %d", uint32(e.ID), covered, fork, e.Size)), nil
}
