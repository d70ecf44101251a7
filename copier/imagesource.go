package copier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sort"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/medium"
	"golang.org/x/sys/unix"
)

// mediumSource is where the copier reads a medium's files: its kernel
// mount (source, source.go) or its image (imageSource, read in user space
// by package imagefs). Both check every opened file against the catalog —
// type, identity and size — and resolve every catalogued name of it, so the
// store, the tree and the catalog are the same whichever is used.
type mediumSource interface {
	// openInode opens the claimed inode n through one of its catalogued
	// paths (rels are the checked relative forms of n.Paths), verified
	// against the catalog, its other names leading to the same inode.
	openInode(n *inode, rels []string) (*openedFile, *fileErr)
	// readSymlink reads the target of the symlink at the catalogued path
	// p, checking that it is a symlink with inode number ino.
	readSymlink(p []byte, rel string, ino int64) (string, error)
	// order sorts a claimed batch into the order its files are best read
	// in (the image's byte order; the mount's claim order, inode number, is
	// kept).
	order(batch []*inode)
	// advise asks the source for the first n bytes of an opened file
	// without waiting for them (read-ahead; see ahead.go).
	advise(f *openedFile, n int64)
	close()
}

// openedFile is an inode opened for reading, checked against the catalog.
type openedFile struct {
	r     io.Reader // exactly the file's content
	idx   int       // which of the inode's paths was opened
	name  string    // mount: the file's absolute path (for the checks); image: ""
	mount string    // mount: the mount point the file is in; image: ""
	dev   uint64    // mount: the live st_dev; image: 0
	fd    int       // mount: the open descriptor (for the extent map); image, device: -1
	runs  []imagefs.Run
	done  func()
	// Read from a mount's device (extsource.go): the device's chunks and
	// the file's runs on it, for read-ahead advice.
	devChunks *chunkCache
	devRuns   []imagefs.Run
}

func (f *openedFile) close() {
	if f.done != nil {
		f.done()
	}
}

// RunDamageMapper is a DamageMapper that also maps a file read from an
// image by its byte runs (image offsets; holes marked): the exact bytes it
// occupies, with no extent map and no loop device involved. The copier
// uses it, when Options.Damage implements it, for media read with
// Options.Image.
type RunDamageMapper interface {
	RunDamage(ctx context.Context, runs []imagefs.Run) (json.RawMessage, error)
}

// ImageReadError is a failed read of a file's content from the image, at
// an image byte offset. It wraps the reader's error (imagefs.ErrBeyondEnd,
// imagefs.ErrCorrupt or the image file's I/O error) for errors.Is.
type ImageReadError struct {
	Image       string
	Partition   int
	ImageOffset int64
	Err         error
}

func (e *ImageReadError) Error() string {
	return fmt.Sprintf("image %s partition %d: reading byte offset %d: %v", e.Image, e.Partition, e.ImageOffset, e.Err)
}

func (e *ImageReadError) Unwrap() error { return e.Err }

// openMediumSource opens the medium's image when Options.Image is set,
// else its mount.
func openMediumSource(ctx context.Context, o Options, h medium.Hash, log *slog.Logger) (mediumSource, error) {
	if o.Image == "" {
		s, err := openSource(o.MountRoot, h)
		if err != nil {
			return nil, err
		}
		if !o.KernelOnly && o.Damage == nil {
			s.scanDevices(log, h)
		}
		return s, nil
	}
	return openImageSource(ctx, o, h)
}

// imageSource reads a medium's files from its image through package
// imagefs: no root, no loop device, no mount. Catalogued paths are looked
// up in an index of the medium made by one walk when the source is opened
// (the same walk, in the same layout, that enumerated it), and a file's
// content is read from its runs.
type imageSource struct {
	m     *imagefs.Medium
	image string
	index map[string]imageEntry // catalogued path ("/", "/p2/etc/x") → entry
	fd    int                   // the image, for read-ahead advice only (-1: none)
}

type imageEntry struct {
	e   *imagefs.Entry
	vol *imagefs.Volume
}

func openImageSource(ctx context.Context, o Options, h medium.Hash) (*imageSource, error) {
	m, err := imagefs.OpenMediumFile(ctx, o.Image, imagefs.MediumOptions{Medium: string(h), CodePage: o.CodePage})
	if err != nil {
		return nil, fmt.Errorf("medium %s: reading image %s: %w", h, o.Image, err)
	}
	s := &imageSource{m: m, image: o.Image, index: map[string]imageEntry{}, fd: -1}
	// Advice goes to the image's page cache through a descriptor of our
	// own: the readers' file is imagefs's. Without it, reads are merely
	// not ahead.
	if fd, err := unix.Open(o.Image, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		s.fd = fd
	}
	multi := len(m.Volumes) > 1 || (len(m.Volumes) == 1 && m.Volumes[0].Prefix != "")
	for _, v := range m.Volumes {
		prefix := v.Prefix
		err := m.Walk(ctx, v, func(p []byte, e *imagefs.Entry) error {
			key := prefix + string(p)
			if len(p) == 1 && prefix != "" {
				key = prefix
			}
			s.index[key] = imageEntry{e: e, vol: v}
			return nil
		})
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("medium %s: walking image %s partition %d: %w", h, o.Image, v.Num, err)
		}
	}
	if multi {
		s.index["/"] = imageEntry{e: &imagefs.Entry{Type: 'd'}}
	}
	return s, nil
}

