package hfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/HRDAG/ntt/imagefs"
)

// PlusType is the probe type name the HFS+ reader registers for: probe
// says "hfsplus" for HFS+ ("H+"), HFSX ("HX") and an HFS wrapper around an
// embedded HFS+ volume.
const PlusType = "hfsplus"

func init() {
	imagefs.Register(imagefs.Driver{
		Types: []string{PlusType},
		Open: func(r io.ReaderAt, size int64, opts imagefs.Options) (imagefs.FS, error) {
			return OpenPlus(r, size, opts)
		},
	})
}

// ErrNotHFSPlus: the volume header is not one of HFS+ or HFSX, nor an HFS
// wrapper around one (always inside a *FormatError naming the field).
var ErrNotHFSPlus = errors.New("not a valid HFS+ volume header")

// CNIDs of the HFS+ special files whose overflow extents are keyed by them.
const attributesCNID = 8

// Catalog record types of HFS+ (TN1150), 16-bit.
const (
	plusFolder       = 1
	plusFile         = 2
	plusFolderThread = 3
	plusFileThread   = 4
)

// Sizes of HFS+ catalog records' data.
const (
	plusFolderSize = 88
	plusFileSize   = 248
	forkDataSize   = 80
)

// Names the HFS+ reader does not present: the directories of hardlinks'
// indirect nodes (files and directories) and the journal's files, all in
// the root.
var (
	privateData    = utf16Name("\x00\x00\x00\x00HFS+ Private Data")
	privateDirData = utf16Name(".HFS+ Private Directory Data\r")
	journalFiles   = [][]byte{utf16Name(".journal"), utf16Name(".journal_info_block")}
)

// utf16Name is an ASCII name as HFS+ stores it (UTF-16BE).
func utf16Name(s string) []byte {
	b := make([]byte, 2*len(s))
	for i := 0; i < len(s); i++ {
		b[2*i+1] = s[i]
	}
	return b
}

// attr is a com.apple.decmpfs attribute: its data (inline records) and
// the volume offset of that data; fork marks an attribute stored in a
// fork of its own, which is not read.
type attr struct {
	data []byte
	off  int64
	fork bool
}

// PlusVolume is an HFS+ or HFSX volume opened from an image, bare or
// embedded in an HFS wrapper. Everything it needs is read at Open; its
// methods may be called from several goroutines.
type PlusVolume struct {
	opts     imagefs.Options
	sig      string
	modify   time.Time
	wrapped  bool
	journal  bool
	caseSens bool
	// Block 0 at the HFS+ volume's first byte: 0, or the embedded
	// volume's offset; readSize: the volume's end, or the image's.
	allocation
	decmpfs map[uint32]attr // com.apple.decmpfs attributes by file CNID
	catalog
	private  uint32             // CNID of the hardlinks' private directory (0: none)
	privDirs uint32             // CNID of the directory hardlinks' private directory (0: none)
	inodes   map[uint32]*record // indirect node files by their number (iNode<n>)
	dirNodes map[uint32]*record // hardlinked directories by their number (dir_<n>)
	links    map[uint32]uint64  // names found per indirect node number
}

// PlusInfo describes an HFS+ volume.
type PlusInfo struct {
	Label          string // the root directory's name, UTF-8
	Signature      string // "H+" (HFS+) or "HX" (HFSX)
	CaseSensitive  bool   // HFSX with binary key comparison
	Wrapped        bool   // embedded in an HFS wrapper
	Offset         int64  // byte offset of the HFS+ volume in the one opened
	Journaled      bool   // the journal is not replayed
	BlockSize      int64  // allocation block size in bytes
	Blocks         uint32 // allocation blocks
	CatalogRecords int    // file and directory records read
}

// Info returns the volume's layout.
func (v *PlusVolume) Info() PlusInfo {
	var label []byte
	if r := v.dirs[RootID]; r != nil {
		label, _ = DecodeUnicode(r.name)
	}
	return PlusInfo{Label: string(label), Signature: v.sig, CaseSensitive: v.caseSens, Wrapped: v.wrapped,
		Offset: v.base, Journaled: v.journal, BlockSize: v.blkSize, Blocks: v.nBlocks, CatalogRecords: v.records()}
}

