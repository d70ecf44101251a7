package enumerate

import (
	"bufio"
	"cmp"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HRDAG/ntt/internal/extfs"
	"golang.org/x/sys/unix"
)

// Read-ahead of an ext2/3/4 medium's metadata for a cold walk.
//
// A cold walk's time goes to the stat of each entry, which waits for the
// disk block of the inode table holding it, and to each directory's own
// blocks. The workers ask for those one at a time each, in an order the
// disk does not like (depth first, not by block). With Options.Prefetch,
// when a walk root is the root of an ext filesystem on a block device (a
// mounted medium), the prefetcher reads what the walk is going to need, in
// disk order, through the block device's page cache, which is the cache
// the filesystem reads its metadata from:
//
//   - the used part of every group's inode table (bg_itable_unused), as one
//     sequential stream, a window of prefetchWindow bytes advised
//     (posix_fadvise WILLNEED) ahead of the chunk being read;
//   - the blocks of every directory whose inode it finds there, advised as
//     soon as the inode is read, so the workers' getdents find them.
//
// It gives up quietly at the first read error (the walk reports the
// damage), reads at most a quarter of the available memory, and stops when
// the walk ends. It is only a hint: the records are the walk's, whatever
// the prefetcher read. The package doc says why it is off by default.

// PrefetchResult says what the read-ahead did.
type PrefetchResult struct {
	Devices         []string // block devices read ahead, e.g. "/dev/loop3"
	InodeTableBytes int64    // inode-table bytes read
	DirectoryBytes  int64    // directory-block bytes advised
	Skipped         []string // roots not read ahead, and why
	// Elapsed is how long the read-ahead ran: until it had read everything,
	// or until the walk ended first (zero when nothing was read ahead).
	Elapsed time.Duration
}

const (
	prefetchChunk  = 1 << 20 // inode-table bytes read (and parsed) at once
	prefetchWindow = 2 << 20 // bytes advised ahead of the read (16 MiB queued too much ahead of the workers' own reads)
)

type prefetcher struct {
	stop chan struct{}   // closed by close
	quit <-chan struct{} // closed when the walk stops early
	done chan struct{}

	mu  sync.Mutex
	res PrefetchResult

	itBytes, dirBytes atomic.Int64
}

// startPrefetch reads ahead for the roots and mount points that are ext
// filesystem roots on block devices, in its own goroutine, until close is
// called or quit is closed.
func startPrefetch(paths []string, quit <-chan struct{}) *prefetcher {
	p := &prefetcher{stop: make(chan struct{}), quit: quit, done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(p.done)
		defer func() {
			if p.itBytes.Load() > 0 {
				p.mu.Lock()
				p.res.Elapsed = time.Since(start)
				p.mu.Unlock()
			}
		}()
		seen := map[uint64]bool{}
		for _, path := range paths {
			var st unix.Stat_t
			if err := unix.Lstat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || seen[st.Dev] {
				continue
			}
			seen[st.Dev] = true
			if st.Ino != extfs.RootIno {
				p.skip(path, "not the root of an ext filesystem")
				continue
			}
			if err := p.device(st.Dev); err != nil {
				p.skip(path, err.Error())
			}
			if p.stopped() {
				return
			}
		}
	}()
	return p
}

func (p *prefetcher) skip(path, why string) {
	p.mu.Lock()
	p.res.Skipped = append(p.res.Skipped, fmt.Sprintf("%q: %s", path, why))
	p.mu.Unlock()
}

func (p *prefetcher) stopped() bool {
	select {
	case <-p.stop:
		return true
	case <-p.quit:
		return true
	default:
		return false
	}
}

// close ends the read-ahead and waits up to wait (forever if negative)
// until it has: one chunk's read at most, unless the disk hangs. Its
// device stays open until then.
func (p *prefetcher) close(wait time.Duration) PrefetchResult {
	close(p.stop)
	if wait < 0 {
		<-p.done
	} else {
		select {
		case <-p.done:
		case <-time.After(wait):
		}
	}
	p.mu.Lock()
	r := p.res
	r.Devices = slices.Clone(r.Devices)
	r.Skipped = slices.Clone(r.Skipped)
	p.mu.Unlock()
	r.InodeTableBytes, r.DirectoryBytes = p.itBytes.Load(), p.dirBytes.Load()
	return r
}

// device reads ahead on the ext filesystem of block device dev.
func (p *prefetcher) device(dev uint64) error {
	f, size, err := extfs.BlockDevice(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	l, err := extfs.ReadLayout(f, size)
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	p.mu.Lock()
	p.res.Devices = append(p.res.Devices, f.Name())
	p.mu.Unlock()

	// The chunks of the used inode tables, in disk order, up to the budget.
	budget := memAvailable() / 4
	var chunks []extfs.Span
	for _, t := range l.InodeTables() {
		for off := int64(0); off < t.N && budget > 0; off += prefetchChunk {
			n := min(prefetchChunk, t.N-off, budget)
			chunks = append(chunks, extfs.Span{Off: t.Off + off, N: n})
			budget -= n
		}
	}
	fd := int(f.Fd())
	buf := make([]byte, prefetchChunk)
	var dirs []extfs.Span
	advised, ahead := 0, int64(0)
	for _, c := range chunks {
		for ; advised < len(chunks) && ahead < prefetchWindow; advised++ {
			a := chunks[advised]
			unix.Fadvise(fd, a.Off, a.N, unix.FADV_WILLNEED)
			ahead += a.N
		}
		if p.stopped() {
			return nil
		}
		n, err := unix.Pread(fd, buf[:c.N], c.Off)
		if err != nil || int64(n) != c.N {
			return nil // damage is the walk's to report
		}
		ahead -= c.N
		p.itBytes.Add(c.N)
		dirs = l.DirSpans(buf[:n], dirs[:0])
		slices.SortFunc(dirs, func(a, b extfs.Span) int { return cmp.Compare(a.Off, b.Off) })
		var advisedDirs int64
		for i := 0; i < len(dirs); {
			s := dirs[i]
			for i++; i < len(dirs) && dirs[i].Off <= s.Off+s.N; i++ {
				s.N = max(s.N, dirs[i].Off+dirs[i].N-s.Off)
			}
			unix.Fadvise(fd, s.Off, s.N, unix.FADV_WILLNEED)
			advisedDirs += s.N
		}
		p.dirBytes.Add(advisedDirs)
	}
	return nil
}

// memAvailable is the kernel's estimate of the memory available without
// swapping (1 GiB if it cannot be read).
func memAvailable() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 1 << 30
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil && kb > 0 {
				return kb << 10
			}
		}
	}
	return 1 << 30
}
