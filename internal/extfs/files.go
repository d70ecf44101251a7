package extfs

import (
	"bytes"
	"fmt"
	"io"
	"slices"

	"github.com/HRDAG/ntt/imagefs"
)

// Files reads the regular files of an ext2/3/4 filesystem straight from
// its device: names resolved in the tree the direct scan read (scan.go),
// content read by each inode's extents or block map. The copier reads a
// mounted medium's files through it (OpenMount), where enumerate's walk
// reads its tree. Its methods may be called concurrently.
type Files struct {
	t      *Tree
	r      io.ReaderAt
	size   int64
	byName []int32 // per directory, indexes into t.ents sorted by name
	dev    uint64  // OpenMount: the mount's st_dev
}

// ScanFiles scans the ext filesystem on r (size bytes) for reading
// its files. It refuses what the scan refuses, features it does not read
// files under (bigalloc, snapshots, shared blocks, …), and a filesystem
// with more than maxInodes inodes in use (0: the scan's own bound; without
// uninit_bg or metadata_csum, every inode of a table counts): what it
// keeps takes about 60 bytes per entry. tick is as for Scan (nil: none).
func ScanFiles(r io.ReaderAt, size int64, advise func(off, n int64), maxInodes int64, tick func() error) (*Files, error) {
	l, err := ReadLayout(r, size)
	if err != nil {
		return nil, scanErr("%v", err)
	}
	var used int64
	for _, it := range l.itables {
		used += it.used
	}
	if maxInodes > 0 && used > maxInodes {
		return nil, scanErr("%d inodes in use, more than %d", used, maxInodes)
	}
	t, err := scanLayout(l, r, advise, tick)
	if err != nil {
		return nil, err
	}
	if err := t.Walk(nil); err != nil {
		return nil, err
	}
	const fileROCompat = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x100 | 0x400 | 0x1000 | 0x2000 | 0x8000 | 0x10000
	if t.l.roCompat&^fileROCompat != 0 {
		return nil, scanErr("read-only-compatible features %#x", t.l.roCompat&^fileROCompat)
	}
	t.buf = nil
	x := &Files{t: t, r: r, size: size, byName: make([]int32, len(t.ents))}
	for i := range x.byName {
		x.byName[i] = int32(i)
	}
	for i := range t.dirs {
		d := &t.dirs[i]
		s := x.byName[d.first : d.first+d.count]
		slices.SortFunc(s, func(a, b int32) int { return bytes.Compare(t.name(&t.ents[a]), t.name(&t.ents[b])) })
	}
	return x, nil
}

// ReadThrough makes FileRuns read the device through r, which must return
// the bytes of the device the filesystem was scanned on (a cache of it).
// It is called before FileRuns is.
func (x *Files) ReadThrough(r io.ReaderAt) { x.r = r }

// DeviceSize is the size of the device the filesystem was scanned on.
func (x *Files) DeviceSize() int64 { return x.size }

// MountDev is the st_dev of the mount OpenMount opened (0 otherwise).
func (x *Files) MountDev() uint64 { return x.dev }

// child finds name in directory d: its entry, or nil when it is absent or
// the directory holds it more than once (damage the kernel would resolve
// its own way).
func (x *Files) child(d *extDir, name string) *extEnt {
	s := x.byName[d.first : d.first+d.count]
	want := []byte(name)
	i, ok := slices.BinarySearchFunc(s, want, func(e int32, want []byte) int {
		return bytes.Compare(x.t.name(&x.t.ents[e]), want)
	})
	if !ok || i+1 < len(s) && bytes.Equal(x.t.name(&x.t.ents[s[i+1]]), want) {
		return nil
	}
	return &x.t.ents[s[i]]
}

// LookupFile resolves rel ("dir/name", relative to the root, clean) as a
// lookup beneath the root without following symlinks would, and returns
// the inode number and size of the regular file it names; ok is false
// when any component is missing, not a directory (a symlink), in a
// case-folded directory, or the last is not a regular file.
func (x *Files) LookupFile(rel string) (ino uint32, size int64, ok bool) {
	t := x.t
	d := &t.dirs[t.dirOf[RootIno]]
	for {
		if d.flags&inodeCasefold != 0 {
			return 0, 0, false
		}
		name, rest, more := cut(rel)
		e := x.child(d, name)
		if e == nil {
			return 0, 0, false
		}
		in := t.lookup(e.child)
		if !more {
			if in.mode&modeTypeMask != 0x8000 {
				return 0, 0, false
			}
			return e.child, in.size, true
		}
		di, isDir := t.dirOf[e.child]
		if in.mode&modeTypeMask != modeDir || !isDir {
			return 0, 0, false
		}
		d, rel = &t.dirs[di], rest
	}
}

