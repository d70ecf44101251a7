package testimg

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// DefaultUUID is the filesystem UUID (and directory hash seed) of images
// whose Spec leaves UUID empty.
const DefaultUUID = "6e747474-6573-7469-6d67-000000000001"

// markerBase is the first atime used to tag staged inodes. mke2fs -d copies
// a staged inode's atime; after mkfs the inode table is scanned for these
// tags to learn which inode number each entry got, then every tag is
// overwritten with the entry's real times.
const markerBase = 0x70000000

// Build builds the image described by spec in a fresh t.TempDir() and
// returns its path. It fails the test on any error. Devices in the tree need
// root (mknod); call RequireRoot first.
func Build(t testing.TB, spec Spec) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "image.img")
	if err := BuildImage(path, spec); err != nil {
		t.Fatal(err)
	}
	return path
}

// inodeSlot is one inode to create: the entry that defines it and the tag.
type inodeSlot struct {
	e   Entry
	ino uint32
}

// BuildImage writes the filesystem image described by spec to path
// (created or replaced; a sparse file). The tree is staged in a temporary
// directory beside path (removed afterwards), copied in by mke2fs -d, and
// then every inode's mode, owner and times are set with debugfs so that they
// are exactly what the spec says, whatever the host's umask, clock or
// mke2fs version does with them. The same spec gives the same bytes.
func BuildImage(path string, spec Spec) error {
	byPath, err := spec.validate()
	if err != nil {
		return err
	}
	stage, err := os.MkdirTemp(stageParent(spec, path), ".testimg-stage-")
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	defer os.RemoveAll(stage)

	slots, err := stageTree(stage, spec, byPath)
	if err != nil {
		return fmt.Errorf("testimg: staging %s: %w", path, err)
	}
	err = mkfs(path, stage, spec, len(slots))
	if err == nil {
		err = findInodes(path, slots)
	}
	if err == nil {
		err = fixInodes(path, spec, slots)
	}
	if err != nil {
		os.Remove(path) // never leave a half-built image to be mistaken for a good one
	}
	return err
}

// stageMemLimit is the most file data staged in /dev/shm; staging in memory
// is several times faster than on a busy disk, bigger trees go beside the
// image.
const stageMemLimit = 256 << 20

// stageParent picks where to stage the tree: /dev/shm when it is a writable
// tmpfs and the tree is small, else the image's directory. The choice
// depends only on the spec and the machine, so a spec still builds the same
// bytes every time on one machine.
func stageParent(spec Spec, image string) string {
	var data int64
	for _, e := range spec.Entries {
		if e.Kind == File {
			if e.Data == nil && e.Sparse {
				data += min(e.Size, 2*SparseBlock)
			} else {
				data += e.FileSize()
			}
		}
	}
	var fs unix.Statfs_t
	if data <= stageMemLimit && unix.Statfs("/dev/shm", &fs) == nil && fs.Type == unix.TMPFS_MAGIC &&
		unix.Access("/dev/shm", unix.W_OK) == nil && int64(fs.Bavail)*fs.Bsize > 4*data {
		return "/dev/shm"
	}
	return filepath.Dir(image)
}

// stageTree creates the tree under dir and returns the inode slots in
// creation order; slot 0 is the root (inode 2). Every staged inode is
// tagged with its slot number in atime as soon as it exists (creating
// children or links does not change an inode's atime).
func stageTree(dir string, spec Spec, byPath map[string]int) ([]*inodeSlot, error) {
	root := &inodeSlot{e: Entry{Kind: Dir}, ino: 2}
	if i, ok := byPath[""]; ok {
		root.e = spec.Entries[i]
	}
	slots := []*inodeSlot{root}
	slotOf := map[string]*inodeSlot{"": root}
	explicit := map[string]bool{"": true}

	st, err := newStager(dir)
	if err != nil {
		return nil, err
	}
	defer st.close()

	// mkdirs creates (as implied directories) the missing parents of p.
	var mkdirs func(p string) error
	mkdirs = func(p string) error {
		parent, _ := split(p)
		if _, ok := slotOf[parent]; ok {
			return nil
		}
		if err := mkdirs(parent); err != nil {
			return err
		}
		s := &inodeSlot{e: Entry{Path: parent, Kind: Dir}}
		if err := st.create(s.e, nil, len(slots)); err != nil {
			return err
		}
		slots = append(slots, s)
		slotOf[parent] = s
		return nil
	}

	for _, e := range spec.Entries {
		if e.Path == "" {
			continue
		}
		if err := mkdirs(e.Path); err != nil {
			return nil, err
		}
		if s, ok := slotOf[e.Path]; ok {
			// Created earlier as an implied parent: this entry now defines it.
			if e.Kind != Dir || explicit[e.Path] {
				return nil, fmt.Errorf("entry %q: already created as a parent directory", e.Path)
			}
			s.e = e
			explicit[e.Path] = true
			continue
		}
		explicit[e.Path] = true
		if e.Kind == Hardlink {
			if err := st.create(e, &slotOf[e.Target].e, 0); err != nil {
				return nil, err
			}
			slotOf[e.Path] = slotOf[e.Target]
			continue
		}
		if err := st.create(e, nil, len(slots)); err != nil {
			return nil, err
		}
		s := &inodeSlot{e: e}
		slots = append(slots, s)
		slotOf[e.Path] = s
	}
	return slots, nil
}

