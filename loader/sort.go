package loader

import (
	"bufio"
	"bytes"
	"cmp"
	"container/heap"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// The rows reach PostgreSQL in key order: path rows by path, inode rows by
// (dev, ino). Its index builds then find their input presorted, which
// costs a fraction of a real sort, and duplicates meet here, where they are
// dropped and counted before any key is built. Sorting is external: runs of
// bounded size are sorted in memory, spilled to an anonymous spool file
// when the input is larger, and merged while the COPY streams.
var (
	pathRunBytes    = 64 << 20 // encoded path rows per in-memory run
	inodeRunEntries = 1 << 19  // inode entries per in-memory run (~28 MiB)
)

// grown returns b with room for n more elements. A run's buffer starts
// small and doubles up to limit (or to the one element that exceeds it):
// a floppy's load allocates a few hundred kilobytes, not the tens of MiB
// of a full run, and a large load copies each byte about once more on the
// way up.
func grown[T any](b []T, n, limit int) []T {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]T, len(b), max(min(max(2*cap(b), 1024), limit), len(b)+n))
	copy(nb, b)
	return nb
}

// spoolError is an I/O error of the spool (not the raw file's fault).
type spoolError struct{ err error }

func (e *spoolError) Error() string { return "spool: " + e.err.Error() }
func (e *spoolError) Unwrap() error { return e.err }

// spool is an anonymous temporary file holding sorted runs one after the
// other; it disappears with the process however the process ends.
type spool struct {
	f    *os.File
	w    *bufio.Writer
	size int64
}

func newSpool(dir string) (*spool, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	f, err := os.OpenFile(dir, os.O_RDWR|unix.O_TMPFILE, 0o600)
	if err != nil {
		// Filesystems without O_TMPFILE: a named file, unlinked at once.
		if f, err = os.CreateTemp(dir, "ntt-load-*.spool"); err != nil {
			return nil, &spoolError{fmt.Errorf("creating a spool file in %s: %w", dir, err)}
		}
		os.Remove(f.Name())
	}
	return &spool{f: f, w: bufio.NewWriterSize(f, 256<<10)}, nil
}

func (s *spool) write(b []byte) error {
	n, err := s.w.Write(b)
	s.size += int64(n)
	if err != nil {
		return &spoolError{err}
	}
	return nil
}

func (s *spool) flush() error {
	if err := s.w.Flush(); err != nil {
		return &spoolError{err}
	}
	return nil
}

func (s *spool) reader(start, n int64) *bufio.Reader {
	return bufio.NewReaderSize(io.NewSectionReader(s.f, start, n), 128<<10)
}

func (s *spool) close() {
	if s != nil {
		s.f.Close()
	}
}

type section struct{ start, n int64 }

// Path rows are kept encoded as COPY rows: field count, dev, ino, path,
// exclude_reason. The path starts at a fixed offset.
const (
	pathLenAt  = 2 + 12 + 12
	pathDataAt = pathLenAt + 4
)

func rowPath(row []byte) []byte {
	n := binary.BigEndian.Uint32(row[pathLenAt:])
	return row[pathDataAt : pathDataAt+int(n)]
}

func rowLen(b []byte, off int) int {
	n := int(binary.BigEndian.Uint32(b[off+pathLenAt:]))
	end := off + pathDataAt + n
	if x := int32(binary.BigEndian.Uint32(b[end:])); x > 0 {
		end += int(x)
	}
	return end + 4 - off
}

func rowDevIno(row []byte) (uint64, uint64) {
	return binary.BigEndian.Uint64(row[6:]), binary.BigEndian.Uint64(row[18:])
}

// pathSorter collects path rows and serves them sorted by path, each path
// once.
type pathSorter struct {
	arena []byte
	offs  []uint32
	limit int
	spool *spool
	dir   string
	runs  []section
	st    *Stats
	// orphans is set when a dropped duplicate named another inode than the
	// row kept: that inode may be left without a path.
	orphans  bool
	examples [][]byte // the first duplicate paths, for the log
}

