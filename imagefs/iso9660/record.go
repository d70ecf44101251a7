package iso9660

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/HRDAG/ntt/imagefs"
)

// ErrUnsupported: a file's content is stored in a form this reader does not
// decode (zisofs compression, interleaving finer than the run bound). Its
// entry is listed; opening it fails.
var ErrUnsupported = errors.New("content stored in a form the ISO 9660 reader does not decode")

// Record flags (ECMA-119 9.1.6).
const (
	flagHidden      = 0x01
	flagDir         = 0x02
	flagAssociated  = 0x04
	flagMultiExtent = 0x80
)

// POSIX file types in a PX mode.
const (
	sIFMT   = 0o170000
	sIFSOCK = 0o140000
	sIFLNK  = 0o120000
	sIFREG  = 0o100000
	sIFBLK  = 0o060000
	sIFDIR  = 0o040000
	sIFCHR  = 0o020000
	sIFIFO  = 0o010000
)

// Tags that keep the kinds of ID apart: record and extent offsets stay
// below 2^44 (a 32-bit block number times 2048 plus a 32-bit offset).
const (
	idSerial = 1 << 63 // a hardlink group by RRIP 1.12 PX serial number
	idExtent = 1 << 62 // a hardlink group by content extent (no serial)
)

// record is one directory record (ECMA-119 9.1).
type record struct {
	length int
	xattr  uint8  // extended attribute record length, in blocks
	extent uint32 // first block
	size   uint32 // data length
	date   [7]byte
	flags  uint8
	unit   uint8 // interleave: file unit size in blocks
	gap    uint8 // interleave gap size in blocks
	name   []byte
	su     []byte // System Use area
	suAt   int    // its offset in the record
}

// parseRecord parses the record at the start of b; false when it does not
// fit in b or its name does not fit in it.
func parseRecord(b []byte) (record, bool) {
	if len(b) < 34 {
		return record{}, false
	}
	l := int(b[0])
	nl := int(b[32])
	if l < 34 || l > len(b) || 33+nl > l || nl == 0 {
		return record{}, false
	}
	r := record{
		length: l,
		xattr:  b[1],
		extent: le32(b[2:]),
		size:   le32(b[10:]),
		flags:  b[25],
		unit:   b[26],
		gap:    b[27],
		name:   b[33 : 33+nl],
	}
	copy(r.date[:], b[18:25])
	r.suAt = 33 + nl
	if nl%2 == 0 {
		r.suAt++
	}
	if r.suAt < l {
		r.su = b[r.suAt:l]
	} else {
		r.suAt = l
	}
	return r, true
}

// name0 returns the byte of a one-byte special identifier (0 for ".", 1 for
// ".."), or -1.
func (r record) name0() int {
	if len(r.name) == 1 && r.name[0] <= 1 {
		return int(r.name[0])
	}
	return -1
}

// start is the volume byte offset of the record's data (after its
// extended attribute record).
func (f *FS) start(r record) int64 {
	return (int64(r.extent) + int64(r.xattr)) * f.bs
}

