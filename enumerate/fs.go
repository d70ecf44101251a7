package enumerate

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// dirFS is the handful of system calls the walk makes. The walk goes through
// it so that a test can put a layer in front of a real filesystem that stops
// answering, the way a dying disk does (see the stall test); sysFS is the
// only production implementation.
type dirFS interface {
	// openDir opens name (NUL-terminated) relative to dirfd as a directory,
	// without following a symlink.
	openDir(dirfd int, name []byte) (int, error)
	// getdents reads linux_dirent64 records into buf.
	getdents(fd int, buf []byte) (int, error)
	// lstatAt stats name (NUL-terminated) relative to dirfd without
	// following a symlink.
	lstatAt(dirfd int, name []byte, st *unix.Stat_t) error
	fstat(fd int, st *unix.Stat_t) error
	close(fd int) error
}

type sysFS struct{}

// The names handed to the kernel are NUL-terminated byte slices (d_name in
// the getdents buffer is already terminated), so stat'ing an entry costs no
// allocation, unlike the string-taking wrappers of x/sys/unix.

func (sysFS) openDir(dirfd int, name []byte) (int, error) {
	for {
		fd, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])),
			uintptr(unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(fd), nil
	}
}

func (sysFS) getdents(fd int, buf []byte) (int, error) {
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

func (sysFS) lstatAt(dirfd int, name []byte, st *unix.Stat_t) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_NEWFSTATAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])),
			uintptr(unsafe.Pointer(st)), unix.AT_SYMLINK_NOFOLLOW, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

func (sysFS) fstat(fd int, st *unix.Stat_t) error { return unix.Fstat(fd, st) }

func (sysFS) close(fd int) error { return unix.Close(fd) }

// entryType maps st_mode to the format's type letter.
func entryType(mode uint32) byte {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return TypeFile
	case unix.S_IFDIR:
		return TypeDir
	case unix.S_IFLNK:
		return TypeSymlink
	case unix.S_IFBLK:
		return TypeBlock
	case unix.S_IFCHR:
		return TypeChar
	case unix.S_IFIFO:
		return TypeFIFO
	case unix.S_IFSOCK:
		return TypeSocket
	}
	return 'U' // find's "unknown"; Linux has no other file type
}
