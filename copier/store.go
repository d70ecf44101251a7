package copier

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Store is the content store: <root>/by-hash/AA/BB/<blake3-hex> blobs and
// the per-medium trees <root>/archived/<hash>/….
//
// Blobs are written once and never modified: the content goes into an
// unnamed file (O_TMPFILE) in the store's own filesystem, is set to mode
// 0644 with fchmod (so the umask never matters), and is given its name with
// linkat, which fails with EEXIST when another writer stored the same
// content first: that is deduplication, not an error. A crash leaves no
// partial blob and no temporary file. Where O_TMPFILE is not supported the
// store falls back to a named temporary file .tmp-<host>-<pid>-<n> in
// by-hash, linked to its name and removed; leftovers of dead processes of
// this host are removed by OpenStore.
//
// Durability is the caller's: Sync (one syncfs of the store's filesystem)
// must return before any catalog row names a blob written since the last
// Sync.
type Store struct {
	Root string

	byHash   int         // O_PATH fd of <root>/by-hash
	archived int         // O_PATH fd of <root>/archived
	syncFd   int         // a readable fd of <root>/by-hash: syncfs refuses O_PATH
	dirs     sync.Map    // "AA" and "AABB": by-hash directories known to exist
	noTmp    atomic.Bool // O_TMPFILE unsupported: use named temporary files
	tmpSeq   atomic.Int64
	host     string
}

// StoreError is a failure of the content store itself (its filesystem
// full, read-only or failing), not of the medium: Run stops, records what
// it had copied, releases its other claims, and marks no inode failed.
type StoreError struct{ Err error }

func (e *StoreError) Error() string { return e.Err.Error() }
func (e *StoreError) Unwrap() error { return e.Err }

func storeErr(err error) error {
	if err == nil {
		return nil
	}
	var se *StoreError
	if errors.As(err, &se) {
		return err
	}
	return &StoreError{Err: err}
}

// Blob store layout names.
const (
	ByHashDir   = "by-hash"
	ArchivedDir = "archived"
	tmpPrefix   = ".tmp-"
)

// OpenStore opens the store at root, an existing directory, creating
// by-hash and archived in it if needed.
func OpenStore(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("store: no root directory given")
	}
	root = filepath.Clean(root)
	s := &Store{Root: root, byHash: -1, archived: -1, syncFd: -1}
	s.host, _ = os.Hostname()
	s.host = strings.NewReplacer("/", "_", "-", "_").Replace(s.host)
	// The root must exist: creating it could put the store on the wrong
	// disk when the pool that should hold it is not mounted.
	if st, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("store %s: %w (the store's directory must exist)", root, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("store %s: not a directory", root)
	}
	for _, d := range []string{filepath.Join(root, ByHashDir), filepath.Join(root, ArchivedDir)} {
		if err := mkdir0755(unix.AT_FDCWD, d); err != nil {
			return nil, fmt.Errorf("store %s: %w", root, err)
		}
	}
	var err error
	if s.byHash, err = unix.Open(filepath.Join(root, ByHashDir), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("store %s: opening %s: %w", root, ByHashDir, err)
	}
	if s.archived, err = unix.Open(filepath.Join(root, ArchivedDir), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		s.Close()
		return nil, fmt.Errorf("store %s: opening %s: %w", root, ArchivedDir, err)
	}
	if s.syncFd, err = unix.Open(filepath.Join(root, ByHashDir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		s.Close()
		return nil, fmt.Errorf("store %s: opening %s: %w", root, ByHashDir, err)
	}
	s.removeStaleTemps()
	return s, nil
}

// openStoreReadOnly opens an existing store for lookups only (dry runs);
// a store that does not exist yet holds no blob.
func openStoreReadOnly(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("store: no root directory given")
	}
	s := &Store{Root: filepath.Clean(root), byHash: -1, archived: -1, syncFd: -1}
	fd, err := unix.Open(filepath.Join(s.Root, ByHashDir), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: opening %s: %w", s.Root, ByHashDir, err)
	}
	s.byHash = fd
	return s, nil
}

// Close releases the store's directory descriptors.
func (s *Store) Close() error {
	if s.byHash >= 0 {
		unix.Close(s.byHash)
		s.byHash = -1
	}
	if s.archived >= 0 {
		unix.Close(s.archived)
		s.archived = -1
	}
	if s.syncFd >= 0 {
		unix.Close(s.syncFd)
		s.syncFd = -1
	}
	return nil
}