func cut(rel string) (first, rest string, more bool) {
	for i := 0; i < len(rel); i++ {
		if rel[i] == '/' {
			return rel[:i], rel[i+1:], true
		}
	}
	return rel, "", false
}

// Inode flags a file is not read directly under: its content is not
// plainly its blocks (encrypted, inline, compressed, verity's tree past
// the end is harmless but not tested), or it is an attribute's inode.
const fileRefusedFlags = inodeEncrypt | inodeInline | inodeEAInode | 0x4 /* compressed */ | 0x200 /* compressed blocks */ | 0x100000 /* verity */ | 0x02000000 /* DAX */

// FileRuns reads regular file ino's inode again from the device and maps
// its content: runs in device bytes, unwritten extents as holes. It
// refuses (an error) anything the kernel might read differently: an inode
// whose checksum or fields do not check out, flags it does not follow, an
// extent tree or block map that leaves the filesystem, goes back or
// overlaps. The caller then reads the file the kernel's way.
func (x *Files) FileRuns(ino uint32) (size int64, runs []imagefs.Run, err error) {
	t := x.t
	l := t.l
	in := t.lookup(ino)
	if in == nil || in.mode&modeTypeMask != 0x8000 || in.flags&inodeRefused != 0 {
		return 0, nil, scanErr("inode %d is not a regular file the scan read", ino)
	}
	g, k := int64(ino-1)/l.inodesPerGroup, int64(ino-1)%l.inodesPerGroup
	it := t.tables[t.groupOf[g]]
	raw := make([]byte, l.inodeSize)
	if n, err := x.r.ReadAt(raw, it.Off+k*l.inodeSize); n != len(raw) {
		return 0, nil, fmt.Errorf("ext: reading inode %d: %w", ino, err)
	}
	mode, links, flags := le16(raw, 0), le16(raw, 0x1A), le32(raw, 0x20)
	size = le32(raw, 0x04) | le32(raw, 0x6C)<<32
	switch {
	case uint16(mode) != in.mode || links == 0 || size != in.size:
		return 0, nil, scanErr("inode %d changed since the scan", ino)
	case flags&fileRefusedFlags != 0:
		return 0, nil, scanErr("inode %d: flags %#x", ino, flags)
	case t.igetRefuses(ino, raw, flags, size):
		return 0, nil, scanErr("inode %d: checksum mismatch or bad fields", ino)
	}
	bs := l.blockSize
	nb := (size + bs - 1) / bs
	d := extDir{ino: ino, gen: uint32(le32(raw, 0x64)), iblock: [60]byte(raw[0x28 : 0x28+60])}
	budget := nb + maxExtentDepth + 4 // index blocks: fewer than the data blocks, and the depth
	m := blockMapper{t: t, d: &d, holes: true, block: func(p int64) ([]byte, error) {
		return x.block(p, &budget)
	}}
	if err := m.mapInode(flags, nb); err != nil {
		return 0, nil, fmt.Errorf("%w (inode %d)", err, ino)
	}
	runs = make([]imagefs.Run, 0, len(d.runs))
	for _, r := range d.runs {
		run := imagefs.Run{Logical: r.lblk * bs, Offset: r.pblk * bs, Length: r.n * bs}
		if r.pblk < 0 {
			run.Hole, run.Offset = true, 0
		}
		runs = append(runs, run)
	}
	return size, runs, nil
}

// block reads one index or indirect block of a file, at most budget of
// them (its own count: FileRuns is called concurrently).
func (x *Files) block(p int64, budget *int64) ([]byte, error) {
	t := x.t
	if !t.blockOK(p, 1) {
		return nil, scanErr("block %d outside the filesystem or in its metadata", p)
	}
	if *budget--; *budget < 0 {
		return nil, scanErr("more index blocks than the file has blocks")
	}
	b := make([]byte, t.l.blockSize)
	if n, err := x.r.ReadAt(b, p*t.l.blockSize); n != len(b) {
		return nil, fmt.Errorf("ext: reading block %d: %w", p, err)
	}
	return b, nil
}
