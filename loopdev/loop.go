package loopdev

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Where the kernel exposes loop devices. Variables so tests of the parsers
// can point them at fixture trees.
var (
	sysBlock    = "/sys/block"
	devDir      = "/dev"
	loopControl = "/dev/loop-control"
)

// AttachParams says how to attach an image to a loop device.
type AttachParams struct {
	// Offset of the first byte of the device within the image.
	Offset int64
	// SizeLimit is the device's length in bytes; 0 means to the end.
	SizeLimit int64
	// ReadWrite attaches writable; NTT never does, images are evidence.
	ReadWrite bool
	// Autoclear makes the kernel detach the device when its last user
	// (our fd, then the mount) closes it: unmounting then frees the loop.
	Autoclear bool
}

// Loop is one attached loop device as the kernel reports it.
type Loop struct {
	// Device is the node path, /dev/loopN.
	Device string `json:"device"`
	// Number is N.
	Number int `json:"number"`
	// Major and Minor of the block device (as in mountinfo).
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
	// BackingFile is sysfs loop/backing_file without the " (deleted)"
	// suffix the kernel appends once the file is unlinked.
	BackingFile string `json:"backing_file"`
	// Offset and SizeLimit from sysfs loop/offset and loop/sizelimit.
	Offset    int64 `json:"offset"`
	SizeLimit int64 `json:"sizelimit"`
	// Autoclear from sysfs loop/autoclear.
	Autoclear bool `json:"autoclear"`
	// ReadOnly from sysfs ro.
	ReadOnly bool `json:"read_only"`
	// BackingDev and BackingIno identify the backing inode
	// (LOOP_GET_STATUS64 lo_device, lo_inode); zero if the status could
	// not be read.
	BackingDev uint64 `json:"backing_dev"`
	BackingIno uint64 `json:"backing_ino"`
	// Deleted: the backing inode was unlinked (the kernel's " (deleted)"
	// mark, confirmed by stat). A file deleted and recreated under the same
	// name shows up here: the loop still reads the old, deleted inode.
	Deleted bool `json:"deleted"`
	// Replaced: BackingFile now names a different inode although the old
	// one is still linked somewhere (e.g. a hardlink kept it alive).
	Replaced bool `json:"replaced,omitempty"`
}

// LoopError is the error type of loop operations.
type LoopError struct {
	Op     string // "attach", "detach", "list", "status"
	Device string // "" when no device was chosen yet
	Image  string
	Err    error
}

