package fat

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/HRDAG/ntt/imagefs"
)

// RootID is the ID of the root directory, which has no directory record of
// its own. No record can lie at byte 1 of a volume, so it is never another
// entry's ID.
const RootID = 1

// Type is the probe type name this reader registers for.
const Type = "vfat"

func init() {
	imagefs.Register(imagefs.Driver{
		Types: []string{Type},
		Open: func(r io.ReaderAt, size int64, opts imagefs.Options) (imagefs.FS, error) {
			return Open(r, size, opts)
		},
	})
}

// Volume is a FAT12, FAT16 or FAT32 filesystem opened from a volume. Its
// methods may be called from several goroutines.
type Volume struct {
	r    io.ReaderAt
	size int64
	opts imagefs.Options
	geo  *geometry
	cp   *codePage
	fats []*table // the FAT copies in use, the primary first
	root imagefs.Entry

	chainMu sync.Mutex // guards seen
	seen    clusterSet

	nlinkMu   sync.Mutex       // guards the three below
	nlinks    map[int64]uint64 // subdirectory counts by a directory's first run
	nlinkRead int64            // bytes read to count them
	nlinkOver bool             // the bound on nlinkRead was reached
}

// Info describes a volume's layout.
type Info struct {
	Bits        int    // 12, 16 or 32
	SectorSize  int64  // bytes
	ClusterSize int64  // bytes
	Clusters    uint32 // data clusters
	FATs        int    // copies of the FAT on the volume
	VolumeBytes int64  // the volume's size as its boot sector gives it
	Label       string // from the root directory's label record, else the boot sector ("" if none)
}

// Open reads the boot sector and the FATs of the FAT volume r of size
// bytes. Damage found on the way (an image shorter than the volume, FAT
// copies that differ, a FAT too small for the data area, a broken root
// chain) is reported through opts.Report; a boot sector that does not
// check out is a *FormatError, an unknown opts.CodePage wraps ErrCodePage.
func Open(r io.ReaderAt, size int64, opts imagefs.Options) (*Volume, error) {
	cp, err := lookupCodePage(opts.CodePage)
	if err != nil {
		return nil, err
	}
	if size < 512 {
		return nil, &FormatError{Offset: 0, Field: "boot sector", Value: size, Msg: "the volume is shorter than a 512-byte boot sector"}
	}
	boot := make([]byte, 512)
	if _, err := r.ReadAt(boot, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("fat: reading the boot sector: %w", err)
	}
	g, err := parseBootSector(boot)
	if err != nil {
		return nil, err
	}
	v := &Volume{r: r, size: size, opts: opts, geo: g, cp: cp, nlinks: map[int64]uint64{}}
	if g.volumeBytes > size {
		opts.Reportf(size, "truncated", "the image ends at byte %d, the boot sector gives the volume %d bytes: content past the end cannot be read", size, g.volumeBytes)
	}
	if g.clamped {
		opts.Reportf(g.fatOff[0], "corrupt", "the FAT holds entries for %d clusters, the data area has %d; clusters past the FAT are not used", g.clusters, g.dataClusters)
	}
	if g.active >= 0 {
		v.fats = []*table{readTable(r, size, g.active, g.fatOff[g.active], g.fatBytes, g.sectorSize)}
	} else {
		for i, off := range g.fatOff {
			v.fats = append(v.fats, readTable(r, size, i, off, g.fatBytes, g.sectorSize))
		}
		v.compareFATs()
	}
	entries := int64(0)
	for _, t := range v.fats {
		entries = max(entries, int64(len(t.data))*8/int64(g.bits))
	}
	v.seen = make(clusterSet, (min(entries, int64(g.clusters)+2)+63)/64)

	v.root = imagefs.Entry{ID: RootID, Type: 'd', Mtime: time.Unix(0, 0).UTC()}
	if g.bits == 32 {
		budget := v.chainBudget()
		ch := v.chainOf(g.rootCluster, -1, "the root directory", 44, &budget)
		v.root.Runs = ch.runs
	} else {
		v.root.Runs = []imagefs.Run{{Offset: g.rootOff, Length: g.rootLen}}
	}
	for _, r := range v.root.Runs {
		v.root.Size += r.Length
	}
	v.root.Nlink = 2 + v.subdirs(&v.root)
	return v, nil
}