func split(p string) (parent, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// atDir opens the parent directory of p (relative to rootFd) component by
// component, never following symlinks and never building a path longer than
// one name (so trees deeper than PATH_MAX work), and calls fn with it.
func atDir(rootFd int, p string, fn func(dfd int, name string) error) error {
	parent, name := split(p)
	dfd, err := openDir(rootFd, parent)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return fn(dfd, name)
}

// openDir opens directory p relative to rootFd, one component at a time.
func openDir(rootFd int, p string) (int, error) {
	dfd, err := unix.Dup(rootFd)
	if err != nil || p == "" {
		return dfd, err
	}
	for _, c := range strings.Split(p, "/") {
		nfd, err := unix.Openat(dfd, c, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(dfd)
		if err != nil {
			return -1, fmt.Errorf("opening directory %q: %w", c, err)
		}
		dfd = nfd
	}
	return dfd, nil
}

// stager creates entries under a root directory, keeping the last parent
// directory open because entries usually come grouped by directory.
type stager struct {
	root       string
	rootFd     int
	lastParent string
	lastFd     int
}

func newStager(dir string) (*stager, error) {
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &stager{root: dir, rootFd: fd, lastFd: -1}, nil
}

func (s *stager) close() {
	if s.lastFd >= 0 {
		unix.Close(s.lastFd)
	}
	unix.Close(s.rootFd)
}

// parent returns an open descriptor of p's parent directory (owned by the
// stager) and p's last name.
func (s *stager) parent(p string) (int, string, error) {
	parent, name := split(p)
	if s.lastFd >= 0 && parent == s.lastParent {
		return s.lastFd, name, nil
	}
	fd, err := openDir(s.rootFd, parent)
	if err != nil {
		return -1, "", err
	}
	if s.lastFd >= 0 {
		unix.Close(s.lastFd)
	}
	s.lastParent, s.lastFd = parent, fd
	return fd, name, nil
}

// create makes entry e on the staging tree and tags it with slot (in
// atime). target is the entry a Hardlink points at.
func (s *stager) create(e Entry, target *Entry, slot int) error {
	err := func() error {
		var tfd int
		var tname string
		if e.Kind == Hardlink {
			var err error
			if tfd, tname, err = s.parent(target.Path); err != nil {
				return err
			}
			// The next parent() call may close tfd: keep our own copy.
			if tfd, err = unix.Dup(tfd); err != nil {
				return err
			}
			defer unix.Close(tfd)
		}
		dfd, name, err := s.parent(e.Path)
		if err != nil {
			return err
		}
		switch e.Kind {
		case Dir:
			err = unix.Mkdirat(dfd, name, 0o700)
		case File:
			err = writeFile(dfd, name, e)
		case Symlink:
			err = unix.Symlinkat(e.Target, dfd, name)
		case FIFO:
			err = unix.Mknodat(dfd, name, unix.S_IFIFO|0o600, 0)
		case CharDev:
			err = unix.Mknodat(dfd, name, unix.S_IFCHR|0o600, int(unix.Mkdev(e.Major, e.Minor)))
		case BlockDev:
			err = unix.Mknodat(dfd, name, unix.S_IFBLK|0o600, int(unix.Mkdev(e.Major, e.Minor)))
		case Socket:
			err = makeSocket(s.root, dfd, name)
		case Hardlink:
			return unix.Linkat(tfd, tname, dfd, name, 0)
		default:
			err = fmt.Errorf("unknown kind %v", e.Kind)
		}
		if err != nil {
			return err
		}
		// mke2fs -d copies the staged atime: the tag tells which inode
		// number this entry gets.
		ts := []unix.Timespec{{Sec: int64(markerBase + slot)}, {Nsec: unix.UTIME_OMIT}}
		return unix.UtimesNanoAt(dfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
	}()
	if err != nil {
		return fmt.Errorf("entry %q (%v): %w", e.Path, e.Kind, err)
	}
	return nil
}

func writeFile(dfd int, name string, e Entry) error {
	fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	size := e.FileSize()
	write := func(off, end int64) error {
		buf := make([]byte, min(end-off, 1<<20))
		for off < end {
			b := buf[:min(int64(len(buf)), end-off)]
			e.dataAt(b, off)
			if _, err := f.WriteAt(b, off); err != nil {
				return err
			}
			off += int64(len(b))
		}
		return nil
	}
	if e.Data == nil && e.Sparse {
		if err := write(0, min(size, SparseBlock)); err != nil {
			return err
		}
		if err := write(max(SparseBlock, size-SparseBlock), size); err != nil {
			return err
		}
	} else if err := write(0, size); err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Close()
}

// makeSocket binds a unix socket at a short temporary name in the staging
// root (sun_path holds only 108 bytes; a deep name cannot be bound in
// place) and renames the node into place.
func makeSocket(root string, dfd int, name string) error {
	tmp := filepath.Join(root, ".testimg-socket")
	if len(tmp) >= 108 {
		return fmt.Errorf("staging path %s too long to bind a socket", root)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: tmp}); err != nil {
		return err
	}
	return unix.Renameat(unix.AT_FDCWD, tmp, dfd, name)
}

// fakeTime is what mke2fs and debugfs take as "now" (E2FSPROGS_FAKE_TIME):
// superblock times, lost+found and the root's crtime.
func fakeTime() string { return strconv.FormatInt(DefaultMtime.Unix(), 10) }

func e2fsEnv() []string {
	return append(os.Environ(), "E2FSPROGS_FAKE_TIME="+fakeTime(), "SOURCE_DATE_EPOCH="+fakeTime())
}

func mkfs(path, stage string, spec Spec, inodes int) error {
	size := spec.Size
	if size == 0 {
		size = defaultSize(spec)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	uuid := spec.UUID
	if uuid == "" {
		uuid = DefaultUUID
	}
	args := []string{"-t", spec.fsType(), "-F", "-q",
		"-b", strconv.Itoa(spec.blockSize()), "-I", strconv.Itoa(spec.inodeSize()),
		"-U", uuid, "-E", "hash_seed=" + uuid, "-d", stage}
	if n := spec.Inodes; n > 0 || inodes > 1000 {
		args = append(args, "-N", strconv.Itoa(max(n, inodes+64)))
	}
	if spec.Label != "" {
		args = append(args, "-L", spec.Label)
	}
	if len(spec.Features) > 0 {
		args = append(args, "-O", strings.Join(spec.Features, ","))
	}
	args = append(args, path)
	if out, err := run("mke2fs", args...); err != nil {
		return fmt.Errorf("testimg: mke2fs %s: %w: %s", path, err, out)
	}
	return nil
}

// defaultSize fits the tree with room for metadata and a journal.
func defaultSize(spec Spec) int64 {
	bs := int64(spec.blockSize())
	var need int64
	for _, e := range spec.Entries {
		need += bs
		if e.Kind == File {
			sz := e.FileSize()
			if e.Data == nil && e.Sparse {
				sz = min(sz, 2*SparseBlock)
			}
			need += (sz + bs - 1) / bs * bs
		}
	}
	size := max(16<<20, 2*need+8<<20)
	return (size + 1<<20 - 1) &^ (1<<20 - 1)
}

func run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = e2fsEnv()
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return bytes.TrimSpace(out.Bytes()), err
}

// findInodes learns each slot's inode number from its atime tag.
func findInodes(path string, slots []*inodeSlot) error {
	err := scanInodes(path, func(ino uint32, mode uint16, atime uint32) {
		i := int64(atime) - markerBase
		if i >= 1 && i < int64(len(slots)) && ino > 11 {
			slots[i].ino = ino
		}
	})
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	for _, s := range slots {
		if s.ino == 0 {
			return fmt.Errorf("testimg: %s: entry %q not found in the built image", path, s.e.Path)
		}
	}
	return nil
}

// fixInodes sets mode, owner and times of every slot's inode with one
// debugfs run. Inodes are named by number, never by path.
func fixInodes(path string, spec Spec, slots []*inodeSlot) error {
	var script bytes.Buffer
	for _, s := range slots {
		e := s.e
		fmt.Fprintf(&script, "sif <%d> mode 0%o\n", s.ino, e.StatMode())
		fmt.Fprintf(&script, "sif <%d> uid %d\nsif <%d> gid %d\n", s.ino, e.Uid, s.ino, e.Gid)
		t := e.mtime()
		lo := uint32(t.Unix())
		for _, f := range []string{"atime", "mtime", "ctime"} {
			fmt.Fprintf(&script, "sif <%d> %s_lo 0x%x\n", s.ino, f, lo)
			if spec.inodeSize() > 128 {
				fmt.Fprintf(&script, "sif <%d> %s_extra 0x%x\n", s.ino, f, extraTime(t.Unix(), t.Nanosecond()))
			}
		}
	}
	return debugfsScript(path, script.String())
}

// extraTime encodes the ext4 *_extra field: nanoseconds << 2 | epoch bits,
// where seconds = int32(low word) + epoch << 32.
func extraTime(sec int64, nsec int) uint32 {
	epoch := uint32((sec-int64(int32(sec)))>>32) & 3
	return uint32(nsec)<<2 | epoch
}

// debugfsScript runs debugfs -w with the commands in script. debugfs exits 0
// even when a command fails, so anything it writes to stderr besides its
// banner is an error.
func debugfsScript(image, script string) error {
	f, err := os.CreateTemp("", "testimg-debugfs-")
	if err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(script); err != nil {
		f.Close()
		return fmt.Errorf("testimg: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("testimg: %w", err)
	}
	cmd := exec.Command("debugfs", "-w", "-f", f.Name(), image)
	cmd.Env = e2fsEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var problems []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			problems = append(problems, l)
		}
	}
	if err == nil && len(problems) > 0 {
		err = errors.New(strings.Join(problems, "; "))
	}
	if err != nil {
		return fmt.Errorf("testimg: debugfs on %s: %w", image, err)
	}
	return nil
}
