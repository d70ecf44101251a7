package loader

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"

	"github.com/HRDAG/ntt/enumerate"
	"golang.org/x/sys/unix"
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

func appendInt16(b []byte, v int16) []byte { return binary.BigEndian.AppendUint16(b, uint16(v)) }
func appendInt32(b []byte, v int32) []byte { return binary.BigEndian.AppendUint32(b, uint32(v)) }

func appendInt64Field(b []byte, v int64) []byte {
	b = appendInt32(b, 8)
	return binary.BigEndian.AppendUint64(b, uint64(v))
}

func appendBytesField(b, v []byte) []byte {
	b = appendInt32(b, int32(len(v)))
	return append(b, v...)
}

func appendTextField(b []byte, v string) []byte {
	b = appendInt32(b, int32(len(v)))
	return append(b, v...)
}

func appendNull(b []byte) []byte { return appendInt32(b, -1) }

// inodeKey identifies an inode within one load: dev tells the partitions
// of a disk apart.
type inodeKey struct{ dev, ino uint64 }

// inodeRow is what the loader knows of an inode while its paths stream by.
type inodeRow struct {
	typ         byte
	nlink       uint64
	size, mtime int64
	seen        uint64 // paths seen so far (hardlinked inodes only)
	allExcluded bool   // every path seen so far matched an ignore pattern
}

// appendInodeRow encodes one inode row, deciding its state: excluded
// (every path left out) before non-file, both done at load; files pending.
func appendInodeRow(b []byte, k inodeKey, r *inodeRow, st *Stats) []byte {
	b = appendInt16(b, int16(len(inodeColumns)))
	b = appendInt64Field(b, int64(k.dev))
	b = appendInt64Field(b, int64(k.ino))
	b = appendInt32(b, 1)
	b = append(b, r.typ)
	b = appendInt64Field(b, int64(r.nlink))
	b = appendInt64Field(b, r.size)
	b = appendInt64Field(b, r.mtime)
	st.Inodes++
	switch {
	case r.allExcluded:
		st.ExcludedInodes++
		b = append(appendInt32(b, 1), 1)
		b = appendTextField(b, ClaimedExcluded)
		b = appendTextField(b, "success")
	case r.typ != enumerate.TypeFile:
		st.NonFiles++
		b = append(appendInt32(b, 1), 1)
		b = appendTextField(b, ClaimedNonFile)
		b = appendTextField(b, "success")
	default:
		b = append(appendInt32(b, 1), 0)
		b = appendNull(b)
		b = appendTextField(b, "pending")
	}
	return b
}

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

// recordSource reads raw records and serves the path rows as a binary COPY
// stream (its Read), while it writes the inode rows, deduplicated, to a
// spool for a second COPY. Memory: one read buffer, one output chunk, and
// the hardlinked inodes whose links have not all been seen yet.
type recordSource struct {
	rd       *enumerate.Reader
	root     []byte // trimmed of trailing slashes; "" when the walk root is "/"
	rootRaw  []byte // the root as given, which the first record may spell
	haveRoot bool
	ignore   *enumerate.Matcher
	links    map[inodeKey]*inodeRow
	spool    *bufio.Writer
	out      []byte // encoded path rows not yet handed to COPY
	pos      int
	done     bool
	err      error
	st       *Stats
	// progress is called every progressEvery records and at the end.
	progress func(records, offset int64)
	lastOff  int64
	ibuf     []byte // scratch for one inode row
}

const (
	outChunk      = 128 << 10
	progressEvery = 1 << 14
)

func newRecordSource(raw io.Reader, root string, haveRoot bool, ignore *enumerate.Matcher, spool io.Writer, st *Stats) *recordSource {
	s := &recordSource{
		rd:     enumerate.NewReader(raw),
		ignore: ignore,
		links:  make(map[inodeKey]*inodeRow),
		spool:  bufio.NewWriterSize(spool, 256<<10),
		out:    make([]byte, 0, outChunk+64<<10),
		st:     st,
	}
	if haveRoot {
		s.setRoot([]byte(root))
	}
	s.out = append(s.out, copyHeader...)
	if _, err := s.spool.Write(copyHeader); err != nil {
		s.err = err
	}
	return s
}

func (s *recordSource) setRoot(root []byte) {
	s.rootRaw = append([]byte(nil), root...)
	r := s.rootRaw
	for len(r) > 0 && r[len(r)-1] == '/' {
		r = r[:len(r)-1]
	}
	s.root = r
	s.haveRoot = true
	s.st.Root = string(s.rootRaw)
}

// relative maps a walked path to the catalog's path: "/" for the root,
// "/a/b" for root+"/a/b".
func (s *recordSource) relative(p []byte) ([]byte, bool) {
	if string(p) == string(s.rootRaw) || string(p) == string(s.root) {
		return []byte("/"), true
	}
	n := len(s.root)
	if len(p) > n+1 && string(p[:n]) == string(s.root) && p[n] == '/' {
		return p[n:], true
	}
	return nil, false
}