// compareFATs reports where the FAT copies differ (the first differing
// byte, how many sectors differ) and puts first the copy with fewer
// entries that cannot be right (unreadable, the reserved value 1, or a
// cluster number past the volume): a FAT1 overwritten by garbage is full
// of those, a real FAT has none. Each chain broken in the copy used first
// is still looked up in the other.
func (v *Volume) compareFATs() {
	if len(v.fats) < 2 {
		return
	}
	a, b := v.fats[0], v.fats[1]
	n := min(len(a.data), len(b.data))
	first, sectors := int64(-1), 0
	ss := int(v.geo.sectorSize)
	for s := 0; s < n; s += ss {
		e := min(s+ss, n)
		if a.badSecs[int64(s/ss)] || b.badSecs[int64(s/ss)] || !bytes.Equal(a.data[s:e], b.data[s:e]) {
			sectors++
			if first < 0 {
				first = int64(s)
				for i := s; i < e; i++ {
					if a.data[i] != b.data[i] {
						first = int64(i)
						break
					}
				}
			}
		}
	}
	if first < 0 {
		return
	}
	ia, ib := v.invalidEntries(a), v.invalidEntries(b)
	use := "FAT1 is used, a chain broken in it is taken from FAT2 if it checks out there"
	if ib < ia {
		v.fats[0], v.fats[1] = b, a
		use = "FAT2 is used, a chain broken in it is taken from FAT1 if it checks out there"
	}
	v.opts.Reportf(a.off+first, "fat_mismatch", "FAT1 and FAT2 differ in %d sectors, first at FAT1 byte %d; FAT1 has %d impossible or unreadable entries, FAT2 %d; %s",
		sectors, first, ia, ib, use)
}

// invalidEntries counts the entries of t that no valid FAT holds; those
// the FAT copy lacks (cut off by the image's end) count as invalid.
func (v *Volume) invalidEntries(t *table) int64 {
	g := v.geo
	last := min(int64(g.clusters)+1, int64(len(t.data))*8/int64(g.bits)-1)
	n := int64(g.clusters) + 1 - max(last, 1)
	for c := uint32(2); int64(c) <= last; c++ {
		x, ok := t.entry(g, c)
		if !ok || x == 1 || (x > g.clusters+1 && x < g.badMark()) {
			n++
		}
	}
	return n
}

// Type returns "vfat", probe's name for all three FAT widths.
func (v *Volume) Type() string { return Type }

// Info describes the volume's layout.
func (v *Volume) Info() Info {
	in := Info{Bits: v.geo.bits, SectorSize: v.geo.sectorSize, ClusterSize: v.geo.clusterSize,
		Clusters: v.geo.clusters, FATs: v.geo.nfats, VolumeBytes: v.geo.volumeBytes}
	if recs, err := v.dirContent(&v.root, false); err == nil {
		for _, r := range recs {
			if r.b[0] == endOfDir {
				break
			}
			if r.b[0] != deleted && r.attr()&0x3F != attrLongName && r.attr()&(attrVolume|attrDir|attrReserved) == attrVolume {
				in.Label = v.labelString(r.b[:11])
				return in
			}
		}
	}
	boot := make([]byte, 512)
	if _, err := v.r.ReadAt(boot, 0); err == nil || errors.Is(err, io.EOF) {
		if l := bootLabel(boot, v.geo.bits); l != nil && !bytes.Equal(l, []byte("NO NAME    ")) {
			in.Label = v.labelString(l)
		}
	}
	return in
}

func (v *Volume) labelString(raw []byte) string {
	var sb []rune
	for _, c := range bytes.TrimRight(raw, " ") {
		sb = append(sb, v.cp.rune(c))
	}
	return string(sb)
}

// Root returns the root directory: ID RootID, no name, mtime the Unix
// epoch (FAT keeps none; Linux shows the epoch), its records as Runs (the
// fixed root area of FAT12/16, the cluster chain of FAT32).
func (v *Volume) Root() (*imagefs.Entry, error) {
	e := v.root
	e.Runs = append([]imagefs.Run(nil), v.root.Runs...)
	return &e, nil
}

// ReadDir returns dir's entries in stored order. Each record's damage
// (its chain, its name, its date) is reported; the entries that can be
// read are returned.
func (v *Volume) ReadDir(dir *imagefs.Entry) ([]*imagefs.Entry, error) {
	if dir == nil || dir.Type != 'd' {
		return nil, fmt.Errorf("fat: ReadDir of a non-directory")
	}
	recs, err := v.dirContent(dir, true)
	if err != nil {
		return nil, fmt.Errorf("fat: directory %s: %w", v.dirName(dir), err)
	}
	var out []*imagefs.Entry
	budget := v.chainBudget()
	for _, p := range v.parseDir(recs, dir.ID == RootID, true) {
		out = append(out, v.entry(p, &budget))
	}
	return out, nil
}

// chainBudget is how many clusters the chains of one directory listing may
// pass together: twice the volume's, and at least a directory's worth.
func (v *Volume) chainBudget() int64 {
	return 2*int64(v.geo.clusters) + maxDirBytes/v.geo.clusterSize + 2
}

