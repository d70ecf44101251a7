// Package probe tells what a disk image holds by reading its bytes: the
// partition table (MBR with extended and logical partitions, GPT, Apple
// Partition Map), and for the whole disk and each partition the filesystem or
// member type (ext2/3/4, FAT12/16/32, exFAT, NTFS, ISO9660, UDF, HFS, HFS+,
// XFS, btrfs, squashfs, swap, Linux RAID, LVM1/LVM2), and the HFS side of
// a hybrid CD that shares byte 0 with its ISO 9660 side. It also recognises
// files that are not disk images at all (tar, gzip, bzip2, xz, zstd, zip) and
// erased media (all sampled bytes equal).
//
// Invariants: probing only reads, through an io.ReaderAt bounded by the size
// the caller gives; it needs no root and no kernel support for the
// filesystem, so every decision can be tested on crafted bytes. Reads past
// the end of a truncated image are not errors: the missing bytes are simply
// absent, and a partition whose extent runs past the end is marked Truncated
// from the table and the size alone (no device is ever read for it).
//
// Failure model: damaged structures are reported as "not found" (or noted in
// Result.Notes), never as a panic; only an I/O error from the reader other
// than io.EOF is returned as an error.
package probe

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Kind says what the image is as a whole.
type Kind string

const (
	// KindDisk is a disk image: a partition table, a whole-disk
	// filesystem, or both (hybrids), or neither (unknown content).
	KindDisk Kind = "disk"
	// KindArchive is a compressed or archive file, not a disk image.
	KindArchive Kind = "archive"
	// KindErased is an image whose sampled areas all hold one byte value.
	KindErased Kind = "erased"
	// KindEmpty is a zero-length image.
	KindEmpty Kind = "empty"
)

// Usage groups content types by what can be done with them.
type Usage string

const (
	UsageFilesystem Usage = "filesystem"
	UsageSwap       Usage = "swap"
	UsageRAID       Usage = "raid"
	UsageLVM        Usage = "lvm"
)

// Content is what was found at one offset: a filesystem or a member of a
// volume manager. Type uses blkid's names (ext4, vfat, iso9660, udf, hfs,
// hfsplus, swap, linux_raid_member, LVM2_member …).
type Content struct {
	Type  string `json:"type"`
	Usage Usage  `json:"usage"`
	// Version refines Type: FAT12/FAT16/FAT32, the md metadata version,
	// the squashfs major version, the LVM label version.
	Version string `json:"version,omitempty"`
	Label   string `json:"label,omitempty"`
	UUID    string `json:"uuid,omitempty"`
	// Alternates are other filesystem types found at the same offset
	// (an ISO9660/UDF bridge disc holds both); mount tries them in turn.
	Alternates []string `json:"alternates,omitempty"`
	// NeedsRecovery is set for ext3/ext4 with the journal recovery flag
	// (a dirty journal): a read-only mount must skip journal replay.
	NeedsRecovery bool `json:"needs_recovery,omitempty"`
	// LVM holds what the LVM label and metadata say, for LVM members.
	LVM *LVM `json:"lvm,omitempty"`
}

// LVM is the metadata of an LVM physical volume, recorded because the
// volume itself is not mounted.
type LVM struct {
	PVUUID string `json:"pv_uuid,omitempty"`
	VGName string `json:"vg_name,omitempty"`
	// Metadata is the start of the text metadata (LVM2), capped at 4 KiB.
	Metadata string `json:"metadata,omitempty"`
}

// Partition is one entry of a partition table, in bytes.
type Partition struct {
	// Num is the kernel's numbering: MBR primaries 1–4, logicals from 5;
	// GPT entry index + 1; APM map entry index (the map itself is 1).
	Num      int    `json:"num"`
	Start    int64  `json:"start"`
	Size     int64  `json:"size"`
	Type     string `json:"type"` // "0x83", a GPT type GUID, an APM type name
	Name     string `json:"name,omitempty"`
	Bootable bool   `json:"bootable,omitempty"`
	// Extended is an MBR extended container (types 0x05, 0x0f, 0x85).
	Extended bool `json:"extended,omitempty"`
	// Logical is an MBR logical partition inside an extended container.
	Logical bool `json:"logical,omitempty"`
	// Truncated: Start+Size runs past the end of the image.
	Truncated bool `json:"truncated,omitempty"`
	// Content is nil when nothing known was found at Start.
	Content *Content `json:"content,omitempty"`
}

// End is the first byte after the partition.
func (p Partition) End() int64 { return p.Start + p.Size }

// Result is what Probe found.
type Result struct {
	Kind Kind  `json:"kind"`
	Size int64 `json:"size"`
	// Archive names the format for KindArchive: tar, gzip, bzip2, xz, zstd, zip.
	Archive string `json:"archive,omitempty"`
	// ErasedByte is the repeated value for KindErased.
	ErasedByte byte `json:"erased_byte,omitempty"`
	// Table is mbr, gpt, apm, or "".
	Table      string      `json:"table,omitempty"`
	Partitions []Partition `json:"partitions,omitempty"`
	// Whole is a filesystem starting at byte 0 of the image, if any.
	Whole *Content `json:"whole,omitempty"`
	// Hybrid is a second filesystem at byte 0 beside an optical Whole:
	// the HFS or HFS+ side of a hybrid disc mastered without a partition
	// map (genisoimage -hfs writes its master directory block at byte
	// 1024 of the disc, in the ISO 9660 system area, and its allocation
	// blocks are the ISO side's sectors). A hybrid with an Apple
	// partition map has its HFS side in Partitions instead.
	Hybrid *Content `json:"hybrid,omitempty"`
	// Notes are oddities worth recording (bad GPT checksum, EBR loop…).
	Notes []string `json:"notes,omitempty"`
}

