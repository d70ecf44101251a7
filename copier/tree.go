package copier

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/medium"
	"golang.org/x/sys/unix"
)

// tree is a medium's hardlink tree <store>/archived/<hash>: every
// non-excluded path of a copied file is a hardlink to its blob, and
// directories and symlinks are recreated. A fork's path is mapped by
// imagefs.ForkTreePath (a file cannot hold it). All of it is made beneath the
// tree's root with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, so a symlink the
// tree itself holds (recreated from the medium) is never followed, whatever
// the catalog says.
//
// EMLINK: a blob shared by more paths than the store's filesystem allows
// links to one inode (65,000 on ext4; an empty file is the usual case) gets
// a copy of its content at the remaining paths instead of a link — same
// bytes, mode 0644, made unnamed and linked into place like a blob. It is
// counted (Stats.LinkCopies), never a failed inode.
type tree struct {
	s    *Store
	h    medium.Hash
	root int
	seq  atomic.Int64
}

func (s *Store) openTree(h medium.Hash) (*tree, error) {
	if err := mkdir0755(s.archived, string(h)); err != nil {
		return nil, fmt.Errorf("store %s: tree of medium %s: %w", s.Root, h, err)
	}
	fd, err := openat2(s.archived, string(h), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: beneath,
	})
	if err != nil {
		return nil, fmt.Errorf("store %s: opening tree of medium %s: %w", s.Root, h, err)
	}
	return &tree{s: s, h: h, root: fd}, nil
}

func (t *tree) close() { unix.Close(t.root) }

// TreePath is where the catalogued path p of medium h appears in the
// store's tree (p must be clean). It is p itself, except for a fork or
// stream (<file>/..namedfork/<name>), which a file cannot hold: it is kept
// at <dir>/..namedfork/<file>/<name> (imagefs.ForkTreePath).
func (s *Store) TreePath(hash string, p []byte) string {
	return filepath.Join(s.Root, ArchivedDir, hash, imagefs.ForkTreePath(strings.TrimPrefix(string(p), "/")))
}

var treeHow = unix.OpenHow{
	Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
	Resolve: beneath,
}

// openDir opens directory rel of the tree (creating missing components
// when create is set). The root itself is returned as is: do not close it.
// A missing directory is made from its nearest existing ancestor down:
// most often only the last component is new, and walking from the root
// (a mkdir, stat and open per component) cost a deep tree a tenth of the
// copier's CPU.
func (t *tree) openDir(p []byte, rel string, create bool) (int, error) {
	if rel == "" {
		return t.root, nil
	}
	fd, err := openat2(t.root, rel, &treeHow)
	if err == nil || !create || !errors.Is(err, unix.ENOENT) {
		if err != nil {
			return -1, treeErr(p, err)
		}
		return fd, nil
	}
	parent, leaf := splitRel(rel)
	pfd, err := t.openDir(p, parent, true)
	if err != nil {
		return -1, err
	}
	defer t.closeDir(pfd)
	if err := mkdir0755(pfd, leaf); err != nil {
		return -1, treeErr(p, err)
	}
	fd, err = openat2(pfd, leaf, &treeHow)
	if err != nil {
		return -1, treeErr(p, err)
	}
	return fd, nil
}

func (t *tree) closeDir(fd int) {
	if fd != t.root && fd >= 0 {
		unix.Close(fd)
	}
}

func treeErr(p []byte, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOTDIR) {
		return &PathError{Op: "tree", Path: p, Err: fmt.Errorf("%w (%w)", ErrUnsafePath, err)}
	}
	var pe *PathError
	if errors.As(err, &pe) {
		return err
	}
	return fmt.Errorf("tree %q: %w", p, err)
}

// treeCursor is one worker's view of the tree: it keeps the last parent
// directory open, since consecutive files mostly share one.
type treeCursor struct {
	t   *tree
	dir string
	fd  int
}

func (t *tree) cursor() *treeCursor { return &treeCursor{t: t, fd: -1} }

func (c *treeCursor) close() {
	if c.fd >= 0 {
		c.t.closeDir(c.fd)
		c.fd = -1
	}
}

func (c *treeCursor) parent(p []byte, rel string) (int, string, error) {
	dir, leaf := splitRel(rel)
	if c.fd >= 0 && c.dir == dir {
		return c.fd, leaf, nil
	}
	c.close()
	fd, err := c.t.openDir(p, dir, true)
	if err != nil {
		return -1, "", err
	}
	c.fd, c.dir = fd, dir
	return fd, leaf, nil
}

