package extfs

import (
	"encoding/binary"
	"errors"
	"io"
	"slices"
)

// The ext2/3/4 layout enumerate's prefetcher needs: where each block
// group's inode table lies and how much of it is in use, and which blocks
// hold the directories whose inodes are found there. Only hints come out
// of it (a wrong range costs a useless read, never a wrong record), but it
// reads a medium's bytes like any parser: every count and offset is
// bounded by the device size, nothing a superblock says makes it loop or
// allocate without bound, and bytes it does not understand end the
// prefetch, not the walk.

// Span is a byte range of the device: N bytes from byte offset Off.
type Span struct{ Off, N int64 }

// Layout is what an ext2/3/4 superblock and its group descriptors say:
// the used inode tables, and what the scan checks besides.
type Layout struct {
	blockSize  int64
	inodeSize  int64
	blocks     int64 // blocks in the filesystem
	itables    []itable
	itableSize int64 // bytes of all used inode-table ranges

	// What the direct reader (scan.go) checks besides.
	compat, incompat, roCompat int64
	inodes                     int64 // s_inodes_count
	inodesPerGroup             int64
	groups                     int64
	uuid                       []byte    // s_uuid
	csumSeed                   uint32    // s_checksum_seed (incompat csum_seed)
	firstData                  int64     // s_first_data_block
	firstIno                   int64     // s_first_ino: below it, only the root may be named
	special                    [4]uint32 // s_usr/grp/prj_quota_inum, s_orphan_file_inum: never named either
	hashSeed                   [4]uint32 // s_hash_seed, for the htree's name hashes
	flags                      int64     // s_flags: signed or unsigned name hashes
	sysZone                    []Span    // in blocks: superblocks, descriptors, bitmaps, inode tables (the kernel's system zone, less the journal)
	itable0                    int64     // group 0's inode table, its first block
	truncated                  bool      // the superblock counts blocks past the device's end
	overlaps                   bool      // two groups' inode tables overlap: damage
}

// itable is the used part of one group's inode table.
type itable struct {
	Span
	first uint64 // inode number of its first inode
	used  int64  // inodes in use from first on (N rounds up to a block)
}

var errNotExt = errors.New("not an ext2/3/4 filesystem")

// maxGDT bounds the group descriptor table read: 32 MiB is 512Ki groups
// of 64-byte descriptors, a 64 TiB ext4 with 128 MiB groups.
const maxGDT = 32 << 20