// ErrShortRead is never returned to callers; it marks reads past the end.
var errShort = errors.New("short read")

// reader wraps an io.ReaderAt limited to size bytes; reads past the end
// return errShort so probes can treat them as "not found".
type reader struct {
	r    io.ReaderAt
	size int64
	err  error // first real I/O error
}

func (rd *reader) at(off int64, n int) []byte {
	if off < 0 || n < 0 || off+int64(n) > rd.size {
		return nil
	}
	b := make([]byte, n)
	m, err := rd.r.ReadAt(b, off)
	if m == n {
		return b
	}
	if err != nil && !errors.Is(err, io.EOF) && rd.err == nil {
		rd.err = fmt.Errorf("read %d bytes at offset %d: %w", n, off, err)
	}
	return nil
}

// Probe examines an image of size bytes read through r.
func Probe(r io.ReaderAt, size int64) (*Result, error) {
	rd := &reader{r: r, size: size}
	res := &Result{Kind: KindDisk, Size: size}
	if size == 0 {
		res.Kind = KindEmpty
		return res, nil
	}
	if a := archiveMagic(rd.at(0, int(min64(size, 512)))); a != "" {
		res.Kind = KindArchive
		res.Archive = a
		return res, rd.err
	}
	res.Whole = identify(rd, 0, size)
	if res.Whole != nil && (res.Whole.Type == "iso9660" || res.Whole.Type == "udf") {
		// identify stops at the disc's volume descriptors; an HFS
		// volume sharing byte 0 is the disc's other view.
		res.Hybrid = probeHFS(rd)
	}
	if rd.err != nil {
		return nil, rd.err
	}
	// A FAT/NTFS/exFAT boot sector also ends in 55 AA and would parse as an
	// MBR; when a volume boot record is at byte 0 it is not a table.
	vbr := res.Whole != nil && (res.Whole.Type == "vfat" || res.Whole.Type == "ntfs" || res.Whole.Type == "exfat")
	switch {
	case probeGPT(rd, res):
	case probeAPM(rd, res):
	case !vbr && probeMBR(rd, res):
	}
	if rd.err != nil {
		return nil, rd.err
	}
	for i := range res.Partitions {
		p := &res.Partitions[i]
		if p.End() > size || p.Start >= size {
			p.Truncated = true
		}
		if p.Extended || p.Start >= size {
			continue
		}
		p.Content = identify(rd, p.Start, min64(p.Size, size-p.Start))
	}
	if rd.err != nil {
		return nil, rd.err
	}
	if res.Whole == nil && res.Table == "" {
		if b, ok := erased(rd); ok {
			res.Kind = KindErased
			res.ErasedByte = b
		}
	}
	return res, rd.err
}

// Identify reports the filesystem or member type at off (length size bytes)
// of r, or nil when nothing known is there.
func Identify(r io.ReaderAt, off, size int64) (*Content, error) {
	rd := &reader{r: io.NewSectionReader(r, off, size), size: size}
	c := identify(rd, 0, size)
	return c, rd.err
}

// erased samples the start, quarter points and end of the image.
func erased(rd *reader) (byte, bool) {
	const chunk = 64 << 10
	size := rd.size
	offs := []int64{0, size / 4, size / 2, 3 * size / 4, size - chunk}
	first := true
	var v byte
	for _, off := range offs {
		if off < 0 {
			off = 0
		}
		n := min64(chunk, size-off)
		b := rd.at(off, int(n))
		if b == nil {
			return 0, false
		}
		if first {
			v, first = b[0], false
		}
		if len(bytes.Trim(b, string([]byte{v}))) != 0 {
			return 0, false
		}
	}
	return v, true
}

// archiveMagic names an archive or compression format at byte 0.
func archiveMagic(b []byte) string {
	switch {
	case len(b) >= 262 && bytes.Equal(b[257:262], []byte("ustar")):
		return "tar"
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		return "gzip"
	case len(b) >= 10 && bytes.HasPrefix(b, []byte("BZh")) && b[3] >= '1' && b[3] <= '9' &&
		(bytes.Equal(b[4:10], []byte{0x31, 0x41, 0x59, 0x26, 0x53, 0x59}) ||
			bytes.Equal(b[4:10], []byte{0x17, 0x72, 0x45, 0x38, 0x50, 0x90})):
		return "bzip2"
	case bytes.HasPrefix(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return "xz"
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd"
	case bytes.HasPrefix(b, []byte("PK\x03\x04")), bytes.HasPrefix(b, []byte("PK\x05\x06")):
		return "zip"
	}
	return ""
}

func min64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}
