package testimg

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"strings"
	"unicode/utf16"
)

// SectorSize is the logical sector size of every table testimg writes.
const SectorSize = 512

// MBR partition types used in tests.
const (
	TypeLinux     byte = 0x83
	TypeSwap      byte = 0x82
	TypeFAT32LBA  byte = 0x0C
	TypeNTFS      byte = 0x07
	TypeExtended  byte = 0x05
	TypeExtendedL byte = 0x0F // extended, LBA
	TypeLinuxLVM  byte = 0x8E
	TypeLinuxRAID byte = 0xFD
	TypeGPTProt   byte = 0xEE
)

// MBRPartition is one entry of an MBR table, in bytes (multiples of
// SectorSize, at most 2^32-1 sectors). Nothing checks that it lies inside
// the disk: tests point entries past the end of the file on purpose.
type MBRPartition struct {
	Type     byte // 0 = empty slot
	Start    int64
	Size     int64
	Bootable bool
	// EBR (logical partitions only) is the byte offset of the extended boot
	// record describing this partition. 0 means: the extended partition's
	// start for the first logical partition, Start-SectorSize for the others.
	EBR int64
}

// MBR is a DOS partition table. Primary holds up to four slots in order
// (slot i is partition i+1); Logical partitions are chained through EBRs
// inside the first primary of an extended type (0x05, 0x0F, 0x85) and are
// numbered 5, 6, … as Linux does.
type MBR struct {
	Signature uint32 // disk signature at byte 440
	Primary   []MBRPartition
	Logical   []MBRPartition
}

func isExtended(t byte) bool { return t == 0x05 || t == 0x0F || t == 0x85 }

// WriteMBR writes the table into image (which must exist): bytes 440–511 of
// sector 0 (the boot code before them is left alone, so a table can be laid
// over an existing filesystem's boot area) and one EBR sector per logical
// partition.
func WriteMBR(image string, m MBR) error {
	if len(m.Primary) > 4 {
		return fmt.Errorf("testimg: MBR for %s: %d primary partitions, at most 4", image, len(m.Primary))
	}
	tail := make([]byte, 72)
	binary.LittleEndian.PutUint32(tail[0:], m.Signature)
	ext := -1
	for i, p := range m.Primary {
		if err := putMBREntry(tail[6+16*i:], p, p.Start/SectorSize); err != nil {
			return fmt.Errorf("testimg: MBR for %s: partition %d: %w", image, i+1, err)
		}
		if ext < 0 && isExtended(p.Type) {
			ext = i
		}
	}
	tail[70], tail[71] = 0x55, 0xAA
	writes := map[int64][]byte{440: tail}
	if len(m.Logical) > 0 {
		if ext < 0 {
			return fmt.Errorf("testimg: MBR for %s: logical partitions but no extended primary", image)
		}
		x := m.Primary[ext]
		ebrAt := make([]int64, len(m.Logical))
		for i, l := range m.Logical {
			switch {
			case l.EBR != 0:
				ebrAt[i] = l.EBR
			case i == 0:
				ebrAt[i] = x.Start
			default:
				ebrAt[i] = l.Start - SectorSize
			}
			if ebrAt[i]%SectorSize != 0 || ebrAt[i] < x.Start || l.Start <= ebrAt[i] {
				return fmt.Errorf("testimg: MBR for %s: logical partition %d: EBR at %d must be a sector inside the extended partition, before the partition at %d", image, i+5, ebrAt[i], l.Start)
			}
		}
		for i, l := range m.Logical {
			ebr := make([]byte, SectorSize)
			// Entry 1: the logical partition, relative to its own EBR.
			if err := putMBREntry(ebr[446:], l, (l.Start-ebrAt[i])/SectorSize); err != nil {
				return fmt.Errorf("testimg: MBR for %s: logical partition %d: %w", image, i+5, err)
			}
			// Entry 2: the next EBR, relative to the extended partition.
			if i+1 < len(m.Logical) {
				n := m.Logical[i+1]
				link := MBRPartition{Type: TypeExtended, Start: ebrAt[i+1], Size: n.Start + n.Size - ebrAt[i+1]}
				if err := putMBREntry(ebr[462:], link, (ebrAt[i+1]-x.Start)/SectorSize); err != nil {
					return fmt.Errorf("testimg: MBR for %s: link to logical partition %d: %w", image, i+6, err)
				}
			}
			ebr[510], ebr[511] = 0x55, 0xAA
			writes[ebrAt[i]] = ebr
		}
	}
	for off, b := range writes {
		if err := writeExisting(image, off, b); err != nil {
			return err
		}
	}
	return nil
}