// Read serves the path rows' COPY stream.
func (s *recordSource) Read(p []byte) (int, error) {
	for s.pos == len(s.out) {
		if s.err != nil {
			return 0, s.err
		}
		if s.done {
			return 0, io.EOF
		}
		s.out, s.pos = s.out[:0], 0
		s.fill()
	}
	n := copy(p, s.out[s.pos:])
	s.pos += n
	return n, nil
}

// fill encodes records until the chunk is full or the input ends. On an
// error nothing more is served: the COPY fails and the load rolls back.
func (s *recordSource) fill() {
	for len(s.out) < outChunk {
		rec, err := s.rd.Read()
		if err == io.EOF {
			s.finish()
			return
		}
		if err != nil {
			var re *enumerate.RecordError
			if errors.As(err, &re) {
				s.err = &RecordError{Index: re.Index, Offset: re.Offset, Err: err}
			} else {
				s.err = fmt.Errorf("reading the raw file: %w", err)
			}
			return
		}
		if err := s.record(&rec); err != nil {
			s.err = &RecordError{Index: s.rd.Index(), Offset: s.rd.Offset(), Path: append([]byte(nil), rec.Path...), Err: err}
			return
		}
		s.st.Records++
		if s.progress != nil && s.st.Records%progressEvery == 0 {
			s.progress(s.st.Records, s.rd.Offset())
		}
	}
}

func (s *recordSource) record(rec *enumerate.Record) error {
	if !s.haveRoot {
		s.setRoot(rec.Path)
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
	rel, ok := s.relative(rec.Path)
	if !ok {
		return fmt.Errorf("%w %q", ErrNotUnderRoot, s.rootRaw)
	}
	// The walk matches ignore patterns against the path as walked; so
	// does the loader, so both leave out the same paths.
	excluded := s.ignore.Match(rec.Path)

	b := appendInt16(s.out, int16(len(pathColumns)))
	b = appendInt64Field(b, int64(rec.Dev))
	b = appendInt64Field(b, int64(rec.Ino))
	b = appendBytesField(b, rel)
	if excluded {
		b = appendTextField(b, ExcludePatternMatch)
		s.st.ExcludedPaths++
	} else {
		b = appendNull(b)
	}
	s.out = b
	s.st.Paths++

	k := inodeKey{rec.Dev, rec.Ino}
	// Only an inode with more than one link can come back; directories
	// cannot be hardlinked. Everything else is written at once, so the map
	// holds just the hardlinked inodes whose links are still to come.
	if rec.Nlink <= 1 || rec.Type == enumerate.TypeDir {
		r := inodeRow{typ: rec.Type, nlink: rec.Nlink, size: rec.Size, mtime: rec.Mtime, allExcluded: excluded}
		return s.writeInode(k, &r)
	}
	r, ok := s.links[k]
	if !ok {
		r = &inodeRow{typ: rec.Type, nlink: rec.Nlink, size: rec.Size, mtime: rec.Mtime, allExcluded: true}
		s.links[k] = r
	}
	r.seen++
	r.allExcluded = r.allExcluded && excluded
	if r.seen >= r.nlink {
		delete(s.links, k)
		return s.writeInode(k, r)
	}
	return nil
}

func (s *recordSource) writeInode(k inodeKey, r *inodeRow) error {
	s.ibuf = appendInodeRow(s.ibuf[:0], k, r, s.st)
	if _, err := s.spool.Write(s.ibuf); err != nil {
		return fmt.Errorf("writing the inode spool: %w", err)
	}
	return nil
}

// finish writes the hardlinked inodes some of whose links were not in the
// input (outside the walk, or left out by the walk's ignore patterns), in a
// stable order, and ends both COPY streams.
func (s *recordSource) finish() {
	keys := make([]inodeKey, 0, len(s.links))
	for k := range s.links {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].dev != keys[j].dev {
			return keys[i].dev < keys[j].dev
		}
		return keys[i].ino < keys[j].ino
	})
	for _, k := range keys {
		if err := s.writeInode(k, s.links[k]); err != nil {
			s.err = err
			return
		}
	}
	s.links = nil
	if _, err := s.spool.Write(appendInt16(nil, -1)); err != nil {
		s.err = fmt.Errorf("writing the inode spool: %w", err)
		return
	}
	if err := s.spool.Flush(); err != nil {
		s.err = fmt.Errorf("writing the inode spool: %w", err)
		return
	}
	s.out = appendInt16(s.out, -1)
	s.done = true
	if s.progress != nil {
		s.progress(s.st.Records, s.rd.Offset())
	}
}

// openSpool makes an anonymous file for the inode rows: it disappears with
// the process, however the process ends.
func openSpool(dir string) (*os.File, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	f, err := os.OpenFile(dir, os.O_RDWR|unix.O_TMPFILE, 0o600)
	if err == nil {
		return f, nil
	}
	f, err = os.CreateTemp(dir, "ntt-load-*.inodes")
	if err != nil {
		return nil, fmt.Errorf("creating the inode spool in %s: %w", dir, err)
	}
	os.Remove(f.Name())
	return f, nil
}
