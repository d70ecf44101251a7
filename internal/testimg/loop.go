package testimg

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/mountinfo"
	"github.com/HRDAG/ntt/internal/testenv"
	"golang.org/x/sys/unix"
)

// RequireRoot skips the test when not root, or fails it under CI=true
// (see internal/testenv).
func RequireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
}

// Loop is a read-only loop device attached by AttachLoop.
type Loop struct {
	Path   string // /dev/loopN
	Offset int64  // byte offset into the backing file
	Size   int64  // size limit in bytes; 0 = to the end of the file
	fd     int
}

// AttachLoop attaches image read-only to a free loop device, starting at
// byte offset and limited to size bytes (0: to the end of the file), and
// returns it. The device is configured with autoclear and its descriptor
// stays open until the test ends: closing it in t.Cleanup (after any mount
// made later is unmounted) frees the device, and if the test binary dies
// the kernel frees it anyway. It uses the loop ioctls directly, no losetup.
func AttachLoop(t testing.TB, image string, offset, size int64) *Loop {
	t.Helper()
	return attachLoop(t, image, offset, size, false)
}

// AttachLoopWritable is AttachLoop for a test that writes to the image
// through the kernel (a read-write mount) before reading it.
func AttachLoopWritable(t testing.TB, image string) *Loop {
	t.Helper()
	return attachLoop(t, image, 0, 0, true)
}

func attachLoop(t testing.TB, image string, offset, size int64, writable bool) *Loop {
	t.Helper()
	l, err := attach(image, offset, size, writable)
	if err != nil {
		t.Fatalf("testimg: attaching %s at offset %d: %v", image, offset, err)
	}
	t.Cleanup(func() {
		if err := l.detach(); err != nil {
			t.Errorf("testimg: %v", err)
		}
	})
	return l
}

func attach(image string, offset, size int64, writable bool) (*Loop, error) {
	mode, flags := os.O_RDONLY, uint32(unix.LO_FLAGS_READ_ONLY)
	if writable {
		mode, flags = os.O_RDWR, 0
	}
	f, err := os.OpenFile(image, mode, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(ctl)
	// Another process may take the free device between GET_FREE and
	// CONFIGURE; that shows as EBUSY, and we try the next one.
	for range 100 {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		fd, err := unix.Open(dev, mode|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
		cfg.Info.Offset = uint64(offset)
		cfg.Info.Sizelimit = uint64(size)
		cfg.Info.Flags = flags | unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], image)
		err = unix.IoctlLoopConfigure(fd, &cfg)
		if err == nil {
			return &Loop{Path: dev, Offset: offset, Size: size, fd: fd}, nil
		}
		unix.Close(fd)
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("LOOP_CONFIGURE %s: %w", dev, err)
		}
		time.Sleep(time.Millisecond)
	}
	return nil, errors.New("no free loop device after 100 tries")
}

// detach closes our descriptor (autoclear then frees the device once no
// mount uses it) and clears the device explicitly if it is still bound to
// our file and unused.
func (l *Loop) detach() error {
	if l.fd < 0 {
		return nil
	}
	err := unix.IoctlSetInt(l.fd, unix.LOOP_CLR_FD, 0)
	if errors.Is(err, unix.ENXIO) {
		err = nil // already cleared
	}
	if cerr := unix.Close(l.fd); err == nil {
		err = cerr
	}
	l.fd = -1
	if err != nil {
		return fmt.Errorf("detaching %s: %w", l.Path, err)
	}
	return nil
}

// Mount options for read-only mounts of possibly dirty ext3/ext4 images:
// noload skips the journal, so nothing is replayed and the mount never needs
// to write (ext3 is served by the ext4 driver, which takes the same option).
const roFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME

// MountOptions returns the data string Mount uses for fstype so that a
// read-only mount never replays a journal: "noload" for ext3/ext4,
// "norecovery" for xfs, "" otherwise.
func MountOptions(fstype string) string {
	switch fstype {
	case "ext3", "ext4":
		return "noload"
	case "xfs":
		return "norecovery"
	}
	return ""
}

// TryMount mounts dev read-only (ro,nosuid,nodev,noexec,noatime plus data)
// on dir and returns the mount(2) error unwrapped, for tests that expect a
// mount to fail. A successful mount is not undone: use Mount for that.
func TryMount(dev, dir, fstype, data string) error {
	return unix.Mount(dev, dir, fstype, roFlags, data)
}

// Mount mounts dev read-only on a fresh t.TempDir() with fstype and data
// (MountOptions(fstype) if data is ""), returns the mount point, and
// unmounts it in t.Cleanup. It fails the test if the mount fails.
func Mount(t testing.TB, dev, fstype, data string) string {
	t.Helper()
	if data == "" {
		data = MountOptions(fstype)
	}
	dir := t.TempDir()
	if err := TryMount(dev, dir, fstype, data); err != nil {
		t.Fatalf("testimg: mount -t %s -o ro,%s %s %s: %v", fstype, data, dev, dir, err)
	}
	t.Cleanup(func() {
		if err := unmount(dir); err != nil {
			t.Errorf("testimg: %v", err)
		}
	})
	return dir
}

// unmount retries briefly on EBUSY (a reader may still be closing), then
// detaches lazily so that the loop device is freed when it is no longer used.
func unmount(dir string) error {
	var err error
	for range 50 {
		if err = unix.Unmount(dir, 0); err == nil || errors.Is(err, unix.EINVAL) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if lerr := unix.Unmount(dir, unix.MNT_DETACH); lerr == nil {
		return fmt.Errorf("unmounting %s: %w (detached lazily)", dir, err)
	}
	return fmt.Errorf("unmounting %s: %w", dir, err)
}

// MountImage attaches image (from offset, size bytes; 0 = to the end)
// read-only and mounts it read-only with MountOptions(fstype). It returns the
// mount point; the mount and the loop device go away when the test ends.
func MountImage(t testing.TB, image string, offset, size int64, fstype string) string {
	t.Helper()
	l := AttachLoop(t, image, offset, size)
	return Mount(t, l.Path, fstype, "")
}

// Mounted reports whether dir is a mount point listed in /proc/self/mountinfo.
func Mounted(dir string) (bool, error) {
	es, err := mountinfo.Read()
	if err != nil {
		return false, err
	}
	for _, e := range es {
		if e.MountPoint == dir {
			return true, nil
		}
	}
	return false, nil
}
