package copier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// ErrNotMounted says that nothing is mounted at the medium's mount path:
// neither the path itself nor any partition pN beneath it is a mount point.
// The copier refuses to start rather than report every file missing (a
// multi-partition disk mounted at <root>/<hash>/p1 but read at
// <root>/<hash> once produced 21,801 false "file not found").
var ErrNotMounted = errors.New("medium is not mounted")

// ErrUnsafePath says that resolving a catalogued path would follow a
// symlink, or leave the mount it starts in.
var ErrUnsafePath = errors.New("path leaves the mount or passes through a symlink")

// ErrMismatch says that the opened file is not the inode the catalog
// describes (inode number, type or size differ).
var ErrMismatch = errors.New("file does not match the catalog")

// ErrForeignMount says that a mount at <root>/<hash>/pN is not the
// medium's own partition: a bind mount, another image, or any mount on
// top of a single-filesystem medium. Its files are never read: each
// catalogued path beneath it is a path error naming the medium, the mount
// and why.
var ErrForeignMount = errors.New("mount is not the medium's")

var (
	partitionName = regexp.MustCompile(`^p[0-9]+$`)
	loopName      = regexp.MustCompile(`^loop[0-9]+$`)
)

// source is a mounted medium, read beneath its mount root only.
//
// The catalog's paths are relative to the medium root <root>/<hash>. On a
// single-filesystem medium that root is the mount; on a multi-partition
// medium it is a directory holding one mount per partition (p1, p2, …).
// RESOLVE_NO_XDEV forbids crossing into those, so a path whose first
// component is a partition mount is resolved beneath that mount instead:
// /p2/etc/x opens etc/x beneath <root>/<hash>/p2. Nothing else may cross a
// mount, follow a symlink or climb out.
//
// A partition mount is trusted only if it is the medium's own: the medium
// root is not itself a mount (a mount at pN on top of a single filesystem
// is never a partition), loopdev recorded the partition when it mounted
// the medium (<root>/.<hash>.layout.json), the mount's source is the loop
// device it recorded, and that loop still reads the recorded image at the
// partition's recorded offset. Anything else at pN is foreign: the paths
// beneath it are path errors (ErrForeignMount), never opened.
type source struct {
	path     string
	root     int
	parts    map[string]mountDir
	foreign  map[string]string    // partition name → why it is not the medium's
	dirs     dirCache             // directories files were opened in (dircache.go)
	ext      map[string]*extMount // mount point → its device, when read from it (extsource.go); set before extReady closes
	extReady chan struct{}        // closed when the devices' scan is over (nil: no scan)
	extStop  context.CancelFunc   // stops the scan
	isMount  bool                 // the medium root is itself the mount (a single filesystem)
}

type mountDir struct {
	fd   int
	path string
}

func mountID(fd int) (id uint64, isRoot bool, err error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, false, err
	}
	isRoot = stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
	return stx.Mnt_id, isRoot, nil
}

// openSource opens the medium mounted at <root>/<hash> and finds its
// partition mounts.
func openSource(mountRoot string, h medium.Hash) (*source, error) {
	p := h.MountPath(mountRoot)
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("medium %s: %s does not exist: %w", h, p, ErrNotMounted)
		}
		return nil, fmt.Errorf("medium %s: opening mount %s: %w", h, p, err)
	}
	s := &source{path: p, root: fd, parts: map[string]mountDir{}, foreign: map[string]string{}}
	rootID, isMount, err := mountID(fd)
	s.isMount = isMount
	if err != nil {
		s.close()
		return nil, fmt.Errorf("medium %s: statx %s: %w", h, p, err)
	}
	names, err := readDirNames(p)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("medium %s: reading %s: %w", h, p, err)
	}
	for _, name := range names {
		if !partitionName.MatchString(name) {
			continue
		}
		pfd, err := unix.Openat2(fd, name, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			continue // a file or symlink named pN: not a partition mount
		}
		id, _, err := mountID(pfd)
		if err != nil || id == rootID {
			unix.Close(pfd)
			continue
		}
		mp := filepath.Join(p, name)
		var why string
		if isMount {
			why = fmt.Sprintf("medium %s: %s is a mount on top of the medium's filesystem (mounted at %s), not one of its partitions", h, mp, p)
		} else {
			why = trustPartition(h, mountRoot, name, mp, id)
		}
		if why != "" {
			unix.Close(pfd)
			s.foreign[name] = why
			continue
		}
		s.parts[name] = mountDir{fd: pfd, path: mp}
	}
	if !isMount && len(s.parts) == 0 {
		s.close()
		if len(s.foreign) > 0 {
			var whys []string
			for _, w := range s.foreign {
				whys = append(whys, w)
			}
			sort.Strings(whys)
			return nil, fmt.Errorf("medium %s: %s holds no partition mount of the medium's (%s): %w", h, p, strings.Join(whys, "; "), ErrNotMounted)
		}
		return nil, fmt.Errorf("medium %s: %s is not a mount point and holds no partition mount: %w", h, p, ErrNotMounted)
	}
	return s, nil
}