// OpenPlus reads the volume header and the extents-overflow, attributes
// and catalog B-trees of the HFS+ or HFSX volume r of size bytes — or of
// the HFS+ volume an HFS wrapper at r embeds. Damage on the way is
// reported through opts.Report; a header that does not check out is a
// *FormatError wrapping ErrNotHFSPlus; a catalog header node that does not
// check out wraps imagefs.ErrCorrupt.
func OpenPlus(r io.ReaderAt, size int64, opts imagefs.Options) (*PlusVolume, error) {
	v := &PlusVolume{opts: opts, decmpfs: map[uint32]attr{}, inodes: map[uint32]*record{}, dirNodes: map[uint32]*record{}, links: map[uint32]uint64{}}
	v.allocation = allocation{r: r, report: &v.opts, maxFABN: 0xffffffff, overflow: map[extKey][]extent{}}
	v.catalog = newCatalog(&v.opts, DecodeUnicode)
	bad := func(off int64, field string, val int64, msg string) error {
		return &FormatError{Offset: off, Field: field, Value: val, Msg: msg, Plus: true}
	}
	read := func(off int64) ([]byte, error) {
		if off+mdbOffset+512 > size {
			return nil, bad(off, "volume size", size, "the volume is shorter than its volume header")
		}
		h := make([]byte, 512)
		if _, err := r.ReadAt(h, off+mdbOffset); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("hfsplus: reading the volume header: %w", err)
		}
		return h, nil
	}
	h, err := read(0)
	if err != nil {
		return nil, err
	}
	limit := size // where the HFS+ volume must end: the wrapper's embedded extent
	if string(h[0:2]) == "BD" {
		// An HFS wrapper (TN1150 "HFS Wrapper"): the HFS+ volume lies in
		// drEmbedExtent, in the wrapper's allocation blocks.
		if string(h[0x7c:0x7e]) != "H+" {
			return nil, bad(mdbOffset+0x7c, "drEmbedSigWord", int64(be.Uint16(h[0x7c:])), "an HFS volume that embeds no HFS+ volume (the HFS reader reads it)")
		}
		blk := int64(be.Uint32(h[0x14:]))
		alStart := int64(be.Uint16(h[0x1c:])) * 512
		start, count := int64(be.Uint16(h[0x7e:])), int64(be.Uint16(h[0x80:]))
		switch {
		case blk == 0 || blk%512 != 0 || blk > 1<<30:
			return nil, bad(mdbOffset+0x14, "drAlBlkSiz", blk, "not a positive multiple of 512")
		case count == 0:
			return nil, bad(mdbOffset+0x80, "drEmbedExtent.blockCount", 0, "an empty embedded volume")
		case alStart+start*blk+mdbOffset+512 > size:
			return nil, bad(mdbOffset+0x7e, "drEmbedExtent.startBlock", start, "the embedded volume starts past the end of the volume")
		}
		v.wrapped = true
		v.base = alStart + start*blk
		limit = v.base + count*blk
		if h, err = read(v.base); err != nil {
			return nil, err
		}
	}
	hdr := v.base + mdbOffset // volume offset of the header, for reports
	v.sig = string(h[0:2])
	switch ver := be.Uint16(h[2:]); {
	case v.sig != "H+" && v.sig != "HX":
		return nil, bad(hdr, "signature", int64(be.Uint16(h)), "not the HFS+ signature 'H+' nor HFSX's 'HX'")
	case ver != 4 && ver != 5:
		return nil, bad(hdr+2, "version", int64(ver), "not 4 (HFS+) or 5 (HFSX)")
	}
	v.journal = be.Uint32(h[4:])&(1<<13) != 0
	v.modify = macTime(be.Uint32(h[20:]))
	v.blkSize = int64(be.Uint32(h[40:]))
	v.nBlocks = be.Uint32(h[44:])
	switch {
	case v.blkSize < 512 || v.blkSize > 1<<30 || v.blkSize&(v.blkSize-1) != 0:
		return nil, bad(hdr+40, "blockSize", v.blkSize, "not a power of two from 512 to 1 GiB")
	case v.nBlocks == 0:
		return nil, bad(hdr+44, "totalBlocks", 0, "no allocation blocks")
	}
	end := v.base + int64(v.nBlocks)*v.blkSize
	if end > limit && v.wrapped {
		opts.Reportf(hdr+44, "out_of_volume", "the embedded HFS+ volume's %d blocks of %d bytes run past its wrapper's extent, which ends at byte %d: read up to there", v.nBlocks, v.blkSize, limit)
		end = limit
	}
	v.readSize = min(end, size)
	if end > size {
		opts.Reportf(size, "truncated", "the image ends at byte %d, the volume header gives the volume up to byte %d: content past the end cannot be read", size, end)
	}

	// The extents-overflow file has only the extents of its fork data.
	xt := v.btree("extents overflow", extentsCNID, h[0xc0:0x110], hdr+0xc0)
	if err := xt.header(); err != nil {
		opts.Reportf(xt.nodeOffset(0), "corrupt", "%v; no extents-overflow records are read", err)
	} else {
		xt.leaves(v.addOverflow)
	}
	if be.Uint64(h[0x160:]) > 0 {
		at := v.btree("attributes", attributesCNID, h[0x160:0x1b0], hdr+0x160)
		if err := at.header(); err != nil {
			opts.Reportf(at.nodeOffset(0), "corrupt", "%v; no attributes are read (compressed files cannot be read)", err)
		} else {
			at.leaves(v.addAttr)
		}
	}
	ct := v.btree("catalog", catalogCNID, h[0x110:0x160], hdr+0x110)
	if err := ct.header(); err != nil {
		return nil, fmt.Errorf("hfsplus: %w", err)
	}
	v.caseSens = v.sig == "HX" && ct.keyCompare == 0xBC
	ct.leaves(v.addCatalog)
	v.rescueDirs(plusDirData)
	v.reportCycles()
	if v.dirs[RootID] == nil {
		opts.Reportf(-1, "corrupt", "the catalog has no record of the root directory (CNID 2); its entries are still listed")
	}
	v.hardlinks()
	return v, nil
}