// newPathSorter's rawSize is the raw file's size when known (0: not
// known): its path rows take about as many bytes, so a large load starts
// with its run's buffer at full size instead of growing into it.
func newPathSorter(dir string, st *Stats, rawSize int64) *pathSorter {
	s := &pathSorter{limit: pathRunBytes, dir: dir, st: st}
	if rawSize > 0 {
		s.arena = make([]byte, 0, min(int64(s.limit), rawSize))
	}
	return s
}

func (s *pathSorter) add(dev, ino uint64, path []byte, excluded bool) error {
	need := pathDataAt + len(path) + 4 + len(ExcludePatternMatch)
	if len(s.arena)+need > s.limit && len(s.offs) > 0 {
		if err := s.spill(); err != nil {
			return err
		}
	}
	s.arena = grown(s.arena, need, s.limit)
	s.offs = append(s.offs, uint32(len(s.arena)))
	b := appendInt16(s.arena, int16(len(pathColumns)))
	b = appendInt64Field(b, int64(dev))
	b = appendInt64Field(b, int64(ino))
	b = appendInt32(b, int32(len(path)))
	b = append(b, path...)
	if excluded {
		b = appendTextField(b, ExcludePatternMatch)
	} else {
		b = appendNull(b)
	}
	s.arena = b
	return nil
}

func (s *pathSorter) sortRun() {
	a := s.arena
	slices.SortFunc(s.offs, func(x, y uint32) int {
		if c := bytes.Compare(rowPath(a[x:]), rowPath(a[y:])); c != 0 {
			return c
		}
		return cmp.Compare(x, y) // input order among equal paths
	})
}

func (s *pathSorter) spill() error {
	if s.spool == nil {
		sp, err := newSpool(s.dir)
		if err != nil {
			return err
		}
		s.spool = sp
	}
	s.sortRun()
	start := s.spool.size
	for _, off := range s.offs {
		if err := s.spool.write(s.arena[off : int(off)+rowLen(s.arena, int(off))]); err != nil {
			return err
		}
	}
	s.runs = append(s.runs, section{start, s.spool.size - start})
	s.arena, s.offs = s.arena[:0], s.offs[:0]
	return nil
}

// stream returns the sorted, deduplicated COPY stream of the path rows.
func (s *pathSorter) stream() (io.Reader, error) {
	var next func() ([]byte, error)
	if s.spool == nil {
		s.sortRun()
		i := 0
		next = func() ([]byte, error) {
			if i == len(s.offs) {
				return nil, io.EOF
			}
			off := int(s.offs[i])
			i++
			return s.arena[off : off+rowLen(s.arena, off)], nil
		}
	} else {
		if len(s.offs) > 0 {
			if err := s.spill(); err != nil {
				return nil, err
			}
		}
		s.arena, s.offs = nil, nil // the merge needs only the spool
		if err := s.spool.flush(); err != nil {
			return nil, err
		}
		m, err := newRunMerge(s.spool, s.runs, readPathRow, func(a, b []byte) int { return bytes.Compare(rowPath(a), rowPath(b)) })
		if err != nil {
			return nil, err
		}
		next = m.next
	}
	var prev []byte
	var prevDev, prevIno uint64
	have := false
	return &copyStream{next: func(dst []byte) ([]byte, error) {
		for {
			row, err := next()
			if err != nil {
				return dst, err
			}
			p := rowPath(row)
			dev, ino := rowDevIno(row)
			if have && bytes.Equal(p, prev) {
				s.st.DuplicatePaths++
				if len(s.examples) < 10 {
					s.examples = append(s.examples, append([]byte(nil), p...))
				}
				if dev != prevDev || ino != prevIno {
					s.orphans = true
				}
				continue
			}
			prev, prevDev, prevIno, have = append(prev[:0], p...), dev, ino, true
			s.st.Paths++
			if int32(binary.BigEndian.Uint32(row[pathDataAt+len(p):])) > 0 {
				s.st.ExcludedPaths++
			}
			return append(dst, row...), nil
		}
	}}, nil
}

func (s *pathSorter) close() { s.spool.close() }