func (e *LoopError) Error() string {
	var b strings.Builder
	b.WriteString("loop ")
	b.WriteString(e.Op)
	if e.Device != "" {
		b.WriteString(" " + e.Device)
	}
	if e.Image != "" {
		b.WriteString(" (image " + e.Image + ")")
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *LoopError) Unwrap() error { return e.Err }

// ErrNoFreeLoop is returned when no loop device could be had after the
// retries (other processes kept taking the free one, or none can be made).
var ErrNoFreeLoop = errors.New("no free loop device")

// attachRetries bounds the free-device race: GET_FREE names a device that
// another process may configure before we do (EBUSY); we ask again.
const attachRetries = 64

// useLoopConfigure is cleared by tests to exercise the fallback path.
var useLoopConfigure = true

// Attached is a loop device this process attached and still holds open.
// While the fd is open an autoclear device stays attached; Close releases
// it (after a mount, the mount keeps it; otherwise autoclear detaches it).
type Attached struct {
	Loop
	f *os.File
}

// Close releases our hold on the device. It does not detach: use Detach.
func (a *Attached) Close() error {
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}

// Detach clears the device (LOOP_CLR_FD) and closes our fd. If the device
// is still in use (mounted), the kernel marks it autoclear and detaches it
// when the last user goes.
func (a *Attached) Detach() error {
	var err error
	if a.f != nil {
		if e := unix.IoctlSetInt(int(a.f.Fd()), unix.LOOP_CLR_FD, 0); e != nil && !errors.Is(e, unix.ENXIO) {
			err = &LoopError{Op: "detach", Device: a.Device, Image: a.BackingFile, Err: e}
		}
		a.f.Close()
		a.f = nil
		return err
	}
	return Detach(a.Device)
}

// Attach attaches image to a free loop device with LOOP_CONFIGURE (one
// atomic ioctl), falling back to LOOP_SET_FD + LOOP_SET_STATUS64 on kernels
// without it (undoing SET_FD if SET_STATUS64 fails). When another process
// configures the device GET_FREE gave us first (EBUSY), it asks again after
// a short random sleep. The returned Attached holds the device open; the
// caller must Close or Detach it.
func Attach(ctx context.Context, image string, p AttachParams) (*Attached, error) {
	if p.Offset < 0 || p.SizeLimit < 0 {
		return nil, &LoopError{Op: "attach", Image: image, Err: fmt.Errorf("negative offset %d or size limit %d", p.Offset, p.SizeLimit)}
	}
	mode := os.O_RDONLY
	if p.ReadWrite {
		mode = os.O_RDWR
	}
	back, err := os.OpenFile(image, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &LoopError{Op: "attach", Image: image, Err: err}
	}
	defer back.Close()
	abs, err := filepath.Abs(image)
	if err != nil {
		abs = image
	}
	ctl, err := os.OpenFile(loopControl, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &LoopError{Op: "attach", Image: image, Err: err}
	}
	defer ctl.Close()

	info := unix.LoopInfo64{Offset: uint64(p.Offset), Sizelimit: uint64(p.SizeLimit)}
	if !p.ReadWrite {
		info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	if p.Autoclear {
		info.Flags |= unix.LO_FLAGS_AUTOCLEAR
	}
	copy(info.File_name[:unix.LO_NAME_SIZE-1], abs)

	var lastErr error
	for try := 0; try < attachRetries; try++ {
		if err := ctx.Err(); err != nil {
			return nil, &LoopError{Op: "attach", Image: image, Err: err}
		}
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, &LoopError{Op: "attach", Image: image, Err: fmt.Errorf("%w: LOOP_CTL_GET_FREE: %w", ErrNoFreeLoop, err)}
		}
		dev := fmt.Sprintf("%s/loop%d", devDir, n)
		f, err := openLoop(dev, p.ReadWrite)
		if err != nil {
			return nil, &LoopError{Op: "attach", Device: dev, Image: image, Err: err}
		}
		err = configure(int(f.Fd()), int(back.Fd()), &info)
		if err == nil {
			l, lerr := readLoop(n)
			if lerr != nil {
				// Attached but unreadable: still ours to hand back.
				l = Loop{Device: dev, Number: n, BackingFile: abs, Offset: p.Offset, SizeLimit: p.SizeLimit}
			}
			return &Attached{Loop: l, f: f}, nil
		}
		f.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, &LoopError{Op: "attach", Device: dev, Image: image, Err: err}
		}
		lastErr = err
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(1+rand.IntN(10)) * time.Millisecond):
		}
	}
	return nil, &LoopError{Op: "attach", Image: image, Err: fmt.Errorf("%w after %d tries: %w", ErrNoFreeLoop, attachRetries, lastErr)}
}

func openLoop(dev string, rw bool) (*os.File, error) {
	// The loop ioctls need the node open; O_RDWR as losetup does, O_RDONLY
	// is enough for a read-only device.
	mode := os.O_RDONLY
	if rw {
		mode = os.O_RDWR
	}
	return os.OpenFile(dev, mode|unix.O_CLOEXEC, 0)
}

// configure sets up the device with LOOP_CONFIGURE, or with the two-step
// fallback when the kernel does not know it (EINVAL/ENOTTY).
func configure(loopFd, backFd int, info *unix.LoopInfo64) error {
	if useLoopConfigure {
		cfg := unix.LoopConfig{Fd: uint32(backFd), Info: *info}
		err := unix.IoctlLoopConfigure(loopFd, &cfg)
		if err == nil || !(errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY)) {
			return err
		}
	}
	if err := unix.IoctlSetInt(loopFd, unix.LOOP_SET_FD, backFd); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(loopFd, info); err != nil {
		_ = unix.IoctlSetInt(loopFd, unix.LOOP_CLR_FD, 0)
		return fmt.Errorf("LOOP_SET_STATUS64: %w", err)
	}
	return nil
}

// Detach clears the loop device at path (LOOP_CLR_FD). A device that is
// already free is not an error. A mounted device is marked autoclear by
// the kernel and goes when unmounted.
func Detach(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &LoopError{Op: "detach", Device: dev, Err: err}
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return &LoopError{Op: "detach", Device: dev, Err: err}
	}
	return nil
}

// List returns every attached loop device, from sysfs and
// LOOP_GET_STATUS64. Devices that detach while being read are left out.
func List() ([]Loop, error) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, &LoopError{Op: "list", Err: err}
	}
	var out []Loop
	for _, e := range ents {
		n, ok := loopNumber(e.Name())
		if !ok {
			continue
		}
		l, err := readLoop(n)
		if errors.Is(err, errNotAttached) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out, nil
}

func loopNumber(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, "loop")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

var errNotAttached = errors.New("loop device not attached")