// plusDirData is the data of a folder record rescued from its thread: its
// valence and CNID, all dates the Mac epoch.
func plusDirData(cnid uint32, valence int) []byte {
	data := make([]byte, plusFolderSize)
	be.PutUint16(data, plusFolder)
	be.PutUint32(data[4:], uint32(valence))
	be.PutUint32(data[8:], cnid)
	return data
}

// hardlinks finds the private directory of indirect node files
// ("\0\0\0\0HFS+ Private Data" in the root), its iNode<n> files, and counts
// the link files (type 'hlnk', creator 'hfs+') naming each; and the
// private directory of hardlinked directories with its dir_<n>.
func (v *PlusVolume) hardlinks() {
	for _, r := range v.children[RootID] {
		switch {
		case r.dir && bytes.Equal(r.name, privateData):
			v.private = r.id
		case r.dir && bytes.Equal(r.name, privateDirData):
			v.privDirs = r.id
		}
	}
	if v.privDirs != 0 {
		for _, r := range v.children[v.privDirs] {
			name, _ := DecodeUnicode(r.name)
			if !r.dir || !bytes.HasPrefix(name, []byte("dir_")) {
				continue
			}
			if n, err := strconv.ParseUint(string(name[4:]), 10, 32); err == nil {
				v.dirNodes[uint32(n)] = r
			}
		}
	}
	if v.private == 0 {
		return
	}
	for _, r := range v.children[v.private] {
		name, _ := DecodeUnicode(r.name)
		if r.dir || !bytes.HasPrefix(name, []byte("iNode")) {
			continue
		}
		if n, err := strconv.ParseUint(string(name[5:]), 10, 32); err == nil {
			v.inodes[uint32(n)] = r
		}
	}
	for _, r := range v.files {
		if isHardlink(r) {
			if n := be.Uint32(r.data[44:]); v.inodes[n] != nil {
				v.links[n]++
			}
		}
	}
}

func isHardlink(r *record) bool {
	return !r.dir && string(r.data[48:52]) == "hlnk" && string(r.data[52:56]) == "hfs+"
}

// dirLink returns the directory a directory hardlink (Mac OS X 10.5: an
// alias file of type 'fdrp', creator 'MACS', naming dir_<n> in the private
// directory of directories) stands for; nil if r is none, or its
// directory is missing.
func (v *PlusVolume) dirLink(r *record) *record {
	if r.dir || string(r.data[48:52]) != "fdrp" || string(r.data[52:56]) != "MACS" {
		return nil
	}
	return v.dirNodes[be.Uint32(r.data[44:])]
}

// subdirsShown counts the directories listed in dir: its subdirectories
// and directory hardlinks, less the hidden private directories.
func (v *PlusVolume) subdirsShown(dir uint32) uint64 {
	n := v.subdirs(dir) - v.hiddenDirs(dir)
	for _, r := range v.children[dir] {
		if v.dirLink(r) != nil {
			n++
		}
	}
	return n
}