// readPathRow reads one encoded path row into buf.
func readPathRow(r *bufio.Reader, buf []byte) ([]byte, error) {
	buf = slices.Grow(buf[:0], pathDataAt)[:pathDataAt]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(buf[pathLenAt:]))
	buf = slices.Grow(buf, n+4+len(ExcludePatternMatch))[:pathDataAt+n+4]
	if _, err := io.ReadFull(r, buf[pathDataAt:]); err != nil {
		return nil, unexpected(err)
	}
	if x := int32(binary.BigEndian.Uint32(buf[pathDataAt+n:])); x > 0 {
		end := len(buf)
		buf = buf[:end+int(x)]
		if _, err := io.ReadFull(r, buf[end:]); err != nil {
			return nil, unexpected(err)
		}
	}
	return buf, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// inodeEntry is an inode as the loader knows it while records stream by.
type inodeEntry struct {
	dev, ino, nlink uint64
	size, mtime     int64
	seq             uint64 // input order of its first record
	typ             byte
	allExcluded     bool // every path seen matched an ignore pattern
}

const inodeEntrySize = 8*6 + 2

func compareInodes(a, b *inodeEntry) int {
	if c := cmp.Compare(a.dev, b.dev); c != 0 {
		return c
	}
	if c := cmp.Compare(a.ino, b.ino); c != 0 {
		return c
	}
	return cmp.Compare(a.seq, b.seq)
}

// append encodes e for the spool; big-endian (dev, ino, seq) first, so
// that encoded entries compare as bytes in the same order.
func (e *inodeEntry) append(b []byte) []byte {
	for _, v := range []uint64{e.dev, e.ino, e.seq, e.nlink, uint64(e.size), uint64(e.mtime)} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	x := byte(0)
	if e.allExcluded {
		x = 1
	}
	return append(b, e.typ, x)
}

func (e *inodeEntry) decode(b []byte) {
	u := func(i int) uint64 { return binary.BigEndian.Uint64(b[8*i:]) }
	e.dev, e.ino, e.seq, e.nlink, e.size, e.mtime = u(0), u(1), u(2), u(3), int64(u(4)), int64(u(5))
	e.typ, e.allExcluded = b[48], b[49] == 1
}

// inodeSorter collects inode entries and serves one COPY row per
// (dev, ino), sorted.
type inodeSorter struct {
	run   []inodeEntry
	spare []inodeEntry // radix sort target, swapped with run
	items []radixItem  // radix sort keys and their double buffer
	tmp   []radixItem
	limit int
	spool *spool
	dir   string
	runs  []section
	st    *Stats
	buf   []byte
}

// newInodeSorter's rawSize is as newPathSorter's; a raw record takes
// rarely less than rawRecordBytes.
func newInodeSorter(dir string, st *Stats, rawSize int64) *inodeSorter {
	s := &inodeSorter{limit: inodeRunEntries, dir: dir, st: st}
	if rawSize > 0 {
		s.run = make([]inodeEntry, 0, min(int64(s.limit), rawSize/rawRecordBytes+1))
	}
	return s
}

const rawRecordBytes = 64

func (s *inodeSorter) add(e inodeEntry) error {
	if len(s.run) >= s.limit {
		if err := s.spill(); err != nil {
			return err
		}
	}
	s.run = grown(s.run, 1, s.limit)
	s.run = append(s.run, e)
	return nil
}

func (s *inodeSorter) spill() error {
	if s.spool == nil {
		sp, err := newSpool(s.dir)
		if err != nil {
			return err
		}
		s.spool = sp
	}
	s.sortRun()
	start := s.spool.size
	for i := range s.run {
		s.buf = s.run[i].append(s.buf[:0])
		if err := s.spool.write(s.buf); err != nil {
			return err
		}
	}
	s.runs = append(s.runs, section{start, s.spool.size - start})
	s.run = s.run[:0]
	return nil
}