// ReadDir returns the entries of directory dir in stored order, without
// "." and "..", associated files and Rock Ridge relocated directories (RE),
// which appear at their original place through their CL record instead.
func (f *FS) ReadDir(dir *imagefs.Entry) ([]*imagefs.Entry, error) {
	if dir.Type != 'd' {
		return nil, fmt.Errorf("iso9660: %q is not a directory", dirName(dir))
	}
	if len(dir.Runs) == 0 {
		return nil, nil
	}
	start, n := dir.Runs[0].Offset, dir.Runs[0].Length
	if start < 0 || start >= f.size {
		return nil, fmt.Errorf("iso9660: directory %q: %w", dirName(dir), &imagefs.ReadError{Offset: start, Err: imagefs.ErrBeyondEnd})
	}
	extentEnd := n
	if start+n > f.size {
		f.opts.Reportf(start, "out_of_volume", "directory %q: its %d bytes at byte offset %d run past the end of the volume (%d bytes); reading the first %d",
			dirName(dir), n, start, f.size, f.size-start)
		n = f.size - start
	}
	if n > maxDirBytes {
		f.opts.Reportf(start, "corrupt", "directory %q claims %d bytes; reading the first %d", dirName(dir), n, maxDirBytes)
		n = maxDirBytes
	}
	buf := make([]byte, n)
	if m, err := f.r.ReadAt(buf, start); m < len(buf) {
		if err == nil || errors.Is(err, io.EOF) {
			err = imagefs.ErrBeyondEnd
		}
		return nil, fmt.Errorf("iso9660: directory %q: %w", dirName(dir), &imagefs.ReadError{Offset: start + int64(m), Err: err})
	}
	d := dirReader{f: f, dir: dir, budget: budget{ce: maxDirCEBytes, runs: maxDirRuns}}
	for sec := int64(0); sec < n; sec += sectorSize {
		end := min(sec+sectorSize, n)
		for pos := sec; pos < end; {
			l := int64(buf[pos])
			if l == 0 {
				break // the rest of the sector is unused
			}
			at := start + pos
			if l < 34 {
				f.opts.Reportf(at, "corrupt", "directory %q: a record of %d bytes (at least 34); skipping the rest of its sector", dirName(dir), l)
				break
			}
			if pos+l > end {
				if end == extentEnd && end-sec < sectorSize {
					f.opts.Reportf(at, "corrupt", "directory %q: a record of %d bytes runs past the end of the directory's extent", dirName(dir), l)
				} else if end < sec+sectorSize {
					f.opts.Reportf(at, "truncated", "directory %q: a record of %d bytes runs past the end of the volume", dirName(dir), l)
				} else {
					f.opts.Reportf(at, "corrupt", "directory %q: a record of %d bytes runs past the end of its sector", dirName(dir), l)
				}
				break
			}
			rec, ok := parseRecord(buf[pos : pos+l])
			if !ok {
				f.opts.Reportf(at, "corrupt", "directory %q: record with a %d-byte name does not fit its %d bytes", dirName(dir), buf[pos+32], l)
			} else {
				d.record(rec, at)
			}
			pos += l
		}
	}
	d.flush()
	return d.out, nil
}

// budget bounds what one directory's records make the reader do.
type budget struct {
	ce   int // System Use continuation bytes still to be read
	runs int // runs still to be made
}

// dirReader gathers one directory's entries, joining the records of a
// multi-extent file.
type dirReader struct {
	f   *FS
	dir *imagefs.Entry
	out []*imagefs.Entry

	budget budget

	// A multi-extent file being gathered: its records and the first one's
	// offset and Rock Ridge data.
	parts   []record
	partsAt int64
	partsRR *rockRidge
}

func (d *dirReader) record(rec record, at int64) {
	f := d.f
	if rec.name0() >= 0 {
		return // "." and ".."
	}
	if d.parts != nil {
		if bytes.Equal(rec.name, d.parts[0].name) && rec.flags&flagDir == 0 {
			if len(d.parts) >= maxRuns {
				f.opts.Reportf(at, "corrupt", "directory %q: multi-extent file %q has more than %d parts; the rest is ignored", dirName(d.dir), rec.name, maxRuns)
			} else {
				d.parts = append(d.parts, rec)
			}
			if rec.flags&flagMultiExtent == 0 {
				d.flush()
			}
			return
		}
		f.opts.Reportf(at, "corrupt", "directory %q: multi-extent file %q ends without its final record", dirName(d.dir), d.parts[0].name)
		d.flush()
	}
	if rec.flags&flagAssociated != 0 {
		return // Linux hides associated files unless showassoc
	}
	var rr *rockRidge
	if f.naming == RockRidge {
		su, suAt := rec.su, at+int64(rec.suAt)
		if f.skip <= len(su) {
			su, suAt = su[f.skip:], suAt+int64(f.skip)
		} else {
			su = nil
		}
		rr = f.parseSU(su, suAt, subject{name: rec.name, dir: d.dir, what: "record"}, &d.budget.ce)
		if rr.re {
			return // a relocated directory: listed where its CL record is
		}
	}
	if rec.flags&flagMultiExtent != 0 && rec.flags&flagDir == 0 {
		d.parts, d.partsAt, d.partsRR = []record{rec}, at, rr
		return
	}
	if e := f.entry(d.dir, []record{rec}, at, rr, &d.budget); e != nil {
		d.out = append(d.out, e)
	}
}

