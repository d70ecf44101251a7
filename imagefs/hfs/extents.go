package hfs

import (
	"fmt"
	"io"

	"github.com/HRDAG/ntt/imagefs"
)

// extent is an extent descriptor: a start allocation block and a count
// (16-bit on HFS, 32-bit on HFS+).
type extent struct{ start, count uint32 }

// extents decodes an HFS extent record: three 16-bit descriptors.
func extents(b []byte) []extent {
	x := make([]extent, 3)
	for i := range x {
		x[i] = extent{uint32(be.Uint16(b[4*i:])), uint32(be.Uint16(b[4*i+2:]))}
	}
	return x
}

// plusExtents decodes an HFS+ extent record: eight 32-bit descriptors.
func plusExtents(b []byte) []extent {
	x := make([]extent, 8)
	for i := range x {
		x[i] = extent{be.Uint32(b[8*i:]), be.Uint32(b[8*i+4:])}
	}
	return x
}

// extKey keys an extents-overflow record: fork (0 data, 0xFF resource),
// file CNID, the first file allocation block the record maps.
type extKey struct {
	fork  byte
	cnid  uint32
	start uint32
}

// maxRuns bounds the extents of one fork that are mapped; a fork of more
// is read up to them, then fails with imagefs.ErrCorrupt.
const maxRuns = 65536

// allocation is where a volume's allocation blocks lie and its
// extents-overflow records: what maps a fork to runs, for HFS and HFS+.
type allocation struct {
	r        io.ReaderAt
	readSize int64 // where content may be read: the volume's end, or the image's
	report   *imagefs.Options
	base     int64  // byte offset of allocation block 0
	blkSize  int64  // bytes per allocation block
	nBlocks  uint32 // allocation blocks of the volume
	maxFABN  uint64 // the largest file allocation block a key can hold
	overflow map[extKey][]extent
}

// forkRuns maps a fork of size bytes: its first extents, then the
// extents-overflow records of (fork, cnid) from the block where the
// previous ones end, until size is covered. An extent past the volume's
// blocks is reported at recOff and kept (reading it fails with
// ErrBeyondEnd). It returns the runs, trimmed to size, and how many bytes
// they cover.
func (a *allocation) forkRuns(first []extent, cnid uint32, fork byte, size int64, what string, recOff int64) ([]imagefs.Run, int64) {
	var runs []imagefs.Run
	var covered int64
	fabn := uint64(0)
	x, ok := first, true
	for ok && covered < size && len(runs) < maxRuns {
		for _, e := range x {
			if e.count == 0 || covered >= size {
				ok = false
				break
			}
			if uint64(e.start)+uint64(e.count) > uint64(a.nBlocks) {
				a.report.Reportf(recOff, "out_of_volume", "%s (CNID %d): extent of blocks %d+%d runs past the %d allocation blocks of the volume", what, cnid, e.start, e.count, a.nBlocks)
			}
			n := min(int64(e.count)*a.blkSize, size-covered)
			runs = append(runs, imagefs.Run{Logical: covered, Offset: a.base + int64(e.start)*a.blkSize, Length: n})
			covered += n
			fabn += uint64(e.count)
		}
		if !ok || covered >= size || fabn > a.maxFABN {
			break
		}
		x, ok = a.overflow[extKey{fork, cnid, uint32(fabn)}]
	}
	return runs, covered
}

// addOverflow keeps the extents-overflow record k (at volume offset off);
// a second record of the same key is damage, reported and left out.
func (a *allocation) addOverflow(k extKey, x []extent, off int64) {
	if _, dup := a.overflow[k]; dup {
		a.report.Reportf(off, "corrupt", "a second extents-overflow record for CNID %d fork %#x block %d; left out", k.cnid, k.fork, k.start)
		return
	}
	a.overflow[k] = x
}

// btree opens the B-tree file cnid of size bytes whose first extents are
// first (recOff: where they are recorded, for reports); plus: an HFS+
// tree.
func (a *allocation) btree(name string, cnid uint32, first []extent, size int64, recOff int64, plus bool) *btree {
	runs, covered := a.forkRuns(first, cnid, 0, size, name+" file", recOff)
	if covered < size {
		size = covered - covered%nodeSize
	}
	return &btree{name: name, file: imagefs.NewRunReader(a.r, a.readSize, runs, size), runs: runs,
		size: size, plus: plus, opts: a.report}
}

// forkReader reads the fork e (a file's data fork, or a fork Entry) from
// its runs; if the runs cover
// fewer bytes than its size, reading the missing tail fails with
// imagefs.ErrCorrupt at recOff, the file's catalog record.
func (a *allocation) forkReader(e *imagefs.Entry, recOff int64) io.ReaderAt {
	rr := imagefs.NewRunReader(a.r, a.readSize, e.Runs, e.Size)
	var covered int64
	for _, r := range e.Runs {
		covered = max(covered, r.Logical+r.Length)
	}
	if covered >= e.Size {
		return rr
	}
	return imagefs.NewShortReader(rr, covered, e.Size, recOff,
		fmt.Sprintf("the extents of CNID %d end %d bytes into a fork of %d", uint32(e.ID), covered, e.Size))
}