// btree opens the special file cnid whose fork data (80 bytes) is fd.
func (v *PlusVolume) btree(name string, cnid uint32, fd []byte, recOff int64) *btree {
	return v.allocation.btree(name, cnid, plusExtents(fd[16:]), v.forkSize(fd, name+" file", recOff), recOff, true)
}

// forkSize is the logical size of the fork data fd, bounded by the volume:
// no fork is larger than the volume holding it, and one that says it is is
// reported and read as if it were the volume's size.
func (v *PlusVolume) forkSize(fd []byte, what string, recOff int64) int64 {
	n := be.Uint64(fd)
	if vol := uint64(v.nBlocks) * uint64(v.blkSize); n > vol {
		v.opts.Reportf(recOff, "corrupt", "%s: a fork of %d bytes on a volume of %d; read as %d", what, n, vol, vol)
		return int64(vol)
	}
	return int64(n)
}

// plusForkRuns maps the fork of fork data fd (see allocation.forkRuns).
func (v *PlusVolume) plusForkRuns(fd []byte, cnid uint32, fork byte, size int64, what string, recOff int64) []imagefs.Run {
	runs, _ := v.forkRuns(plusExtents(fd[16:]), cnid, fork, size, what, recOff)
	return runs
}

// addOverflow keeps one extents-overflow leaf record.
func (v *PlusVolume) addOverflow(rec []byte, off int64) {
	key, data, ok := recordKeyPlus(rec)
	if !ok || len(key) < 10 || len(data) < 64 {
		v.opts.Reportf(off, "corrupt", "an extents-overflow record of %d bytes does not check out; left out", len(rec))
		return
	}
	v.allocation.addOverflow(extKey{key[0], be.Uint32(key[2:]), be.Uint32(key[6:])}, plusExtents(data), off)
}

// decmpfsName is the attribute of a compressed file.
var decmpfsName = utf16Name("com.apple.decmpfs")

// addAttr keeps a com.apple.decmpfs attribute record; other attributes
// (extended attributes, ACLs) are not read.
func (v *PlusVolume) addAttr(rec []byte, off int64) {
	key, data, ok := recordKeyPlus(rec)
	if !ok || len(key) < 12 || 12+2*int(be.Uint16(key[10:])) > len(key) || len(data) < 16 {
		v.opts.Reportf(off, "corrupt", "an attributes record of %d bytes does not check out; left out", len(rec))
		return
	}
	if !bytes.Equal(key[12:12+2*int(be.Uint16(key[10:]))], decmpfsName) {
		return
	}
	id := be.Uint32(key[2:])
	if _, dup := v.decmpfs[id]; dup {
		v.opts.Reportf(off, "corrupt", "a second com.apple.decmpfs attribute of CNID %d; left out", id)
		return
	}
	dataOff := off + int64(len(rec)-len(data))
	switch be.Uint32(data) {
	case 0x10: // kHFSPlusAttrInlineData
		n := int(be.Uint32(data[12:]))
		if 16+n > len(data) {
			v.opts.Reportf(off, "corrupt", "the com.apple.decmpfs attribute of CNID %d gives %d bytes, its record holds %d; left out", id, n, len(data)-16)
			return
		}
		v.decmpfs[id] = attr{data: append([]byte(nil), data[16:16+n]...), off: dataOff + 16}
	case 0x20: // kHFSPlusAttrForkData
		v.decmpfs[id] = attr{off: dataOff, fork: true}
	default:
		v.opts.Reportf(off, "corrupt", "the com.apple.decmpfs attribute of CNID %d has record type %#x; left out", id, be.Uint32(data))
	}
}

// addCatalog keeps one catalog leaf record of a file or a folder, and the
// folder threads.
func (v *PlusVolume) addCatalog(rec []byte, off int64) {
	key, data, ok := recordKeyPlus(rec)
	if !ok || len(key) < 6 || 6+2*int(be.Uint16(key[4:])) > len(key) || len(data) < 2 {
		v.opts.Reportf(off, "corrupt", "a catalog record of %d bytes has a key that does not check out; left out", len(rec))
		return
	}
	name := key[6 : 6+2*int(be.Uint16(key[4:]))]
	r := &record{parent: be.Uint32(key), name: append([]byte(nil), name...), off: off, size: int64(len(rec))}
	switch typ := be.Uint16(data); typ {
	case plusFolder, plusFile:
		want := plusFolderSize
		if typ == plusFile {
			want = plusFileSize
		}
		if len(data) < want {
			v.opts.Reportf(off, "corrupt", "catalog record %q of type %d of %d bytes, want %d; left out", r.name, typ, len(data), want)
			return
		}
		r.dir = typ == plusFolder
		r.data = append([]byte(nil), data[:want]...)
		r.id = be.Uint32(r.data[8:])
		v.add(r)
	case plusFolderThread:
		if len(data) >= 10 && 10+2*int(be.Uint16(data[8:])) <= len(data) {
			n := 2 * int(be.Uint16(data[8:]))
			v.addThread(r.parent, &record{parent: be.Uint32(data[4:]), name: append([]byte(nil), data[10:10+n]...), off: off, size: int64(len(rec))})
		}
	case plusFileThread:
	default:
		v.opts.Reportf(off, "corrupt", "catalog record %q of unknown type %d; left out", r.name, typ)
	}
}

