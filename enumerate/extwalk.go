package enumerate

import (
	"errors"
	"fmt"
	"time"

	"github.com/HRDAG/ntt/internal/extfs"
	"github.com/HRDAG/ntt/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// Direct reading of a mounted ext medium (see internal/extfs for the
// reader).
//
// A walk root is read from its block device instead of through system
// calls when all of these hold, checked before anything is read:
//
//   - it is the root directory of an ext2/3/4 filesystem (inode 2, statfs
//     type 0xEF53) on a block device (a /sys/dev/block entry);
//   - that filesystem is mounted read-only at its superblock (the mount
//     options of /proc/self/mountinfo say ro for the superblock, not only
//     for this mount): nothing can change on the device or wait in the
//     page cache while it is read, so the device holds what lstat would
//     say;
//   - nothing is mounted beneath it (a partition to enter, anything
//     else): find -xdev would record a mount point's own root there, which
//     the device does not hold;
//   - the scan reads the whole tree and every check passes (extfs.Scan).
//
// Otherwise the root is walked through system calls, as before, and
// Result.Direct.Skipped says why. Nothing is written to the sink before the
// scan has passed, so a fallback never duplicates a record. The records
// are the ones lstat gives (TestDirectMatchesKernel compares them on
// every layout the tests build); Options.KernelOnly turns the direct read
// off.

// DirectResult says which roots were read straight from their block
// device, and why the others were not.
type DirectResult struct {
	Roots           []string // walk roots read from their device
	Devices         []string // their devices, e.g. "/dev/loop3"
	InodeTableBytes int64    // inode-table bytes read
	DirectoryBytes  int64    // directory bytes read
	Skipped         []string // roots walked through system calls, and why
	Elapsed         time.Duration
}

// direct reads the queued roots it may from their devices, writes their
// records and takes them off the queue. It runs before the workers start.
func (w *walker) direct() {
	w.mu.Lock()
	roots := append([]*dirTask(nil), w.stack...)
	w.mu.Unlock()
	for _, t := range roots {
		if w.stopping.Load() || !w.tryDirect(t, &w.state[0]) {
			continue
		}
		w.mu.Lock()
		for i, q := range w.stack {
			if q == t {
				w.stack = append(w.stack[:i], w.stack[i+1:]...)
				w.pending--
				break
			}
		}
		w.mu.Unlock()
	}
}

// tryDirect reads the directory t (a walk root, or a partition mount the
// walk enters) from its device and writes its records, counting its work
// in ws; false if it may not, and t is to be walked through system calls.
func (w *walker) tryDirect(t *dirTask, ws *workerState) bool {
	if w.opts.KernelOnly || w.opts.fs != nil {
		return false
	}
	w.mountsOnce.Do(func() { w.mounts, w.mountsErr = mountinfo.Read() })
	start := time.Now()
	why := ""
	if w.mountsErr != nil {
		why = w.mountsErr.Error()
	} else {
		why = w.directRoot(t, w.mounts, ws)
	}
	root := string(t.fullPath())
	w.directMu.Lock()
	defer w.directMu.Unlock()
	if why != "" {
		w.directRes.Skipped = append(w.directRes.Skipped, fmt.Sprintf("%q: %s", root, why))
		if w.opts.Logger != nil {
			w.opts.Logger.Debug("walking through system calls", pathAttr(root), "why", why)
		}
		return false
	}
	w.directRes.Elapsed += time.Since(start)
	return true
}

// directRoot reads one root from its device, or says why it did not.
func (w *walker) directRoot(t *dirTask, mounts []mountinfo.Entry, ws *workerState) string {
	root := string(t.fullPath())
	if t.ino != extfs.RootIno {
		return "not the root of an ext filesystem"
	}
	f, size, why := extfs.RootDevice(root, t.dev, mounts)
	if why != "" {
		return why
	}
	defer f.Close()
	fd := int(f.Fd())
	prev := ws.current.Swap(t)
	defer ws.current.Store(prev)
	tree, err := extfs.Scan(f, size, func(off, n int64) { unix.Fadvise(fd, off, n, unix.FADV_WILLNEED) }, func() error {
		ws.ops.Add(1)
		if w.stopping.Load() {
			return errStopped
		}
		return nil
	})
	if err == nil {
		err = tree.Walk(nil) // a directory reached twice refuses it before anything is written
	}
	if err != nil {
		if errors.Is(err, errStopped) {
			return "" // the walk is over; nothing was written
		}
		return fmt.Sprintf("%s: %v", f.Name(), err)
	}
	w.directMu.Lock()
	w.directRes.Roots = append(w.directRes.Roots, root)
	w.directRes.Devices = append(w.directRes.Devices, f.Name())
	w.directRes.InodeTableBytes += tree.ItableBytes
	w.directRes.DirectoryBytes += tree.DirBytes
	w.directMu.Unlock()
	if w.opts.Logger != nil {
		w.opts.Logger.Debug("read from the block device", pathAttr(root), "device", f.Name(),
			"inode_table_bytes", tree.ItableBytes, "directory_bytes", tree.DirBytes)
	}
	w.emitTree(tree, t, ws)
	return ""
}

var errStopped = errors.New("walk stopped")

// emitTree writes the records of every entry of tree below the root t.
func (w *walker) emitTree(tree *extfs.Tree, t *dirTask, ws *workerState) {
	out := w.getBuf()
	path := append([]byte(nil), t.fullPath()...)
	if len(path) == 0 || path[len(path)-1] != '/' {
		path = append(path, '/') // as find joins: "dir/" + name, never "//"
	}
	base := len(path)
	ws.dirs.Add(1)
	tree.Walk(func(rel []byte, ino uint32, in *extfs.Inode) error {
		if w.stopping.Load() {
			return errStopped
		}
		path = append(path[:base], rel...)
		ws.entries.Add(1)
		ws.ops.Add(1)
		typ := entryType(uint32(in.Mode())) // a type lstat knows: the scan checked
		if typ == TypeDir {
			ws.dirs.Add(1)
		}
		if w.opts.Ignore != nil && w.opts.Ignore.Match(path) {
			w.ignored.Add(1)
			return nil
		}
		rec := Record{Type: typ, Dev: t.dev, Ino: uint64(ino), Nlink: uint64(in.Nlink()), Size: in.Size(), Mtime: in.Mtime(), Path: path}
		out = AppendRecord(out, &rec)
		if len(out) >= outBuffer {
			select {
			case w.out <- out:
				out = w.getBuf()
			case <-w.quit:
				return errStopped
			}
		}
		return nil
	})
	if len(out) > 0 && !w.stopping.Load() {
		select {
		case w.out <- out:
		case <-w.quit:
		}
	}
}
