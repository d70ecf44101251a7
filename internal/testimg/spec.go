package testimg

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"math"
	"strings"
	"time"
)

// Kind is the type of a tree entry.
type Kind int

// Entry kinds. Their order is stable; String gives the find(1) %y letter.
const (
	File     Kind = iota // regular file: Data, or Size bytes of seeded content
	Dir                  // directory
	Symlink              // symbolic link to Target (any bytes, need not exist)
	Hardlink             // another name for the inode of the entry at Target
	FIFO                 // named pipe
	Socket               // unix socket node
	CharDev              // character device Major:Minor
	BlockDev             // block device Major:Minor
)

// String returns the one-letter type find -printf %y prints for the kind
// (a hardlink prints as the kind of its target, so it is "h" here).
func (k Kind) String() string {
	switch k {
	case File:
		return "f"
	case Dir:
		return "d"
	case Symlink:
		return "l"
	case Hardlink:
		return "h"
	case FIFO:
		return "p"
	case Socket:
		return "s"
	case CharDev:
		return "c"
	case BlockDev:
		return "b"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// NoPerms as an Entry's Mode asks for permission bits 000 (a zero Mode means
// "the kind's default").
const NoPerms = fs.ModeIrregular

// DefaultMtime is the mtime (and atime, ctime) of every inode whose entry
// leaves Mtime zero, and of lost+found and the superblock times: 2020-01-01.
var DefaultMtime = time.Unix(1577836800, 0)

// SparseBlock is the granule of a sparse file's data: a Sparse entry has
// seeded data in its first and its last SparseBlock bytes and a hole between.
const SparseBlock = 4096

// Entry is one name in the tree.
//
// Path is relative to the filesystem root, components separated by '/'; a
// component may hold any byte except NUL and '/' (0x1C, newline, CR,
// backslash, invalid UTF-8, up to 255 bytes) but may not be "." or "..".
// Parent directories that have no entry of their own are created with the
// defaults. The entry with Path "" is the root directory itself (only Mode,
// Uid, Gid and Mtime are used).
type Entry struct {
	Path string
	Kind Kind

	// File content: Data if non-nil; otherwise Size bytes generated from
	// Seed (see ContentAt). With Sparse, only the first and last
	// SparseBlock bytes carry content; the rest is a hole that reads as
	// zeros. Data nil and Size 0 is an empty file.
	Data   []byte
	Size   int64
	Seed   uint64
	Sparse bool

	// Target: the symlink's target bytes (Symlink), or the Path of the
	// entry whose inode this name shares (Hardlink; that entry must come
	// first and must not be a directory, symlink or hardlink).
	Target string

	// Major and Minor number of a CharDev or BlockDev.
	Major, Minor uint32

	// Mode holds the permission bits plus fs.ModeSetuid, fs.ModeSetgid and
	// fs.ModeSticky; zero means the kind's default (0644 file, 0755
	// directory, 0777 symlink, 0644 fifo/socket/device); NoPerms means 000.
	// Symlinks are always 0777, as on Linux. A Hardlink's Mode, Uid, Gid
	// and Mtime are ignored: it shares its target's inode.
	Mode fs.FileMode

	// Owner of the inode.
	Uid, Gid uint32

	// Mtime of the inode; the zero time means DefaultMtime. Representable
	// range: ext3/ext4 with 256-byte inodes store seconds from
	// 1901-12-13T20:45:52Z to 2446-05-10T22:38:55Z and nanoseconds;
	// ext2 (whose kernel driver reads 32 bits) and 128-byte inodes store
	// signed 32-bit seconds only and no nanoseconds. Atime and ctime are
	// set to the same instant.
	Mtime time.Time
}

// perm returns the permission bits (including setuid/setgid/sticky as the
// kernel's 07000 bits) the inode gets.
func (e Entry) perm() uint32 {
	m := e.Mode
	if m == 0 {
		switch e.Kind {
		case Dir:
			return 0o755
		case Symlink:
			return 0o777
		default:
			return 0o644
		}
	}
	if e.Kind == Symlink {
		return 0o777
	}
	if m&NoPerms != 0 {
		m &^= NoPerms
	}
	p := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

// typeBits returns the S_IFMT bits of the kind (a hardlink has none of its own).
func (k Kind) typeBits() uint32 {
	switch k {
	case File:
		return 0o100000
	case Dir:
		return 0o040000
	case Symlink:
		return 0o120000
	case FIFO:
		return 0o010000
	case Socket:
		return 0o140000
	case CharDev:
		return 0o020000
	case BlockDev:
		return 0o060000
	}
	return 0
}

// StatMode returns the st_mode the entry's inode must have once built
// (type bits and permission bits), as unix.Stat_t.Mode reports it.
func (e Entry) StatMode() uint32 { return e.Kind.typeBits() | e.perm() }

// mtime returns the entry's effective mtime.
func (e Entry) mtime() time.Time {
	if e.Mtime.IsZero() {
		return DefaultMtime
	}
	return e.Mtime
}

// FileSize returns the size the file has once built (Data length or Size).
func (e Entry) FileSize() int64 {
	if e.Data != nil {
		return int64(len(e.Data))
	}
	return e.Size
}

// Content returns the whole content of a File entry (nil for other kinds).
// Meant for small files; use ContentReader for big ones.
func (e Entry) Content() []byte {
	if e.Kind != File {
		return nil
	}
	if e.Data != nil {
		return e.Data
	}
	b, _ := io.ReadAll(e.ContentReader())
	return b
}

// ContentReader returns a reader of the content the File entry has once built.
func (e Entry) ContentReader() io.Reader {
	if e.Data != nil {
		return bytes.NewReader(e.Data)
	}
	return &seedReader{e: e}
}

// dataAt fills p with the content of the entry at offset off (within size).
func (e Entry) dataAt(p []byte, off int64) {
	if e.Data != nil {
		copy(p, e.Data[off:])
		return
	}
	if !e.Sparse {
		ContentAt(e.Seed, p, off)
		return
	}
	for len(p) > 0 {
		var n int64
		if off < SparseBlock || off >= e.Size-SparseBlock {
			end := e.Size
			if off < SparseBlock {
				end = SparseBlock
			}
			n = min(int64(len(p)), end-off)
			ContentAt(e.Seed, p[:n], off)
		} else {
			n = min(int64(len(p)), e.Size-SparseBlock-off)
			clear(p[:n])
		}
		p = p[n:]
		off += n
	}
}

type seedReader struct {
	e   Entry
	off int64
}

func (r *seedReader) Read(p []byte) (int, error) {
	if r.off >= r.e.Size {
		return 0, io.EOF
	}
	if rem := r.e.Size - r.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	r.e.dataAt(p, r.off)
	r.off += int64(len(p))
	return len(p), nil
}

// ContentAt fills p with the seeded content stream of seed at offset off.
// The stream is deterministic and position-addressable (splitmix64 of the
// seed and the 8-byte word index), so any byte of a big file can be checked
// without generating what precedes it, and different seeds differ.
func ContentAt(seed uint64, p []byte, off int64) {
	for len(p) > 0 {
		w := uint64(off) / 8
		var buf [8]byte
		binary.LittleEndian.PutUint64(buf[:], splitmix(seed*0x9E3779B97F4A7C15+w))
		n := copy(p, buf[off%8:])
		p = p[n:]
		off += int64(n)
	}
}

func splitmix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

// Spec describes a filesystem image: its type, geometry and tree.
type Spec struct {
	// FSType is "ext2", "ext3" or "ext4" (default "ext4").
	FSType string
	// Size of the image in bytes; 0 picks a size that fits the tree with
	// room to spare (at least 16 MiB). Images are sparse files.
	Size int64
	// BlockSize in bytes (1024, 2048, 4096); 0 means 4096.
	BlockSize int
	// InodeSize in bytes; 0 means 256 (needed for nanoseconds and times
	// outside 1901..2038).
	InodeSize int
	// Inodes is the inode count (mke2fs -N); 0 lets mke2fs choose, raised
	// when the tree needs more.
	Inodes int
	// Label is the volume label (at most 16 bytes).
	Label string
	// UUID of the filesystem (also the directory hash seed); "" means a
	// fixed UUID, so that the same Spec builds the same bytes.
	UUID string
	// Features are passed to mke2fs -O, e.g. "^has_journal", "^metadata_csum".
	Features []string
	// Entries is the tree, in creation order.
	Entries []Entry
}

func (s Spec) fsType() string {
	if s.FSType == "" {
		return "ext4"
	}
	return s.FSType
}

func (s Spec) blockSize() int {
	if s.BlockSize == 0 {
		return 4096
	}
	return s.BlockSize
}

func (s Spec) inodeSize() int {
	if s.InodeSize == 0 {
		return 256
	}
	return s.InodeSize
}

// wideTimes reports whether inodes of the image keep epoch bits and
// nanoseconds that the kernel reads back.
func (s Spec) wideTimes() bool {
	return s.inodeSize() >= 256 && s.fsType() != "ext2"
}

// Time range of an ext4 large inode: 32-bit signed seconds plus two epoch bits.
const (
	minWideTime = math.MinInt32
	maxWideTime = math.MaxInt32 + 3<<32
)

// validate checks the spec and returns the index of each entry by path.
func (s Spec) validate() (map[string]int, error) {
	switch s.fsType() {
	case "ext2", "ext3", "ext4":
	default:
		return nil, fmt.Errorf("testimg: filesystem type %q: want ext2, ext3 or ext4", s.FSType)
	}
	byPath := make(map[string]int, len(s.Entries))
	for i, e := range s.Entries {
		if e.Path != "" {
			for _, c := range strings.Split(e.Path, "/") {
				if c == "" || c == "." || c == ".." || len(c) > 255 || strings.IndexByte(c, 0) >= 0 {
					return nil, fmt.Errorf("testimg: entry %d %q: bad path component %q", i, e.Path, c)
				}
			}
		} else if e.Kind != Dir {
			return nil, fmt.Errorf("testimg: entry %d: the root (path \"\") must be a Dir", i)
		}
		if _, dup := byPath[e.Path]; dup {
			return nil, fmt.Errorf("testimg: entry %d %q: duplicate path", i, e.Path)
		}
		byPath[e.Path] = i
		switch e.Kind {
		case File:
			if e.Data == nil && e.Size < 0 {
				return nil, fmt.Errorf("testimg: entry %q: negative size", e.Path)
			}
		case Hardlink:
			j, ok := byPath[e.Target]
			if !ok {
				return nil, fmt.Errorf("testimg: hardlink %q: target %q is not an earlier entry", e.Path, e.Target)
			}
			// mke2fs -d does not keep hardlinked symlinks together.
			if k := s.Entries[j].Kind; k == Dir || k == Hardlink || k == Symlink {
				return nil, fmt.Errorf("testimg: hardlink %q: target %q is a %v", e.Path, e.Target, k)
			}
		case Symlink:
			if e.Target == "" || strings.IndexByte(e.Target, 0) >= 0 || len(e.Target) > 4095 {
				return nil, fmt.Errorf("testimg: symlink %q: target must be 1..4095 bytes without NUL", e.Path)
			}
		case Dir, FIFO, Socket, CharDev, BlockDev:
		default:
			return nil, fmt.Errorf("testimg: entry %q: unknown kind %d", e.Path, int(e.Kind))
		}
		if e.Kind != Hardlink {
			t := e.mtime()
			if s.wideTimes() {
				if t.Unix() < minWideTime || t.Unix() > maxWideTime {
					return nil, fmt.Errorf("testimg: entry %q: mtime %v outside what ext4 stores", e.Path, t)
				}
			} else if t.Unix() < math.MinInt32 || t.Unix() > math.MaxInt32 || t.Nanosecond() != 0 {
				return nil, fmt.Errorf("testimg: entry %q: mtime %v needs ext3/ext4 with 256-byte inodes", e.Path, t)
			}
		}
	}
	return byPath, nil
}