// Type returns "hfsplus".
func (v *PlusVolume) Type() string { return PlusType }

// Root returns the root directory (CNID 2).
func (v *PlusVolume) Root() (*imagefs.Entry, error) {
	if r := v.dirs[RootID]; r != nil {
		e := v.entry(r)
		e.Name = nil
		return e, nil
	}
	return &imagefs.Entry{ID: RootID, Type: 'd', Mtime: v.modify, Nlink: 2 + v.subdirsShown(RootID)}, nil
}

// hidden reports whether r is not presented: the private directories of
// hardlinks and the journal's files, in the root.
func (v *PlusVolume) hidden(r *record) bool {
	if r.parent != RootID {
		return false
	}
	if r.dir {
		return (v.private != 0 && r.id == v.private) || (v.privDirs != 0 && r.id == v.privDirs)
	}
	for _, j := range journalFiles {
		if bytes.Equal(r.name, j) {
			return true
		}
	}
	return false
}

func (v *PlusVolume) hiddenDirs(cnid uint32) uint64 {
	if cnid != RootID {
		return 0
	}
	n := uint64(0)
	for _, r := range v.children[RootID] {
		if r.dir && v.hidden(r) {
			n++
		}
	}
	return n
}

// ReadDir returns the entries whose catalog records name dir as their
// parent, in catalog (key) order, but for the hidden ones.
func (v *PlusVolume) ReadDir(dir *imagefs.Entry) ([]*imagefs.Entry, error) {
	if dir == nil || dir.Type != 'd' || dir.ID > 0xffffffff {
		return nil, fmt.Errorf("hfsplus: ReadDir of a non-directory")
	}
	recs := v.children[uint32(dir.ID)]
	out := make([]*imagefs.Entry, 0, len(recs))
	for _, r := range recs {
		if !v.hidden(r) {
			out = append(out, v.entry(r))
		}
	}
	return out, nil
}

// BSD file modes' type bits (HFSPlusBSDInfo.fileMode).
const (
	sIFMT   = 0o170000
	sIFIFO  = 0o010000
	sIFCHR  = 0o020000
	sIFBLK  = 0o060000
	sIFLNK  = 0o120000
	sIFSOCK = 0o140000
)

// maxTarget bounds a symlink's target (macOS's PATH_MAX is 1024).
const maxTarget = 4096

