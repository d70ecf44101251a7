package copier

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/HRDAG/ntt/internal/medium"
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

var partitionName = regexp.MustCompile(`^p[0-9]+$`)

// source is a mounted medium, read beneath its mount root only.
//
// The catalog's paths are relative to the medium root <root>/<hash>. On a
// single-filesystem medium that root is the mount; on a multi-partition
// medium it is a directory holding one mount per partition (p1, p2, …).
// RESOLVE_NO_XDEV forbids crossing into those, so a path whose first
// component is a partition mount is resolved beneath that mount instead:
// /p2/etc/x opens etc/x beneath <root>/<hash>/p2. Nothing else may cross a
// mount, follow a symlink or climb out.
type source struct {
	path  string
	root  int
	parts map[string]mountDir
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
	s := &source{path: p, root: fd, parts: map[string]mountDir{}}
	rootID, isMount, err := mountID(fd)
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
		s.parts[name] = mountDir{fd: pfd, path: filepath.Join(p, name)}
	}
	if !isMount && len(s.parts) == 0 {
		s.close()
		return nil, fmt.Errorf("medium %s: %s is not a mount point and holds no partition mount: %w", h, p, ErrNotMounted)
	}
	return s, nil
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
	for _, m := range s.parts {
		unix.Close(m.fd)
	}
	unix.Close(s.root)
}

// base returns the directory fd a relative path resolves beneath, the path
// left to resolve, and the mount point it lies in.
func (s *source) base(rel string) (fd int, rest, mount string) {
	first, r := firstComponent(rel)
	if m, ok := s.parts[first]; ok {
		return m.fd, r, m.path
	}
	return s.root, rel, s.path
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

// unsafe turns the errors that mean "the walk would leave the mount or
// follow a symlink" into ErrUnsafePath; other errors keep their errno.
func unsafe(op string, p []byte, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return &PathError{Op: op, Path: p, Err: fmt.Errorf("%w (%w)", ErrUnsafePath, err)}
	}
	return fmt.Errorf("%s %q: %w", op, p, err)
}

// openFile opens the file at the catalogued path p (rel, checked) for
// reading, beneath the mount. It returns the fd and the mount it is in.
func (s *source) openFile(p []byte, rel string) (int, string, error) {
	dfd, rest, mount := s.base(rel)
	if rest == "" {
		return -1, mount, &PathError{Op: "open", Path: p, Err: fmt.Errorf("%w: a mount root is not a file", ErrMismatch)}
	}
	fd, err := openat2(dfd, rest, &unix.OpenHow{
		// O_NONBLOCK: a FIFO where the catalog says file must not block the open.
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: beneath,
	})
	if err != nil {
		return -1, mount, unsafe("open", p, err)
	}
	return fd, mount, nil
}

// checkName verifies that the catalogued path p (rel, checked) names the
// regular file with inode number ino, beneath the mount, without reading it.
func (s *source) checkName(p []byte, rel string, ino int64) error {
	dfd, rest, _ := s.base(rel)
	if rest == "" {
		return &PathError{Op: "verify", Path: p, Err: fmt.Errorf("%w: a mount root is not a file", ErrMismatch)}
	}
	fd, err := openat2(dfd, rest, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: beneath,
	})
	if err != nil {
		return unsafe("open", p, err)
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
	dfd, rest, _ := s.base(rel)
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
		return -1, "", unsafe("open parent of", p, err)
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