// link makes the tree path of p (rel, clean) a hardlink to blob id. An
// existing link to the same blob is kept (a rerun after a crash); anything
// else at that name is replaced. It reports whether the EMLINK fallback
// (a copy) was used.
func (c *treeCursor) link(p []byte, rel, id string) (copied bool, err error) {
	if rel == "" {
		return false, &PathError{Op: "tree", Path: p, Err: fmt.Errorf("%w: the medium root is not a file", ErrMismatch)}
	}
	rel = imagefs.ForkTreePath(rel)
	pfd, leaf, err := c.parent(p, rel)
	if err != nil {
		return false, err
	}
	blob := BlobPath(id)
	err = unix.Linkat(c.t.s.byHash, blob, pfd, leaf, 0)
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, unix.ENOENT):
		var st unix.Stat_t
		if serr := unix.Fstatat(c.t.s.byHash, blob, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(serr, unix.ENOENT) {
			return false, fmt.Errorf("store %s: blob %s: %w", c.t.s.Root, id, errBlobGone)
		}
		return false, treeErr(p, fmt.Errorf("link: %w", err))
	case errors.Is(err, unix.EMLINK):
		return true, c.t.copyBlob(pfd, leaf, blob, p, false)
	case !errors.Is(err, unix.EEXIST):
		return false, treeErr(p, fmt.Errorf("link: %w", err))
	}
	var have, want unix.Stat_t
	if err := unix.Fstatat(pfd, leaf, &have, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, treeErr(p, err)
	}
	if err := unix.Fstatat(c.t.s.byHash, blob, &want, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, fmt.Errorf("store %s: stat blob %s: %w", c.t.s.Root, id, err)
	}
	if have.Dev == want.Dev && have.Ino == want.Ino {
		return false, nil
	}
	if have.Mode&unix.S_IFMT == unix.S_IFDIR {
		return false, &PathError{Op: "tree", Path: p, Err: fmt.Errorf("a directory is in the way: %w", unix.EISDIR)}
	}
	// Something else is there (an EMLINK copy, or a stale entry): replace it
	// atomically with a fresh link, or a copy when the blob is full of links.
	tmp, err := c.t.tempName(pfd, func(name string) error { return unix.Linkat(c.t.s.byHash, blob, pfd, name, 0) })
	if errors.Is(err, unix.EMLINK) {
		return true, c.t.copyBlob(pfd, leaf, blob, p, true)
	}
	if err != nil {
		return false, treeErr(p, fmt.Errorf("link: %w", err))
	}
	if err := unix.Renameat(pfd, tmp, pfd, leaf); err != nil {
		unix.Unlinkat(pfd, tmp, 0)
		return false, treeErr(p, fmt.Errorf("rename: %w", err))
	}
	return false, nil
}

// errBlobGone: the blob to link is no longer at its by-hash name (verification
// moved it to the quarantine since this run stored or found it).
var errBlobGone = errors.New("blob no longer in the store (quarantined?)")

// tempName runs make with fresh temporary names in dir until one is free.
func (t *tree) tempName(dfd int, make func(name string) error) (string, error) {
	for {
		name := fmt.Sprintf(".ntt-tmp-%d-%d", os.Getpid(), t.seq.Add(1))
		err := make(name)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		return name, err
	}
}

// copyBlob puts a copy of blob at leaf in directory dfd (the EMLINK
// fallback), replacing what is there when replace is set.
func (t *tree) copyBlob(dfd int, leaf, blob string, p []byte, replace bool) error {
	src, err := unix.Openat(t.s.byHash, blob, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("store %s: opening blob %s: %w", t.s.Root, blob, err)
	}
	defer unix.Close(src)
	dst, err := unix.Openat(dfd, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return treeErr(p, fmt.Errorf("creating a copy: %w", err))
	}
	defer unix.Close(dst)
	for {
		n, err := unix.CopyFileRange(src, nil, dst, nil, 1<<30, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return treeErr(p, fmt.Errorf("copying blob: %w", err))
		}
		if n == 0 {
			break
		}
	}
	if err := unix.Fchmod(dst, 0o644); err != nil {
		return treeErr(p, err)
	}
	procPath := fmt.Sprintf("/proc/self/fd/%d", dst)
	linkTo := func(name string) error {
		err := unix.Linkat(dst, "", dfd, name, unix.AT_EMPTY_PATH)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
			err = unix.Linkat(unix.AT_FDCWD, procPath, dfd, name, unix.AT_SYMLINK_FOLLOW)
		}
		return err
	}
	err = linkTo(leaf)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return treeErr(p, fmt.Errorf("link copy: %w", err))
	}
	tmp, err := t.tempName(dfd, linkTo)
	if err != nil {
		return treeErr(p, fmt.Errorf("link copy: %w", err))
	}
	if err := unix.Renameat(dfd, tmp, dfd, leaf); err != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return treeErr(p, fmt.Errorf("rename: %w", err))
	}
	return nil
}

// mkdir recreates directory p (rel, clean) in the tree.
func (t *tree) mkdir(p []byte, rel string) error {
	fd, err := t.openDir(p, rel, true)
	if err != nil {
		return err
	}
	t.closeDir(fd)
	return nil
}

// symlink recreates symlink p (rel, clean) with target in the tree; an
// existing symlink with another target is replaced.
func (c *treeCursor) symlink(p []byte, rel, target string) error {
	if rel == "" {
		return &PathError{Op: "tree", Path: p, Err: fmt.Errorf("%w: the medium root is not a symlink", ErrMismatch)}
	}
	pfd, leaf, err := c.parent(p, rel)
	if err != nil {
		return err
	}
	err = unix.Symlinkat(target, pfd, leaf)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return treeErr(p, fmt.Errorf("symlink: %w", err))
	}
	buf := make([]byte, len(target)+1)
	if n, err := unix.Readlinkat(pfd, leaf, buf); err == nil && n == len(target) && string(buf[:n]) == target {
		return nil
	}
	tmp, err := c.t.tempName(pfd, func(name string) error { return unix.Symlinkat(target, pfd, name) })
	if err != nil {
		return treeErr(p, fmt.Errorf("symlink: %w", err))
	}
	if err := unix.Renameat(pfd, tmp, pfd, leaf); err != nil {
		unix.Unlinkat(pfd, tmp, 0)
		return treeErr(p, fmt.Errorf("rename: %w", err))
	}
	return nil
}
