// Package imagefs reads a medium's files straight from its image, in user
// space, the way The Sleuth Kit does: image → volumes (loopdev/probe) →
// filesystem → entries → byte runs. It needs no root, no loop device and no
// kernel driver, and a damaged or hostile image cannot hang the host.
//
// This file is the seam every filesystem reader plugs into. A reader is a
// package (imagefs/fat, imagefs/iso9660, …) that registers a Driver for one
// or more of probe's filesystem type names; adding a filesystem is adding
// such a package and importing it (imagefs/all imports them all).
//
// Invariants every reader keeps:
//   - It reads only through the io.ReaderAt it was given, whose size it is
//     told; every count, length, offset and chain read from the medium is
//     checked against the volume before it is used. No input makes a reader
//     panic, loop, hang or allocate without bound.
//   - Structural damage (a chain that loops or leaves the volume, a record
//     running past its block, a directory that holds an ancestor) is
//     reported through Options.Report as a *Problem naming its byte offset,
//     and the walk goes on with the rest of the medium.
//   - Entries have stable identities: the same image walked twice gives the
//     same IDs, types, sizes, names and runs.
//   - A file's content is its Runs on the volume. A run that lies past the end
//     of the volume is kept as it is (it tells where the missing bytes were);
//     reading it fails with ErrBeyondEnd, never with zeros.
package imagefs

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"
)

// Entry is one directory entry of a filesystem read from an image.
type Entry struct {
	// ID is the filesystem's own identity of the entry's inode (a FAT
	// directory-entry position, an ISO directory-record position, an HFS
	// CNID, an MFT reference). Two entries with the same ID are hardlinks
	// of one inode. It becomes the catalog's ino.
	ID uint64
	// Type is one of enumerate's seven types: f d l b c p s.
	Type byte
	// Name is the entry's name as bytes (UTF-8 where the filesystem's names
	// can be decoded, the raw bytes otherwise); never empty, never "." or
	// "..", never containing '/' or 0x00.
	Name []byte
	// Size is the content length in bytes (a symlink: its target's length).
	Size int64
	// Mtime is the modification time the filesystem records.
	Mtime time.Time
	// Nlink is the link count (1 where the filesystem keeps none; the
	// number of names for a directory as Linux shows it where known).
	Nlink uint64
	// Target is a symlink's target, as bytes.
	Target []byte
	// Runs locate the content on the volume, in file order: a file's
	// bytes, and a directory's own records (so that a directory whose
	// content is an ancestor's is recognised, whatever its ID).
	Runs []Run
	// Encoded marks a file whose content is not its runs' bytes: the runs
	// locate its stored, encoded form (a compressed HFS+ file's decmpfs
	// attribute or resource fork), Logical counting in that form, and
	// only FS.Open decodes the content (Size bytes). Damage maps and the
	// order of reads may use such runs; nothing reads them as content.
	Encoded bool
	// Forks are the file's non-empty named forks and streams (a Mac
	// resource fork, NTFS alternate data streams), each an Entry of Type
	// 'f' named as the fork (ResourceFork, the stream's name) with ID
	// ForkID(ID, k), read with FS.Open like any file. See fork.go.
	Forks []*Entry
}

// IsDir reports whether e is a directory.
func (e *Entry) IsDir() bool { return e.Type == 'd' }

// Run is one contiguous piece of a file's content.
type Run struct {
	// Logical is the offset of the run within the file.
	Logical int64
	// Offset is the run's byte offset from the start of the volume (the
	// io.ReaderAt the filesystem was opened on); meaningless for a hole.
	Offset int64
	// Length is the run's length in bytes (> 0).
	Length int64
	// Hole marks a run that is not stored (sparse): it reads as zeros.
	Hole bool
}

