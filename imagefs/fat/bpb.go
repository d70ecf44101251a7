package fat

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/HRDAG/ntt/imagefs"
)

var le = binary.LittleEndian

// Errors of Open.
var (
	// ErrNotFAT: the boot sector is not a FAT boot sector that checks out
	// (always inside a *FormatError naming the field).
	ErrNotFAT = errors.New("not a valid FAT boot sector")
	// ErrCodePage: Options.CodePage names a code page this package has no
	// table for.
	ErrCodePage = errors.New("unknown code page")
)

// FormatError is a boot sector (BIOS parameter block) field that does not
// check out: the field's byte offset on the volume, its name and value, and
// why. It wraps ErrNotFAT and imagefs.ErrCorrupt.
type FormatError struct {
	Offset int64  // byte offset of the field from the start of the volume
	Field  string // the field's name in Microsoft's FAT specification
	Value  int64  // the value found there
	Msg    string // what is wrong with it
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("fat: boot sector field %s at byte offset %d is %d: %s", e.Field, e.Offset, e.Value, e.Msg)
}

// Unwrap lets errors.Is find ErrNotFAT and imagefs.ErrCorrupt.
func (e *FormatError) Unwrap() []error { return []error{ErrNotFAT, imagefs.ErrCorrupt} }

// Limits from the specification.
const (
	maxFAT12Clusters = 4084       // fewer than 4085 clusters: FAT12
	maxFAT16Clusters = 65524      // fewer than 65525: FAT16
	maxFAT32Clusters = 0x0FFFFFF5 // cluster numbers 2..0x0FFFFFF6 (0x0FFFFFF7 is "bad")
	dirEntrySize     = 32
	// maxDirBytes bounds a directory: FAT indexes its entries with 16
	// bits, so a valid directory holds at most 65536 of them.
	maxDirBytes = 65536 * dirEntrySize
)

// geometry is what the boot sector says about the volume's layout, checked.
type geometry struct {
	bits        int   // 12, 16 or 32
	sectorSize  int64 // bytes
	clusterSize int64 // bytes
	nfats       int
	fatOff      []int64 // volume offset of each FAT
	fatBytes    int64   // bytes of one FAT that hold entries 0..clusters+1
	rootOff     int64   // FAT12/16: the fixed root directory
	rootLen     int64
	rootCluster uint32 // FAT32: the root directory's first cluster
	dataOff     int64  // volume offset of cluster 2
	clusters    uint32 // data clusters: valid cluster numbers are 2..clusters+1
	volumeBytes int64  // the volume's size as the boot sector gives it
	// active is the only FAT in use when a FAT32 volume turned mirroring
	// off (ExtFlags bit 7); -1 when the FATs are copies of each other.
	active int
	// clamped: the FAT is too small for the data area; clusters was
	// lowered to what the FAT can address (as Linux does).
	clamped      bool
	dataClusters int64 // what the data area would hold (for the report)
}

func (g *geometry) clusterOffset(c uint32) int64 {
	return g.dataOff + int64(c-2)*g.clusterSize
}

// entryOffset is the byte offset of cluster c's entry within a FAT.
func (g *geometry) entryOffset(c uint32) int64 {
	switch g.bits {
	case 12:
		return int64(c) + int64(c)/2
	case 16:
		return 2 * int64(c)
	}
	return 4 * int64(c)
}

