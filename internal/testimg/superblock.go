package testimg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// superblock holds the few ext2/3/4 superblock fields testimg needs to find
// inodes in the image it has just built (to correlate staged entries with
// inode numbers without parsing directories, so hostile names never pass
// through a debugfs command line).
type superblock struct {
	inodesCount    uint32
	blocksCount    int64
	hasJournal     bool
	firstDataBlock uint32
	blockSize      int64
	inodesPerGroup uint32
	inodeSize      int64
	descSize       int64
	groupCsum      bool // uninit_bg or metadata_csum: itable_unused is valid
}

const extMagic = 0xEF53

func readSuperblock(r io.ReaderAt) (superblock, error) {
	var b [1024]byte
	if _, err := r.ReadAt(b[:], 1024); err != nil {
		return superblock{}, fmt.Errorf("reading superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(b[56:]) != extMagic {
		return superblock{}, errors.New("no ext2/3/4 superblock at byte 1024")
	}
	sb := superblock{
		inodesCount:    le.Uint32(b[0:]),
		firstDataBlock: le.Uint32(b[20:]),
		blockSize:      1024 << le.Uint32(b[24:]),
		inodesPerGroup: le.Uint32(b[40:]),
		inodeSize:      128,
		descSize:       32,
	}
	if le.Uint32(b[76:]) >= 1 { // dynamic revision
		sb.inodeSize = int64(le.Uint16(b[88:]))
	}
	sb.blocksCount = int64(le.Uint32(b[4:]))
	if le.Uint32(b[96:])&0x80 != 0 { // INCOMPAT_64BIT
		sb.descSize = int64(le.Uint16(b[254:]))
		sb.blocksCount |= int64(le.Uint32(b[0x150:])) << 32
	}
	sb.hasJournal = le.Uint32(b[92:])&0x4 != 0 // COMPAT_HAS_JOURNAL
	sb.groupCsum = le.Uint32(b[100:])&(0x10|0x400) != 0
	if sb.inodesPerGroup == 0 || sb.inodeSize < 128 || sb.descSize < 32 {
		return superblock{}, errors.New("implausible superblock")
	}
	return sb, nil
}

// scanInodes calls fn for every in-use inode (links > 0) with its number,
// mode and atime seconds (low 32 bits).
func scanInodes(path string, fn func(ino uint32, mode uint16, atime uint32)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sb, err := readSuperblock(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	le := binary.LittleEndian
	groups := (sb.inodesCount + sb.inodesPerGroup - 1) / sb.inodesPerGroup
	gdt := make([]byte, int64(groups)*sb.descSize)
	if _, err := f.ReadAt(gdt, int64(sb.firstDataBlock+1)*sb.blockSize); err != nil {
		return fmt.Errorf("%s: reading group descriptors: %w", path, err)
	}
	table := make([]byte, int64(sb.inodesPerGroup)*sb.inodeSize)
	for g := range groups {
		d := gdt[int64(g)*sb.descSize:][:sb.descSize]
		itable := int64(le.Uint32(d[8:]))
		used := int64(sb.inodesPerGroup)
		if sb.descSize >= 64 {
			itable |= int64(le.Uint32(d[0x28:])) << 32
		}
		if sb.groupCsum {
			if le.Uint16(d[0x12:])&1 != 0 { // INODE_UNINIT
				continue
			}
			unused := int64(le.Uint16(d[0x1C:]))
			if sb.descSize >= 64 {
				unused |= int64(le.Uint16(d[0x32:])) << 16
			}
			used -= unused
		}
		buf := table[:used*sb.inodeSize]
		if _, err := f.ReadAt(buf, itable*sb.blockSize); err != nil {
			return fmt.Errorf("%s: reading inode table of group %d: %w", path, g, err)
		}
		for i := range used {
			in := buf[i*sb.inodeSize:]
			if le.Uint16(in[26:]) == 0 {
				continue
			}
			fn(g*sb.inodesPerGroup+uint32(i)+1, le.Uint16(in[0:]), le.Uint32(in[8:]))
		}
	}
	return nil
}