// entry builds the Entry of a parsed record, following its cluster chain.
func (v *Volume) entry(p parsed, budget *int64) *imagefs.Entry {
	b := p.rec.b
	e := &imagefs.Entry{ID: uint64(p.rec.off), Type: 'f', Name: cleanName(p.name), Nlink: 1}
	if t, ok := dosTime(le.Uint16(b[24:]), le.Uint16(b[22:])); ok {
		e.Mtime = t
	} else {
		v.opts.Reportf(p.rec.off+22, "bad_time", "%q: modification time %#04x date %#04x is not a valid DOS time; left zero", e.Name, le.Uint16(b[22:]), le.Uint16(b[24:]))
	}
	first := uint32(le.Uint16(b[26:]))
	if v.geo.bits == 32 {
		first |= uint32(le.Uint16(b[20:])) << 16
	}
	what := fmt.Sprintf("%q (record at byte %d)", e.Name, p.rec.off)
	if p.isDir {
		e.Type = 'd'
		if first == 0 {
			// Cluster 0 is how ".." names the root; a directory record
			// holding it is the root again (the walk finds the cycle).
			e.Runs = append([]imagefs.Run(nil), v.root.Runs...)
		} else {
			e.Runs = v.chainOf(first, -1, "directory "+what, p.rec.off+26, budget).runs
		}
		for _, r := range e.Runs {
			e.Size += r.Length
		}
		e.Nlink = 2 + v.subdirs(e)
		return e
	}
	e.Size = int64(le.Uint32(b[28:]))
	need := (e.Size + v.geo.clusterSize - 1) / v.geo.clusterSize
	switch {
	case first == 0 && need == 0:
	case first == 0:
		v.opts.Reportf(p.rec.off+26, "short_chain", "file %s: %d bytes but no cluster", what, e.Size)
	default:
		e.Runs = v.chainOf(first, need, "file "+what, p.rec.off+26, budget).runs
	}
	// The last cluster holds the file's tail only.
	for i := range e.Runs {
		if r := &e.Runs[i]; r.Logical+r.Length > e.Size {
			r.Length = e.Size - r.Logical
		}
	}
	return e
}

// subdirs counts the subdirectories a directory holds (what Linux adds to
// 2 for its link count), reading it without reporting: its damage is
// reported when it is read. Counts are kept by where the directory's
// records start, and the bytes read for them are bounded by twice the
// image (a real medium needs each directory once): cross-linked records
// of a hostile image cannot make listing one directory read the volume
// over and over. Past the bound, a directory's count is left at 0
// (reported once).
func (v *Volume) subdirs(dir *imagefs.Entry) uint64 {
	key := int64(-1)
	var bytes int64
	for _, r := range dir.Runs {
		if key < 0 {
			key = r.Offset
		}
		bytes += r.Length
	}
	v.nlinkMu.Lock()
	n, ok := v.nlinks[key]
	over := !ok && v.nlinkRead+bytes > 2*v.size+1<<20
	if !ok && !over {
		v.nlinkRead += bytes
	}
	if over && !v.nlinkOver {
		v.nlinkOver = true
		v.opts.Reportf(int64(dir.ID), "corrupt", "directory %s: directories are cross-linked; link counts from here on are not counted", v.dirName(dir))
	}
	v.nlinkMu.Unlock()
	if ok || over {
		return n
	}
	recs, _ := v.dirContent(dir, false)
	for _, p := range v.parseDir(recs, dir.ID == RootID, false) {
		if p.isDir {
			n++
		}
	}
	v.nlinkMu.Lock()
	v.nlinks[key] = n
	v.nlinkMu.Unlock()
	return n
}

// Open returns a reader of a file's content: its runs on the volume. If the
// cluster chain gave fewer bytes than the file's size, reading the missing
// tail fails with imagefs.ErrCorrupt (it is never zeros); a run past the
// image's end fails with imagefs.ErrBeyondEnd.
func (v *Volume) Open(e *imagefs.Entry) (io.ReaderAt, error) {
	if e == nil || e.Type != 'f' {
		return nil, fmt.Errorf("fat: Open of a non-file")
	}
	rr := imagefs.NewRunReader(v.r, v.size, e.Runs, e.Size)
	var covered int64
	for _, r := range e.Runs {
		covered = max(covered, r.Logical+r.Length)
	}
	if covered >= e.Size {
		return rr, nil
	}
	// Where the chain broke: the FAT entry of its last cluster, or the
	// record's first-cluster field if it has none.
	brk := int64(e.ID) + 26
	if n := len(e.Runs); n > 0 {
		last := e.Runs[n-1]
		c := uint32((last.Offset+last.Length-1-v.geo.dataOff)/v.geo.clusterSize) + 2
		brk = v.fats[0].off + v.geo.entryOffset(c)
	}
	return imagefs.NewShortReader(rr, covered, e.Size, brk,
		fmt.Sprintf("the cluster chain ends %d bytes into a file of %d", covered, e.Size)), nil
}