// parseBootSector checks the BIOS parameter block in b (the first 512
// bytes of the volume) field by field.
func parseBootSector(b []byte) (*geometry, error) {
	bad := func(off int64, field string, val int64, format string, args ...any) error {
		return &FormatError{Offset: off, Field: field, Value: val, Msg: fmt.Sprintf(format, args...)}
	}
	pow2 := func(v int64) bool { return v > 0 && v&(v-1) == 0 }

	g := &geometry{active: -1}
	bps := int64(le.Uint16(b[11:]))
	if !pow2(bps) || bps < 512 || bps > 4096 {
		return nil, bad(11, "BPB_BytsPerSec", bps, "bytes per sector must be a power of two from 512 to 4096")
	}
	spc := int64(b[13])
	if !pow2(spc) {
		return nil, bad(13, "BPB_SecPerClus", spc, "sectors per cluster must be a power of two from 1 to 128")
	}
	reserved := int64(le.Uint16(b[14:]))
	if reserved == 0 {
		return nil, bad(14, "BPB_RsvdSecCnt", 0, "no reserved sectors: the boot sector itself is one")
	}
	nfats := int64(b[16])
	if nfats < 1 || nfats > 2 {
		return nil, bad(16, "BPB_NumFATs", nfats, "a volume has one or two FATs")
	}
	rootEnts := int64(le.Uint16(b[17:]))
	total := int64(le.Uint16(b[19:]))
	totalOff, totalField := int64(19), "BPB_TotSec16"
	if total == 0 {
		total = int64(le.Uint32(b[32:]))
		totalOff, totalField = 32, "BPB_TotSec32"
	}
	if total == 0 {
		return nil, bad(32, "BPB_TotSec32", 0, "the volume has no sectors (BPB_TotSec16 is 0 too)")
	}
	if media := int64(b[21]); media != 0xF0 && media < 0xF8 {
		return nil, bad(21, "BPB_Media", media, "media descriptor must be 0xF0 or 0xF8–0xFF")
	}
	fatSz := int64(le.Uint16(b[22:]))
	fatSzOff, fatSzField := int64(22), "BPB_FATSz16"
	fat32 := fatSz == 0 // the FAT32 layout of the BPB has no 16-bit FAT size
	if fat32 {
		fatSz = int64(le.Uint32(b[36:]))
		fatSzOff, fatSzField = 36, "BPB_FATSz32"
		if fatSz == 0 {
			return nil, bad(36, "BPB_FATSz32", 0, "the FAT has no sectors (BPB_FATSz16 is 0 too)")
		}
		if v := int64(le.Uint16(b[42:])); v != 0 {
			return nil, bad(42, "BPB_FSVer", v, "only FAT32 version 0.0 exists")
		}
		if rootEnts != 0 {
			return nil, bad(17, "BPB_RootEntCnt", rootEnts, "a FAT32 volume has no fixed root directory")
		}
		if flags := le.Uint16(b[40:]); flags&0x80 != 0 {
			g.active = int(flags & 0x0F)
			if g.active >= int(nfats) {
				return nil, bad(40, "BPB_ExtFlags", int64(flags), "the active FAT is number %d of %d", g.active, nfats)
			}
		}
	} else if rootEnts == 0 {
		return nil, bad(17, "BPB_RootEntCnt", 0, "a FAT12/FAT16 volume needs a root directory")
	}
	rootSecs := (rootEnts*dirEntrySize + bps - 1) / bps
	meta := reserved + nfats*fatSz + rootSecs
	if meta >= total {
		return nil, bad(totalOff, totalField, total, "no room for data after %d reserved, %d FAT and %d root directory sectors", reserved, nfats*fatSz, rootSecs)
	}
	dataClusters := (total - meta) / spc
	if dataClusters == 0 {
		return nil, bad(totalOff, totalField, total, "the data area (%d sectors) is smaller than one cluster of %d sectors", total-meta, spc)
	}
	switch {
	case fat32:
		// Type by cluster count, as the specification says, between FAT12
		// and FAT16; a FAT32-layout boot sector is FAT32 whatever its
		// count, as Linux and mkfs.fat have it.
		g.bits = 32
		if dataClusters > maxFAT32Clusters {
			return nil, bad(totalOff, totalField, total, "%d clusters, more than FAT32 can address (%d)", dataClusters, maxFAT32Clusters)
		}
	case dataClusters <= maxFAT12Clusters:
		g.bits = 12
	case dataClusters <= maxFAT16Clusters:
		g.bits = 16
	default:
		return nil, bad(totalOff, totalField, total, "%d clusters need FAT32, but the boot sector has the FAT12/16 layout", dataClusters)
	}
	clusters := dataClusters
	if capacity := fatSz*bps*8/int64(g.bits) - 2; capacity < clusters {
		if capacity < 1 {
			return nil, bad(fatSzOff, fatSzField, fatSz, "a FAT of %d sectors holds no cluster", fatSz)
		}
		clusters = capacity
		g.clamped = true
	}
	g.sectorSize = bps
	g.clusterSize = bps * spc
	g.nfats = int(nfats)
	for i := int64(0); i < nfats; i++ {
		g.fatOff = append(g.fatOff, (reserved+i*fatSz)*bps)
	}
	g.clusters = uint32(clusters)
	g.dataClusters = dataClusters
	g.fatBytes = (int64(clusters+2)*int64(g.bits) + 7) / 8
	g.rootOff = (reserved + nfats*fatSz) * bps
	g.rootLen = rootEnts * dirEntrySize
	g.dataOff = meta * bps
	g.volumeBytes = total * bps
	if fat32 {
		rc := int64(le.Uint32(b[44:]))
		if rc < 2 || rc > clusters+1 {
			return nil, bad(44, "BPB_RootClus", rc, "not a data cluster (2..%d)", clusters+1)
		}
		g.rootCluster = uint32(rc)
		g.rootOff, g.rootLen = 0, 0
	}
	return g, nil
}

// bootLabel is the volume label of the extended boot record, "" if none.
func bootLabel(b []byte, bits int) []byte {
	ext := b[36:]
	if bits == 32 {
		ext = b[64:]
	}
	if ext[2] != 0x29 {
		return nil
	}
	return ext[7:18]
}