// flush ends a multi-extent file being gathered.
func (d *dirReader) flush() {
	if d.parts == nil {
		return
	}
	if e := d.f.entry(d.dir, d.parts, d.partsAt, d.partsRR, &d.budget); e != nil {
		d.out = append(d.out, e)
	}
	d.parts, d.partsRR = nil, nil
}

// entry makes the entry of a file or directory from its records (several
// for a multi-extent file), the first at volume offset at.
func (f *FS) entry(dir *imagefs.Entry, recs []record, at int64, rr *rockRidge, b *budget) *imagefs.Entry {
	rec := recs[0]
	e := &imagefs.Entry{ID: uint64(at), Nlink: 1, Mtime: shortDate(rec.date[:])}
	e.Name = f.chooseName(dir, rec, at, rr)
	who := subject{name: e.Name, dir: dir}

	if rr != nil && rr.cl >= 0 {
		return f.relocated(e, rr, at, who, b)
	}
	e.Type = 'f'
	switch {
	case rec.flags&flagDir != 0:
		e.Type = 'd'
		if rr != nil && rr.px && rr.mode&sIFMT != sIFDIR && rr.mode&sIFMT != 0 {
			f.opts.Reportf(at, "corrupt", "%s: a directory record whose Rock Ridge mode %o is not a directory's", who, rr.mode)
		}
	case rr != nil && rr.px:
		switch rr.mode & sIFMT {
		case sIFLNK:
			e.Type = 'l'
		case sIFCHR:
			e.Type = 'c'
		case sIFBLK:
			e.Type = 'b'
		case sIFIFO:
			e.Type = 'p'
		case sIFSOCK:
			e.Type = 's'
		case sIFDIR:
			f.opts.Reportf(at, "corrupt", "%s: Rock Ridge mode %o says directory but the record is a file's; read as a file", who, rr.mode)
		}
	}
	if rr != nil {
		if rr.px && rr.nlink > 0 {
			e.Nlink = uint64(rr.nlink)
		}
		if rr.hasMtime {
			e.Mtime = rr.mtime
		}
	}

	switch e.Type {
	case 'd':
		s := f.start(rec)
		e.ID = uint64(s)
		e.Size = int64(rec.size)
		if rec.size > 0 {
			e.Runs = []imagefs.Run{{Offset: s, Length: int64(rec.size)}}
		}
		if len(recs) > 1 || rec.unit != 0 {
			f.opts.Reportf(at, "corrupt", "%s: a directory recorded as multi-extent or interleaved; its first extent is read", who)
		}
	case 'f':
		err := f.fileRuns(e, recs, at, who, &b.runs)
		if rr != nil && rr.zf {
			f.opts.Reportf(at, "unsupported", "%s: zisofs-compressed content; not read", who)
			err = fmt.Errorf("iso9660: %s is zisofs-compressed: %w", who, ErrUnsupported)
		}
		f.linkID(e, rr, at, who)
		if err != nil {
			f.markUnreadable(e.ID, err)
		}
	case 'l':
		switch {
		case rr.slBroken:
			f.opts.Reportf(at, "corrupt", "%s: symlink target longer than %d bytes; cut", who, maxTargetBytes)
		case !rr.sl:
			f.opts.Reportf(at, "corrupt", "%s: a Rock Ridge symlink without an SL entry; its target is empty", who)
		}
		e.Target = rr.target
		e.Size = int64(len(rr.target))
	}
	return e
}

