package diagnose

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNotLoop says that a file's filesystem is not mounted from a loop device.
var ErrNotLoop = errors.New("not on a loop device")

// LoopDevice describes an attached loop device, from sysfs and
// LOOP_GET_STATUS64.
type LoopDevice struct {
	Name      string `json:"name"`       // loop3
	Offset    int64  `json:"offset"`     // byte offset in the backing file (the partition's start)
	SizeLimit int64  `json:"size_limit"` // 0: up to the end of the backing file
	Size      int64  `json:"size"`       // the device's size in bytes
	// BackingFile as the kernel remembers it: the path at attach time, with
	// " (deleted)" appended when the file was removed since.
	BackingFile  string `json:"backing_file"`
	BackingDev   uint64 `json:"-"` // st_dev of the backing file
	BackingInode uint64 `json:"-"` // st_ino of the backing file
}

// Loop describes the loop device name ("loop3" or "/dev/loop3").
func Loop(name string) (LoopDevice, error) {
	name = DeviceName(name)
	d := LoopDevice{Name: name}
	sys := filepath.Join("/sys/block", name)
	var err error
	if d.Offset, err = readSysInt(filepath.Join(sys, "loop", "offset")); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return d, fmt.Errorf("%s: %w (no backing file attached)", name, ErrNotLoop)
		}
		return d, fmt.Errorf("%s: %w", name, err)
	}
	if d.SizeLimit, err = readSysInt(filepath.Join(sys, "loop", "sizelimit")); err != nil {
		return d, fmt.Errorf("%s: %w", name, err)
	}
	sectors, err := readSysInt(filepath.Join(sys, "size"))
	if err != nil {
		return d, fmt.Errorf("%s: %w", name, err)
	}
	d.Size = sectors * 512
	if b, err := os.ReadFile(filepath.Join(sys, "loop", "backing_file")); err == nil {
		d.BackingFile = strings.TrimSuffix(string(b), "\n")
	}
	fd, err := unix.Open("/dev/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return d, fmt.Errorf("opening /dev/%s: %w", name, err)
	}
	defer unix.Close(fd)
	info, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil {
		return d, fmt.Errorf("LOOP_GET_STATUS64 on /dev/%s: %w", name, err)
	}
	d.BackingDev, d.BackingInode = info.Device, info.Inode
	return d, nil
}

// LoopOfDev finds the loop device whose number is dev (a file's st_dev on a
// filesystem mounted from a loop device).
func LoopOfDev(dev uint64) (LoopDevice, error) {
	link := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev))
	target, err := os.Readlink(link)
	if err != nil {
		return LoopDevice{}, fmt.Errorf("device %d:%d: %w", unix.Major(dev), unix.Minor(dev), ErrNotLoop)
	}
	name := filepath.Base(target)
	if !strings.HasPrefix(name, "loop") {
		return LoopDevice{}, fmt.Errorf("device %s: %w", name, ErrNotLoop)
	}
	return Loop(name)
}

// Backs reports whether the loop device reads from the file fi describes.
func (d LoopDevice) Backs(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && d.BackingDev == st.Dev && d.BackingInode == st.Ino
}

// MediumDevices lists the loop devices (loop3, …) attached to image: every
// partition of a medium has its own. Identity is by device and inode of the
// image file, not by path.
func MediumDevices(image string) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Stat(image, &st); err != nil {
		return nil, fmt.Errorf("image %s: %w", image, err)
	}
	entries, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		d, err := Loop(e.Name())
		if err != nil {
			continue // not attached, or detached meanwhile
		}
		if d.BackingDev == st.Dev && d.BackingInode == st.Ino {
			out = append(out, d.Name)
		}
	}
	return out, nil
}

func readSysInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// FileDamage is what the extents check found for one file.
type FileDamage struct {
	Path       string   `json:"path"`
	Size       int64    `json:"size"`
	Method     string   `json:"method"` // fiemap | fibmap
	Loop       string   `json:"loop"`
	LoopOffset int64    `json:"loop_offset"`
	ImageSize  int64    `json:"image_size"`
	Extents    []Extent `json:"extents"`
	Damaged    []Damage `json:"damaged"`
	// DamagedBytes is the sum of Damaged lengths.
	DamagedBytes int64 `json:"damaged_bytes"`
	// BeyondImage: some of the file's data lies past the end of the image.
	BeyondImage bool `json:"beyond_image"`
	// Unmapped bytes have no known location (delayed allocation, or
	// FIEMAP_EXTENT_UNKNOWN) and could not be checked.
	Unmapped int64 `json:"unmapped,omitempty"`
}

// FileDamageOptions say where a file's image is and what is bad in it.
type FileDamageOptions struct {
	// Image is the image file the file's loop device reads; "" takes the
	// loop device's backing file. When given, the loop device must read
	// from it (ErrWrongImage otherwise).
	Image string
	// Bad are the image's unrescued ranges (Mapfile.BadRanges); nil: only
	// data past the end of the image counts as damaged.
	Bad []Range
	// Root, when set, is the mount point the path must stay beneath: the
	// file is opened with openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
	// RESOLVE_NO_XDEV, so a hostile image cannot point the check elsewhere.
	Root string
}

// ErrWrongImage says that a file is not on a loop device of the given image.
var ErrWrongImage = errors.New("file is not on a loop device of this image")

// InspectFile maps the file at path onto its image: extents (FIEMAP or
// FIBMAP), shifted by the loop device's offset, intersected with the bad
// ranges and the image's end. The ioctls can block on a failing
// filesystem, so they run apart and ctx bounds the wait (the blocked
// thread is left behind).
func InspectFile(ctx context.Context, path string, opts FileDamageOptions) (FileDamage, error) {
	return runBounded(ctx, func() (FileDamage, error) { return inspectFile(path, opts) })
}

func inspectFile(path string, opts FileDamageOptions) (FileDamage, error) {
	fd := FileDamage{Path: path}
	var f *os.File
	var err error
	if opts.Root != "" {
		f, err = openBeneath(opts.Root, path)
	} else {
		f, err = os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	}
	if err != nil {
		return fd, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fd, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fd, fmt.Errorf("%s: not a regular file", path)
	}
	fd.Size = st.Size
	loop, err := LoopOfDev(st.Dev)
	if err != nil {
		return fd, fmt.Errorf("%s: %w", path, err)
	}
	fd.Loop, fd.LoopOffset = loop.Name, loop.Offset
	image := opts.Image
	if image == "" {
		image = loop.BackingFile
	}
	ist, err := os.Stat(image)
	if err != nil {
		return fd, fmt.Errorf("image of %s: %w", path, err)
	}
	if opts.Image != "" && !loop.Backs(ist) {
		return fd, fmt.Errorf("%s is on /dev/%s (backing file %s): %w %s", path, loop.Name, loop.BackingFile, ErrWrongImage, opts.Image)
	}
	fd.ImageSize = ist.Size()
	fd.Extents, fd.Method, err = FileExtents(f)
	if err != nil {
		return fd, err
	}
	for _, e := range fd.Extents {
		if e.Flags&(FiemapExtentUnknown|FiemapExtentDelalloc) != 0 {
			fd.Unmapped += e.Length
		}
	}
	fd.Damaged = DamagedRanges(fd.Extents, loop.Offset, fd.ImageSize, opts.Bad)
	for _, d := range fd.Damaged {
		fd.DamagedBytes += d.Length
		fd.BeyondImage = fd.BeyondImage || d.BeyondImage
	}
	if fd.Damaged == nil {
		fd.Damaged = []Damage{}
	}
	return fd, nil
}

// runBounded runs fn apart from the caller and waits for it or ctx. A
// filesystem on a failing image can leave a syscall blocked for good; the
// caller must not be.
func runBounded[T any](ctx context.Context, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := fn()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// openBeneath opens path, which must lie under root, without following
// symlinks or leaving root's filesystem.
func openBeneath(root, path string) (*os.File, error) {
	rel, err := filepath.Rel(root, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("%s is not under %s", path, root)
	}
	dfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat2(dfd, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}
