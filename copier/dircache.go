package copier

import (
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// Source directories kept open.
//
// A file is opened beneath the mount by its whole catalogued path, which
// the kernel resolves component by component each time. On a deep tree
// (10 levels) that walk was the copier's largest cost, a sixth of its CPU,
// while the files of a claim mostly sit in a few directories (the claim
// follows inode numbers, and a filesystem gives a directory's files
// neighbouring ones). So the source keeps the last directories it opened
// (O_PATH, resolved beneath the mount as the whole path would be) and
// opens a file by its last component in its directory, with the same
// resolve rules. A directory that will not open is not kept: its file is
// opened by its whole path, so the walk fails where it fails, as before; a
// file that will not open in its directory fails with that error (an EIO
// is not tried twice).
//
// Invariants: an entry's descriptor is closed only when nobody holds it
// (refs == 0), by eviction or by close; at most dirCacheMax entries stay
// open beyond those held.

// dirCacheMax bounds the idle directories kept open per source.
const dirCacheMax = 256

type dirKey struct {
	base   int    // the mount's descriptor (root or partition)
	parent string // the directory, relative to base, not ""
}

type dirEntry struct {
	once sync.Once
	fd   int
	err  error
	refs int    // guarded by dirCache.mu
	used uint64 // guarded by dirCache.mu: the clock of its last use
}

type dirCache struct {
	mu    sync.Mutex
	m     map[dirKey]*dirEntry
	clock uint64
}

// get returns the open directory parent beneath base, held until put.
func (c *dirCache) get(base int, parent string) (*dirEntry, bool) {
	k := dirKey{base, parent}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[dirKey]*dirEntry{}
	}
	e, ok := c.m[k]
	if !ok {
		if len(c.m) >= dirCacheMax {
			c.evictLocked()
		}
		e = &dirEntry{fd: -1}
		c.m[k] = e
	}
	e.refs++
	c.clock++
	e.used = c.clock
	c.mu.Unlock()
	e.once.Do(func() {
		e.fd, e.err = openat2(base, parent, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: beneath,
		})
	})
	if e.err != nil {
		c.mu.Lock()
		e.refs--
		if c.m[k] == e {
			delete(c.m, k) // not kept: the next file tries again
		}
		c.mu.Unlock()
		return nil, false
	}
	return e, true
}

// put gives back an entry from get.
func (c *dirCache) put(e *dirEntry) {
	c.mu.Lock()
	e.refs--
	c.mu.Unlock()
}

// evictLocked closes the least recently used half of the idle entries.
func (c *dirCache) evictLocked() {
	idle := make([]uint64, 0, len(c.m))
	for _, e := range c.m {
		if e.refs == 0 {
			idle = append(idle, e.used)
		}
	}
	if len(idle) == 0 {
		return
	}
	slices.Sort(idle)
	cut := idle[len(idle)/2] // uses are distinct: about half go
	for k, e := range c.m {
		if e.refs == 0 && e.used <= cut {
			if e.fd >= 0 {
				unix.Close(e.fd)
			}
			delete(c.m, k)
		}
	}
}

// close closes every entry; nobody may hold one.
func (c *dirCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if e.fd >= 0 {
			unix.Close(e.fd)
		}
		delete(c.m, k)
	}
}