// layoutRecord is the part of loopdev's record of a mount
// (<root>/.<hash>.layout.json, the Layout ntt-mount-helper prints) that
// says which loop device each partition was mounted from.
type layoutRecord struct {
	Image      string `json:"image"`
	Partitions []struct {
		Num    int    `json:"num"`
		Device string `json:"device"`
		Mount  string `json:"mount"`
		Offset int64  `json:"offset"`
		Status string `json:"status"`
	} `json:"partitions"`
}

// trustPartition says why the mount (mount id) at mp, the medium's
// partition directory name, is not the medium's own, or "" if it is.
func trustPartition(h medium.Hash, mountRoot, name, mp string, id uint64) string {
	recPath := h.LayoutRecordPath(mountRoot)
	b, err := os.ReadFile(recPath)
	if err != nil {
		return fmt.Sprintf("medium %s: %s cannot be checked against the layout ntt-mount-helper recorded (%v); unmount and mount the medium again with ntt-mount-helper", h, mp, err)
	}
	var rec layoutRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return fmt.Sprintf("medium %s: layout record %s is unreadable (%v); unmount and mount the medium again with ntt-mount-helper", h, recPath, err)
	}
	for _, p := range rec.Partitions {
		if fmt.Sprintf("p%d", p.Num) != name || filepath.Base(p.Mount) != name || p.Status != "mounted" {
			continue
		}
		dev := filepath.Base(p.Device)
		if !loopName.MatchString(dev) || rec.Image == "" {
			return fmt.Sprintf("medium %s: layout record %s names no loop device and image for %s", h, recPath, mp)
		}
		src, err := mountSource(id)
		if err != nil {
			return fmt.Sprintf("medium %s: %s: %v", h, mp, err)
		}
		if src != p.Device {
			return fmt.Sprintf("medium %s: %s is mounted from %s, not from %s, the loop device of the medium's image %s", h, mp, src, p.Device, rec.Image)
		}
		backing, err := os.ReadFile(filepath.Join("/sys/block", dev, "loop", "backing_file"))
		if err != nil {
			return fmt.Sprintf("medium %s: %s: %s is no longer a loop device (%v)", h, mp, p.Device, err)
		}
		if bf := strings.TrimSuffix(string(backing), "\n"); bf != rec.Image {
			return fmt.Sprintf("medium %s: %s: %s reads %s, not the medium's image %s", h, mp, p.Device, bf, rec.Image)
		}
		off, err := os.ReadFile(filepath.Join("/sys/block", dev, "loop", "offset"))
		if err != nil || strings.TrimSpace(string(off)) != strconv.FormatInt(p.Offset, 10) {
			return fmt.Sprintf("medium %s: %s: %s reads the image from offset %s, not from the partition's offset %d", h, mp, p.Device, strings.TrimSpace(string(off)), p.Offset)
		}
		return ""
	}
	return fmt.Sprintf("medium %s: %s is not a partition ntt-mount-helper mounted (not in %s)", h, mp, recPath)
}

// mountSource returns the source of the mount with the given id, from
// /proc/self/mountinfo.
func mountSource(id uint64) (string, error) {
	es, err := mountinfo.Read()
	if err != nil {
		return "", err
	}
	for _, e := range es {
		if e.ID == id {
			return e.Source, nil
		}
	}
	return "", fmt.Errorf("mount %d is not in /proc/self/mountinfo", id)
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func (s *source) close() {
	s.closeDevices()
	s.dirs.close()
	for _, m := range s.parts {
		unix.Close(m.fd)
	}
	unix.Close(s.root)
}

// base returns the directory fd the catalogued path p (rel, checked)
// resolves beneath, the path left to resolve, and the mount point it lies
// in; a path under a foreign mount is an error (ErrForeignMount).
func (s *source) base(p []byte, rel string) (fd int, rest, mount string, err error) {
	first, r := firstComponent(rel)
	if m, ok := s.parts[first]; ok {
		return m.fd, r, m.path, nil
	}
	if why, ok := s.foreign[first]; ok {
		return -1, "", filepath.Join(s.path, first), &PathError{Op: "open", Path: p, Err: fmt.Errorf("%w: %s", ErrForeignMount, why)}
	}
	return s.root, rel, s.path, nil
}

const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV | unix.RESOLVE_NO_MAGICLINKS

// openat2 retries EAGAIN, which the kernel returns when a concurrent
// rename could have let a RESOLVE_BENEATH walk escape.
func openat2(dirfd int, path string, how *unix.OpenHow) (int, error) {
	for i := 0; ; i++ {
		fd, err := unix.Openat2(dirfd, path, how)
		if err == unix.EINTR || err == unix.EAGAIN && i < 16 {
			continue
		}
		return fd, err
	}
}

// unsafePath turns the errors that mean "the walk would leave the mount or
// follow a symlink" into ErrUnsafePath; other errors keep their errno.
func unsafePath(op string, p []byte, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return &PathError{Op: op, Path: p, Err: fmt.Errorf("%w (%w)", ErrUnsafePath, err)}
	}
	return fmt.Errorf("%s %q: %w", op, p, err)
}

