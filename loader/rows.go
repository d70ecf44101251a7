package loader

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/HRDAG/ntt/enumerate"
)

// Values the loader writes into inode.claimed_by for rows no worker may
// claim (design.md, "Inode states").
const (
	ClaimedNonFile  = "NON_FILE"
	ClaimedExcluded = "EXCLUDED"
	// ExcludePatternMatch is path.exclude_reason for a path matching an
	// ignore pattern.
	ExcludePatternMatch = "pattern_match"
)

// Columns sent by COPY; medium_hash comes from a column default set on the
// load tables, so that 10M rows do not each carry the hash over the wire.
var (
	pathColumns  = []string{"dev", "ino", "path", "exclude_reason"}
	inodeColumns = []string{"dev", "ino", "fs_type", "nlink", "size", "mtime", "copied", "claimed_by", "status"}
)

// PostgreSQL's binary COPY framing: signature, flags, header extension.
var copyHeader = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")

var copyTrailer = []byte{0xff, 0xff}

func appendInt16(b []byte, v int16) []byte { return binary.BigEndian.AppendUint16(b, uint16(v)) }
func appendInt32(b []byte, v int32) []byte { return binary.BigEndian.AppendUint32(b, uint32(v)) }

func appendInt64Field(b []byte, v int64) []byte {
	b = appendInt32(b, 8)
	return binary.BigEndian.AppendUint64(b, uint64(v))
}

func appendTextField(b []byte, v string) []byte {
	b = appendInt32(b, int32(len(v)))
	return append(b, v...)
}

func appendNull(b []byte) []byte { return appendInt32(b, -1) }

// ErrNotUnderRoot is returned (in a *RecordError) for a record whose path
// is neither the root nor below it.
var ErrNotUnderRoot = errors.New("path is not under the enumeration root")

// ErrOutOfRange is returned (in a *RecordError) for a dev, ino or nlink
// larger than the catalog's bigint columns hold.
var ErrOutOfRange = errors.New("number does not fit the catalog's bigint column")

// RecordError names the raw record a load failed on: Index counts records
// from 0 (the walk root), Offset is the byte offset of its first byte. For a
// malformed record Err is the reader's *enumerate.RecordError (errors.As
// finds either); for a record the catalog cannot hold (a path outside the
// root, a number too large) Err says why and Path is the record's path.
type RecordError struct {
	Index  int64
	Offset int64
	Path   []byte
	Err    error
}

func (e *RecordError) Error() string {
	cause := e.Err
	var re *enumerate.RecordError
	if errors.As(e.Err, &re) {
		// Say where once: the reader's own message repeats index and offset.
		cause = re.Err
		if re.Field != "" {
			cause = fmt.Errorf("field %s: %w", re.Field, re.Err)
		}
	}
	if e.Path != nil {
		return fmt.Sprintf("record %d at byte %d (path %q): %v", e.Index, e.Offset, e.Path, cause)
	}
	return fmt.Sprintf("record %d at byte %d: %v", e.Index, e.Offset, cause)
}

func (e *RecordError) Unwrap() error { return e.Err }

// inodeKey identifies an inode within one load: dev tells the partitions
// of a disk apart.
type inodeKey struct{ dev, ino uint64 }

// pendingLinks is a hardlinked inode whose links have not all been seen.
type pendingLinks struct {
	inode inodeEntry
	seen  uint64
}

// recordReader reads the raw records and hands path rows and inode entries
// to their sorters. Memory: the reader's buffer, the sorters' bounded run
// buffers, and the hardlinked inodes whose other links are still to come.
type recordReader struct {
	rd       *enumerate.Reader
	root     []byte // trimmed of trailing slashes; "" when the walk root is "/"
	rootRaw  []byte // the root as given, which the first record may spell
	haveRoot bool
	ignore   *ignoreFilter
	links    map[inodeKey]*pendingLinks
	paths    *pathSorter
	inodes   *inodeSorter
	st       *Stats
	seq      uint64
	// progress is called every progressEvery records and at the end.
	progress func(records, offset int64)
}

const progressEvery = 1 << 14