func (v *PlusVolume) entry(r *record) *imagefs.Entry {
	name, changed := DecodeUnicode(r.name)
	switch {
	case len(name) == 0 || string(name) == "." || string(name) == "..":
		v.opts.Reportf(r.off, "bad_name", "CNID %d has the name %q; named %s", r.id, name, placeholderName(r.id))
		name = placeholderName(r.id)
	case changed:
		v.opts.Reportf(r.off, "bad_name", "CNID %d: a NUL or an unpaired surrogate in the name %q is shown as U+2400 or U+FFFD", r.id, name)
	}
	if d := v.dirLink(r); d != nil {
		// Every name of a hardlinked directory is the directory: its
		// CNID, its record as its run — so the walk enters it once.
		e := v.entry(d)
		e.Name = name
		return e
	}
	if r.dir {
		id := r.id
		sub := v.subdirsShown(id)
		e := &imagefs.Entry{ID: uint64(id), Type: 'd', Name: name, Size: int64(be.Uint32(r.data[4:])) + 2 - int64(v.hiddenDirs(id)),
			Mtime: macTime(be.Uint32(r.data[16:])), Nlink: 2 + sub}
		if r.off >= 0 {
			e.Runs = []imagefs.Run{{Offset: r.off, Length: r.size}}
		}
		return e
	}
	nlink := uint64(1)
	if isHardlink(r) {
		n := be.Uint32(r.data[44:])
		if in := v.inodes[n]; in != nil {
			r, nlink = in, v.links[n]
		} else {
			v.opts.Reportf(r.off, "corrupt", "hardlink %q names indirect node %d, which the private directory does not hold; listed as the empty link file it is", name, n)
		}
	}
	e := &imagefs.Entry{ID: uint64(r.id), Type: 'f', Name: name, Mtime: macTime(be.Uint32(r.data[16:])), Nlink: nlink}
	mode := be.Uint16(r.data[42:]) & sIFMT
	switch {
	case mode == sIFIFO:
		e.Type = 'p'
		return e
	case mode == sIFCHR:
		e.Type = 'c'
		return e
	case mode == sIFBLK:
		e.Type = 'b'
		return e
	case mode == sIFSOCK:
		e.Type = 's'
		return e
	}
	data := r.data[88 : 88+forkDataSize]
	size := v.forkSize(data, fmt.Sprintf("the data fork of %q", name), r.off)
	e.Size = size
	e.Runs = v.plusForkRuns(data, r.id, 0, size, fmt.Sprintf("the data fork of %q", name), r.off)
	if mode == sIFLNK || (string(r.data[48:52]) == "slnk" && string(r.data[52:56]) == "rhap") {
		if t, ok := v.target(e, r); ok {
			e.Type, e.Target, e.Size, e.Runs = 'l', t, int64(len(t)), nil
			return e
		}
	}
	rsrc := r.data[168 : 168+forkDataSize]
	rsize := v.forkSize(rsrc, fmt.Sprintf("the resource fork of %q", name), r.off)
	var rruns []imagefs.Run
	if rsize > 0 {
		rruns = v.plusForkRuns(rsrc, r.id, 0xff, rsize, fmt.Sprintf("the resource fork of %q", name), r.off)
	}
	if d, ok, err := v.compressed(r); err != nil {
		v.opts.Reportf(d.a.off, "corrupt", "%q: %v; its data fork is read as it is", name, err)
	} else if ok {
		e.Size, e.Encoded = d.size, true
		if !d.inFork() {
			e.Runs = []imagefs.Run{{Offset: d.a.off, Length: int64(len(d.a.data))}}
		} else {
			e.Runs = rruns
			return e // the resource fork holds the compressed content
		}
	}
	if rsize > 0 {
		e.Forks = []*imagefs.Entry{{ID: imagefs.ForkID(uint64(r.id), 1), Type: 'f', Name: []byte(imagefs.ResourceFork),
			Size: rsize, Mtime: e.Mtime, Nlink: 1, Runs: rruns}}
	}
	return e
}

// target reads a symlink's target from its data fork; one that is too
// long or cannot be read is reported, and the link is listed as the file
// it is stored as.
func (v *PlusVolume) target(e *imagefs.Entry, r *record) ([]byte, bool) {
	if e.Size == 0 || e.Size > maxTarget {
		v.opts.Reportf(r.off, "corrupt", "symlink %q has a target of %d bytes; listed as a file", e.Name, e.Size)
		return nil, false
	}
	t := make([]byte, e.Size)
	rd, _ := v.open(e, r)
	if _, err := rd.ReadAt(t, 0); err != nil && !errors.Is(err, io.EOF) {
		v.opts.Reportf(r.off, "corrupt", "symlink %q: reading its target: %v; listed as a file", e.Name, err)
		return nil, false
	}
	return t, true
}

// Open returns a reader of a file's content: its data fork, or for a
// compressed file (decmpfs) the content decoded from its attribute or its
// resource fork; of a fork Entry, the resource fork. If a fork's extents
// cover fewer bytes than its size, reading the missing tail fails with
// imagefs.ErrCorrupt (never zeros); a run past the image or the volume
// fails with imagefs.ErrBeyondEnd.
func (v *PlusVolume) Open(e *imagefs.Entry) (io.ReaderAt, error) {
	if e == nil || e.Type != 'f' {
		return nil, fmt.Errorf("hfsplus: Open of a non-file")
	}
	r := v.files[uint32(e.ID)]
	if r == nil {
		return nil, fmt.Errorf("hfsplus: Open of CNID %d, which is no file record", uint32(e.ID))
	}
	if e.ID>>48 == 0 {
		if d, ok, err := v.compressed(r); ok && err == nil {
			return v.openCompressed(e, r, d), nil
		}
	}
	return v.open(e, r)
}

func (v *PlusVolume) open(e *imagefs.Entry, r *record) (io.ReaderAt, error) {
	return v.forkReader(e, r.off), nil
}
