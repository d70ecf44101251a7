package extfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
)

// Reading an ext2/3/4 directory tree straight from its block device.
//
// A cold walk through system calls spends its time in the kernel building
// an inode and a dentry for every entry (see enumerate's package doc), not
// in the disk. The same facts are on the device in two compact places: the
// used part of every group's inode table and the directories' blocks. Scan
// reads both in disk order, in large reads, and builds the tree in memory;
// enumerate's walk then writes the records lstat would have given (its
// extwalk.go says when that is allowed).
//
// The scan is all or nothing. It keeps to the filesystem as the kernel
// reads it and refuses, with an error saying why, anything it does not
// read exactly as the kernel would: a feature it does not know or follow
// (meta_bg, inline data, encryption, a journal to recover), a structure
// that does not check out (a directory entry the kernel would reject, an
// extent or a block map leaving the filesystem or entering its metadata,
// a checksum that does not match under metadata_csum, an entry naming a
// free or reserved inode, an inode ext4_iget refuses, an htree entry
// outside the leaf its hash leads to, a directory reached twice). The
// walk then falls back to the system calls, which
// report such damage entry by entry. Every count and offset is bounded by
// the device and by scanMaxInodes / scanMaxDirBytes, so that no input makes
// it loop or allocate without bound.

// Bounds of a direct scan; a larger medium is walked through system calls.
const (
	scanMaxInodes   = 16 << 20 // used inode slots kept (24 bytes each)
	scanMaxDirBytes = 1 << 30  // directory blocks read
	scanChunk       = 4 << 20  // bytes read at once
	scanGap         = 64 << 10 // a gap this small between two ranges is read rather than skipped
	extentMagic     = 0xF30A
	maxExtentDepth  = 5
)

// Feature bits the scan follows (anything else refuses it).
const (
	incompatFiletype = 0x2
	incompatExtents  = 0x40
	incompat64bit    = 0x80
	incompatMMP      = 0x100
	incompatFlexBG   = 0x200
	incompatEAInode  = 0x400
	incompatCsumSeed = 0x2000
	incompatLargeDir = 0x4000
	incompatCasefold = 0x20000
	scanIncompat     = incompatFiletype | incompatExtents | incompat64bit | incompatMMP | incompatFlexBG |
		incompatEAInode | incompatCsumSeed | incompatLargeDir | incompatCasefold
	roMetadataCsum = 0x400
)

// Inode flags.
const (
	inodeEncrypt  = 0x800
	inodeExtents  = 0x80000
	inodeInline   = 0x10000000
	inodeIndexDir = 0x1000
	modeTypeMask  = 0xF000
	modeDir       = 0x4000
	inodeRefused  = 1 << 0 // Inode.flags: the kernel would refuse it (checksum, bad fields)
	inodeScanned  = 1 << 1 // Inode.flags: a live inode was read here
)

// RootIno is the inode number of an ext filesystem's root directory.
const RootIno = 2

// errScan marks what the direct reader refuses; the walk falls back.
var errScan = errors.New("ext: not read directly")

func scanErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errScan, fmt.Sprintf(format, args...))
}

// Inode is what lstat shows of one inode.
type Inode struct {
	size  int64
	mtime int64
	mode  uint16
	nlink uint16
	flags uint8
}

// Mode is the inode's i_mode: its type and permission bits, as st_mode.
func (in *Inode) Mode() uint16 { return in.mode }

// Nlink is the inode's link count, as st_nlink.
func (in *Inode) Nlink() uint16 { return in.nlink }

// Size is the inode's size in bytes, as st_size.
func (in *Inode) Size() int64 { return in.size }

// Mtime is the inode's modification time in whole seconds since the
// epoch (floor), as st_mtime.
func (in *Inode) Mtime() int64 { return in.mtime }

// extDir is a directory inode whose blocks are to be read.
type extDir struct {
	ino    uint32
	gen    uint32 // i_generation, in its blocks' checksums
	size   int64
	flags  int64
	iblock [60]byte // i_block: the extent tree's root or the block map
	runs   []dirRun
	dx     map[int64][]byte    // an indexed directory's root and node blocks, by logical block
	leaves map[int64]hashRange // an indexed directory's leaf blocks: the hashes the index sends there
	hashV  int                 // an indexed directory's hash version
	// After the scan, its entries are ents[first : first+count].
	first, count int32
}

// hashRange is the name hashes an htree index sends to one leaf block:
// from lo, below hi, or up to hi too when cont (a hash continued in the
// next leaf).
type hashRange struct {
	lo, hi int64
	cont   bool
}

// dirRun maps n blocks of a directory, from its block lblk, to the
// device's block pblk.
type dirRun struct {
	lblk, pblk, n int64
}

// extEnt is one directory entry.
type extEnt struct {
	child   uint32
	nameOff uint32 // into Tree.names
	dir     int32  // index into dirs of the directory holding it
	lblk    int32  // where in that directory (block, offset in it): the stored order
	offset  uint16 // below the block size, at most 64 KiB
	nameLen uint8
}

