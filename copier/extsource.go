package copier

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/extfs"
	"github.com/HRDAG/ntt/internal/medium"
	"golang.org/x/sys/unix"
)

// Reading a mounted ext medium's files from its block device.
//
// Opening a file beneath the mount costs the kernel a cold lookup and a
// cold inode per file (openat2, fstat, advice, read, close: five system
// calls); on 2 cores that is a sixth of the machine during a tree copy
// (doc.go, "Where the time goes"). When a mount of the medium is an ext
// filesystem that may be read straight from its device (its root,
// read-only at its superblock, nothing mounted beneath it, a scan whose
// every check passes: see extfs.OpenMount), the copier scans it
// once when the run starts and then, for a claimed file of up to smallMax
// bytes, resolves every catalogued path in that scan (no symlink passed,
// nothing outside the filesystem, each name leading to the catalogued
// inode), checks the inode read again from the device (a regular file,
// the catalogued size, its checksum and fields as the kernel checks them),
// and reads its content by its extents or block map: one read per run.
// Those reads and the inode's go through the device's chunk cache
// (chunks.go), so neighbouring small files share one read and one advice.
//
// The device holds what the mount shows: the filesystem is read-only at
// its superblock, so nothing waits in the page cache or changes on the
// device. Anything the device reader does not take exactly as the kernel
// would (a path it cannot resolve, a file not as catalogued, an inode or
// extent that does not check out, flags it does not follow) sends the file
// to the mount, whose errors are the ones recorded: reading from the
// device never turns a failure into a success or changes an error.
// Larger files keep the mount's direct reads (direct.go). Not used with a
// DamageMapper (which maps an open file's extents) or Options.KernelOnly.

// deviceMaxInodes bounds the filesystems read from their device: the scan
// is kept for the run, about 60 bytes per entry (120 MB here), where the
// mount's reads keep nothing per file. A larger filesystem is read
// through its mount.
const deviceMaxInodes = 2 << 20

// extMount is one mount of the medium read from its device.
type extMount struct {
	files  *extfs.Files
	dev    *os.File
	chunks *chunkCache // small reads of dev after the scan: FileRuns' and the files'
}

// scanDevices scans, in the background, every ext mount of the medium
// that may be read from its device, logging which are and why the others
// are not. The run meanwhile prepares the catalog (its indexes, orphaned
// claims, the count of files left), which on the wide bench tree takes
// about as long as the scan (0.4 and 0.7 s) and, being PostgreSQL's work,
// runs on the other core; the first file opened waits for the scan.
func (s *source) scanDevices(log *slog.Logger, h medium.Hash) {
	mounts := map[string]bool{}
	if s.isMount {
		mounts[s.path] = true
	}
	for _, m := range s.parts {
		mounts[m.path] = true
	}
	ctx, stop := context.WithCancel(context.Background())
	s.extStop, s.extReady = stop, make(chan struct{})
	go func() {
		defer close(s.extReady)
		ext := map[string]*extMount{}
		for mp := range mounts {
			files, dev, no := extfs.OpenMount(ctx, mp, deviceMaxInodes)
			if no != "" {
				log.Info("reading files through the mount", "medium", h, "why", fmt.Sprintf("%s: %s", mp, no))
				continue
			}
			chunks, err := newChunkCache(dev, int(dev.Fd()), files.DeviceSize())
			if err != nil {
				dev.Close()
				log.Info("reading files through the mount", "medium", h, "why", fmt.Sprintf("%s: %v", mp, err))
				continue
			}
			files.ReadThrough(chunks)
			log.Info("reading files from the block device", "medium", h, "mount", mp, "device", dev.Name())
			ext[mp] = &extMount{files: files, dev: dev, chunks: chunks}
		}
		if len(ext) > 0 {
			s.ext = ext
		}
	}()
}

// openFromDevice opens the claimed inode n from its mount's device, or
// returns nil when the mount is to be used (see above).
func (s *source) openFromDevice(n *inode, rels []string) *openedFile {
	if s.extReady == nil || n.Size > smallMax || n.Ino <= 0 || n.Ino > math.MaxUint32 {
		return nil
	}
	<-s.extReady
	if s.ext == nil {
		return nil
	}
	var em *extMount
	var mount string
	for i, rel := range rels {
		_, rest, mp, err := s.base(n.Paths[i], rel)
		if err != nil || rest == "" || em != nil && mp != mount {
			return nil
		}
		em, mount = s.ext[mp], mp
		if em == nil {
			return nil
		}
		if ino, size, ok := em.files.LookupFile(rest); !ok || int64(ino) != n.Ino || size != n.Size {
			return nil
		}
	}
	size, runs, err := em.files.FileRuns(uint32(n.Ino))
	if err != nil || size != n.Size {
		return nil
	}
	name := filepath.Join(mount, rels[0])
	r := &seqReader{ra: imagefs.NewRunReader(em.chunks, em.files.DeviceSize(), runs, size), size: size, wrap: func(err error) error {
		return fmt.Errorf("reading %s from device %s: %w", name, em.dev.Name(), err)
	}}
	return &openedFile{r: r, idx: 0, name: name, mount: mount, dev: em.files.MountDev(), fd: -1, devChunks: em.chunks, devRuns: runs}
}

// closeDevices stops the scan if it still runs, and closes the devices.
func (s *source) closeDevices() {
	if s.extReady == nil {
		return
	}
	s.extStop()
	<-s.extReady
	for _, em := range s.ext {
		em.chunks.close()
		em.dev.Close()
	}
}

// adviseRuns asks fd for the bytes of a file's first n bytes, run by run
// (runs in fd's offsets).
func adviseRuns(fd int, runs []imagefs.Run, n int64) {
	storedRanges(runs, n, func(off, length int64) {
		unix.Fadvise(fd, off, length, unix.FADV_WILLNEED)
	})
}

// storedRanges calls fn with the stored byte ranges (offsets in the
// runs' volume) of a file's first n bytes, in order; holes have none.
func storedRanges(runs []imagefs.Run, n int64, fn func(off, length int64)) {
	for _, r := range runs {
		if r.Logical >= n {
			return
		}
		if !r.Hole {
			fn(r.Offset, min(r.Length, n-r.Logical))
		}
	}
}

// seqReader reads a file's content from ra sequentially, size bytes, and
// passes every failure through wrap (which names where it was read).
type seqReader struct {
	ra   io.ReaderAt
	off  int64
	size int64
	wrap func(error) error
}

func (r *seqReader) Read(b []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if rem := r.size - r.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	n, err := r.ra.ReadAt(b, r.off)
	r.off += int64(n)
	if err == io.EOF {
		if r.off < r.size {
			// The reader ended before the size it gave: a short file is
			// never stored as if whole.
			return n, r.wrap(fmt.Errorf("%w: content ends at byte %d of %d", imagefs.ErrCorrupt, r.off, r.size))
		}
		err = nil
	}
	if err != nil {
		return n, r.wrap(err)
	}
	return n, nil
}
