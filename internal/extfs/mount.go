package extfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/HRDAG/ntt/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// RootDevice opens the block device of the ext filesystem whose root
// directory is root (st_dev dev) if its device may be read in place of
// system calls (the package doc says when: an ext filesystem mounted at
// root, on a block device, read-only at its superblock, nothing mounted
// beneath it), with the device's size, or says why not. mounts is
// /proc/self/mountinfo.
func RootDevice(root string, dev uint64, mounts []mountinfo.Entry) (*os.File, int64, string) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(root, &sfs); err != nil {
		return nil, 0, err.Error()
	}
	if sfs.Type != unix.EXT4_SUPER_MAGIC {
		return nil, 0, fmt.Sprintf("filesystem type %#x, not ext", sfs.Type)
	}
	abs, err := filepath.Abs(root)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return nil, 0, err.Error()
	}
	var self *mountinfo.Entry
	for i, m := range mounts {
		switch {
		case m.MountPoint == abs && m.Dev == dev:
			self = &mounts[i]
		case strings.HasPrefix(m.MountPoint, abs+"/") || abs == "/" && m.MountPoint != "/":
			return nil, 0, fmt.Sprintf("%q is mounted beneath it", m.MountPoint)
		}
	}
	if self == nil {
		return nil, 0, "not found in /proc/self/mountinfo"
	}
	if !self.SuperReadOnly() {
		return nil, 0, "its filesystem is mounted read-write"
	}
	f, size, err := BlockDevice(dev)
	if err != nil {
		return nil, 0, err.Error()
	}
	return f, size, ""
}

// OpenMount opens the ext filesystem mounted at root (its root
// directory, nothing mounted beneath it, read-only at its superblock, at
// most maxInodes inodes in use) for reading its files straight from its
// block device, or says why it may not. The caller closes the device.
// Once ctx is done the scan stops, and OpenMount says so.
func OpenMount(ctx context.Context, root string, maxInodes int64) (*Files, *os.File, string) {
	var st unix.Stat_t
	if err := unix.Stat(root, &st); err != nil {
		return nil, nil, err.Error()
	}
	if st.Ino != RootIno {
		return nil, nil, "not the root of an ext filesystem"
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		return nil, nil, err.Error()
	}
	f, size, why := RootDevice(root, st.Dev, mounts)
	if why != "" {
		return nil, nil, why
	}
	fd := int(f.Fd())
	x, err := ScanFiles(f, size, func(off, n int64) { unix.Fadvise(fd, off, n, unix.FADV_WILLNEED) }, maxInodes, ctx.Err)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Sprintf("%s: %v", f.Name(), err)
	}
	x.dev = st.Dev
	return x, f, ""
}

// BlockDevice opens the block device whose number is dev, read only, and
// returns its size.
func BlockDevice(dev uint64) (*os.File, int64, error) {
	uevent, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", unix.Major(dev), unix.Minor(dev)))
	if err != nil {
		return nil, 0, fmt.Errorf("no block device %d:%d", unix.Major(dev), unix.Minor(dev))
	}
	var name string
	for _, line := range strings.Split(string(uevent), "\n") {
		if v, ok := strings.CutPrefix(line, "DEVNAME="); ok {
			name = v
		}
	}
	if name == "" || strings.Contains(name, "..") {
		return nil, 0, fmt.Errorf("block device %d:%d has no name", unix.Major(dev), unix.Minor(dev))
	}
	f, err := os.OpenFile("/dev/"+name, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != dev {
		f.Close()
		return nil, 0, fmt.Errorf("/dev/%s is not block device %d:%d", name, unix.Major(dev), unix.Minor(dev))
	}
	size, err := f.Seek(0, 2)
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, size, nil
}
