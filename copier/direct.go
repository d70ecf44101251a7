package copier

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Direct reads. A file larger than smallMax on a mounted medium is read
// with O_DIRECT, directChunk bytes at a time into 4096-aligned buffers: its
// bytes go from the medium to the worker's buffer without a stop in the
// page cache. That is one copy of every byte less on a stream bound by CPU
// (read, BLAKE3, write on 2 cores), and a file read exactly once neither
// fills the cache nor makes the kernel reclaim what other work keeps
// there. Measured with bench/copy.sh's 2 GiB file on 2026-12-06, the two
// builds alternating: with every run starting after a fill of memory
// (bench/lib.sh's warm_memory), medians of 6 runs 3.17 s through O_DIRECT
// against 3.10 s through the cache (the same, within noise), and CPU time
// 1.55 s against 1.72 s; with a fill before the first run only, where each
// run takes what memory the VM has (its host takes free memory back), 3.22
// s against 3.92 s, medians of 32 runs: a read through the cache needs
// 2 GiB more memory for a 2 GiB file. Small files gain nothing: their
// reads are small and the window's posix_fadvise (ahead.go) keeps the disk
// busy for them.
//
// The bytes and the errors are those of an ordinary read: a filesystem
// that refuses O_DIRECT (F_SETFL fails: FUSE, tmpfs before Linux 6.6) is
// read through the cache from the start; a read it refuses (EINVAL: an
// alignment it does not accept) and every read after a short one (the
// file's tail, at an unaligned offset) go through the cache from where the
// file is. EIO, the damaged medium's answer, is returned as it comes.
const (
	directChunk = 1 << 20 // no readahead below O_DIRECT: each read is large
	streamMem   = 4 << 20 // a worker's chunks in flight, of either size
)

// directReader reads a file descriptor with O_DIRECT until it cannot.
type directReader struct {
	fd     int
	flags  int // the descriptor's flags before O_DIRECT
	direct bool
}

// readDirect turns O_DIRECT on for fd, or says why not.
func readDirect(fd int) (*directReader, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_DIRECT); err != nil {
		return nil, err
	}
	return &directReader{fd: fd, flags: fl, direct: true}, nil
}

// buffered turns O_DIRECT off: the reads after go through the cache. If
// the flag cannot be cleared, the next read fails and says so.
func (d *directReader) buffered() {
	d.direct = false
	unix.FcntlInt(uintptr(d.fd), unix.F_SETFL, d.flags)
}

func (d *directReader) Read(b []byte) (int, error) {
	n, err := fdReader(d.fd).Read(b)
	if d.direct && errors.Is(err, unix.EINVAL) {
		d.buffered()
		return fdReader(d.fd).Read(b)
	}
	if d.direct && err == nil && n < len(b) {
		d.buffered()
	}
	return n, err
}

// alignedBuf returns n bytes starting at a 4096-byte boundary, the
// alignment O_DIRECT asks of a buffer on any common device.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4095)
	off := int(-uintptr(unsafe.Pointer(&b[0])) & 4095)
	return b[off : off+n : off+n]
}