// mkdir0755 creates directory name (relative to dirfd) with mode 0755
// whatever the umask; an existing directory is left as it is.
func mkdir0755(dirfd int, name string) error {
	err := unix.Mkdirat(dirfd, name, 0o755)
	if errors.Is(err, unix.EEXIST) {
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("stat %s: %w", name, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("%s exists and is not a directory: %w", name, unix.ENOTDIR)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("mkdir %s: %w", name, err)
	}
	// The directory is new and ours: set its mode whatever the umask.
	if err := unix.Fchmodat(dirfd, name, 0o755, 0); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	return nil
}

// BlobPath is the path of blob id (64 hex) relative to by-hash: AA/BB/<id>.
func BlobPath(id string) string { return id[0:2] + "/" + id[2:4] + "/" + id }

// BlobFile is the absolute path of blob id in the store.
func (s *Store) BlobFile(id string) string {
	return filepath.Join(s.Root, ByHashDir, BlobPath(id))
}

func (s *Store) ensureBlobDir(id string) error {
	key := id[0:4]
	if _, ok := s.dirs.Load(key); ok {
		return nil
	}
	if _, ok := s.dirs.Load(id[0:2]); !ok {
		if err := mkdir0755(s.byHash, id[0:2]); err != nil {
			return fmt.Errorf("store %s: %w", s.Root, err)
		}
		s.dirs.Store(id[0:2], true)
	}
	if err := mkdir0755(s.byHash, id[0:2]+"/"+id[2:4]); err != nil {
		return fmt.Errorf("store %s: %w", s.Root, err)
	}
	s.dirs.Store(key, true)
	return nil
}

// HasBlob reports whether blob id is stored with the given size. A blob of
// another size (a file cut short by a crash before its data reached the
// disk) is reported as absent, so that the next Put replaces it.
func (s *Store) HasBlob(id string, size int64) (bool, error) {
	if s.byHash < 0 {
		return false, nil
	}
	var st unix.Stat_t
	err := unix.Fstatat(s.byHash, BlobPath(id), &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store %s: stat blob %s: %w", s.Root, id, err)
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == size, nil
}

// blobWriter is a blob being written: an unnamed file until commit.
type blobWriter struct {
	s    *Store
	f    *os.File
	temp string // named temporary file (fallback), relative to by-hash
}

// create starts a new blob file.
func (s *Store) create() (*blobWriter, error) {
	if !s.noTmp.Load() {
		fd, err := unix.Openat(s.byHash, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err == nil {
			return &blobWriter{s: s, f: os.NewFile(uintptr(fd), "blob")}, nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("store %s: creating a blob file: %w", s.Root, err)
		}
		s.noTmp.Store(true)
	}
	name := fmt.Sprintf("%s%s-%d-%d", tmpPrefix, s.host, os.Getpid(), s.tmpSeq.Add(1))
	fd, err := unix.Openat(s.byHash, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, fmt.Errorf("store %s: creating %s: %w", s.Root, name, err)
	}
	return &blobWriter{s: s, f: os.NewFile(uintptr(fd), name), temp: name}, nil
}

func (w *blobWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

// abort discards the blob being written.
func (w *blobWriter) abort() {
	w.f.Close()
	if w.temp != "" {
		unix.Unlinkat(w.s.byHash, w.temp, 0)
	}
}

// commit names the written content id. It reports false when the blob was
// already stored (another writer won: deduplication). A suspect blob (one
// the catalog marks quarantined) is never trusted: what is at its name is
// replaced with the content just written.
func (w *blobWriter) commit(id string, size int64, suspect bool) (created bool, err error) {
	defer w.abort() // closes; removes a named temporary
	s := w.s
	if err := unix.Fchmod(int(w.f.Fd()), 0o644); err != nil {
		return false, fmt.Errorf("store %s: chmod blob %s: %w", s.Root, id, err)
	}
	if err := s.ensureBlobDir(id); err != nil {
		return false, err
	}
	rel := BlobPath(id)
	for attempt := 0; ; attempt++ {
		err = w.link(rel)
		if err == nil {
			watch(watchStored, id)
			return true, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return false, fmt.Errorf("store %s: linking blob %s: %w", s.Root, id, err)
		}
		ok, herr := s.HasBlob(id, size)
		if herr != nil {
			return false, herr
		}
		if ok && !suspect || attempt > 0 {
			return false, nil
		}
		// A blob of the wrong size (cut short by a crash), or one that is
		// not trusted: replace it.
		if err := w.replace(rel); err != nil {
			return false, fmt.Errorf("store %s: replacing damaged blob %s: %w", s.Root, id, err)
		}
		watch(watchStored, id)
		return true, nil
	}
}

func (w *blobWriter) link(rel string) error {
	s := w.s
	if w.temp != "" {
		return unix.Linkat(s.byHash, w.temp, s.byHash, rel, 0)
	}
	err := unix.Linkat(int(w.f.Fd()), "", s.byHash, rel, unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
		// AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc link does not.
		err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(w.f.Fd())), s.byHash, rel, unix.AT_SYMLINK_FOLLOW)
	}
	return err
}

func (w *blobWriter) replace(rel string) error {
	s := w.s
	tmp := fmt.Sprintf("%s%s%s-%d-%d", rel[:6], tmpPrefix, s.host, os.Getpid(), s.tmpSeq.Add(1))
	if err := w.link(tmp); err != nil {
		return err
	}
	if err := unix.Renameat(s.byHash, tmp, s.byHash, rel); err != nil {
		unix.Unlinkat(s.byHash, tmp, 0)
		return err
	}
	return nil
}

// PutBytes stores data as blob id (its BLAKE3) unless it is stored already.
func (s *Store) PutBytes(id string, data []byte) (created bool, err error) {
	return s.putBytes(id, data, false)
}

// putBytes is PutBytes; a suspect blob is written again whatever is at its
// name (see commit).
func (s *Store) putBytes(id string, data []byte, suspect bool) (created bool, err error) {
	if !suspect {
		ok, err := s.HasBlob(id, int64(len(data)))
		if err != nil || ok {
			return false, err
		}
	}
	w, err := s.create()
	if err != nil {
		return false, err
	}
	if _, err := w.Write(data); err != nil {
		w.abort()
		return false, fmt.Errorf("store %s: writing blob %s: %w", s.Root, id, err)
	}
	return w.commit(id, int64(len(data)), suspect)
}

// Sync makes everything written to the store's filesystem durable (one
// syncfs): blobs, their names and tree links.
func (s *Store) Sync() error {
	if err := unix.Syncfs(s.syncFd); err != nil {
		return fmt.Errorf("store %s: sync: %w", s.Root, err)
	}
	return nil
}

// removeStaleTemps removes named temporary files left by dead processes of
// this host (only the fallback path makes them).
func (s *Store) removeStaleTemps() {
	names, err := readDirNames(filepath.Join(s.Root, ByHashDir))
	if err != nil {
		return
	}
	prefix := tmpPrefix + s.host + "-"
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, prefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			unix.Unlinkat(s.byHash, n, 0)
		}
	}
}