// FS is one filesystem opened from a volume.
type FS interface {
	// Type is the filesystem's name as probe and the kernel say it
	// (vfat, iso9660, hfs, hfsplus, ntfs).
	Type() string
	// Root returns the root directory.
	Root() (*Entry, error)
	// ReadDir returns dir's entries, without "." and "..", in the order
	// the filesystem stores them. Damage inside the directory is reported
	// and the readable entries are still returned; an error means nothing
	// could be read.
	ReadDir(dir *Entry) ([]*Entry, error)
	// Open returns a reader of a file's content (e.Size bytes). Most
	// readers return NewRunReader over e.Runs; a filesystem whose content
	// is not its raw runs (compressed NTFS) decodes it here.
	Open(e *Entry) (io.ReaderAt, error)
}

// Options tune a reader. The zero value is valid.
type Options struct {
	// CodePage names the code page of 8.3 FAT names and other single-byte
	// names without a declared encoding: "cp437" (default), "cp850", ….
	CodePage string
	// Report receives every structural problem found; nil drops them.
	// It may be called from the goroutine calling ReadDir or Open.
	Report func(*Problem)
}

// Reportf reports a problem through o.Report, if set.
func (o *Options) Reportf(off int64, kind, format string, args ...any) {
	if o == nil || o.Report == nil {
		return
	}
	o.Report(&Problem{Offset: off, Kind: kind, Detail: fmt.Sprintf(format, args...)})
}

// Problem is structural damage found while reading a filesystem.
type Problem struct {
	// Offset is the byte offset on the volume of the damaged structure.
	Offset int64 `json:"offset"`
	// Kind is a short keyword: loop, out_of_volume, corrupt, cycle,
	// truncated, fat_mismatch ….
	Kind string `json:"kind"`
	// Detail says what was wrong, in words, naming the entry if known.
	Detail string `json:"detail"`
}

func (p *Problem) Error() string {
	return fmt.Sprintf("%s at byte offset %d: %s", p.Kind, p.Offset, p.Detail)
}

// Driver opens one kind of filesystem.
type Driver struct {
	// Types are the probe type names the driver reads (e.g. "vfat").
	Types []string
	// Open opens the filesystem on r, a volume of size bytes.
	Open func(r io.ReaderAt, size int64, opts Options) (FS, error)
}

var (
	driversMu sync.RWMutex
	drivers   = map[string]Driver{}
)

// Register makes a driver available for its types; a reader package calls
// it from init. Registering a type twice panics (a programming error).
func Register(d Driver) {
	driversMu.Lock()
	defer driversMu.Unlock()
	for _, t := range d.Types {
		if _, dup := drivers[t]; dup {
			panic("imagefs: driver registered twice for " + t)
		}
		drivers[t] = d
	}
}

// Types lists the filesystem types a registered driver reads, sorted.
func Types() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	out := make([]string, 0, len(drivers))
	for t := range drivers {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// ErrNoReader: no registered driver reads the filesystem type. Its error
// names the filesystem ("UDF: no image reader yet"): the probe knows more
// filesystems (HFS, HFS+, NTFS, UDF, exFAT) than there are readers.
var ErrNoReader = errors.New("no image reader yet")

// fsNames are the usual names of probe's filesystem types, for messages.
var fsNames = map[string]string{
	"vfat": "FAT", "iso9660": "ISO 9660", "udf": "UDF", "hfs": "HFS", "hfsplus": "HFS+",
	"ntfs": "NTFS", "exfat": "exFAT", "ext2": "ext2", "ext3": "ext3", "ext4": "ext4",
	"xfs": "XFS", "btrfs": "btrfs", "squashfs": "squashfs",
}

// FSName is the usual name of a probe filesystem type (UDF, HFS+, FAT …);
// an unknown type is returned as it is.
func FSName(fstype string) string {
	if n, ok := fsNames[fstype]; ok {
		return n
	}
	return fstype
}

// Open opens a volume of the given probe type with its registered driver.
func Open(fstype string, r io.ReaderAt, size int64, opts Options) (FS, error) {
	driversMu.RLock()
	d, ok := drivers[fstype]
	driversMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%s: %w", FSName(fstype), ErrNoReader)
	}
	return d.Open(r, size, opts)
}