// ReadLayout reads the superblock and group descriptors of the ext
// filesystem on r, a device of size bytes.
func ReadLayout(r io.ReaderAt, size int64) (*Layout, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		return nil, err
	}
	le16 := func(b []byte, o int) int64 { return int64(binary.LittleEndian.Uint16(b[o:])) }
	le32 := func(b []byte, o int) int64 { return int64(binary.LittleEndian.Uint32(b[o:])) }
	if le16(sb, 0x38) != 0xEF53 {
		return nil, errNotExt
	}
	logBlock := le32(sb, 0x18)
	if logBlock > 6 {
		return nil, errNotExt
	}
	l := &Layout{blockSize: 1024 << logBlock, inodeSize: 128}
	incompat, roCompat := le32(sb, 0x60), le32(sb, 0x64)
	const (
		incompat64bit  = 0x80
		incompatMetaBG = 0x10
		roGDTCsum      = 0x10
		roMetadataCsum = 0x400
	)
	if incompat&incompatMetaBG != 0 {
		return nil, errors.New("ext: meta_bg group descriptors are not followed")
	}
	if le32(sb, 0x4C) >= 1 { // dynamic revision: inode size in the superblock
		l.inodeSize = le16(sb, 0x58)
	}
	if l.inodeSize < 128 || l.inodeSize > l.blockSize || l.inodeSize&(l.inodeSize-1) != 0 {
		return nil, errNotExt
	}
	l.blocks = le32(sb, 0x04)
	descSize := int64(32)
	if incompat&incompat64bit != 0 {
		l.blocks |= le32(sb, 0x150) << 32
		descSize = le16(sb, 0xFE)
		if descSize < 64 || descSize > 1024 || descSize&(descSize-1) != 0 {
			return nil, errNotExt
		}
	}
	firstData := le32(sb, 0x14)
	perGroup, inodesPerGroup := le32(sb, 0x20), le32(sb, 0x28)
	if l.blocks <= firstData || perGroup == 0 || inodesPerGroup == 0 || inodesPerGroup > 8*l.blockSize {
		return nil, errNotExt
	}
	if l.blocks > size/l.blockSize {
		l.blocks = size / l.blockSize // a truncated medium: nothing past its end
		l.truncated = true
	}
	l.compat, l.incompat, l.roCompat = le32(sb, 0x5C), incompat, roCompat
	l.inodes, l.inodesPerGroup = le32(sb, 0x00), inodesPerGroup
	l.uuid = slices.Clone(sb[0x68:0x78])
	l.csumSeed = uint32(le32(sb, 0x270))
	l.firstData, l.firstIno = firstData, 11
	if le32(sb, 0x4C) >= 1 {
		l.firstIno = le32(sb, 0x54)
	}
	for i, o := range []int{0x240, 0x244, 0x26C, 0x280} {
		l.special[i] = uint32(le32(sb, o))
	}
	for i := range l.hashSeed {
		l.hashSeed[i] = uint32(le32(sb, 0xEC+4*i))
	}
	l.flags = le32(sb, 0x160)
	groups := (l.blocks - firstData + perGroup - 1) / perGroup
	if groups <= 0 || groups > maxGDT/descSize {
		return nil, errNotExt
	}
	l.groups = groups
	lazy := roCompat&(roGDTCsum|roMetadataCsum) != 0 // bg_itable_unused is kept
	gdtOff := (firstData + 1) * l.blockSize
	if gdtOff+groups*descSize > size {
		return nil, errNotExt
	}
	gdt := make([]byte, groups*descSize)
	if _, err := r.ReadAt(gdt, gdtOff); err != nil {
		return nil, err
	}
	// The kernel's system zone (ext4_setup_system_zone), which no inode may
	// name a block of: each group's bitmaps and whole inode table, and the
	// superblock copies with the descriptors and, here besides, the
	// reserved descriptor blocks (stricter: a fallback, not a wrong answer).
	gdb := (groups*descSize + l.blockSize - 1) / l.blockSize
	itb := (inodesPerGroup*l.inodeSize + l.blockSize - 1) / l.blockSize
	hasSuper := func(g int64) bool {
		switch {
		case g == 0:
			return true
		case l.compat&0x200 != 0: // sparse_super2
			return g == le32(sb, 0x24C) || g == le32(sb, 0x250)
		case roCompat&0x1 == 0: // no sparse_super: every group
			return true
		case g == 1:
			return true
		}
		for _, b := range []int64{3, 5, 7} {
			n := g
			for n%b == 0 {
				n /= b
			}
			if n == 1 {
				return true
			}
		}
		return false
	}
	for g := int64(0); g < groups; g++ {
		d := gdt[g*descSize : (g+1)*descSize]
		start := le32(d, 0x08)
		used := inodesPerGroup
		bb, ib := le32(d, 0x00), le32(d, 0x04)
		if descSize >= 64 {
			start |= le32(d, 0x28) << 32
			bb |= le32(d, 0x20) << 32
			ib |= le32(d, 0x24) << 32
		}
		if g == 0 {
			l.itable0 = start
		}
		l.sysZone = append(l.sysZone, Span{bb, 1}, Span{ib, 1}, Span{start, itb})
		if hasSuper(g) {
			l.sysZone = append(l.sysZone, Span{firstData + g*perGroup, 1 + gdb + le16(sb, 0xCE)})
		}
		if lazy {
			if le16(d, 0x12)&0x1 != 0 { // INODE_UNINIT
				continue
			}
			unused := le16(d, 0x1C)
			if descSize >= 64 {
				unused |= le16(d, 0x32) << 16
			}
			used = max(inodesPerGroup-unused, 0)
		}
		n := (used*l.inodeSize + l.blockSize - 1) / l.blockSize * l.blockSize
		if used == 0 || start <= 0 || start > l.blocks || n/l.blockSize > l.blocks-start { // start < 0: bit 63 of a 64-bit descriptor
			continue
		}
		l.itables = append(l.itables, itable{Span{start * l.blockSize, n}, uint64(g*inodesPerGroup + 1), used})
	}
	// Tables that overlap are damage; keeping only the first of them bounds
	// the bytes to read by the device size.
	slices.SortFunc(l.itables, func(a, b itable) int { return cmpInt64(a.Off, b.Off) })
	kept := l.itables[:0]
	for _, t := range l.itables {
		if len(kept) > 0 && t.Off < kept[len(kept)-1].Off+kept[len(kept)-1].N {
			l.overlaps = true
			continue
		}
		kept = append(kept, t)
		l.itableSize += t.N
	}
	l.itables = kept
	return l, nil
}