func (s *inodeSorter) stream() (io.Reader, error) {
	var next func() (inodeEntry, error)
	if s.spool == nil {
		s.sortRun()
		i := 0
		next = func() (inodeEntry, error) {
			if i == len(s.run) {
				return inodeEntry{}, io.EOF
			}
			i++
			return s.run[i-1], nil
		}
	} else {
		if len(s.run) > 0 {
			if err := s.spill(); err != nil {
				return nil, err
			}
		}
		s.run, s.spare, s.items, s.tmp = nil, nil, nil, nil // the merge needs only the spool
		if err := s.spool.flush(); err != nil {
			return nil, err
		}
		read := func(r *bufio.Reader, buf []byte) ([]byte, error) {
			buf = slices.Grow(buf[:0], inodeEntrySize)[:inodeEntrySize]
			_, err := io.ReadFull(r, buf)
			return buf, err
		}
		m, err := newRunMerge(s.spool, s.runs, read, func(a, b []byte) int { return bytes.Compare(a[:24], b[:24]) })
		if err != nil {
			return nil, err
		}
		next = func() (inodeEntry, error) {
			row, err := m.next()
			var e inodeEntry
			if err == nil {
				e.decode(row)
			}
			return e, err
		}
	}
	// One row per (dev, ino): an inode met again without being a counted
	// hardlink (a path listed twice, a filesystem reporting a wrong link
	// count) keeps its first record and is excluded only if every path is.
	cur, err := next()
	done := err == io.EOF
	if err != nil && !done {
		return nil, err
	}
	return &copyStream{next: func(dst []byte) ([]byte, error) {
		if done {
			return dst, io.EOF
		}
		e := cur
		for {
			n, err := next()
			if err == io.EOF {
				done = true
				break
			}
			if err != nil {
				return dst, err
			}
			if n.dev != e.dev || n.ino != e.ino {
				cur = n
				break
			}
			e.allExcluded = e.allExcluded && n.allExcluded
		}
		return appendInodeRow(dst, &e, s.st), nil
	}}, nil
}

func (s *inodeSorter) close() { s.spool.close() }

// sortRun sorts the run by (dev, ino), ties in input order. A run holds
// few devices and inode numbers well below 2^56, so a stable radix sort
// on rank(dev)<<56|ino does it in a few linear passes; anything else gets
// a comparison sort.
func (s *inodeSorter) sortRun() {
	if !s.radixSort() {
		slices.SortFunc(s.run, func(a, b inodeEntry) int { return compareInodes(&a, &b) })
	}
}

type radixItem struct {
	key uint64
	idx uint32
}

func (s *inodeSorter) radixSort() bool {
	run := s.run
	if len(run) < 64 || len(run) > math.MaxUint32 {
		return false
	}
	rank := map[uint64]uint64{}
	for i := range run {
		if run[i].ino >= 1<<56 {
			return false
		}
		if _, ok := rank[run[i].dev]; !ok {
			if len(rank) == 256 {
				return false
			}
			rank[run[i].dev] = 0
		}
	}
	devs := make([]uint64, 0, len(rank))
	for d := range rank {
		devs = append(devs, d)
	}
	slices.Sort(devs)
	for i, d := range devs {
		rank[d] = uint64(i)
	}
	n := len(run)
	if cap(s.items) < n {
		s.items, s.tmp = make([]radixItem, n), make([]radixItem, n)
	}
	items, tmp := s.items[:n], s.tmp[:n]
	var or, and uint64 = 0, ^uint64(0)
	for i := range run {
		k := rank[run[i].dev]<<56 | run[i].ino
		items[i] = radixItem{k, uint32(i)}
		or |= k
		and &= k
	}
	for shift := uint(0); shift < 64; shift += 8 {
		if (or^and)>>shift&0xff == 0 {
			continue // the same byte in every key
		}
		var count [257]int
		for i := range items {
			count[items[i].key>>shift&0xff+1]++
		}
		for b := 1; b < 257; b++ {
			count[b] += count[b-1]
		}
		for i := range items {
			b := items[i].key >> shift & 0xff
			tmp[count[b]] = items[i]
			count[b]++
		}
		items, tmp = tmp, items
	}
	// Gather into the spare run and swap: the buffers are reused run
	// after run, so memory stays flat however many runs there are.
	if cap(s.spare) < n {
		s.spare = make([]inodeEntry, 0, cap(run))
	}
	sorted := s.spare[:n]
	for i, it := range items {
		sorted[i] = run[it.idx]
	}
	s.spare, s.run = run[:0], sorted
	return true
}