// chooseName picks the entry's name the way Linux does: the Rock Ridge NM
// name, else (Rock Ridge in use but no NM) the mapped primary name; the
// Joliet name on a Joliet tree; the mapped primary name otherwise. A name
// that cannot stand in a path is reported and replaced.
func (f *FS) chooseName(dir *imagefs.Entry, rec record, at int64, rr *rockRidge) []byte {
	var name []byte
	switch {
	case rr != nil && rr.nm:
		name = rr.name
		if !usableName(name) {
			f.opts.Reportf(at, "corrupt", "directory %q: Rock Ridge name %q of record %q is not usable; using the primary name", dirName(dir), name, rec.name)
			name = primaryName(rec.name)
		}
	case f.naming == Joliet:
		name = jolietName(rec.name)
	default:
		name = primaryName(rec.name)
	}
	name, changed := cleanName(name)
	if changed {
		f.opts.Reportf(at, "corrupt", "directory %q: name %q holds '/' or NUL; replaced by '_'", dirName(dir), name)
	}
	if !usableName(name) {
		f.opts.Reportf(at, "corrupt", "directory %q: record %q has no usable name; named by its byte offset", dirName(dir), rec.name)
		name = fmt.Appendf(nil, "_record_%d", at)
	}
	return bytes.Clone(name)
}

// fileRuns sets a file's size and runs from its records: one run per
// extent, or per file unit of an interleaved extent.
func (f *FS) fileRuns(e *imagefs.Entry, recs []record, at int64, who fmt.Stringer, budget *int) error {
	var logical int64
	var err error
	beyond := false
	add := func(off, n int64) bool {
		if len(e.Runs) >= maxRuns || *budget <= 0 {
			err = fmt.Errorf("iso9660: %s is stored in more than %d pieces: %w", who, maxRuns, ErrUnsupported)
			f.opts.Reportf(at, "unsupported", "%s: stored in more than %d pieces; not read", who, maxRuns)
			return false
		}
		if off+n > f.size {
			beyond = true
		}
		*budget--
		e.Runs = append(e.Runs, imagefs.Run{Logical: logical, Offset: off, Length: n})
		logical += n
		return true
	}
	for _, r := range recs {
		size := int64(r.size)
		if size == 0 {
			continue
		}
		s := f.start(r)
		if r.unit == 0 {
			if !add(s, size) {
				break
			}
			continue
		}
		unit := int64(r.unit) * f.bs
		step := (int64(r.unit) + int64(r.gap)) * f.bs
		for size > 0 {
			n := min(unit, size)
			if s >= f.size {
				// The rest lies past the end of the volume: one run
				// says where, and reading it fails there.
				n = size
			}
			if !add(s, n) {
				break
			}
			s += step
			size -= n
		}
		if err != nil {
			break
		}
	}
	e.Size = logical
	if err != nil {
		// The size the records give, so that no caller mistakes the
		// pieces read for the whole file.
		e.Size = 0
		for _, r := range recs {
			e.Size += int64(r.size)
		}
	}
	if beyond {
		f.opts.Reportf(at, "out_of_volume", "%s: its content (%d bytes) lies partly past the end of the volume (%d bytes)", who, e.Size, f.size)
	}
	return err
}

