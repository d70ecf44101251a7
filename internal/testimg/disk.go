package testimg

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Place copies the filesystem image src into disk at byte offset off
// (16384 for a Zip disk), creating disk if needed and growing it to at least
// off + the size of src. Holes in src stay holes in disk.
func Place(disk string, off int64, src string) error {
	return place(disk, off, src, -1)
}

// place is Place copying at most limit bytes (limit < 0: all of src).
func place(disk string, off int64, src string, limit int64) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	size := st.Size()
	if limit >= 0 {
		size = min(size, limit)
	}
	out, err := os.OpenFile(disk, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	err = copySparse(out, off, in, size)
	if err == nil {
		var ost os.FileInfo
		if ost, err = out.Stat(); err == nil && ost.Size() < off+size {
			err = out.Truncate(off + size)
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("testimg: placing %s at %d in %s: %w", src, off, disk, err)
	}
	return nil
}

// copySparse copies the data extents of in (found with SEEK_DATA/SEEK_HOLE)
// to out at off. Regions of out under holes of in are punched, so they read
// as zeros whatever was there.
func copySparse(out *os.File, off int64, in *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	var pos int64
	for pos < size {
		data, err := unix.Seek(int(in.Fd()), pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			data = size
		} else if err != nil {
			return err
		}
		if data > pos {
			if err := punch(out, off+pos, data-pos); err != nil {
				return err
			}
		}
		if data >= size {
			return nil
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		hole = min(hole, size)
		for p := data; p < hole; {
			n, err := in.ReadAt(buf[:min(int64(len(buf)), hole-p)], p)
			if n > 0 {
				if _, werr := out.WriteAt(buf[:n], off+p); werr != nil {
					return werr
				}
				p += int64(n)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		pos = hole
	}
	return nil
}

// punch makes [off, off+n) of f read as zeros without allocating.
func punch(f *os.File, off, n int64) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if off >= st.Size() {
		return nil // beyond the end: already zeros once the file grows
	}
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) {
		_, err = f.WriteAt(make([]byte, min(n, st.Size()-off)), off)
	}
	return err
}

// DiskPart is one partition of a disk made by ComposeDisk.
type DiskPart struct {
	// Image is the filesystem image copied into the partition; "" leaves
	// the partition zeroed.
	Image string
	// Size of the partition; 0 means the image's size rounded up to a
	// sector. It may be smaller than the image (a partition that is too
	// short for its filesystem).
	Size int64
	// Logical puts the partition inside the extended partition (MBR only);
	// logical partitions come after all primary ones in Parts.
	Logical bool
	// Type is the MBR type (0 = TypeLinux); TypeGUID the GPT type (zero =
	// GUIDLinuxFS); Name the GPT name.
	Type     byte
	TypeGUID GUID
	Name     string
}

// Disk describes a partitioned disk image for ComposeDisk.
type Disk struct {
	// Table is "mbr" or "gpt".
	Table string
	// Align is the alignment of every partition (and EBR) start; 0 means
	// 1 MiB, as partitioning tools do.
	Align int64
	Parts []DiskPart
}

// Placed says where ComposeDisk put a partition.
type Placed struct {
	Number int   // Linux partition number: MBR primaries 1–4, logicals 5…; GPT 1…
	Start  int64 // byte offset on the disk
	Size   int64 // bytes
}

// ComposeDisk writes a partitioned disk image at path (replacing it): each
// part aligned after the previous one, its image copied in, and the table
// written. With logical MBR partitions an extended partition (0x0F) follows
// the primaries and holds one EBR per logical partition, Align before it.
// It returns where each of d.Parts landed, in order.
func ComposeDisk(path string, d Disk) ([]Placed, error) {
	align := d.Align
	if align == 0 {
		align = 1 << 20
	}
	if align%SectorSize != 0 || align <= 0 {
		return nil, fmt.Errorf("testimg: disk %s: alignment %d is not a positive multiple of %d", path, align, SectorSize)
	}
	up := func(n int64) int64 { return (n + align - 1) / align * align }
	sizes := make([]int64, len(d.Parts))
	for i, p := range d.Parts {
		sizes[i] = p.Size
		if sizes[i] == 0 && p.Image != "" {
			st, err := os.Stat(p.Image)
			if err != nil {
				return nil, fmt.Errorf("testimg: disk %s: %w", path, err)
			}
			sizes[i] = (st.Size() + SectorSize - 1) / SectorSize * SectorSize
		}
		if sizes[i] <= 0 || sizes[i]%SectorSize != 0 {
			return nil, fmt.Errorf("testimg: disk %s: partition %d: size %d is not a positive multiple of %d", path, i+1, sizes[i], SectorSize)
		}
	}
	placed := make([]Placed, len(d.Parts))
	cursor := align
	var mbr MBR
	var gpt GPT
	switch d.Table {
	case "gpt":
		for i, p := range d.Parts {
			if p.Logical {
				return nil, fmt.Errorf("testimg: disk %s: partition %d: logical partitions are MBR only", path, i+1)
			}
			placed[i] = Placed{Number: i + 1, Start: cursor, Size: sizes[i]}
			gpt.Partitions = append(gpt.Partitions, GPTPartition{Type: p.TypeGUID, Start: cursor, Size: sizes[i], Name: p.Name})
			cursor = up(cursor + sizes[i])
		}
		cursor += up((gptTableLBAs + 1) * SectorSize) // room for the backup GPT
	case "mbr":
		typ := func(p DiskPart) byte {
			if p.Type == 0 {
				return TypeLinux
			}
			return p.Type
		}
		logical := false
		for i, p := range d.Parts {
			if !p.Logical {
				if logical {
					return nil, fmt.Errorf("testimg: disk %s: partition %d: primary partitions must come before logical ones", path, i+1)
				}
				placed[i] = Placed{Number: len(mbr.Primary) + 1, Start: cursor, Size: sizes[i]}
				mbr.Primary = append(mbr.Primary, MBRPartition{Type: typ(p), Start: cursor, Size: sizes[i]})
				cursor = up(cursor + sizes[i])
				continue
			}
			if !logical {
				logical = true
				mbr.Primary = append(mbr.Primary, MBRPartition{Type: TypeExtendedL, Start: cursor})
			}
			ebr := cursor
			start := ebr + align
			placed[i] = Placed{Number: 5 + len(mbr.Logical), Start: start, Size: sizes[i]}
			mbr.Logical = append(mbr.Logical, MBRPartition{Type: typ(p), Start: start, Size: sizes[i], EBR: ebr})
			cursor = up(start + sizes[i])
		}
		if len(mbr.Primary) > 4 {
			return nil, fmt.Errorf("testimg: disk %s: %d primary partitions (with the extended one), at most 4", path, len(mbr.Primary))
		}
		if logical {
			x := &mbr.Primary[len(mbr.Primary)-1]
			l := mbr.Logical[len(mbr.Logical)-1]
			x.Size = l.Start + l.Size - x.Start
		}
	default:
		return nil, fmt.Errorf("testimg: disk %s: table %q: want \"mbr\" or \"gpt\"", path, d.Table)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("testimg: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testimg: %w", err)
	}
	err = f.Truncate(cursor)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("testimg: %w", err)
	}
	for i, p := range d.Parts {
		if p.Image == "" {
			continue
		}
		// A partition smaller than its image gets only its own share.
		if err := place(path, placed[i].Start, p.Image, sizes[i]); err != nil {
			return nil, err
		}
	}
	if d.Table == "gpt" {
		return placed, WriteGPT(path, gpt)
	}
	return placed, WriteMBR(path, mbr)
}
