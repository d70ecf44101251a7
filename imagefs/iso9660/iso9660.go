package iso9660

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/HRDAG/ntt/imagefs"
)

func init() {
	imagefs.Register(imagefs.Driver{
		Types: []string{"iso9660"},
		Open: func(r io.ReaderAt, size int64, opts imagefs.Options) (imagefs.FS, error) {
			return Open(r, size, opts)
		},
	})
}

// Layout constants of ECMA-119.
const (
	sectorSize      = 2048 // volume descriptors and the directory-record grid
	firstDescriptor = 16   // the system area is sectors 0–15
	maxDescriptors  = 64   // descriptors read before giving up on a terminator
	maxDirBytes     = 64 << 20
	maxRuns         = 1 << 16 // runs of one interleaved or multi-extent file
	maxDirRuns      = 1 << 20 // runs of all the files of one directory
)

// ErrNotISO9660: the volume has no ISO 9660 primary volume descriptor.
var ErrNotISO9660 = errors.New("no ISO 9660 primary volume descriptor")

// Naming says which directory tree and names an FS uses.
type Naming string

const (
	RockRidge Naming = "rockridge" // primary tree, Rock Ridge names and attributes
	Joliet    Naming = "joliet"    // Joliet tree, UCS-2 names
	Primary   Naming = "primary"   // primary tree, ECMA-119 names mapped as Linux does
)

// FS is an ISO 9660 filesystem opened from a volume.
type FS struct {
	r      io.ReaderAt
	size   int64
	opts   imagefs.Options
	bs     int64 // logical block size
	naming Naming
	skip   int // Rock Ridge: SP len_skp
	label  string
	root   *imagefs.Entry

	mu sync.Mutex
	// links maps a hardlink group key to the content it was first seen
	// with, so that a damaged record claiming the group with other
	// content gets an ID of its own.
	links map[uint64][2]int64
	// unreadable holds entries whose content cannot be read from their
	// runs (zisofs, too finely interleaved), by ID.
	unreadable map[uint64]error
}

// Type returns "iso9660".
func (f *FS) Type() string { return "iso9660" }

// Naming returns the tree and names in use.
func (f *FS) Naming() Naming { return f.naming }

// Label returns the primary volume identifier.
func (f *FS) Label() string { return f.label }

// BlockSize returns the logical block size.
func (f *FS) BlockSize() int64 { return f.bs }

// ErrNoTree: OpenNaming was asked for a tree the volume does not have.
var ErrNoTree = errors.New("the ISO 9660 volume has no such tree")

// Open reads the volume descriptors of the ISO 9660 volume r (size bytes)
// and chooses the tree to read as Linux does: Rock Ridge when the primary
// root says so, else Joliet when there is a Joliet descriptor, else the
// primary tree.
func Open(r io.ReaderAt, size int64, opts imagefs.Options) (*FS, error) {
	return OpenNaming(r, size, opts, "")
}

// OpenNaming is Open with the tree chosen by the caller, as Linux's norock
// and nojoliet mount options do: Primary reads the primary tree without
// Rock Ridge, Joliet the Joliet tree, RockRidge the primary tree with Rock
// Ridge; "" chooses as Open does. A tree the volume lacks is ErrNoTree.
func OpenNaming(r io.ReaderAt, size int64, opts imagefs.Options, want Naming) (*FS, error) {
	f := &FS{r: r, size: size, opts: opts, bs: sectorSize,
		links: map[uint64][2]int64{}, unreadable: map[uint64]error{}}
	var pvd, svd []byte
	var pvdOff, svdOff int64
	terminated := false
	d := make([]byte, sectorSize)
	for i := int64(0); i < maxDescriptors && !terminated; i++ {
		off := (firstDescriptor + i) * sectorSize
		if off+sectorSize > size {
			if i == 0 {
				return nil, fmt.Errorf("iso9660: volume of %d bytes ends before its first volume descriptor: %w", size, ErrNotISO9660)
			}
			f.opts.Reportf(off, "truncated", "volume descriptor set runs past the end of the volume (%d bytes)", size)
			break
		}
		if _, err := r.ReadAt(d, off); err != nil {
			return nil, fmt.Errorf("iso9660: reading the volume descriptor at byte offset %d: %w", off, err)
		}
		if string(d[1:6]) != "CD001" {
			if i == 0 {
				return nil, fmt.Errorf("iso9660: no CD001 descriptor at byte offset %d: %w", off, ErrNotISO9660)
			}
			f.opts.Reportf(off, "corrupt", "volume descriptor set ends without a terminator")
			break
		}
		switch d[0] {
		case 255:
			terminated = true
		case 1:
			if pvd == nil {
				pvd, pvdOff = bytes.Clone(d), off
			}
		case 2:
			if svd == nil && d[88] == '%' && d[89] == '/' && (d[90] == '@' || d[90] == 'C' || d[90] == 'E') {
				svd, svdOff = bytes.Clone(d), off
			}
		}
	}
	if !terminated && pvd != nil && (firstDescriptor+maxDescriptors)*sectorSize <= size {
		f.opts.Reportf(firstDescriptor*sectorSize, "corrupt", "no volume descriptor set terminator in the first %d descriptors", maxDescriptors)
	}
	if pvd == nil {
		return nil, fmt.Errorf("iso9660: %w", ErrNotISO9660)
	}
	f.label = string(bytes.TrimRight(pvd[40:72], " \x00"))
	switch bs := int64(le16(pvd[128:])); bs {
	case 512, 1024, 2048:
		f.bs = bs
	default:
		f.opts.Reportf(pvdOff+128, "corrupt", "logical block size %d is not 512, 1024 or 2048; using 2048", bs)
	}
	if blocks := int64(le32(pvd[80:])); blocks*f.bs > size {
		f.opts.Reportf(pvdOff+80, "truncated", "the volume holds %d blocks of %d bytes (%d bytes) but the image has %d bytes", blocks, f.bs, blocks*f.bs, size)
	}

	root, rootErr := f.rootEntry(pvd[156:190], pvdOff+156)
	switch want {
	case "", RockRidge:
		// Rock Ridge: the primary root's "." record starts its System
		// Use area with SP, and an ER (or the old RR entry, or PX) says
		// RRIP.
		if rootErr == nil {
			if rr, ok := f.dotRockRidge(root); ok && rr.sp && (rr.er || rr.rr || rr.px) {
				f.naming, f.skip = RockRidge, rr.skip
				f.applyDot(root, rr)
			}
		}
		if want == RockRidge && f.naming == "" {
			return nil, fmt.Errorf("iso9660: Rock Ridge: %w", ErrNoTree)
		}
	case Joliet:
		if svd == nil {
			return nil, fmt.Errorf("iso9660: Joliet: %w", ErrNoTree)
		}
	case Primary:
		f.naming = Primary
	default:
		return nil, fmt.Errorf("iso9660: unknown naming %q", want)
	}
	if f.naming == "" && svd != nil {
		if jroot, err := f.rootEntry(svd[156:190], svdOff+156); err == nil {
			f.naming, root, rootErr = Joliet, jroot, nil
		} else if want == Joliet {
			return nil, fmt.Errorf("iso9660: Joliet root: %w", err)
		} else if rootErr == nil {
			f.opts.Reportf(svdOff+156, "corrupt", "Joliet root directory: %v; using the primary tree", err)
		}
	}
	if rootErr != nil {
		return nil, fmt.Errorf("iso9660: %w", rootErr)
	}
	if f.naming == "" {
		f.naming = Primary
	}
	f.root = root
	return f, nil
}