// Tree is a filesystem's tree as its device holds it: every directory's
// entries in stored order and the inode each names, read by Scan.
type Tree struct {
	l      *Layout
	r      io.ReaderAt
	advise func(off, n int64) // asks for a range ahead of reading it (may be nil)
	tick   func() error       // called between reads: progress, and a stop (non-nil error)
	seed   uint32             // metadata_csum seed (0 without checksums)
	csum   bool
	zone   []Span // in blocks, sorted, merged: what no inode may name (blockOK)

	tables  []itable // used inode tables
	base    []int64  // index into inodes of each table's first inode
	groupOf []int32  // group → index into tables, -1 when none is used
	inodes  []Inode  // every used inode slot
	dirs    []extDir
	dirOf   map[uint32]int32 // directory inode → index into dirs
	ents    []extEnt
	names   []byte
	buf     []byte
	meta    int64 // index and indirect blocks read

	ItableBytes, DirBytes int64 // inode-table and directory bytes read from the device
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32cRaw is the kernel's crc32c(): no inversion on the way in or out.
func crc32cRaw(crc uint32, p []byte) uint32 {
	return ^crc32.Update(^crc, castagnoli, p)
}

// Scan reads the ext filesystem on r (size bytes) into a Tree, or refuses
// it with an error saying why (see above). advise, if not nil, is called
// with each range ahead of its read (posix_fadvise WILLNEED on a device);
// tick is called between reads, and a non-nil error from it ends the scan
// with that error (a stop).
func Scan(r io.ReaderAt, size int64, advise func(off, n int64), tick func() error) (*Tree, error) {
	l, err := ReadLayout(r, size)
	if err != nil {
		return nil, scanErr("%v", err)
	}
	return scanLayout(l, r, advise, tick)
}

// scanLayout is Scan on a layout already read.
func scanLayout(l *Layout, r io.ReaderAt, advise func(off, n int64), tick func() error) (*Tree, error) {
	switch {
	case l.incompat&^scanIncompat != 0:
		return nil, scanErr("incompatible features %#x", l.incompat&^scanIncompat)
	case l.truncated:
		return nil, scanErr("the device is smaller than the filesystem")
	case l.overlaps:
		return nil, scanErr("inode tables overlap")
	case l.inodes <= RootIno || l.inodes > l.groups*l.inodesPerGroup:
		return nil, scanErr("%d inodes in %d groups of %d", l.inodes, l.groups, l.inodesPerGroup)
	}
	if tick == nil {
		tick = func() error { return nil }
	}
	t := &Tree{l: l, r: r, advise: advise, tick: tick, dirOf: map[uint32]int32{}}
	if l.roCompat&roMetadataCsum != 0 {
		t.csum = true
		t.seed = l.csumSeed
		if l.incompat&incompatCsumSeed == 0 {
			t.seed = crc32cRaw(^uint32(0), l.uuid)
		}
	}
	if err := t.systemZone(); err != nil {
		return nil, err
	}
	if err := t.readInodes(); err != nil {
		return nil, err
	}
	if err := t.mapDirs(); err != nil {
		return nil, err
	}
	if err := t.readDirs(); err != nil {
		return nil, err
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	return t, nil
}

func le16(b []byte, o int) int64 { return int64(binary.LittleEndian.Uint16(b[o:])) }
func le32(b []byte, o int) int64 { return int64(binary.LittleEndian.Uint32(b[o:])) }

// readSpans reads the ranges in order, coalescing near ones into reads of
// at most scanChunk bytes, advising the next read before parsing this one,
// and hands each range's bytes to fn.
func (t *Tree) readSpans(spans []Span, fn func(i int, b []byte) error) error {
	type read struct {
		Span
		first, last int // spans[first:last]
	}
	var reads []read
	for i, s := range spans {
		if k := len(reads) - 1; k >= 0 && s.Off >= reads[k].Off+reads[k].N && s.Off-(reads[k].Off+reads[k].N) <= scanGap &&
			s.Off+s.N-reads[k].Off <= scanChunk {
			reads[k].N = s.Off + s.N - reads[k].Off
			reads[k].last = i + 1
			continue
		}
		reads = append(reads, read{s, i, i + 1})
	}
	advised := 0
	for k, rd := range reads {
		if err := t.tick(); err != nil {
			return err
		}
		if t.advise != nil {
			for ahead := int64(0); advised < len(reads) && (advised <= k+1 || ahead < 2*scanChunk); advised++ {
				t.advise(reads[advised].Off, reads[advised].N)
				ahead += reads[advised].N
			}
		}
		if int64(cap(t.buf)) < rd.N {
			t.buf = make([]byte, rd.N)
		}
		b := t.buf[:rd.N]
		if n, err := t.r.ReadAt(b, rd.Off); n != len(b) {
			return fmt.Errorf("ext: reading %d bytes at byte offset %d: %w", rd.N, rd.Off, err)
		}
		for i := rd.first; i < rd.last; i++ {
			s := spans[i]
			if err := fn(i, b[s.Off-rd.Off:s.Off-rd.Off+s.N]); err != nil {
				return err
			}
		}
	}
	return nil
}

// readInodes reads the used part of every inode table, in disk order.
func (t *Tree) readInodes() error {
	l := t.l
	var total int64
	for _, it := range l.itables {
		total += it.used
	}
	if total > scanMaxInodes {
		return scanErr("%d inodes in use, more than %d", total, scanMaxInodes)
	}
	t.tables = slices.Clone(l.itables)
	slices.SortFunc(t.tables, func(a, b itable) int { return cmpInt64(int64(a.first), int64(b.first)) })
	t.base = make([]int64, len(t.tables))
	var next int64
	for i, it := range t.tables {
		t.base[i] = next
		next += it.used
	}
	t.inodes = make([]Inode, next)
	groups := (l.inodes + l.inodesPerGroup - 1) / l.inodesPerGroup
	t.groupOf = make([]int32, groups)
	for g := range t.groupOf {
		t.groupOf[g] = -1
	}
	for i, it := range t.tables {
		if g := int64(it.first-1) / l.inodesPerGroup; g < groups {
			t.groupOf[g] = int32(i)
		}
	}
	// The tables in disk order, cut into chunks of whole inodes.
	per := scanChunk / l.inodeSize
	var spans []Span
	var owner []struct {
		table int
		first int64
	}
	byOff := make([]int, len(t.tables))
	for i := range byOff {
		byOff[i] = i
	}
	slices.SortFunc(byOff, func(a, b int) int { return cmpInt64(t.tables[a].Off, t.tables[b].Off) })
	for _, ti := range byOff {
		it := t.tables[ti]
		for k := int64(0); k < it.used; k += per {
			n := min(per, it.used-k)
			spans = append(spans, Span{it.Off + k*l.inodeSize, n * l.inodeSize})
			owner = append(owner, struct {
				table int
				first int64
			}{ti, k})
		}
	}
	return t.readSpans(spans, func(i int, b []byte) error {
		t.ItableBytes += int64(len(b))
		o := owner[i]
		it := t.tables[o.table]
		for k := int64(0); int64(len(b)) >= l.inodeSize; k++ {
			raw := b[:l.inodeSize]
			b = b[l.inodeSize:]
			ino := uint32(it.first) + uint32(o.first+k)
			if err := t.inode(t.base[o.table]+o.first+k, ino, raw); err != nil {
				return err
			}
		}
		return nil
	})
}

// inode parses one raw inode into slot idx.
func (t *Tree) inode(idx int64, ino uint32, raw []byte) error {
	mode, links := le16(raw, 0x00), le16(raw, 0x1A)
	if mode == 0 || links == 0 {
		return nil // free
	}
	in := &t.inodes[idx]
	in.mode, in.nlink, in.flags = uint16(mode), uint16(links), inodeScanned
	in.size = le32(raw, 0x04)
	if t.l.incompat&incompatLargeDir != 0 || mode&modeTypeMask == 0x8000 {
		in.size |= le32(raw, 0x6C) << 32
	}
	in.mtime = int64(int32(binary.LittleEndian.Uint32(raw[0x10:])))
	extra := int64(0)
	if len(raw) > 128 {
		extra = le16(raw, 0x80)
		// ext4_iget takes an i_extra_isize of 0 for the whole struct
		// ext4_inode (32 bytes past the first 128), and reads the times'
		// extra fields there.
		tx := extra
		if tx == 0 {
			tx = 32
		}
		if tx >= 12 && 128+tx <= int64(len(raw)) {
			if e := le32(raw, 0x88) & 3; e != 0 {
				in.mtime += e << 32
			}
		}
	}
	flags := le32(raw, 0x20)
	if t.igetRefuses(ino, raw, flags, in.size) {
		in.flags |= inodeRefused
		return nil
	}
	if mode&modeTypeMask != modeDir {
		return nil
	}
	if flags&(inodeEncrypt|inodeInline) != 0 {
		return scanErr("directory inode %d: encrypted or inline data (flags %#x)", ino, flags)
	}
	if in.size < 0 || in.size > scanMaxDirBytes || in.size%t.l.blockSize != 0 {
		// A size that is not whole blocks: readdir stops at it within a
		// block, lookups do not search that block; not read directly.
		return scanErr("directory inode %d: size %d", ino, in.size)
	}
	t.dirOf[ino] = int32(len(t.dirs))
	t.dirs = append(t.dirs, extDir{ino: ino, gen: uint32(le32(raw, 0x64)), size: in.size, flags: flags, iblock: [60]byte(raw[0x28 : 0x28+60])})
	return nil
}

// igetRefuses reports whether ext4_iget refuses the raw inode ino
// (EFSCORRUPTED, EFSBADCRC): lstat fails on it, so the walk must not list
// it, nor a reader read it: a bad i_extra_isize, a negative size, a
// checksum mismatch under metadata_csum, or what igetOK refuses.
func (t *Tree) igetRefuses(ino uint32, raw []byte, flags, size int64) bool {
	extra := int64(0)
	if len(raw) > 128 {
		extra = le16(raw, 0x80)
	}
	return len(raw) > 128 && (128+extra > int64(len(raw)) || extra&3 != 0) || size < 0 ||
		t.csum && !t.inodeCsumOK(ino, raw, extra) || !t.igetOK(raw, uint16(le16(raw, 0)), flags, size)
}

// More inode flags, and features ext4_iget checks them against.
const (
	inodeImmutable = 0x10
	inodeAppend    = 0x20
	inodeHugeFile  = 0x40000
	inodeEAInode   = 0x200000
	inodeCasefold  = 0x40000000
)

// igetOK reports whether ext4_iget hands out the inode rather than
// failing with EFSCORRUPTED (lstat fails then, so the scan must not list
// it): its extended attribute block, its block references (a file's, a
// directory's, a slow symlink's), a fast symlink's length, flags that its
// type or the filesystem's features do not allow. Where the kernel's test
// needs more than the scan reads, it refuses: at least as strict as the
// kernel.
func (t *Tree) igetOK(raw []byte, mode uint16, flags, size int64) bool {
	acl := le32(raw, 0x68)
	if t.l.incompat&incompat64bit != 0 {
		acl |= le16(raw, 0x76) << 32
	}
	typ := mode & modeTypeMask
	switch {
	case acl != 0 && !t.blockOK(acl, 1),
		flags&inodeInline != 0,  // the scan refuses inline_data filesystems: an inline inode is damage
		flags&inodeEAInode != 0, // an extended attribute's inode, never named by a directory
		flags&inodeCasefold != 0 && (typ != modeDir || t.l.incompat&incompatCasefold == 0),
		typ == modeDir && flags&inodeIndexDir != 0 && t.csum && t.l.compat&compatDirIndex == 0:
		return false
	}
	ib := raw[0x28 : 0x28+60]
	switch typ {
	case 0x8000, modeDir:
		return t.iblockOK(ib, flags)
	case 0xA000:
		if flags&(inodeImmutable|inodeAppend|inodeEncrypt|inodeHugeFile) != 0 || acl != 0 {
			return false
		}
		var fast bool
		if t.l.incompat&incompatEAInode != 0 {
			fast = size > 0 && size < 60
		} else {
			fast = le32(raw, 0x1C)|le16(raw, 0x74)<<32 == 0 // no blocks
		}
		if !fast {
			return t.iblockOK(ib, flags)
		}
		if size <= 0 || size >= 60 {
			return false
		}
		for _, c := range ib[:size] {
			if c == 0 {
				return false // the kernel's strnlen must come to the size
			}
		}
	}
	return true
}

// blockOK reports whether n blocks from p are blocks an inode may name, as
// ext4_inode_block_valid checks them: inside the filesystem, past its
// first data block, outside the system zone.
func (t *Tree) blockOK(p, n int64) bool {
	if !(p > t.l.firstData && n > 0 && p+n > p && p+n <= t.l.blocks) {
		return false
	}
	// The first zone ending past p: it must start at or past p+n.
	i, _ := slices.BinarySearchFunc(t.zone, p, func(z Span, p int64) int { return cmpInt64(z.Off+z.N, p+1) })
	return i == len(t.zone) || t.zone[i].Off >= p+n
}

// systemZone sorts and merges the layout's system zone and adds the
// journal inode's blocks to it, as the kernel does (the journal inode
// itself is never named by a directory: its own check does not matter).
func (t *Tree) systemZone() error {
	l := t.l
	z := slices.Clone(l.sysZone)
	if l.compat&0x4 != 0 {
		sb := make([]byte, 4)
		if _, err := t.r.ReadAt(sb, 1024+0xE0); err != nil {
			return fmt.Errorf("ext: reading the superblock: %w", err)
		}
		jino := le32(sb, 0)
		if jino != 0 {
			if jino > l.inodesPerGroup || l.itable0 <= 0 {
				return scanErr("journal inode %d not in group 0", jino)
			}
			raw := make([]byte, l.inodeSize)
			if n, err := t.r.ReadAt(raw, l.itable0*l.blockSize+(jino-1)*l.inodeSize); n != len(raw) {
				return fmt.Errorf("ext: reading the journal inode: %w", err)
			}
			d := extDir{ino: uint32(jino), gen: uint32(le32(raw, 0x64)), size: le32(raw, 0x04) | le32(raw, 0x6C)<<32, flags: le32(raw, 0x20), iblock: [60]byte(raw[0x28 : 0x28+60])}
			nb := (d.size + l.blockSize - 1) / l.blockSize
			if d.size < 0 || nb > l.blocks {
				return scanErr("journal inode size %d", d.size)
			}
			t.zone = nil // the journal's own blocks are only checked against the filesystem
			if err := t.mapBlocks(&d, d.flags, nb); err != nil {
				return fmt.Errorf("%w (journal inode %d)", err, jino)
			}
			for _, r := range d.runs {
				z = append(z, Span{r.pblk, r.n})
			}
		}
	}
	slices.SortFunc(z, func(a, b Span) int { return cmpInt64(a.Off, b.Off) })
	var merged []Span
	for _, s := range z {
		if k := len(merged) - 1; k >= 0 && s.Off <= merged[k].Off+merged[k].N {
			merged[k].N = max(merged[k].N, s.Off+s.N-merged[k].Off)
			continue
		}
		merged = append(merged, s)
	}
	t.zone = merged
	return nil
}

// iblockOK checks a file's or directory's i_block as ext4_iget does before
// it hands out the inode (ext4_ext_check_inode, ext4_ind_check_inode):
// lstat fails with EFSCORRUPTED on an inode that does not pass, so the
// scan must not list it. It is at least as strict as the kernel.
func (t *Tree) iblockOK(ib []byte, flags int64) bool {
	if flags&inodeExtents == 0 {
		for i := 0; i < 60; i += 4 {
			if p := le32(ib, i); p != 0 && !t.blockOK(p, 1) {
				return false
			}
		}
		return true
	}
	entries, limit, depth := le16(ib, 2), le16(ib, 4), le16(ib, 6)
	if le16(ib, 0) != extentMagic || limit == 0 || limit > 4 || entries > limit || depth > maxExtentDepth || entries == 0 && depth > 0 {
		return false
	}
	next := int64(0)
	for e := int64(0); e < entries; e++ {
		x := ib[12+12*e : 24+12*e]
		lblk := le32(x, 0)
		if lblk < next {
			return false // out of order or overlapping
		}
		if depth > 0 {
			if !t.blockOK(le16(x, 8)<<32|le32(x, 4), 1) {
				return false
			}
			next = lblk + 1
			continue
		}
		n := le16(x, 4)
		if n > 32768 {
			n -= 32768
		}
		if !t.blockOK(le16(x, 6)<<32|le32(x, 8), n) {
			return false
		}
		next = lblk + n
	}
	return true
}

// inodeCsumOK checks an inode's metadata_csum checksum as the kernel does
// (ext4_inode_csum): the seed, the inode number and generation, then the
// inode with its checksum fields as zeros.
func (t *Tree) inodeCsumOK(ino uint32, raw []byte, extra int64) bool {
	var b4 [4]byte
	binary.LittleEndian.PutUint32(b4[:], ino)
	c := crc32cRaw(t.seed, b4[:])
	c = crc32cRaw(c, raw[0x64:0x68]) // i_generation
	var zero [2]byte
	c = crc32cRaw(c, raw[:0x7C])
	c = crc32cRaw(c, zero[:])
	c = crc32cRaw(c, raw[0x7E:128])
	hi := false
	if len(raw) > 128 {
		c = crc32cRaw(c, raw[128:0x82])
		off := 0x82
		if extra >= 4 { // i_checksum_hi fits in the inode
			c = crc32cRaw(c, zero[:])
			off += 2
			hi = true
		}
		c = crc32cRaw(c, raw[off:])
	}
	stored := uint32(le16(raw, 0x7C))
	if hi {
		stored |= uint32(le16(raw, 0x82)) << 16
		return stored == c
	}
	return stored == c&0xFFFF
}

// lookup returns the inode slot of ino, or nil if it lies outside the
// used inode tables.
func (t *Tree) lookup(ino uint32) *Inode {
	if ino == 0 || int64(ino) > t.l.inodes {
		return nil
	}
	g, k := int64(ino-1)/t.l.inodesPerGroup, int64(ino-1)%t.l.inodesPerGroup
	if g >= int64(len(t.groupOf)) || t.groupOf[g] < 0 {
		return nil
	}
	ti := t.groupOf[g]
	if k >= t.tables[ti].used {
		return nil
	}
	return &t.inodes[t.base[ti]+k]
}

// block reads one filesystem block (an extent index or leaf, an indirect
// block), bounded in count over the whole scan.
func (t *Tree) block(p int64) ([]byte, error) {
	if !t.blockOK(p, 1) {
		return nil, scanErr("block %d outside the filesystem or in its metadata", p)
	}
	if t.meta++; t.meta > min(scanMaxDirBytes/t.l.blockSize, t.l.blocks) {
		return nil, scanErr("more than %d index blocks", t.meta-1)
	}
	b := make([]byte, t.l.blockSize)
	if n, err := t.r.ReadAt(b, p*t.l.blockSize); n != len(b) {
		return nil, fmt.Errorf("ext: reading block %d: %w", p, err)
	}
	return b, nil
}

// mapDirs finds every directory's blocks: its extent tree, or its block
// map with the indirect blocks it needs, up to its size.
func (t *Tree) mapDirs() error {
	bs := t.l.blockSize
	budget := min(scanMaxDirBytes/bs, t.l.blocks) // no more directory blocks than the filesystem has
	for i := range t.dirs {
		if err := t.tick(); err != nil {
			return err
		}
		d := &t.dirs[i]
		nb := (d.size + bs - 1) / bs
		if budget -= nb; budget < 0 {
			return scanErr("more than %d bytes of directories", int64(scanMaxDirBytes))
		}
		if err := t.mapBlocks(d, d.flags, nb); err != nil {
			return fmt.Errorf("%w (directory inode %d)", err, d.ino)
		}
	}
	return nil
}

// add maps n more blocks (pblk < 0: unwritten, reading as zeros); they
// must follow the ones mapped so far (an extent tree whose extents overlap
// or go back is damage: the kernel does not read both).
func (d *extDir) add(lblk, pblk, n int64) error {
	k := len(d.runs) - 1
	if k >= 0 && lblk < d.runs[k].lblk+d.runs[k].n {
		return scanErr("block %d mapped twice or out of order", lblk)
	}
	if last := d.runs[max(k, 0):]; k >= 0 && last[0].lblk+last[0].n == lblk &&
		(pblk >= 0 && last[0].pblk >= 0 && last[0].pblk+last[0].n == pblk || pblk < 0 && last[0].pblk < 0) {
		d.runs[k].n += n
		return nil
	}
	d.runs = append(d.runs, dirRun{lblk, pblk, n})
	return nil
}

// blockMapper maps one inode's blocks into d.runs, reading its extent
// index or indirect blocks through block.
type blockMapper struct {
	t     *Tree
	d     *extDir
	block func(p int64) ([]byte, error)
	holes bool // unwritten extents map as holes (a file's); else they refuse it (a directory's)
}

// mapBlocks maps the first nb blocks of d (flags: its inode flags) for the
// scan, which reads its index blocks within one budget (Tree.block).
func (t *Tree) mapBlocks(d *extDir, flags, nb int64) error {
	return (&blockMapper{t: t, d: d, block: t.block}).mapInode(flags, nb)
}

func (m *blockMapper) mapInode(flags, nb int64) error {
	if flags&inodeExtents != 0 {
		return m.extents(m.d.iblock[:], maxExtentDepth+1, nb)
	}
	return m.blockMap(nb)
}

// extents follows an extent tree node (b: header and entries) whose depth
// must be below limit, adding the runs below nb blocks.
func (m *blockMapper) extents(b []byte, limit, nb int64) error {
	t, d := m.t, m.d
	if le16(b, 0) != extentMagic {
		return scanErr("bad extent header")
	}
	entries, depth := le16(b, 2), le16(b, 6)
	if depth >= limit || 12+12*entries > int64(len(b)) {
		return scanErr("bad extent header (depth %d, %d entries)", depth, entries)
	}
	for e := int64(0); e < entries; e++ {
		x := b[12+12*e : 24+12*e]
		if depth > 0 {
			child, err := m.block(le16(x, 8)<<32 | le32(x, 4))
			if err != nil {
				return err
			}
			if err := t.extentBlockOK(d, child, depth-1); err != nil {
				return err
			}
			if err := m.extents(child, depth, nb); err != nil {
				return err
			}
			continue
		}
		lblk, n, p := le32(x, 0), le16(x, 4), le16(x, 6)<<32|le32(x, 8)
		unwritten := n > 32768
		if unwritten {
			if !m.holes {
				return scanErr("unwritten extent in a directory")
			}
			n -= 32768
		}
		if lblk >= nb {
			continue
		}
		n = min(n, nb-lblk)
		if !t.blockOK(p, n) {
			return scanErr("extent of %d blocks at %d outside the filesystem", n, p)
		}
		if unwritten {
			p = -1
		}
		if err := d.add(lblk, p, n); err != nil {
			return err
		}
	}
	return nil
}

// extentBlockOK checks an extent tree block below the inode as the
// kernel's __ext4_ext_check does when it reads one: its header, the depth
// its parent expects, and under metadata_csum its checksum (crc32c over
// the seed, the inode number and generation, and the block up to its
// tail). Readdir fails on a block that does not pass.
func (t *Tree) extentBlockOK(d *extDir, b []byte, depth int64) error {
	entries, limit := le16(b, 2), le16(b, 4)
	if le16(b, 0) != extentMagic || le16(b, 6) != depth || limit == 0 || limit > (int64(len(b))-12)/12 || entries > limit || entries == 0 && depth > 0 {
		return scanErr("bad extent header in an extent block")
	}
	if !t.csum {
		return nil
	}
	tail := 12 + 12*limit
	if tail+4 > int64(len(b)) {
		return scanErr("bad extent header in an extent block")
	}
	var b8 [8]byte
	binary.LittleEndian.PutUint32(b8[:], d.ino)
	binary.LittleEndian.PutUint32(b8[4:], d.gen)
	c := crc32cRaw(t.seed, b8[:4])
	c = crc32cRaw(c, b8[4:])
	c = crc32cRaw(c, b[:tail])
	if uint32(le32(b, int(tail))) != c {
		return scanErr("extent block checksum mismatch")
	}
	return nil
}

// blockMap follows an ext2/3-style block map: 12 direct blocks, then the
// single, double and triple indirect blocks.
func (m *blockMapper) blockMap(nb int64) error {
	t, d := m.t, m.d
	per := t.l.blockSize / 4
	ptr := func(p int64) error {
		if !t.blockOK(p, 1) {
			return scanErr("block %d outside the filesystem or in its metadata", p)
		}
		return nil
	}
	for i := int64(0); i < 12 && i < nb; i++ {
		if p := le32(d.iblock[:], int(4*i)); p != 0 {
			if err := ptr(p); err != nil {
				return err
			}
			if err := d.add(i, p, 1); err != nil {
				return err
			}
		}
	}
	var walk func(p, level, lblk int64) error
	walk = func(p, level, lblk int64) error {
		b, err := m.block(p)
		if err != nil {
			return err
		}
		span := int64(1)
		for range level - 1 {
			span *= per
		}
		for j := int64(0); j < per; j++ {
			l := lblk + j*span
			if l >= nb {
				break
			}
			c := le32(b, int(4*j))
			if c == 0 {
				continue
			}
			if err := ptr(c); err != nil {
				return err
			}
			if level == 1 {
				if err := d.add(l, c, 1); err != nil {
					return err
				}
			} else if err := walk(c, level-1, l); err != nil {
				return err
			}
		}
		return nil
	}
	lblk, span := int64(12), per
	for level := int64(1); level <= 3 && lblk < nb; level++ {
		if p := le32(d.iblock[:], int(4*(11+level))); p != 0 {
			if err := ptr(p); err != nil {
				return err
			}
			if err := walk(p, level, lblk); err != nil {
				return err
			}
		}
		lblk += span
		span *= per
	}
	return nil
}

// readDirs reads every directory's blocks in disk order and parses their
// entries.
func (t *Tree) readDirs() error {
	bs := t.l.blockSize
	type piece struct {
		dir int32
		run dirRun
	}
	var pieces []piece
	for i, d := range t.dirs {
		for _, r := range d.runs {
			for k := int64(0); k < r.n; k += scanChunk / bs { // no read larger than a chunk
				n := min(r.n-k, scanChunk/bs)
				pieces = append(pieces, piece{int32(i), dirRun{r.lblk + k, r.pblk + k, n}})
			}
		}
	}
	slices.SortFunc(pieces, func(a, b piece) int { return cmpInt64(a.run.pblk, b.run.pblk) })
	spans := make([]Span, len(pieces))
	for i, p := range pieces {
		spans[i] = Span{p.run.pblk * bs, p.run.n * bs}
	}
	return t.readSpans(spans, func(i int, b []byte) error {
		t.DirBytes += int64(len(b))
		p := pieces[i]
		for k := int64(0); k < p.run.n; k++ {
			if err := t.dirBlock(p.dir, p.run.lblk+k, b[k*bs:(k+1)*bs]); err != nil {
				return fmt.Errorf("%w (directory inode %d, block %d)", err, t.dirs[p.dir].ino, p.run.lblk+k)
			}
		}
		return nil
	})
}

// dirBlock parses one directory block's entries as the kernel's
// ext4_check_dir_entry accepts them.
func (t *Tree) dirBlock(dir int32, lblk int64, b []byte) error {
	bs := int64(len(b))
	if d := &t.dirs[dir]; t.indexed(d) && (lblk == 0 || le32(b, 0) == 0 && le16(b, 4) == bs%65536) {
		// Perhaps an htree root or node: kept for checkIndex.
		if d.dx == nil {
			d.dx = map[int64][]byte{}
		}
		if len(d.dx) > 1024 {
			return scanErr("more than 1024 index blocks in one directory")
		}
		d.dx[lblk] = append([]byte(nil), b...)
	}
	last := int64(-1)
	for off := int64(0); off < bs; {
		if bs-off < 12 {
			return scanErr("entry at %d runs past the block", off)
		}
		e := b[off:]
		ino := uint32(le32(e, 0))
		rl := le16(e, 4)
		if bs >= 65536 && (rl == 65535 || rl == 0) {
			rl = bs
		} else {
			rl = rl&65532 | (rl&3)<<16
		}
		nl := le16(e, 6) & 0xFF
		if t.l.incompat&incompatFiletype == 0 && e[7] != 0 {
			return scanErr("name length above 255 at %d", off)
		}
		if rl < 12 || rl%4 != 0 || rl < (8+nl+3)&^3 || off+rl > bs || int64(ino) > t.l.inodes {
			return scanErr("bad entry at %d (inode %d, rec_len %d, name_len %d)", off, ino, rl, nl)
		}
		last = off
		if ino != 0 && nl == 0 {
			// The kernel's readdir fails (EIO) on it: the walk reports that.
			return scanErr("entry of no name at %d", off)
		}
		if ino != 0 && nl > 0 {
			name := e[8 : 8+nl]
			if !(nl == 1 && name[0] == '.' || nl == 2 && name[0] == '.' && name[1] == '.') {
				for _, c := range name {
					if c == 0 || c == '/' {
						return scanErr("name with a NUL or a slash at %d", off)
					}
				}
				if int64(len(t.ents)) >= scanMaxInodes || len(t.names) > 1<<32-256 {
					return scanErr("more than %d entries", len(t.ents))
				}
				if t.ents == nil {
					// One entry per used inode, about: grown once at most.
					t.ents = make([]extEnt, 0, len(t.inodes)+len(t.inodes)/8+16)
				}
				t.ents = append(t.ents, extEnt{child: ino, nameOff: uint32(len(t.names)), nameLen: uint8(nl), dir: dir, lblk: int32(lblk), offset: uint16(off)})
				t.names = append(t.names, name...)
			}
		}
		off += rl
	}
	if t.csum && last != bs-12 && !(t.indexed(&t.dirs[dir]) && (lblk == 0 || le32(b, 0) == 0)) {
		// A leaf without its checksum tail: the kernel refuses it.
		return scanErr("directory block without a checksum")
	}
	if t.csum && last == bs-12 && le32(b, int(last)) == 0 && le16(b, int(last)+4) == 12 && b[last+6] == 0 && b[last+7] == 0xDE {
		// A leaf block's checksum tail: crc32c over the seed, the
		// directory's inode number and generation, and the block up to
		// the tail.
		d := &t.dirs[dir]
		var b8 [8]byte
		binary.LittleEndian.PutUint32(b8[:], d.ino)
		binary.LittleEndian.PutUint32(b8[4:], d.gen)
		c := crc32cRaw(t.seed, b8[:4])
		c = crc32cRaw(c, b8[4:])
		c = crc32cRaw(c, b[:bs-12])
		if uint32(le32(b, int(bs-4))) != c {
			return scanErr("directory block checksum mismatch")
		}
	}
	return nil
}

// check makes sure every entry names a live inode the scan read, of a type
// lstat knows, and groups the entries by directory in stored order.
func (t *Tree) check() error {
	if _, ok := t.dirOf[RootIno]; !ok {
		return scanErr("no root directory")
	}
	for i := range t.dirs {
		if d := &t.dirs[i]; t.indexed(d) {
			if err := t.checkIndex(d); err != nil {
				return fmt.Errorf("%w (directory inode %d)", err, d.ino)
			}
			d.dx = nil
		}
	}
	for i := range t.ents {
		e := &t.ents[i]
		in := t.lookup(e.child)
		switch {
		case e.child != RootIno && (int64(e.child) < t.l.firstIno || slices.Contains(t.l.special[:], e.child)):
			// ext4_lookup and ext4_iget refuse to hand such an inode to lstat.
			return scanErr("directory inode %d: entry %q names reserved inode %d", t.dirs[e.dir].ino, t.name(e), e.child)
		case in == nil || in.flags&inodeScanned == 0:
			return scanErr("directory inode %d: entry %q names inode %d, which is not in use", t.dirs[e.dir].ino, t.name(e), e.child)
		case in.flags&inodeRefused != 0:
			return scanErr("inode %d: checksum mismatch or bad fields", e.child)
		case !knownType(in.mode):
			return scanErr("inode %d: mode %#o", e.child, in.mode)
		}
		if in.mode&modeTypeMask == modeDir {
			if _, ok := t.dirOf[e.child]; !ok {
				return scanErr("directory inode %d not read", e.child)
			}
		}
	}
	// Group by directory, each directory's entries in stored order (in
	// place: a second copy of the entries would double the memory).
	slices.SortFunc(t.ents, func(a, b extEnt) int {
		if a.dir != b.dir {
			return int(a.dir - b.dir)
		}
		return entOrder(a, b)
	})
	for i := 0; i < len(t.ents); {
		d := t.ents[i].dir
		j := i + 1
		for j < len(t.ents) && t.ents[j].dir == d {
			j++
		}
		t.dirs[d].first, t.dirs[d].count = int32(i), int32(j-i)
		i = j
	}
	// In a hash-indexed directory, readdir and lookup find an entry only
	// in the leaf its name's hash leads to (one written elsewhere, or a
	// superblock whose hash seed changed, is missing from both).
	for i := range t.dirs {
		d := &t.dirs[i]
		if d.leaves == nil {
			continue
		}
		for _, e := range t.ents[d.first : d.first+d.count] {
			h, ok := dxHash(t.name(&e), d.hashV, t.l.hashSeed)
			r, in := d.leaves[int64(e.lblk)]
			if !ok || !in || int64(h) < r.lo || int64(h) > r.hi || int64(h) == r.hi && !r.cont {
				return scanErr("directory inode %d: entry %q (hash %#x) is not where its hash leads", d.ino, t.name(&e), h)
			}
		}
		d.leaves = nil
	}
	return nil
}

func entOrder(a, b extEnt) int {
	if a.lblk != b.lblk {
		return int(a.lblk - b.lblk)
	}
	return int(a.offset - b.offset)
}

func (t *Tree) name(e *extEnt) []byte { return t.names[e.nameOff : e.nameOff+uint32(e.nameLen)] }

// knownType reports whether an inode mode is of a type lstat knows: a
// regular file, directory, symlink, block or character device, FIFO or
// socket (find's %y f d l b c p s).
func knownType(mode uint16) bool {
	switch mode & modeTypeMask {
	case 0x8000, modeDir, 0xA000, 0x6000, 0x2000, 0x1000, 0xC000:
		return true
	}
	return false
}

// Walk calls fn for every entry below the root, depth first, each
// directory's entries in stored order, with the path relative to the root
// ("name", "dir/name"). A directory reached a second time (a hardlinked
// directory: damage) ends the walk with an error before fn sees it, so
// nothing is listed twice; callers run it once dry (fn nil) to know. An
// error from fn ends the walk and is returned.
func (t *Tree) Walk(fn func(rel []byte, ino uint32, in *Inode) error) error {
	seen := make([]bool, len(t.dirs))
	type frame struct {
		dir  int32
		next int32 // index into the directory's entries
		plen int   // path length before this directory's own name
	}
	root := t.dirOf[RootIno]
	seen[root] = true
	stack := []frame{{dir: root}}
	var path []byte
	for len(stack) > 0 {
		f := &stack[len(stack)-1]
		d := &t.dirs[f.dir]
		if f.next >= d.count {
			path = path[:f.plen]
			stack = stack[:len(stack)-1]
			continue
		}
		e := &t.ents[d.first+f.next]
		f.next++
		base := len(path)
		if base > 0 {
			path = append(path, '/')
		}
		path = append(path, t.name(e)...)
		in := t.lookup(e.child)
		if fn != nil {
			if err := fn(path, e.child, in); err != nil {
				return err
			}
		}
		if in.mode&modeTypeMask == modeDir {
			di := t.dirOf[e.child]
			if seen[di] {
				return scanErr("directory inode %d reached twice", e.child)
			}
			seen[di] = true
			stack = append(stack, frame{dir: di, plen: base})
			continue
		}
		path = path[:base]
	}
	return nil
}

const compatDirIndex = 0x20

// indexed reports whether the kernel reads d through its hash tree.
func (t *Tree) indexed(d *extDir) bool {
	return t.l.compat&compatDirIndex != 0 && d.flags&inodeIndexDir != 0
}

// checkIndex checks an htree directory's index as the kernel's dx_probe
// does, and that it names every leaf block exactly once: the kernel lists
// an indexed directory through its index, the scan reads its blocks in
// order, and the two agree only then. Anything else refuses the scan (the
// kernel then says what it makes of the directory).
func (t *Tree) checkIndex(d *extDir) error {
	bs := t.l.blockSize
	root, ok := d.dx[0]
	if !ok {
		return scanErr("hash-indexed directory without its root block")
	}
	if le16(root, 4) != 12 || le16(root, 12+4) != bs-12 {
		return scanErr("bad htree root entries")
	}
	hashVersion, infoLen, levels, flags := root[0x1C], root[0x1D], int(root[0x1E]), root[0x1F]
	maxLevels := 2
	if t.l.incompat&incompatLargeDir != 0 {
		maxLevels = 3
	}
	if hashVersion > 6 || infoLen != 8 || flags&1 != 0 || levels >= maxLevels {
		return scanErr("bad htree root (hash %d, info %d, levels %d, flags %#x)", hashVersion, infoLen, levels, flags)
	}
	// The hash the kernel's dx_probe uses: the root's version, unsigned
	// per the superblock (neither flag: the kernel's char decides; not
	// followed). Casefolded names are hashed folded: not followed.
	d.hashV = int(hashVersion)
	switch {
	case d.flags&inodeCasefold != 0:
		return scanErr("casefolded hash-indexed directory")
	case d.hashV <= hashTEA && t.l.flags&2 != 0:
		d.hashV += 3
	case d.hashV <= hashTEA && t.l.flags&1 == 0:
		return scanErr("neither signed nor unsigned name hashes")
	}
	if d.hashV > hashTEAUnsigned {
		return scanErr("htree hash version %d", d.hashV)
	}
	csum := int64(0)
	if t.csum {
		csum = 8
	}
	mapped := map[int64]bool{}
	for _, r := range d.runs {
		for k := int64(0); k < r.n; k++ {
			mapped[r.lblk+k] = true
		}
	}
	nodes := map[int64]bool{0: true}
	leaves := map[int64]int{}
	d.leaves = map[int64]hashRange{}
	// block is an index block: its count/limit at off, entries from off,
	// sending the hashes of r there.
	var walk func(b []byte, off int64, limit int64, level int, r hashRange) error
	walk = func(b []byte, off, limit int64, level int, r hashRange) error {
		lim, count := le16(b, int(off)), le16(b, int(off)+2)
		if lim != limit || count == 0 || count > lim {
			return scanErr("bad htree limit %d or count %d (limit %d expected)", lim, count, limit)
		}
		if t.csum && !t.dxCsumOK(d, b, off, count, lim) {
			return scanErr("htree block checksum mismatch")
		}
		for i := int64(0); i < count; i++ {
			blk := le32(b, int(off+8*i+4))
			if !mapped[blk] || blk == 0 {
				return scanErr("htree entry names block %d, not in the directory", blk)
			}
			sub := r
			if i > 0 {
				sub.lo = le32(b, int(off+8*i)) &^ 1
			}
			if i+1 < count {
				next := le32(b, int(off+8*(i+1)))
				sub.hi, sub.cont = next&^1, next&1 != 0
			}
			if level == 0 {
				leaves[blk]++
				d.leaves[blk] = sub
				continue
			}
			node, ok := d.dx[blk]
			if !ok || nodes[blk] {
				return scanErr("htree node %d missing or named twice", blk)
			}
			nodes[blk] = true
			if err := walk(node, 8, (bs-8-csum)/8, level-1, sub); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root, 0x20, (bs-24-8-csum)/8, levels, hashRange{0, 1 << 32, false}); err != nil {
		return err
	}
	for blk := range mapped {
		if nodes[blk] {
			continue
		}
		if leaves[blk] != 1 {
			return scanErr("leaf block %d named %d times by the htree", blk, leaves[blk])
		}
	}
	for blk := range leaves {
		if nodes[blk] {
			return scanErr("block %d is both an htree node and a leaf", blk)
		}
	}
	return nil
}

// dxCsumOK checks an htree block's dx_tail (ext4_dx_csum): crc32c over the
// seed, the inode number and generation, the block up to its last entry,
// the tail's reserved word and its checksum field as zeros.
func (t *Tree) dxCsumOK(d *extDir, b []byte, off, count, limit int64) bool {
	tail := off + 8*limit
	if tail+8 > int64(len(b)) {
		return false
	}
	var b8 [8]byte
	binary.LittleEndian.PutUint32(b8[:], d.ino)
	binary.LittleEndian.PutUint32(b8[4:], d.gen)
	c := crc32cRaw(t.seed, b8[:4])
	c = crc32cRaw(c, b8[4:])
	c = crc32cRaw(c, b[:off+8*count])
	c = crc32cRaw(c, b[tail:tail+4])
	c = crc32cRaw(c, make([]byte, 4)) // the checksum field as zeros
	return uint32(le32(b, int(tail+4))) == c
}