// Errors reading content.
var (
	// ErrBeyondEnd: a run lies (partly) past the end of the volume or image.
	ErrBeyondEnd = errors.New("run lies beyond the end of the volume")
	// ErrCorrupt: a structure the content depends on does not check out.
	ErrCorrupt = errors.New("corrupt filesystem structure")
)

// ReadError is a failed read of a file's content, at a byte offset of the
// volume; it wraps ErrBeyondEnd, ErrCorrupt or the image's I/O error.
type ReadError struct {
	Offset int64 // volume offset of the first byte that could not be read
	Err    error
}

func (e *ReadError) Error() string {
	return fmt.Sprintf("reading volume at byte offset %d: %v", e.Offset, e.Err)
}
func (e *ReadError) Unwrap() error { return e.Err }

// NewRunReader returns a reader of a file of size bytes stored as runs on
// vol, a volume of volSize bytes. Holes and the part of the file past its
// last run read as zeros; a run past volSize fails with ErrBeyondEnd.
func NewRunReader(vol io.ReaderAt, volSize int64, runs []Run, size int64) io.ReaderAt {
	return &runReader{vol: vol, volSize: volSize, runs: runs, size: size}
}

type runReader struct {
	vol     io.ReaderAt
	volSize int64
	runs    []Run
	size    int64
}

func (r *runReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("imagefs: negative offset")
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := len(p)
	if rem := r.size - off; int64(want) > rem {
		want = int(rem)
	}
	// First run that ends after off.
	i := sort.Search(len(r.runs), func(i int) bool { return r.runs[i].Logical+r.runs[i].Length > off })
	n := 0
	for n < want {
		pos := off + int64(n)
		if i >= len(r.runs) || r.runs[i].Logical > pos {
			// Unmapped: a gap before the next run, or past the last one.
			end := off + int64(want)
			if i < len(r.runs) && r.runs[i].Logical < end {
				end = r.runs[i].Logical
			}
			clear(p[n : n+int(end-pos)])
			n += int(end - pos)
			continue
		}
		run := r.runs[i]
		k := run.Logical + run.Length - pos
		if k > int64(want-n) {
			k = int64(want - n)
		}
		if run.Hole {
			clear(p[n : n+int(k)])
		} else {
			at := run.Offset + (pos - run.Logical)
			if at < 0 || at+k > r.volSize {
				return n, &ReadError{Offset: max(at, r.volSize), Err: ErrBeyondEnd}
			}
			m, err := r.vol.ReadAt(p[n:n+int(k)], at)
			if m < int(k) {
				if err == nil || err == io.EOF {
					err = ErrBeyondEnd
				}
				return n + m, &ReadError{Offset: at + int64(m), Err: err}
			}
		}
		n += int(k)
		i++
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// NewShortReader returns a reader of a file of size bytes whose runs (read
// through mapped) cover only its first covered bytes: a chain or extent list
// that ends early. Reading past them fails with a *ReadError at volume
// offset at, wrapping ErrCorrupt with why — never with zeros.
func NewShortReader(mapped io.ReaderAt, covered, size, at int64, why string) io.ReaderAt {
	return &shortReader{mapped: mapped, covered: covered, size: size, at: at, why: why}
}

type shortReader struct {
	mapped            io.ReaderAt
	covered, size, at int64
	why               string
}

func (f *shortReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= f.size {
		return 0, io.EOF
	}
	n := 0
	if off < f.covered {
		want := min(int64(len(p)), f.covered-off)
		m, err := f.mapped.ReadAt(p[:want], off)
		n = m
		if err != nil && !errors.Is(err, io.EOF) {
			return n, err
		}
		if int64(m) < want {
			return n, &ReadError{Offset: f.at, Err: io.ErrUnexpectedEOF}
		}
		if n == len(p) {
			return n, nil
		}
	}
	return n, &ReadError{Offset: f.at, Err: fmt.Errorf("%s: %w", f.why, ErrCorrupt)}
}