// appendInodeRow encodes one inode row, deciding its state: excluded
// (every path left out) before non-file, both done at load; files pending.
func appendInodeRow(b []byte, e *inodeEntry, st *Stats) []byte {
	b = appendInt16(b, int16(len(inodeColumns)))
	b = appendInt64Field(b, int64(e.dev))
	b = appendInt64Field(b, int64(e.ino))
	b = appendInt32(b, 1)
	b = append(b, e.typ)
	b = appendInt64Field(b, int64(e.nlink))
	b = appendInt64Field(b, e.size)
	b = appendInt64Field(b, e.mtime)
	st.Inodes++
	switch {
	case e.allExcluded:
		st.ExcludedInodes++
		b = append(appendInt32(b, 1), 1)
		b = appendTextField(b, ClaimedExcluded)
		b = appendTextField(b, "success")
	case e.typ != 'f':
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

// runMerge merges sorted runs of the spool; ties go to the earlier run,
// which holds earlier input.
type runMerge struct {
	h runHeap
}

type runCursor struct {
	r          *bufio.Reader
	row, spare []byte // double buffer: the row last returned stays valid
	idx        int
	read       func(*bufio.Reader, []byte) ([]byte, error)
}

type runHeap struct {
	c    []*runCursor
	less func(a, b []byte) int
}

func (h *runHeap) Len() int { return len(h.c) }
func (h *runHeap) Less(i, j int) bool {
	if c := h.less(h.c[i].row, h.c[j].row); c != 0 {
		return c < 0
	}
	return h.c[i].idx < h.c[j].idx
}
func (h *runHeap) Swap(i, j int) { h.c[i], h.c[j] = h.c[j], h.c[i] }
func (h *runHeap) Push(x any)    { h.c = append(h.c, x.(*runCursor)) }
func (h *runHeap) Pop() any {
	x := h.c[len(h.c)-1]
	h.c = h.c[:len(h.c)-1]
	return x
}

func newRunMerge(sp *spool, runs []section, read func(*bufio.Reader, []byte) ([]byte, error), less func(a, b []byte) int) (*runMerge, error) {
	m := &runMerge{h: runHeap{less: less}}
	for i, s := range runs {
		c := &runCursor{r: sp.reader(s.start, s.n), idx: i, read: read}
		row, err := read(c.r, nil)
		if err == io.EOF {
			continue
		}
		if err != nil {
			return nil, &spoolError{err}
		}
		c.row = row
		m.h.c = append(m.h.c, c)
	}
	heap.Init(&m.h)
	return m, nil
}

// next returns the smallest row; it is valid until the following call.
func (m *runMerge) next() ([]byte, error) {
	if len(m.h.c) == 0 {
		return nil, io.EOF
	}
	c := m.h.c[0]
	out := c.row
	row, err := c.read(c.r, c.spare[:0])
	switch {
	case err == io.EOF:
		heap.Pop(&m.h)
	case err != nil:
		return nil, &spoolError{err}
	default:
		c.row, c.spare = row, out
		heap.Fix(&m.h, 0)
	}
	return out, nil
}

// copyStream serves a binary COPY stream: header, rows from next, trailer.
type copyStream struct {
	next   func(dst []byte) ([]byte, error)
	buf    []byte
	pos    int
	header bool
	done   bool
	err    error
}

const copyChunk = 128 << 10

func (c *copyStream) Read(p []byte) (int, error) {
	for c.pos == len(c.buf) {
		if c.err != nil {
			return 0, c.err
		}
		if c.done {
			return 0, io.EOF
		}
		c.buf, c.pos = c.buf[:0], 0
		if !c.header {
			c.buf = append(c.buf, copyHeader...)
			c.header = true
		}
		for len(c.buf) < copyChunk {
			b, err := c.next(c.buf)
			c.buf = b
			if err == io.EOF {
				c.buf = append(c.buf, copyTrailer...)
				c.done = true
				break
			}
			if err != nil {
				c.err = err
				break
			}
		}
	}
	n := copy(p, c.buf[c.pos:])
	c.pos += n
	return n, nil
}
