package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// readChunk is how much of a source is read per pread.
const readChunk = 1 << 20

// zeroScan is the granularity at which read data is checked for zeros, so
// that zeroed free space in a fully allocated image takes the zero-frame
// path like a hole.
const zeroScan = 64 << 10

// zeros is a shared all-zero buffer: holes are fed from it, no reads.
var zeros = make([]byte, readChunk)

// source is one member's open source file.
type source struct {
	name string
	path string
	f    *os.File
	st   unix.Stat_t
}

func (s *source) mtimeNs() int64 { return s.st.Mtim.Nano() }

// validMemberName accepts plain file names only: they are joined to
// directories and become tar member names.
func validMemberName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("member name %q is not a plain file name", name)
	}
	if strings.ContainsAny(name, "*?[") {
		return fmt.Errorf("member name %q looks like a wildcard; list file names explicitly", name)
	}
	return nil
}

// openSources opens each requested member from the first directory that
// has it. Symlinks are refused (O_NOFOLLOW): the archive must hold the file
// itself, and removal must not follow a link elsewhere.
func openSources(hash string, names, dirs []string) (srcs []*source, skipped []string, err error) {
	defer func() {
		if err != nil {
			closeSources(srcs)
			srcs = nil
		}
	}()
	image := hash + ".img"
	haveImage := false
	seen := map[string]bool{}
	for _, name := range names {
		if err := validMemberName(name); err != nil {
			return srcs, nil, err
		}
		if name == ManifestName(hash) {
			return srcs, nil, fmt.Errorf("member name %q is reserved for the manifest", name)
		}
		if seen[name] {
			return srcs, nil, fmt.Errorf("member %q listed twice", name)
		}
		seen[name] = true
		if name == image {
			haveImage = true
		}
		s, err := openSource(name, dirs)
		if errors.Is(err, fs.ErrNotExist) {
			if name == image {
				return srcs, nil, fmt.Errorf("medium %s: %w: %s in %s", hash, ErrImageMissing, image, strings.Join(dirs, ", "))
			}
			skipped = append(skipped, name)
			continue
		}
		if err != nil {
			return srcs, nil, err
		}
		srcs = append(srcs, s)
	}
	if !haveImage {
		return srcs, nil, fmt.Errorf("medium %s: the member list must include the image %s", hash, image)
	}
	return srcs, skipped, nil
}

func openSource(name string, dirs []string) (*source, error) {
	for _, dir := range dirs {
		p := filepath.Join(dir, name)
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("source %s is a symbolic link; seal the file itself", p)
		}
		if err != nil {
			return nil, fmt.Errorf("open source: %w", err)
		}
		s := &source{name: name, path: p, f: f}
		if err := unix.Fstat(int(f.Fd()), &s.st); err != nil {
			f.Close()
			return nil, fmt.Errorf("stat source %s: %w", p, err)
		}
		if s.st.Mode&unix.S_IFMT != unix.S_IFREG {
			f.Close()
			return nil, fmt.Errorf("source %s is not a regular file", p)
		}
		return s, nil
	}
	return nil, fs.ErrNotExist
}

func closeSources(srcs []*source) {
	for _, s := range srcs {
		s.f.Close()
	}
}

// checkUnchanged fails if the source's size or mtime moved since it was
// opened: the archive would not hold what the manifest claims of the file.
func (s *source) checkUnchanged() error {
	var st unix.Stat_t
	if err := unix.Fstat(int(s.f.Fd()), &st); err != nil {
		return fmt.Errorf("stat source %s: %w", s.path, err)
	}
	if st.Size != s.st.Size || st.Mtim != s.st.Mtim {
		return fmt.Errorf("%w while sealing: %s (size %d→%d)", ErrSourceChanged, s.path, s.st.Size, st.Size)
	}
	return nil
}

// memberSink receives a member's content in order: data as read, and runs
// of zeros by length (never materialized for holes).
type memberSink interface {
	data(p []byte) error
	zeros(n int64) error
}

// stream feeds the first size bytes of f to sink. Holes are found with
// SEEK_DATA/SEEK_HOLE and passed as zero runs without reading; read data is
// scanned in 64 KiB pieces so zeroed regions become zero runs too. buf is
// the read buffer. On a filesystem without SEEK_DATA the whole file is data.
func stream(ctx context.Context, f *os.File, size int64, buf []byte, sink memberSink) error {
	fd := int(f.Fd())
	sparse := true
	for pos := int64(0); pos < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		dataEnd := size
		if sparse {
			off, err := unix.Seek(fd, pos, unix.SEEK_DATA)
			switch {
			case errors.Is(err, unix.ENXIO): // only a hole up to EOF
				off = size
			case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP):
				sparse, off = false, pos
			case err != nil:
				return fmt.Errorf("seek data: %w", err)
			}
			off = min(off, size)
			if off > pos {
				if err := sink.zeros(off - pos); err != nil {
					return err
				}
				pos = off
				continue
			}
			if sparse {
				end, err := unix.Seek(fd, pos, unix.SEEK_HOLE)
				if err != nil {
					return fmt.Errorf("seek hole: %w", err)
				}
				dataEnd = min(max(end, pos+1), size)
			}
		}
		for pos < dataEnd {
			n := min(int64(len(buf)), dataEnd-pos)
			k, err := f.ReadAt(buf[:n], pos)
			if int64(k) < n {
				if err == nil {
					err = errors.New("short read")
				}
				return fmt.Errorf("read at byte %d of %d: %w", pos, size, err)
			}
			if err := feedData(buf[:k], sink); err != nil {
				return err
			}
			pos += int64(k)
		}
	}
	return nil
}

// feedData hands p to sink, splitting out all-zero 64 KiB pieces as zero
// runs and coalescing the rest.
func feedData(p []byte, sink memberSink) error {
	start := 0 // first byte not yet handed over
	for i := 0; i < len(p); i += zeroScan {
		piece := p[i:min(i+zeroScan, len(p))]
		if !bytes.Equal(piece, zeros[:len(piece)]) {
			continue
		}
		if start < i {
			if err := sink.data(p[start:i]); err != nil {
				return err
			}
		}
		if err := sink.zeros(int64(len(piece))); err != nil {
			return err
		}
		start = i + len(piece)
	}
	if start < len(p) {
		return sink.data(p[start:])
	}
	return nil
}
