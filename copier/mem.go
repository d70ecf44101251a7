package copier

import "golang.org/x/sys/unix"

// The workers' buffers live outside the Go heap. They are most of what the
// copier holds (per worker smallMax+1 bytes to read a small file whole and
// streamMem of stream chunks: 20 MiB), and on the heap they counted as live
// data, which the garbage collector lets the heap grow to twice of before
// it collects (GOGC=100): the deep bench tree's peak RSS was 240-262 MiB
// against a bound of 256. Mapped anonymously they are not the collector's
// to pace, and only the pages a read has touched are resident: a worker
// that reads files of 20 KiB holds 20 KiB of its 16 MiB (with transparent
// huge pages set to "always", up to 2 MiB; machine F has "madvise").

// mapAnon maps n bytes of zeroed, page-aligned memory outside the Go heap
// (unix.Munmap frees it).
func mapAnon(n int) ([]byte, error) {
	return unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
}

// workerBuf returns n bytes aligned for O_DIRECT, outside the Go heap when
// the mapping succeeds (on the heap otherwise), and the function that frees
// them once nothing reads or writes them any more.
func workerBuf(n int) ([]byte, func()) {
	b, err := mapAnon(n)
	if err != nil {
		return alignedBuf(n), func() {}
	}
	return b, func() { unix.Munmap(b) }
}