func (r *recordReader) setRoot(root []byte) {
	r.rootRaw = append([]byte(nil), root...)
	t := r.rootRaw
	for len(t) > 0 && t[len(t)-1] == '/' {
		t = t[:len(t)-1]
	}
	r.root = t
	r.haveRoot = true
	r.st.Root = string(r.rootRaw)
}

// relative maps a walked path to the catalog's path: "/" for the root,
// "/a/b" for root+"/a/b".
func (r *recordReader) relative(p []byte) ([]byte, bool) {
	if bytes.Equal(p, r.rootRaw) || bytes.Equal(p, r.root) {
		return []byte("/"), true
	}
	n := len(r.root)
	if len(p) > n+1 && bytes.Equal(p[:n], r.root) && p[n] == '/' {
		return p[n:], true
	}
	return nil, false
}

// readAll consumes the raw stream. Nothing reaches the database before the
// whole input has been read and checked, so a bad record costs no COPY.
func (r *recordReader) readAll(ctx context.Context) error {
	for {
		rec, err := r.rd.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var re *enumerate.RecordError
			if errors.As(err, &re) {
				return &RecordError{Index: re.Index, Offset: re.Offset, Err: err}
			}
			return fmt.Errorf("reading the raw file: %w", err)
		}
		if err := r.record(&rec); err != nil {
			var se *spoolError
			if errors.As(err, &se) {
				return err
			}
			return &RecordError{Index: r.rd.Index(), Offset: r.rd.Offset(), Path: append([]byte(nil), rec.Path...), Err: err}
		}
		r.st.Records++
		if r.st.Records%progressEvery == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("reading the raw file: %w", err)
			}
			if r.progress != nil {
				r.progress(r.st.Records, r.rd.Offset())
			}
		}
	}
	// Hardlinked inodes some of whose links were not in the input (outside
	// the walk, or left out by the walk's ignore patterns).
	for _, p := range r.links {
		if err := r.inodes.add(p.inode); err != nil {
			return err
		}
	}
	r.links = nil
	if r.progress != nil {
		r.progress(r.st.Records, r.rd.Offset())
	}
	return nil
}

func (r *recordReader) record(rec *enumerate.Record) error {
	if !r.haveRoot {
		r.setRoot(rec.Path)
	}
	if rec.Dev > math.MaxInt64 {
		return fmt.Errorf("%w: dev %d", ErrOutOfRange, rec.Dev)
	}
	if rec.Ino > math.MaxInt64 {
		return fmt.Errorf("%w: ino %d", ErrOutOfRange, rec.Ino)
	}
	if rec.Nlink > math.MaxInt64 {
		return fmt.Errorf("%w: nlink %d", ErrOutOfRange, rec.Nlink)
	}
	rel, ok := r.relative(rec.Path)
	if !ok {
		return fmt.Errorf("%w %q", ErrNotUnderRoot, r.rootRaw)
	}
	// The walk matches ignore patterns against the path as walked; so
	// does the loader, so both leave out the same paths.
	excluded := r.ignore.Match(rec.Path)
	if err := r.paths.add(rec.Dev, rec.Ino, rel, excluded); err != nil {
		return err
	}
	r.seq++
	e := inodeEntry{dev: rec.Dev, ino: rec.Ino, nlink: rec.Nlink, size: rec.Size, mtime: rec.Mtime,
		seq: r.seq, typ: rec.Type, allExcluded: excluded}
	// Only an inode with more than one link can come back; directories
	// cannot be hardlinked. Everything else goes to the sorter at once, so
	// the map holds just the hardlinked inodes whose links are still to come.
	if rec.Nlink <= 1 || rec.Type == enumerate.TypeDir {
		return r.inodes.add(e)
	}
	k := inodeKey{rec.Dev, rec.Ino}
	p, ok := r.links[k]
	if !ok {
		p = &pendingLinks{inode: e}
		r.links[k] = p
	}
	p.seen++
	p.inode.allExcluded = p.inode.allExcluded && excluded
	if p.seen >= p.inode.nlink {
		delete(r.links, k)
		return r.inodes.add(p.inode)
	}
	return nil
}