func (s *imageSource) close() {
	if s.fd >= 0 {
		unix.Close(s.fd)
	}
	s.m.Close()
}

// advise asks for the image bytes of the file's first n bytes, run by run.
func (s *imageSource) advise(f *openedFile, n int64) {
	if s.fd >= 0 {
		adviseRuns(s.fd, f.runs, n)
	}
}

func (s *imageSource) lookup(p []byte) (imageEntry, error) {
	ie, ok := s.index[string(p)]
	if !ok || ie.vol == nil {
		return ie, &PathError{Op: "open", Path: p, Err: fmt.Errorf("%w: no such entry on image %s", fs.ErrNotExist, s.image)}
	}
	return ie, nil
}

// check verifies that ie is the catalogued inode: type, partition, id, size.
func (s *imageSource) check(p []byte, ie imageEntry, typ byte, dev, ino, size int64) error {
	e := ie.e
	id, err := imagefs.CatalogIno(e.ID)
	if err != nil {
		return &PathError{Op: "verify", Path: p, Err: fmt.Errorf("%w: %w", ErrMismatch, err)}
	}
	switch {
	case e.Type != typ:
		return &PathError{Op: "verify", Path: p, Err: fmt.Errorf("%w: type %c on the image, catalog says %c", ErrMismatch, e.Type, typ)}
	case int64(ie.vol.Num) != dev || int64(id) != ino:
		return &PathError{Op: "verify", Path: p, Err: fmt.Errorf("%w: partition %d id %d on the image, catalog says dev %d ino %d", ErrMismatch, ie.vol.Num, id, dev, ino)}
	case size >= 0 && e.Size != size:
		return &PathError{Op: "verify", Path: p, Err: fmt.Errorf("%w: size %d on the image, catalog says %d", ErrMismatch, e.Size, size)}
	}
	return nil
}

func (s *imageSource) openInode(n *inode, rels []string) (*openedFile, *fileErr) {
	var found imageEntry
	idx := -1
	for i, p := range n.Paths {
		ie, err := s.lookup(p)
		if err == nil {
			err = s.check(p, ie, 'f', n.Dev, n.Ino, n.Size)
		}
		if err != nil {
			return nil, &fileErr{err: err, path: p}
		}
		if idx < 0 {
			found, idx = ie, i
		}
	}
	if idx < 0 {
		return nil, &fileErr{err: &PathError{Op: "open", Path: nil, Err: fmt.Errorf("%w: no path", ErrMismatch)}}
	}
	p := n.Paths[idx]
	ra, err := found.vol.FS.Open(found.e)
	if err != nil {
		return nil, &fileErr{err: s.readErr(found.vol, err), path: p}
	}
	vol := found.vol
	r := &seqReader{ra: ra, size: found.e.Size, wrap: func(err error) error { return s.readErr(vol, err) }}
	return &openedFile{r: r, idx: idx, fd: -1, runs: found.vol.ImageRuns(found.e.Runs)}, nil
}

// readErr names the image and turns a volume offset into an image offset.
func (s *imageSource) readErr(v *imagefs.Volume, err error) error {
	var re *imagefs.ReadError
	if errors.As(err, &re) {
		return &ImageReadError{Image: s.image, Partition: v.Num, ImageOffset: v.Offset + re.Offset, Err: err}
	}
	return &ImageReadError{Image: s.image, Partition: v.Num, ImageOffset: -1, Err: err}
}

func (s *imageSource) readSymlink(p []byte, _ string, ino int64) (string, error) {
	ie, err := s.lookup(p)
	if err != nil {
		return "", err
	}
	if err := s.check(p, ie, 'l', int64(ie.vol.Num), ino, -1); err != nil {
		return "", err
	}
	return string(ie.e.Target), nil
}

// order sorts the batch by the image offset of each file's first stored
// run, so that a medium is read close to sequentially; files with no
// stored bytes (empty, all holes) come first, unknown paths last.
func (s *imageSource) order(batch []*inode) {
	first := func(n *inode) int64 {
		if len(n.Paths) == 0 {
			return 1<<63 - 1
		}
		ie, ok := s.index[string(n.Paths[0])]
		if !ok || ie.vol == nil {
			return 1<<63 - 1
		}
		for _, r := range ie.e.Runs {
			if !r.Hole {
				return ie.vol.Offset + r.Offset
			}
		}
		return -1
	}
	keys := make(map[*inode]int64, len(batch))
	for _, n := range batch {
		keys[n] = first(n)
	}
	sort.SliceStable(batch, func(i, j int) bool { return keys[batch[i]] < keys[batch[j]] })
}
