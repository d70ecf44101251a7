package diagnose

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Extent is a run of a file's bytes and where it lies on the block device
// the file's filesystem is mounted from.
type Extent struct {
	Logical  int64  `json:"file_offset"`   // offset in the file
	Physical int64  `json:"device_offset"` // offset on the device (the loop device)
	Length   int64  `json:"length"`
	Flags    uint32 `json:"flags,omitempty"` // FIEMAP_EXTENT_* (0 from FIBMAP)
}

// FIEMAP extent flags (linux/fiemap.h) that matter here.
const (
	FiemapExtentLast     = 0x00000001
	FiemapExtentUnknown  = 0x00000002 // location not known: not mapped
	FiemapExtentDelalloc = 0x00000004
	FiemapExtentEncoded  = 0x00000008 // compressed: the location is of the encoded data
	FiemapExtentInline   = 0x00000200 // data stored with metadata; location given in bytes
)

// ioctl numbers not in x/sys/unix: FS_IOC_FIEMAP = _IOWR('f', 11, struct
// fiemap), FIBMAP = _IO(0x00, 1), FIGETBSZ = _IO(0x00, 2).
const (
	fsIocFiemap = 0xC020660B
	fibmap      = 1
	figetbsz    = 2
)

// struct fiemap and struct fiemap_extent from linux/fiemap.h.
type fiemapHeader struct {
	Start, Length                               uint64
	Flags, MappedExtents, ExtentCount, Reserved uint32
}

type fiemapExtent struct {
	Logical, Physical, Length uint64
	Reserved64                [2]uint64
	Flags                     uint32
	Reserved                  [3]uint32
}

const fiemapBatch = 256

type fiemapRequest struct {
	hdr fiemapHeader
	ext [fiemapBatch]fiemapExtent
}

// ErrNoExtentMap says that the filesystem answers neither FIEMAP nor FIBMAP.
var ErrNoExtentMap = errors.New("filesystem reports no extent map")

// FileExtents returns where f's data lies on its device, in file order,
// clipped to the file's size, and the method used: "fiemap", or "fibmap" on
// filesystems without FIEMAP. Holes are absent.
func FileExtents(f *os.File) ([]Extent, string, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, "", err
	}
	size := st.Size()
	var exts []Extent
	var ferr error
	ctlErr := withFd(f, func(fd uintptr) { exts, ferr = fiemap(fd, size) })
	if ctlErr != nil {
		return nil, "", ctlErr
	}
	if ferr == nil {
		return exts, "fiemap", nil
	}
	if !errors.Is(ferr, unix.EOPNOTSUPP) && !errors.Is(ferr, unix.ENOTTY) && !errors.Is(ferr, unix.EINVAL) {
		return nil, "", fmt.Errorf("FIEMAP of %s: %w", f.Name(), ferr)
	}
	ctlErr = withFd(f, func(fd uintptr) { exts, ferr = fibmapExtents(fd, size) })
	if ctlErr != nil {
		return nil, "", ctlErr
	}
	if ferr != nil {
		return nil, "", fmt.Errorf("%w: %s: FIEMAP unsupported, FIBMAP: %w", ErrNoExtentMap, f.Name(), ferr)
	}
	return exts, "fibmap", nil
}

// FileExtentsFIBMAP maps f with FIBMAP only (one ioctl per block): the
// fallback of FileExtents, exported so that it can be compared with FIEMAP.
func FileExtentsFIBMAP(f *os.File) ([]Extent, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var exts []Extent
	var ferr error
	if err := withFd(f, func(fd uintptr) { exts, ferr = fibmapExtents(fd, st.Size()) }); err != nil {
		return nil, err
	}
	if ferr != nil {
		return nil, fmt.Errorf("FIBMAP of %s: %w", f.Name(), ferr)
	}
	return exts, nil
}

func withFd(f *os.File, fn func(uintptr)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(fn)
}

func fiemap(fd uintptr, size int64) ([]Extent, error) {
	var out []Extent
	req := new(fiemapRequest)
	var start uint64
	for start < uint64(size) {
		req.hdr = fiemapHeader{Start: start, Length: ^uint64(0) - start, ExtentCount: fiemapBatch}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, fsIocFiemap, uintptr(unsafe.Pointer(req)))
		if e != 0 {
			return nil, e
		}
		n := int(req.hdr.MappedExtents)
		if n == 0 {
			break
		}
		for _, x := range req.ext[:n] {
			out = appendClipped(out, Extent{
				Logical: int64(x.Logical), Physical: int64(x.Physical),
				Length: int64(x.Length), Flags: x.Flags,
			}, size)
		}
		last := req.ext[n-1]
		if last.Flags&FiemapExtentLast != 0 {
			break
		}
		next := last.Logical + last.Length
		if next <= start {
			break // no progress: do not loop forever on a confused filesystem
		}
		start = next
	}
	return out, nil
}

