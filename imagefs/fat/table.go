package fat

import (
	"errors"
	"fmt"
	"io"

	"github.com/HRDAG/ntt/imagefs"
)

// table is one copy of the file allocation table as read from the volume:
// the bytes holding entries 0..clusters+1, cut short where the image ends,
// with the sectors that could not be read.
type table struct {
	index   int   // 0 for FAT1, 1 for FAT2
	off     int64 // volume offset
	data    []byte
	badSecs map[int64]bool // sector numbers (from the FAT's start) that failed to read
	secSize int64
}

// readTable reads n bytes of a FAT at off, within the image's size. A read
// error other than the image's end is retried sector by sector, so that
// one bad sector costs only the entries it holds.
func readTable(r io.ReaderAt, size int64, index int, off, n, secSize int64) *table {
	t := &table{index: index, off: off, secSize: secSize}
	if off >= size {
		return t
	}
	n = min(n, size-off)
	t.data = make([]byte, n)
	m, err := r.ReadAt(t.data, off)
	if m == len(t.data) || err == nil || errors.Is(err, io.EOF) {
		t.data = t.data[:m]
		return t
	}
	t.badSecs = map[int64]bool{}
	for s := int64(0); s*secSize < n; s++ {
		end := min((s+1)*secSize, n)
		if k, err := r.ReadAt(t.data[s*secSize:end], off+s*secSize); k < int(end-s*secSize) && err != nil {
			t.badSecs[s] = true
		}
	}
	return t
}

// entry returns cluster c's entry, and false if its bytes could not be read.
func (t *table) entry(g *geometry, c uint32) (uint32, bool) {
	o := g.entryOffset(c)
	w := int64(g.bits+7) / 8 // bytes the entry touches: 2 for FAT12 and FAT16, 4 for FAT32
	if o+w > int64(len(t.data)) {
		return 0, false
	}
	if t.badSecs != nil && (t.badSecs[o/t.secSize] || t.badSecs[(o+w-1)/t.secSize]) {
		return 0, false
	}
	switch g.bits {
	case 12:
		v := uint32(le.Uint16(t.data[o:]))
		if c&1 == 1 {
			return v >> 4, true
		}
		return v & 0x0FFF, true
	case 16:
		return uint32(le.Uint16(t.data[o:])), true
	}
	return le.Uint32(t.data[o:]) & 0x0FFFFFFF, true
}

// Special entry values, for FAT32; FAT12 and FAT16 use the low bits.
func (g *geometry) badMark() uint32 {
	switch g.bits {
	case 12:
		return 0xFF7
	case 16:
		return 0xFFF7
	}
	return 0x0FFFFFF7
}

// chain is a cluster chain turned into runs.
type chain struct {
	runs     []imagefs.Run
	clusters int64
	// problem is the first damage met (nil: the chain ended with an
	// end-of-chain mark after exactly as many clusters as wanted).
	problem *imagefs.Problem
	// from is the FAT the chain was read from (0 or 1).
	from int
}

