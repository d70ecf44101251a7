package copier

import (
	"io"
	"sync"

	"github.com/HRDAG/ntt/imagefs"
	"golang.org/x/sys/unix"
)

// Shared reads of a device. Read from an ext mount's device
// (extsource.go), a small file cost three system calls: the inode read
// again, the advice for its blocks, the read of its content, each a few
// kilobytes or less. Neighbouring files (a batch is claimed in inode
// order) have their inodes in the same inode table block and, mostly,
// their content in neighbouring blocks; on a machine where a system call
// is dear, one call per file for each of the three was a tenth of the
// copy's CPU. So small reads of the device go through a chunkCache: the
// device in chunks of chunkSize bytes, a few of them kept in memory, each
// read with one pread and then served to every small read inside it; and
// the advice is given once per chunk.
//
// Invariants:
//   - What a read returns is what a pread of the device returns: a chunk
//     is kept only when it was read whole; any other read (a larger one,
//     one past the device's end, one inside a chunk whose read failed or
//     came short) goes to the device itself, so its error is the device's
//     own. The device does not change under the run (extfs.OpenMount:
//     its filesystem is read-only at its superblock), so a kept chunk
//     stays true.
//   - A damaged area costs what it cost without the cache: a chunk whose
//     read failed is remembered and never read whole again, and its reads
//     and advice go to the device for exactly the bytes asked for.
//   - Memory is bounded: chunkSlots chunks in one mapping made when the
//     cache is, outside the Go heap like the workers' buffers (mem.go says
//     why); a chunk is reused only once no read is copying from it. When
//     every slot is in use, a read goes to the device.
const (
	chunkSize  = 128 << 10
	chunkSlots = 64
	// advisedMax bounds the memory of chunks advised; past it, it starts
	// again (advising a chunk twice costs a system call, nothing more).
	advisedMax = 1 << 14
	// failedMax bounds the memory of chunks whose read failed; past it,
	// a failed chunk may be read whole again.
	failedMax = 1 << 14
)

type chunkCache struct {
	dev  io.ReaderAt
	fd   int // for advice
	size int64

	arena []byte // chunkSlots × chunkSize

	mu      sync.Mutex
	slots   [chunkSlots]chunkSlot
	where   map[int64]int // chunk index → slot
	clock   uint64
	advised map[int64]struct{}
	failed  map[int64]struct{} // chunks whose read failed or came short
	closed  bool
}

type chunkSlot struct {
	idx   int64 // the chunk it holds; -1: free
	ok    bool  // read whole (set before ready is closed)
	refs  int   // reads waiting for it or copying from it
	used  uint64
	ready chan struct{} // closed once read
}

// newChunkCache serves small reads of dev (size bytes; fd for advice). It
// fails only when its memory cannot be mapped.
func newChunkCache(dev io.ReaderAt, fd int, size int64) (*chunkCache, error) {
	arena, err := mapAnon(chunkSlots * chunkSize)
	if err != nil {
		return nil, err
	}
	c := &chunkCache{dev: dev, fd: fd, size: size, arena: arena, where: map[int64]int{},
		advised: map[int64]struct{}{}, failed: map[int64]struct{}{}}
	for i := range c.slots {
		c.slots[i].idx = -1
	}
	return c, nil
}

// close frees the cache's memory. Reads that follow go to the device; a
// read still copying from a chunk (none should be: the source is closed
// after its workers) keeps the memory mapped.
func (c *chunkCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for i := range c.slots {
		if c.slots[i].refs > 0 {
			return
		}
	}
	if c.arena != nil {
		unix.Munmap(c.arena)
		c.arena = nil
	}
}

// cached says whether a read of n bytes at off is served by chunks: it
// lies within the device and spans at most two chunks.
func (c *chunkCache) cached(off, n int64) bool {
	return off >= 0 && n > 0 && n <= chunkSize && off <= c.size-n
}