// InodeTables is the used part of every group's inode table, in disk
// order, none overlapping another: whole blocks on the device.
func (l *Layout) InodeTables() []Span {
	spans := make([]Span, len(l.itables))
	for i, t := range l.itables {
		spans[i] = t.Span
	}
	return spans
}

// InodeTableBytes is the size of InodeTables, all together.
func (l *Layout) InodeTableBytes() int64 { return l.itableSize }

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// maxDirSpans bounds the ranges taken from one directory inode.
const maxDirSpans = 16

// DirSpans appends the device ranges of the directory blocks named by the
// inodes in buf (a run of whole inodes from an inode table): for an extent
// tree, its in-inode extents or, for a deeper tree, its first index blocks;
// for a block map, its direct blocks and its indirect block. Inline
// directories have no blocks. Block numbers past the filesystem are
// dropped.
func (l *Layout) DirSpans(buf []byte, out []Span) []Span {
	le16 := func(b []byte, o int) int64 { return int64(binary.LittleEndian.Uint16(b[o:])) }
	le32 := func(b []byte, o int) int64 { return int64(binary.LittleEndian.Uint32(b[o:])) }
	add := func(out []Span, block, n int64) []Span {
		if block <= 0 || n <= 0 || block >= l.blocks || n > l.blocks-block {
			return out
		}
		s := Span{block * l.blockSize, n * l.blockSize}
		if k := len(out) - 1; k >= 0 && out[k].Off+out[k].N == s.Off {
			out[k].N += s.N
			return out
		}
		return append(out, s)
	}
	for len(buf) >= int(l.inodeSize) {
		ino := buf[:l.inodeSize]
		buf = buf[l.inodeSize:]
		if le16(ino, 0x00)&0xF000 != 0x4000 || le16(ino, 0x1A) == 0 || le32(ino, 0x14) != 0 {
			continue // not a live directory
		}
		flags := le32(ino, 0x20)
		iblock := ino[0x28 : 0x28+60]
		taken := len(out)
		switch {
		case flags&0x10000000 != 0: // inline data: no blocks
		case flags&0x80000 != 0: // extents
			if le16(iblock, 0) != 0xF30A {
				continue
			}
			entries, depth := min(le16(iblock, 2), 4), le16(iblock, 6)
			for e := int64(0); e < entries; e++ {
				x := iblock[12+12*e : 24+12*e]
				if depth == 0 {
					n := le16(x, 4)
					if n > 32768 {
						continue // unwritten: nothing on the disk to read
					}
					out = add(out, le16(x, 6)<<32|le32(x, 8), n)
				} else {
					out = add(out, le16(x, 8)<<32|le32(x, 4), 1)
				}
			}
		default: // block map: 12 direct blocks, then the indirect block
			for k := 0; k < 13; k++ {
				out = add(out, le32(iblock, 4*k), 1)
			}
		}
		if len(out)-taken > maxDirSpans {
			out = out[:taken+maxDirSpans]
		}
	}
	return out
}