// follow reads the chain starting at cluster first from FAT t, taking at
// most limit clusters (limit < 0: a directory, up to maxDirBytes). what
// names the chain's owner in problems; at is the volume offset of the
// directory record (or boot sector field) that holds first.
func (v *Volume) follow(t *table, first uint32, limit int64, what string, at int64, budget *int64) chain {
	g := v.geo
	dir := limit < 0
	if dir {
		limit = (maxDirBytes + g.clusterSize - 1) / g.clusterSize
	}
	v.chainMu.Lock()
	defer v.chainMu.Unlock()
	var ch chain
	ch.from = t.index
	prob := func(off int64, kind, format string, args ...any) {
		ch.problem = &imagefs.Problem{Offset: off, Kind: kind, Detail: what + ": " + fmt.Sprintf(format, args...)}
	}
	c, from := first, at
	for {
		if c < 2 || c > g.clusters+1 {
			prob(from, "out_of_volume", "cluster %d is not a data cluster (2..%d)", c, g.clusters+1)
			break
		}
		if ch.clusters == limit {
			if dir {
				prob(from, "long_chain", "the directory goes on past %d bytes (65536 entries); the rest is left out", maxDirBytes)
			} else {
				prob(from, "long_chain", "the chain goes on past the %d clusters the file's size needs; cut at the size", limit)
			}
			break
		}
		if *budget <= 0 {
			prob(from, "cross_linked", "the chains of one directory's entries together pass more clusters than the volume has: they share clusters; this one is not followed past cluster %d", c)
			break
		}
		*budget--
		if v.seen.has(c) {
			prob(from, "loop", "the chain returns to cluster %d after %d clusters", c, ch.clusters)
			break
		}
		v.seen.set(c)
		ch.clusters++
		off := g.clusterOffset(c)
		if n := len(ch.runs); n > 0 && ch.runs[n-1].Offset+ch.runs[n-1].Length == off {
			ch.runs[n-1].Length += g.clusterSize
		} else {
			ch.runs = append(ch.runs, imagefs.Run{Logical: (ch.clusters - 1) * g.clusterSize, Offset: off, Length: g.clusterSize})
		}
		next, ok := t.entry(g, c)
		from = t.off + g.entryOffset(c)
		if !ok {
			prob(from, "corrupt", "the FAT%d entry of cluster %d cannot be read", t.index+1, c)
			break
		}
		if next >= g.badMark()+1 { // end of chain
			if !dir && ch.clusters < limit {
				prob(from, "short_chain", "the chain ends after %d clusters, the size needs %d", ch.clusters, limit)
			}
			break
		}
		switch {
		case next == g.badMark():
			prob(from, "corrupt", "cluster %d's entry marks a bad cluster", c)
		case next == 0:
			prob(from, "corrupt", "cluster %d's entry marks it free", c)
		case next == 1:
			prob(from, "corrupt", "cluster %d's entry holds the reserved value 1", c)
		}
		if ch.problem != nil {
			break
		}
		c = next
	}
	for _, r := range ch.runs {
		for o := r.Offset; o < r.Offset+r.Length; o += g.clusterSize {
			v.seen.clear(uint32((o-g.dataOff)/g.clusterSize) + 2)
		}
	}
	return ch
}

// chainOf reads the chain of an entry's content: from the primary FAT,
// and, if it is broken there and the volume keeps a second copy, from that
// copy; a chain that checks out in the copy only is taken from it (and
// reported as fat_mismatch). Problems of the chain used are reported.
// budget bounds the clusters followed, all chains of one directory
// listing together: on a real volume they are at most its clusters, so a
// hostile one cannot make a listing cost records × clusters.
func (v *Volume) chainOf(first uint32, limit int64, what string, at int64, budget *int64) chain {
	primary := v.fats[0]
	ch := v.follow(primary, first, limit, what, at, budget)
	if ch.problem != nil && ch.problem.Kind != "cross_linked" && len(v.fats) > 1 {
		alt := v.follow(v.fats[1], first, limit, what, at, budget)
		if alt.problem == nil {
			{
				v.opts.Reportf(ch.problem.Offset, "fat_mismatch", "%s: the chain in FAT%d is broken (%s: %s); FAT%d's copy is used",
					what, primary.index+1, ch.problem.Kind, ch.problem.Detail, alt.from+1)
			}
			return alt
		}
	}
	if ch.problem != nil && v.opts.Report != nil {
		v.opts.Report(ch.problem)
	}
	return ch
}

// clusterSet is a bit set of cluster numbers, for loop detection. It
// covers only the clusters whose FAT entries could be read: a chain stops
// at any other cluster, so it can never come back to it.
type clusterSet []uint64

func (s clusterSet) has(c uint32) bool {
	return int(c/64) < len(s) && s[c/64]&(1<<(c%64)) != 0
}

func (s clusterSet) set(c uint32) {
	if int(c/64) < len(s) {
		s[c/64] |= 1 << (c % 64)
	}
}

func (s clusterSet) clear(c uint32) {
	if int(c/64) < len(s) {
		s[c/64] &^= 1 << (c % 64)
	}
}
