package enumerate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxRecord is the longest record a Reader accepts by default. A path
// 200 directories deep with 255-byte names is about 51 KiB; Linux itself
// puts no limit on the depth a walk can reach, so this leaves a wide margin
// while keeping the reader's memory bounded.
const DefaultMaxRecord = 1 << 20

const readerChunk = 256 << 10

// Reader reads records of the raw format from a stream, in constant memory
// (one buffer of at most the record limit plus a read chunk).
//
// The zero value is not usable; call NewReader.
type Reader struct {
	src    io.Reader
	buf    []byte
	start  int   // first unread byte in buf
	end    int   // end of valid data in buf
	base   int64 // stream offset of buf[0]
	max    int
	index  int64 // index of the next record
	last   int64 // offset of the record last returned
	eof    bool
	sticky error // once set, every Read returns it
}

// NewReader returns a Reader with the DefaultMaxRecord limit.
func NewReader(r io.Reader) *Reader { return NewReaderSize(r, DefaultMaxRecord) }

// NewReaderSize returns a Reader that refuses records longer than maxRecord
// bytes (terminator included) with ErrTooLong.
func NewReaderSize(r io.Reader, maxRecord int) *Reader {
	if maxRecord < 16 {
		maxRecord = 16
	}
	n := readerChunk
	if n > maxRecord+readerChunk {
		n = maxRecord + readerChunk
	}
	return &Reader{src: r, buf: make([]byte, n), max: maxRecord, last: -1}
}

// Index returns the index of the record last returned by Read (0 for the
// first), or -1 before the first Read. Callers use it, with Offset, to name
// a record in their own errors.
func (r *Reader) Index() int64 { return r.index - 1 }

// Offset returns the byte offset of the record last returned by Read, or -1.
func (r *Reader) Offset() int64 { return r.last }

// Read returns the next record. At the clean end of the stream it returns
// io.EOF. A malformed record gives a *RecordError naming its index and byte
// offset; if the record was complete (its 0x00 terminator was found) the
// reader has moved past it and Read may be called again to go on with the
// next one. An empty stream, a truncated last record, a record over the
// limit and errors of the underlying reader are final.
//
// The returned Path points into the reader's buffer and is valid only until
// the next call to Read; Record.Clone keeps a copy.
func (r *Reader) Read() (Record, error) {
	if r.sticky != nil {
		return Record{}, r.sticky
	}
	for {
		if i := bytes.IndexByte(r.buf[r.start:r.end], RecordEnd); i >= 0 {
			line := r.buf[r.start : r.start+i]
			off := r.base + int64(r.start)
			r.start += i + 1
			idx := r.index
			r.index++
			r.last = off
			if i+1 > r.max {
				return Record{}, &RecordError{Index: idx, Offset: off,
					Err: fmt.Errorf("%w (%d bytes)", ErrTooLong, r.max)}
			}
			var rec Record
			if parseFast(line, &rec) {
				return rec, nil
			}
			rec, field, err := parseRecord(line)
			if err != nil {
				return Record{}, &RecordError{Index: idx, Offset: off, Field: field, Err: err}
			}
			return rec, nil
		}
		if r.eof {
			off := r.base + int64(r.start)
			switch {
			case r.start < r.end:
				r.sticky = &RecordError{Index: r.index, Offset: off, Err: ErrTruncated}
			case r.index == 0:
				r.sticky = &RecordError{Index: 0, Offset: 0, Err: ErrEmpty}
			default:
				r.sticky = io.EOF
			}
			return Record{}, r.sticky
		}
		if r.end-r.start >= r.max {
			r.sticky = &RecordError{Index: r.index, Offset: r.base + int64(r.start),
				Err: fmt.Errorf("%w (%d bytes)", ErrTooLong, r.max)}
			return Record{}, r.sticky
		}
		if err := r.fill(); err != nil {
			r.sticky = fmt.Errorf("reading raw record index %d at byte offset %d: %w",
				r.index, r.base+int64(r.start), err)
			return Record{}, r.sticky
		}
	}
}