// rootEntry makes the root directory's entry from the record in a volume
// descriptor.
func (f *FS) rootEntry(b []byte, off int64) (*imagefs.Entry, error) {
	rec, ok := parseRecord(b)
	if !ok || rec.flags&0x02 == 0 {
		return nil, fmt.Errorf("root directory record at byte offset %d: %w", off, imagefs.ErrCorrupt)
	}
	start := (int64(rec.extent) + int64(rec.xattr)) * f.bs
	if start >= f.size || rec.size == 0 {
		return nil, fmt.Errorf("root directory at byte offset %d (%d bytes) lies outside the volume (%d bytes): %w",
			start, rec.size, f.size, imagefs.ErrBeyondEnd)
	}
	e := &imagefs.Entry{
		ID:    uint64(start),
		Type:  'd',
		Size:  int64(rec.size),
		Mtime: shortDate(rec.date[:]),
		Nlink: 1,
		Runs:  []imagefs.Run{{Offset: start, Length: int64(rec.size)}},
	}
	// Linux takes the root's attributes from its "." record, not from
	// the copy in the descriptor (which mastering tools fill carelessly).
	dotb := make([]byte, min(255, f.size-start))
	if _, err := f.r.ReadAt(dotb, start); err == nil || errors.Is(err, io.EOF) {
		if dot, ok := parseRecord(dotb); ok && dot.name0() == 0 {
			e.Mtime = shortDate(dot.date[:])
		}
	}
	return e, nil
}

// dotRockRidge parses the System Use area of a directory's "." record
// (its first record) without skipping: the root's carries SP itself.
func (f *FS) dotRockRidge(dir *imagefs.Entry) (*rockRidge, bool) {
	off := dir.Runs[0].Offset
	b := make([]byte, min(int64(255), f.size-off))
	if _, err := f.r.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, false
	}
	rec, ok := parseRecord(b)
	if !ok || int(b[0]) > len(b) || rec.name0() != 0 {
		return nil, false
	}
	return f.parseSU(rec.su, off+int64(rec.suAt), subject{what: "root directory"}, nil), true
}

// applyDot takes a directory's Rock Ridge attributes from its "." record.
func (f *FS) applyDot(e *imagefs.Entry, rr *rockRidge) {
	if rr.px && rr.nlink > 0 {
		e.Nlink = uint64(rr.nlink)
	}
	if rr.hasMtime {
		e.Mtime = rr.mtime
	}
}

// Root returns the root directory of the chosen tree. Its Name is empty.
func (f *FS) Root() (*imagefs.Entry, error) {
	e := *f.root
	e.Runs = append([]imagefs.Run(nil), f.root.Runs...)
	return &e, nil
}

// Open returns a reader of e's content: a file's bytes from its runs, a
// symlink's target. Content that is not stored raw (zisofs) or that the
// reader does not lay out (interleaving finer than maxRuns) fails with an
// error wrapping imagefs.ErrCorrupt.
func (f *FS) Open(e *imagefs.Entry) (io.ReaderAt, error) {
	switch e.Type {
	case 'l':
		return bytes.NewReader(e.Target), nil
	case 'f', 'd':
	default:
		return bytes.NewReader(nil), nil
	}
	f.mu.Lock()
	err := f.unreadable[e.ID]
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return imagefs.NewRunReader(f.r, f.size, e.Runs, e.Size), nil
}

func (f *FS) markUnreadable(id uint64, err error) {
	f.mu.Lock()
	f.unreadable[id] = err
	f.mu.Unlock()
}