// linkID gives hardlinks one ID. A file whose Rock Ridge PX counts more
// than one link is one of a group: RRIP 1.12's serial number names the
// group; without one (RRIP 1.10, as genisoimage writes), the group is the
// files sharing the first extent (mkisofs writes a hardlinked inode's
// content once). A record that claims a group already seen with other
// content keeps its own record ID, and is reported.
func (f *FS) linkID(e *imagefs.Entry, rr *rockRidge, at int64, who fmt.Stringer) {
	if rr == nil || !rr.px || rr.nlink < 2 {
		return
	}
	var key uint64
	switch {
	case rr.hasSerial:
		key = idSerial | uint64(rr.serial)
	case e.Size > 0:
		key = idExtent | uint64(e.Runs[0].Offset)
	default:
		return // an empty hardlink without a serial: nothing tells its group
	}
	content := [2]int64{-1, e.Size}
	if len(e.Runs) > 0 {
		content[0] = e.Runs[0].Offset
	}
	f.mu.Lock()
	first, seen := f.links[key]
	if !seen {
		f.links[key] = content
	}
	f.mu.Unlock()
	if seen && first != content && !(e.Size == 0 && first[1] == 0) {
		f.opts.Reportf(at, "corrupt", "%s: shares hardlink serial %d with a file of other content; kept apart", who, rr.serial)
		return
	}
	e.ID = key
}

// relocated makes the entry of a Rock Ridge CL record: the directory that
// was moved away (to rr_moved) to keep the primary tree 8 levels deep. Its
// attributes come from the "." record where it now is; its name from here.
func (f *FS) relocated(e *imagefs.Entry, rr *rockRidge, at int64, who subject, b *budget) *imagefs.Entry {
	e.Type = 'd'
	s := rr.cl * f.bs
	if s+34 > f.size {
		f.opts.Reportf(at, "out_of_volume", "%s: relocated directory at block %d lies past the end of the volume", who, rr.cl)
		e.ID = uint64(s)
		return e
	}
	e.ID = uint64(s)
	dotb := make([]byte, min(int64(255), f.size-s))
	if _, err := f.r.ReadAt(dotb, s); err != nil && !errors.Is(err, io.EOF) {
		f.opts.Reportf(s, "unreadable", "%s: relocated directory: %v", who, err)
		return e
	}
	dot, ok := parseRecord(dotb)
	if !ok || dot.name0() != 0 || dot.flags&flagDir == 0 {
		f.opts.Reportf(s, "corrupt", "%s: no directory's \".\" record at the relocated block %d", who, rr.cl)
		e.ID = uint64(s)
		return e
	}
	ds := f.start(dot)
	e.ID = uint64(ds)
	e.Size = int64(dot.size)
	e.Mtime = shortDate(dot.date[:])
	if dot.size > 0 {
		e.Runs = []imagefs.Run{{Offset: ds, Length: int64(dot.size)}}
	}
	su := dot.su
	if f.skip <= len(su) {
		su = su[f.skip:]
	} else {
		su = nil
	}
	if drr := f.parseSU(su, s+int64(dot.suAt+f.skip), subject{name: e.Name, dir: who.dir, what: "relocated directory"}, &b.ce); drr != nil {
		if drr.px && drr.nlink > 0 {
			e.Nlink = uint64(drr.nlink)
		} else if rr.px && rr.nlink > 0 {
			e.Nlink = uint64(rr.nlink)
		}
		if drr.hasMtime {
			e.Mtime = drr.mtime
		} else if rr.hasMtime {
			e.Mtime = rr.mtime
		}
	}
	return e
}

// dirName names a directory in reports ("/" for the root).
func dirName(dir *imagefs.Entry) []byte {
	if len(dir.Name) == 0 {
		return []byte("/")
	}
	return dir.Name
}

// subject names what a report is about; it is formatted only when a
// problem is reported, so that reading undamaged records costs nothing.
type subject struct {
	name []byte
	dir  *imagefs.Entry
	what string // "record", "relocated directory", …; "" for an entry
}

func (s subject) String() string {
	switch {
	case s.dir == nil:
		return s.what
	case s.what == "":
		return fmt.Sprintf("%q in directory %q", s.name, dirName(s.dir))
	}
	return fmt.Sprintf("%s %q in directory %q", s.what, s.name, dirName(s.dir))
}