func fibmapExtents(fd uintptr, size int64) ([]Extent, error) {
	var bsz int32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, figetbsz, uintptr(unsafe.Pointer(&bsz))); e != 0 {
		return nil, e
	}
	if bsz <= 0 {
		return nil, fmt.Errorf("block size %d", bsz)
	}
	bs := int64(bsz)
	var out []Extent
	for blk := int64(0); blk*bs < size; blk++ {
		b := int32(blk)
		if int64(b) != blk {
			return nil, unix.EOVERFLOW
		}
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, fibmap, uintptr(unsafe.Pointer(&b))); e != 0 {
			return nil, e
		}
		if b == 0 {
			continue // hole
		}
		out = appendClipped(out, Extent{Logical: blk * bs, Physical: int64(uint32(b)) * bs, Length: bs}, size)
	}
	return out, nil
}

// appendClipped appends e, cut at the file size, merged with the previous
// extent when both are contiguous in the file and on the device.
func appendClipped(out []Extent, e Extent, size int64) []Extent {
	if e.Logical >= size || e.Length <= 0 {
		return out
	}
	if e.Logical+e.Length > size {
		e.Length = size - e.Logical
	}
	if n := len(out); n > 0 {
		p := &out[n-1]
		if p.Logical+p.Length == e.Logical && p.Physical+p.Length == e.Physical &&
			p.Flags&^FiemapExtentLast == e.Flags&^FiemapExtentLast {
			p.Length += e.Length
			p.Flags |= e.Flags & FiemapExtentLast
			return out
		}
	}
	return append(out, e)
}

// Damage is a run of a file's bytes whose image bytes were not rescued, or
// lie past the end of the image.
type Damage struct {
	FileOffset  int64 `json:"file_offset"`
	ImageOffset int64 `json:"image_offset"`
	Length      int64 `json:"length"`
	// BeyondImage: these bytes lie past the end of the image file.
	BeyondImage bool `json:"beyond_image,omitempty"`
}

// DamagedRanges intersects a file's extents with an image's bad ranges.
// loopOffset is the offset of the file's partition in the image (the loop
// device's offset); imageSize, when > 0, makes everything past it damaged
// too. Extents of unknown location are ignored (see FileDamage.Unmapped);
// an encoded (compressed) extent that touches a bad range is damaged whole,
// since its file bytes do not map one to one onto image bytes. bad must be
// sorted and non-overlapping (as Mapfile.BadRanges returns it).
func DamagedRanges(exts []Extent, loopOffset, imageSize int64, bad []Range) []Damage {
	var out []Damage
	add := func(d Damage) {
		if n := len(out); n > 0 {
			p := &out[n-1]
			if p.FileOffset+p.Length == d.FileOffset && p.ImageOffset+p.Length == d.ImageOffset &&
				p.BeyondImage == d.BeyondImage {
				p.Length += d.Length
				return
			}
		}
		out = append(out, d)
	}
	for _, e := range exts {
		if e.Flags&(FiemapExtentUnknown|FiemapExtentDelalloc) != 0 || e.Length <= 0 {
			continue
		}
		start := e.Physical + loopOffset
		end := start + e.Length
		var pieces []Damage
		// bad ranges overlapping [start, end)
		i := sort.Search(len(bad), func(i int) bool { return bad[i].End() > start })
		for ; i < len(bad) && bad[i].Pos < end; i++ {
			s, t := max(start, bad[i].Pos), min(end, bad[i].End())
			if imageSize > 0 {
				t = min(t, max(s, imageSize)) // the part past the end is added below
			}
			if t > s {
				pieces = append(pieces, Damage{FileOffset: e.Logical + (s - start), ImageOffset: s, Length: t - s})
			}
		}
		if imageSize > 0 && end > imageSize {
			s := max(start, imageSize)
			pieces = append(pieces, Damage{FileOffset: e.Logical + (s - start), ImageOffset: s, Length: end - s, BeyondImage: true})
		}
		if len(pieces) > 0 && e.Flags&FiemapExtentEncoded != 0 {
			pieces = []Damage{{FileOffset: e.Logical, ImageOffset: start, Length: e.Length, BeyondImage: end > imageSize && imageSize > 0}}
		}
		for _, p := range pieces {
			add(p)
		}
	}
	return out
}