// fill moves the unread bytes to the front of the buffer, grows it if a
// record does not fit (up to the limit plus one chunk), and reads more.
func (r *Reader) fill() error {
	if r.start > 0 {
		n := copy(r.buf, r.buf[r.start:r.end])
		r.base += int64(r.start)
		r.start, r.end = 0, n
	}
	if r.end == len(r.buf) {
		nb := make([]byte, min(2*len(r.buf), r.max+readerChunk))
		copy(nb, r.buf[:r.end])
		r.buf = nb
	}
	for tries := 0; tries < 100; tries++ {
		n, err := r.src.Read(r.buf[r.end:])
		r.end += n
		if errors.Is(err, io.EOF) {
			r.eof = true
			return nil
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
	return io.ErrNoProgress
}

// parseFast parses a well-formed record with numbers of at most 18 digits
// in one pass, and reports false for anything else, which parseRecord then
// handles (and explains) field by field.
func parseFast(b []byte, rec *Record) bool {
	if len(b) < 13 || b[1] != FieldSep || !ValidType(b[0]) {
		return false
	}
	var v [5]uint64
	i := 2
	for k := range 5 {
		neg := k >= 3 && b[i] == '-'
		if neg {
			i++
		}
		start := i
		var n uint64
		for i < len(b) && b[i] != FieldSep {
			d := b[i] - '0'
			if d > 9 {
				return false
			}
			n = n*10 + uint64(d)
			i++
		}
		digits := i - start
		if i >= len(b)-1 || digits == 0 || digits > 18 || (b[start] == '0' && digits > 1) || (neg && n == 0) {
			return false // also: no path after the last separator
		}
		if neg {
			v[k] = -n
		} else {
			v[k] = n
		}
		i++
	}
	rec.Type = b[0]
	rec.Dev, rec.Ino, rec.Nlink = v[0], v[1], v[2]
	rec.Size, rec.Mtime = int64(v[3]), int64(v[4])
	rec.Path = b[i:]
	return true
}

// parseRecord splits a record (without its terminator) on its first six
// separators and parses the fields. It accepts only the canonical form the
// writer produces, so an accepted record re-encodes to the same bytes.
func parseRecord(b []byte) (rec Record, field string, err error) {
	var f [6][]byte
	rest := b
	for k := 0; k < 6; k++ {
		i := bytes.IndexByte(rest, FieldSep)
		if i < 0 {
			return rec, "", fmt.Errorf("%w (found %d)", ErrMissingField, k)
		}
		f[k] = rest[:i]
		rest = rest[i+1:]
	}
	if len(f[0]) != 1 || !ValidType(f[0][0]) {
		return rec, "type", fmt.Errorf("%w %q", ErrBadType, f[0])
	}
	rec.Type = f[0][0]
	if rec.Dev, err = parseUint(f[1]); err != nil {
		return rec, "dev", err
	}
	if rec.Ino, err = parseUint(f[2]); err != nil {
		return rec, "ino", err
	}
	if rec.Nlink, err = parseUint(f[3]); err != nil {
		return rec, "nlink", err
	}
	if rec.Size, err = parseInt(f[4]); err != nil {
		return rec, "size", err
	}
	if rec.Mtime, err = parseInt(f[5]); err != nil {
		return rec, "mtime", err
	}
	if len(rest) == 0 {
		return rec, "path", ErrEmptyPath
	}
	rec.Path = rest
	return rec, "", nil
}

func badNumber(b []byte, why string) error {
	if len(b) > 24 {
		return fmt.Errorf("%w %q…: %s", ErrBadNumber, b[:24], why)
	}
	return fmt.Errorf("%w %q: %s", ErrBadNumber, b, why)
}

func parseUint(b []byte) (uint64, error) {
	n, why := parseDigits(b)
	if why != "" {
		return 0, badNumber(b, why)
	}
	return n, nil
}

// parseDigits parses canonical decimal: digits only, no sign, no leading
// zero. It returns why the bytes are refused, or "".
func parseDigits(b []byte) (uint64, string) {
	if len(b) == 0 {
		return 0, "empty"
	}
	if b[0] == '0' && len(b) > 1 {
		return 0, "leading zero"
	}
	var n uint64
	for _, c := range b {
		d := uint64(c - '0')
		if d > 9 {
			return 0, "not a decimal digit"
		}
		if n > (1<<64-1-d)/10 {
			return 0, "out of range"
		}
		n = n*10 + d
	}
	return n, ""
}

// parseInt parses canonical signed decimal ("-0" is refused: it would
// re-encode as "0").
func parseInt(b []byte) (int64, error) {
	neg := len(b) > 0 && b[0] == '-'
	digits := b
	if neg {
		digits = b[1:]
	}
	u, why := parseDigits(digits)
	switch {
	case why != "":
	case neg && u == 0:
		why = "negative zero"
	case neg && u > 1<<63, !neg && u > 1<<63-1:
		why = "out of range"
	}
	if why != "" {
		return 0, badNumber(b, why)
	}
	if neg {
		return -int64(u-1) - 1, nil
	}
	return int64(u), nil
}