// putMBREntry encodes p at b with the given LBA field (absolute for
// primaries, relative in EBRs). CHS fields hold the LBA-only marker.
func putMBREntry(b []byte, p MBRPartition, lba int64) error {
	if p.Type == 0 && p.Size == 0 && p.Start == 0 {
		return nil
	}
	if p.Start%SectorSize != 0 || p.Size%SectorSize != 0 {
		return fmt.Errorf("start %d and size %d must be multiples of %d", p.Start, p.Size, SectorSize)
	}
	sectors := p.Size / SectorSize
	if lba < 0 || lba > 0xFFFFFFFF || sectors < 0 || sectors > 0xFFFFFFFF {
		return fmt.Errorf("start %d or size %d does not fit an MBR entry", p.Start, p.Size)
	}
	if p.Bootable {
		b[0] = 0x80
	}
	copy(b[1:4], []byte{0xFE, 0xFF, 0xFF})
	b[4] = p.Type
	copy(b[5:8], []byte{0xFE, 0xFF, 0xFF})
	binary.LittleEndian.PutUint32(b[8:], uint32(lba))
	binary.LittleEndian.PutUint32(b[12:], uint32(sectors))
	return nil
}

// writeExisting writes b at off into an existing file.
func writeExisting(image string, off int64, b []byte) error {
	f, err := os.OpenFile(image, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	_, err = f.WriteAt(b, off)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("testimg: writing %s at %d: %w", image, off, err)
	}
	return nil
}

// GUID is a GPT GUID in its on-disk byte order (the first three fields
// little-endian).
type GUID [16]byte

// ParseGUID parses the textual form "0FC63DAF-8483-4772-8E79-3D69D8477DE4".
func ParseGUID(s string) (GUID, error) {
	var g GUID
	h := strings.ReplaceAll(s, "-", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 16 || len(s) != 36 {
		return g, fmt.Errorf("testimg: bad GUID %q", s)
	}
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:])
	return g, nil
}

// MustGUID is ParseGUID for constants.
func MustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// String returns the textual (uppercase) form.
func (g GUID) String() string {
	return fmt.Sprintf("%02X%02X%02X%02X-%02X%02X-%02X%02X-%X-%X",
		g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8:10], g[10:])
}

// GPT partition type GUIDs used in tests.
var (
	GUIDLinuxFS   = MustGUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
	GUIDLinuxSwap = MustGUID("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F")
	GUIDLinuxLVM  = MustGUID("E6D6D379-F507-44C2-A23C-238F2A3DF928")
	GUIDLinuxRAID = MustGUID("A19D880F-05FC-4D3B-A006-743F0F84911E")
	GUIDBasicData = MustGUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")
	GUIDESP       = MustGUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
)

// GPTPartition is one GPT entry, in bytes (multiples of SectorSize). As with
// MBR, nothing checks that it lies inside the disk.
type GPTPartition struct {
	Type       GUID // zero = GUIDLinuxFS
	GUID       GUID // unique partition GUID; zero = derived from the index
	Start      int64
	Size       int64
	Name       string // at most 36 UTF-16 code units
	Attributes uint64
}

// GPT is a GUID partition table with 128 entries of 128 bytes.
type GPT struct {
	DiskGUID   GUID // zero = a fixed GUID
	Partitions []GPTPartition
	// NoBackup leaves out the backup header and entries at the end of the
	// disk (as on an image that was cut short).
	NoBackup bool
}

const (
	gptEntries   = 128
	gptEntrySize = 128
	gptTableLBAs = gptEntries * gptEntrySize / SectorSize // 32
)