// openFile opens the file at the catalogued path p (rel, checked) for
// reading, beneath the mount. It returns the fd and the mount it is in.
func (s *source) openFile(p []byte, rel string) (int, string, error) {
	dfd, rest, mount, err := s.base(p, rel)
	if err != nil {
		return -1, mount, err
	}
	if rest == "" {
		return -1, mount, &PathError{Op: "open", Path: p, Err: fmt.Errorf("%w: a mount root is not a file", ErrMismatch)}
	}
	how := unix.OpenHow{
		// O_NONBLOCK: a FIFO where the catalog says file must not block the open.
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: beneath,
	}
	if parent, leaf := splitRel(rest); parent != "" {
		if d, ok := s.dirs.get(dfd, parent); ok {
			fd, err := openat2(d.fd, leaf, &how)
			s.dirs.put(d)
			if err != nil {
				return -1, mount, unsafePath("open", p, err)
			}
			return fd, mount, nil
		}
	}
	// The whole path: a file at the top, or one whose directory would not
	// open (the walk then fails where it fails, with that error).
	fd, err := openat2(dfd, rest, &how)
	if err != nil {
		return -1, mount, unsafePath("open", p, err)
	}
	return fd, mount, nil
}

// checkName verifies that the catalogued path p (rel, checked) names the
// regular file with inode number ino, beneath the mount, without reading it.
func (s *source) checkName(p []byte, rel string, ino int64) error {
	dfd, rest, _, err := s.base(p, rel)
	if err != nil {
		return err
	}
	if rest == "" {
		return &PathError{Op: "verify", Path: p, Err: fmt.Errorf("%w: a mount root is not a file", ErrMismatch)}
	}
	fd, err := openat2(dfd, rest, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: beneath,
	})
	if err != nil {
		return unsafePath("open", p, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat %q: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || int64(st.Ino) != ino {
		return &PathError{Op: "verify", Path: p, Err: fmt.Errorf("%w: want file inode %d, found mode %o inode %d", ErrMismatch, ino, st.Mode, st.Ino)}
	}
	return nil
}

// openParent opens the directory holding the catalogued path p (rel,
// checked) as an O_PATH fd beneath the mount, and returns the last
// component's name in it.
func (s *source) openParent(p []byte, rel string) (int, string, error) {
	dfd, rest, _, err := s.base(p, rel)
	if err != nil {
		return -1, "", err
	}
	if rest == "" {
		return -1, "", &PathError{Op: "open", Path: p, Err: fmt.Errorf("%w: a mount root is not a symlink", ErrMismatch)}
	}
	parent, leaf := splitRel(rest)
	if parent == "" {
		parent = "."
	}
	fd, err := openat2(dfd, parent, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: beneath,
	})
	if err != nil {
		return -1, "", unsafePath("open parent of", p, err)
	}
	return fd, leaf, nil
}

// readSymlink reads the target of the symlink at the catalogued path p,
// checking that it is a symlink with inode number ino.
func (s *source) readSymlink(p []byte, rel string, ino int64) (string, error) {
	dfd, leaf, err := s.openParent(p, rel)
	if err != nil {
		return "", err
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, leaf, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return "", fmt.Errorf("stat %q: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK || int64(st.Ino) != ino {
		return "", &PathError{Op: "verify", Path: p, Err: fmt.Errorf("%w: want symlink inode %d, found mode %o inode %d", ErrMismatch, ino, st.Mode, st.Ino)}
	}
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(dfd, leaf, buf)
		if err != nil {
			return "", fmt.Errorf("readlink %q: %w", p, err)
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// checkFile verifies that an opened file is the catalogued inode: a regular
// file with the catalog's inode number and size. It returns the live st_dev.
func checkFile(fd int, p []byte, ino, size int64) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("fstat %q: %w", p, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return st.Dev, &PathError{Op: "verify", Path: p, Err: fmt.Errorf("%w: not a regular file (mode %o)", ErrMismatch, st.Mode)}
	case int64(st.Ino) != ino:
		return st.Dev, &PathError{Op: "verify", Path: p, Err: fmt.Errorf("%w: inode %d, catalog says %d", ErrMismatch, st.Ino, ino)}
	case st.Size != size:
		return st.Dev, &PathError{Op: "verify", Path: p, Err: fmt.Errorf("%w: size %d, catalog says %d", ErrMismatch, st.Size, size)}
	}
	return st.Dev, nil
}
