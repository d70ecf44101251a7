package hfs

import (
	"slices"

	"github.com/HRDAG/ntt/imagefs"
)

// record is one catalog leaf record of a file or directory, HFS or HFS+,
// or the parent and name a directory's thread record gives.
type record struct {
	parent uint32
	name   []byte // raw: MacRoman (HFS) or UTF-16BE (HFS+)
	id     uint32 // the CNID
	dir    bool
	data   []byte // the record's data, in its own format
	off    int64  // volume byte offset of the record (-1: not mapped)
	size   int64  // the record's length in bytes
}

func (r *record) cnid() uint32 { return r.id }

// catalog is what a volume keeps of its catalog B-tree's leaf records,
// HFS and HFS+ alike: files and directories by CNID and by parent, and
// directory threads to rescue a directory whose own record is lost.
type catalog struct {
	opts     *imagefs.Options
	children map[uint32][]*record // by parent CNID, in catalog order
	dirs     map[uint32]*record   // directory records by their CNID
	files    map[uint32]*record   // file records by their CNID
	threads  map[uint32]*record   // directory thread records by the directory's CNID
}

func newCatalog(opts *imagefs.Options) catalog {
	return catalog{opts: opts, children: map[uint32][]*record{}, dirs: map[uint32]*record{},
		files: map[uint32]*record{}, threads: map[uint32]*record{}}
}

// add keeps a file or directory record, once its CNID is claimed.
func (c *catalog) add(r *record) {
	if !c.claim(r) {
		return
	}
	if r.dir {
		c.dirs[r.id] = r
	} else {
		c.files[r.id] = r
	}
	c.children[r.parent] = append(c.children[r.parent], r)
}

// addThread keeps the first thread record of directory id.
func (c *catalog) addThread(id uint32, th *record) {
	if _, dup := c.threads[id]; !dup {
		c.threads[id] = th
	}
}

// claim takes r's CNID for r: a CNID is one file or directory, so a second
// record with a CNID already taken (damage) is reported and left out — no
// ID stands for two contents, no directory is entered twice.
func (c *catalog) claim(r *record) bool {
	id := r.id
	if c.dirs[id] != nil || c.files[id] != nil || (id == RootID && !r.dir) {
		c.opts.Reportf(r.off, "cross_linked", "catalog record %q has CNID %d, already the CNID of another record (or the root's); left out", r.name, id)
		return false
	}
	return true
}

// records counts the file and directory records kept.
func (c *catalog) records() int { return len(c.dirs) + len(c.files) }

func (c *catalog) subdirs(cnid uint32) uint64 {
	n := uint64(0)
	for _, r := range c.children[cnid] {
		if r.dir {
			n++
		}
	}
	return n
}

// rescueDirs finds the directories whose entries were read but whose own
// record was not (it lay in a lost leaf node): a directory with a thread
// record is put back under the parent and name its thread gives, with the
// data dirData makes for it (valence, CNID, the Mac epoch as its dates;
// Kind "rescued"); the entries of one without are reported as orphaned
// (Kind "orphaned"), not reachable from the root.
func (c *catalog) rescueDirs(dirData func(cnid uint32, valence int) []byte) {
	parents := make([]uint32, 0, len(c.children))
	for p := range c.children {
		parents = append(parents, p)
	}
	slices.Sort(parents) // reports and rescued entries in a stable order
	for _, p := range parents {
		if p == 1 || c.dirs[p] != nil {
			continue // 1 is the root's parent, which has no record
		}
		th := c.threads[p]
		if th == nil || th.parent == p || c.files[p] != nil {
			c.opts.Reportf(c.children[p][0].off, "orphaned", "%d catalog records name directory CNID %d as their parent, which has neither a directory record nor a thread; not reachable from the root", len(c.children[p]), p)
			continue
		}
		r := &record{parent: th.parent, name: th.name, id: p, dir: true, data: dirData(p, len(c.children[p])), off: th.off, size: th.size}
		c.dirs[p] = r
		c.children[th.parent] = append(c.children[th.parent], r)
		c.opts.Reportf(th.off, "rescued", "directory CNID %d %q has no directory record; listed from its thread record", p, th.name)
	}
}