// ReadAt reads len(p) bytes at off, as a pread of the device would.
func (c *chunkCache) ReadAt(p []byte, off int64) (int, error) {
	if !c.cached(off, int64(len(p))) {
		return c.dev.ReadAt(p, off)
	}
	// Take every chunk first: a read is served whole by the cache or
	// whole by the device.
	first, last := off/chunkSize, (off+int64(len(p))-1)/chunkSize
	var held [2]int
	k := 0
	for idx := first; idx <= last; idx++ {
		s := c.take(idx)
		if s < 0 {
			break
		}
		held[k] = s
		k++
	}
	defer c.release(held[:k]...)
	if int64(k) <= last-first {
		return c.dev.ReadAt(p, off)
	}
	n := 0
	for _, s := range held[:k] {
		data := c.arena[s*chunkSize : (s+1)*chunkSize]
		base := c.slots[s].idx * chunkSize
		n += copy(p[n:], data[off+int64(n)-base:])
	}
	return n, nil
}

// take returns the slot holding chunk idx, read whole, with a reference
// held; -1 if it cannot be had (no free slot, or its read failed).
func (c *chunkCache) take(idx int64) int {
	c.mu.Lock()
	if _, bad := c.failed[idx]; bad || c.closed {
		c.mu.Unlock()
		return -1
	}
	c.clock++
	if s, ok := c.where[idx]; ok {
		sl := &c.slots[s]
		sl.refs++
		sl.used = c.clock
		ready := sl.ready
		c.mu.Unlock()
		<-ready
		if !sl.ok { // read only by its loader, under its reference
			c.release(s)
			return -1
		}
		return s
	}
	s := -1
	for i := range c.slots {
		sl := &c.slots[i]
		if sl.refs == 0 && (s < 0 || sl.used < c.slots[s].used) {
			s = i
		}
	}
	if s < 0 {
		c.mu.Unlock()
		return -1
	}
	sl := &c.slots[s]
	if sl.idx >= 0 {
		delete(c.where, sl.idx)
	}
	ready := make(chan struct{})
	*sl = chunkSlot{idx: idx, refs: 1, used: c.clock, ready: ready}
	c.where[idx] = s
	c.mu.Unlock()

	want := min(chunkSize, c.size-idx*chunkSize)
	got, _ := c.dev.ReadAt(c.arena[s*chunkSize:s*chunkSize+int(want)], idx*chunkSize)
	sl.ok = int64(got) == want
	close(ready)
	if !sl.ok {
		c.mu.Lock()
		sl.refs--
		delete(c.where, idx)
		sl.idx, sl.used = -1, 0 // free once its waiters are gone
		if len(c.failed) < failedMax {
			c.failed[idx] = struct{}{}
		}
		c.mu.Unlock()
		return -1
	}
	return s
}

// release drops a reference to each of slots.
func (c *chunkCache) release(slots ...int) {
	c.mu.Lock()
	for _, s := range slots {
		c.slots[s].refs--
	}
	c.mu.Unlock()
}

// advise asks the device for the chunks that hold the first n bytes of a
// file stored as runs, each chunk once; runs too large for the cache are
// asked for as they are.
func (c *chunkCache) advise(runs []imagefs.Run, n int64) {
	storedRanges(runs, n, func(off, length int64) {
		if !c.cached(off, length) {
			unix.Fadvise(c.fd, off, length, unix.FADV_WILLNEED)
			return
		}
		for idx := off / chunkSize; idx <= (off+length-1)/chunkSize; idx++ {
			c.mu.Lock()
			_, done := c.advised[idx]
			_, in := c.where[idx]
			_, bad := c.failed[idx]
			if !done && !in && !bad {
				if len(c.advised) >= advisedMax {
					clear(c.advised)
				}
				c.advised[idx] = struct{}{}
			}
			c.mu.Unlock()
			switch {
			case bad:
				lo, hi := max(off, idx*chunkSize), min(off+length, (idx+1)*chunkSize)
				unix.Fadvise(c.fd, lo, hi-lo, unix.FADV_WILLNEED)
			case !done && !in:
				unix.Fadvise(c.fd, idx*chunkSize, min(chunkSize, c.size-idx*chunkSize), unix.FADV_WILLNEED)
			}
		}
	})
}