// WriteGPT writes a protective MBR, the primary GPT header (LBA 1) and
// entries (LBA 2–33), and the backup entries and header at the end of the
// image, whose size (rounded down to a sector) is the disk size; it must
// already hold at least 67 sectors. CRC32s of header and entries are correct.
func WriteGPT(image string, g GPT) error {
	st, err := os.Stat(image)
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	sectors := st.Size() / SectorSize
	if sectors < 2*gptTableLBAs+3 {
		return fmt.Errorf("testimg: GPT for %s: %d bytes is too small for a GPT", image, st.Size())
	}
	if len(g.Partitions) > gptEntries {
		return fmt.Errorf("testimg: GPT for %s: %d partitions, at most %d", image, len(g.Partitions), gptEntries)
	}
	last := sectors - 1
	entries := make([]byte, gptEntries*gptEntrySize)
	for i, p := range g.Partitions {
		if p.Start%SectorSize != 0 || p.Size%SectorSize != 0 || p.Size <= 0 || p.Start < 0 {
			return fmt.Errorf("testimg: GPT for %s: partition %d: start %d and size %d must be positive multiples of %d", image, i+1, p.Start, p.Size, SectorSize)
		}
		name := utf16.Encode([]rune(p.Name))
		if len(name) > 36 {
			return fmt.Errorf("testimg: GPT for %s: partition %d: name %q longer than 36 UTF-16 units", image, i+1, p.Name)
		}
		e := entries[i*gptEntrySize:]
		if p.Type == (GUID{}) {
			p.Type = GUIDLinuxFS
		}
		if p.GUID == (GUID{}) {
			p.GUID = MustGUID(fmt.Sprintf("6E747474-6573-7469-6D67-%012X", i+1))
		}
		copy(e[0:], p.Type[:])
		copy(e[16:], p.GUID[:])
		binary.LittleEndian.PutUint64(e[32:], uint64(p.Start/SectorSize))
		binary.LittleEndian.PutUint64(e[40:], uint64((p.Start+p.Size)/SectorSize-1))
		binary.LittleEndian.PutUint64(e[48:], p.Attributes)
		for j, u := range name {
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
	}
	disk := g.DiskGUID
	if disk == (GUID{}) {
		disk = MustGUID("6E747474-6573-7469-6D67-000000000000")
	}
	entriesCRC := crc32.ChecksumIEEE(entries)
	header := func(my, alt, entryLBA int64) []byte {
		h := make([]byte, SectorSize)
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000)
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[24:], uint64(my))
		binary.LittleEndian.PutUint64(h[32:], uint64(alt))
		binary.LittleEndian.PutUint64(h[40:], 2+gptTableLBAs)
		binary.LittleEndian.PutUint64(h[48:], uint64(last-gptTableLBAs-1))
		copy(h[56:], disk[:])
		binary.LittleEndian.PutUint64(h[72:], uint64(entryLBA))
		binary.LittleEndian.PutUint32(h[80:], gptEntries)
		binary.LittleEndian.PutUint32(h[84:], gptEntrySize)
		binary.LittleEndian.PutUint32(h[88:], entriesCRC)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	// Protective MBR: one 0xEE partition covering the disk from LBA 1.
	pmbr := MBR{Primary: []MBRPartition{{Type: TypeGPTProt, Start: SectorSize, Size: min(last, 0xFFFFFFFF) * SectorSize}}}
	if err := WriteMBR(image, pmbr); err != nil {
		return err
	}
	writes := []struct {
		off int64
		b   []byte
	}{
		{1 * SectorSize, header(1, last, 2)},
		{2 * SectorSize, entries},
	}
	if !g.NoBackup {
		writes = append(writes,
			struct {
				off int64
				b   []byte
			}{(last - gptTableLBAs) * SectorSize, entries},
			struct {
				off int64
				b   []byte
			}{last * SectorSize, header(last, 1, last-gptTableLBAs)})
	}
	for _, w := range writes {
		if err := writeExisting(image, w.off, w.b); err != nil {
			return err
		}
	}
	return nil
}