const deletedSuffix = " (deleted)"

// readLoop reads one device's state. sysfs gives the full backing path
// (LOOP_GET_STATUS64's lo_file_name is cut at 64 bytes); the status ioctl
// gives the backing inode, which tells whether that path still names it.
func readLoop(n int) (Loop, error) {
	name := fmt.Sprintf("loop%d", n)
	dir := filepath.Join(sysBlock, name)
	bf, err := os.ReadFile(filepath.Join(dir, "loop", "backing_file"))
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
		// Not attached, or detached while we read: sysfs answers ENODEV
		// for a device that went between the listing and the read.
		return Loop{}, errNotAttached
	}
	if err != nil {
		return Loop{}, &LoopError{Op: "list", Device: "/dev/" + name, Err: err}
	}
	l := Loop{Device: filepath.Join(devDir, name), Number: n}
	backing := strings.TrimSuffix(string(bf), "\n")
	l.Offset = readInt(filepath.Join(dir, "loop", "offset"))
	l.SizeLimit = readInt(filepath.Join(dir, "loop", "sizelimit"))
	l.Autoclear = readInt(filepath.Join(dir, "loop", "autoclear")) == 1
	l.ReadOnly = readInt(filepath.Join(dir, "ro")) == 1
	if b, err := os.ReadFile(filepath.Join(dir, "dev")); err == nil {
		var maj, min uint32
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &min); err == nil {
			l.Major, l.Minor = maj, min
		}
	}
	if info, err := loopStatus(l.Device); err == nil {
		l.BackingDev, l.BackingIno = info.Device, info.Inode
	} else if errors.Is(err, unix.ENXIO) {
		return Loop{}, errNotAttached
	}
	l.BackingFile = backing
	if cut, ok := strings.CutSuffix(backing, deletedSuffix); ok && !sameInode(backing, l.BackingDev, l.BackingIno) {
		// The kernel appends " (deleted)" to an unlinked file's path; a
		// file really named so would still be the same inode.
		l.BackingFile, l.Deleted = cut, true
	}
	if !l.Deleted && l.BackingIno != 0 {
		l.Replaced = pathNamesOther(l.BackingFile, l.BackingDev, l.BackingIno)
	}
	return l, nil
}

// sameInode reports whether path currently names the inode (dev, ino).
// A file literally named "x (deleted)" is told apart from a deleted "x"
// this way, and so is a file deleted and recreated under the same name.
func sameInode(path string, dev, ino uint64) bool {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false
	}
	if ino == 0 { // status unreadable: existence is all we know
		return true
	}
	return st.Ino == ino && (dev == 0 || st.Dev == dev)
}

// pathNamesOther reports whether path exists and names an inode other than
// (dev, ino). A path we cannot stat (another mount namespace) is not
// evidence of anything.
func pathNamesOther(path string, dev, ino uint64) bool {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false
	}
	return st.Ino != ino || (dev != 0 && st.Dev != dev)
}

func loopStatus(dev string) (*unix.LoopInfo64, error) {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return unix.IoctlLoopGetStatus64(int(f.Fd()))
}

func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v
}

// FindByImage returns the attached loops whose backing inode is image's,
// plus those whose backing path is image's path but whose inode was deleted
// or replaced (stale loops of an earlier copy of the image).
func FindByImage(image string) ([]Loop, error) {
	id, err := identifyImage(image)
	if err != nil {
		return nil, err
	}
	all, err := List()
	if err != nil {
		return nil, err
	}
	var out []Loop
	for _, l := range all {
		if id.matches(l) {
			out = append(out, l)
		}
	}
	return out, nil
}

// imageID identifies an image file by inode and by resolved path.
type imageID struct {
	path     string // absolute, symlinks resolved
	dev, ino uint64
	exists   bool
}

func identifyImage(image string) (imageID, error) {
	abs, err := filepath.Abs(image)
	if err != nil {
		return imageID{}, fmt.Errorf("image %s: %w", image, err)
	}
	id := imageID{path: abs}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		id.path = r
	}
	var st unix.Stat_t
	if err := unix.Stat(id.path, &st); err == nil {
		id.dev, id.ino, id.exists = st.Dev, st.Ino, true
	}
	return id, nil
}

func (id imageID) matches(l Loop) bool {
	if id.exists && l.BackingIno == id.ino && (l.BackingDev == 0 || l.BackingDev == id.dev) {
		return true
	}
	return (l.Deleted || l.Replaced) && l.BackingFile == id.path
}

// Stale reports whether the loop no longer reads the file its path names.
func (l Loop) Stale() bool { return l.Deleted || l.Replaced }
