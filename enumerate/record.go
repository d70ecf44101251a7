package enumerate

import (
	"errors"
	"fmt"
	"strconv"
)

// Field and record separators of the raw format.
const (
	FieldSep  = 0x1C // ASCII File Separator, between the seven fields
	RecordEnd = 0x00 // terminates every record, including the last
)

// Types of entries, as find's %y prints them.
const (
	TypeFile    byte = 'f'
	TypeDir     byte = 'd'
	TypeSymlink byte = 'l'
	TypeBlock   byte = 'b'
	TypeChar    byte = 'c'
	TypeFIFO    byte = 'p'
	TypeSocket  byte = 's'
)

// ValidType reports whether t is one of the seven entry types of the format.
func ValidType(t byte) bool {
	switch t {
	case TypeFile, TypeDir, TypeSymlink, TypeBlock, TypeChar, TypeFIFO, TypeSocket:
		return true
	}
	return false
}

// Record is one directory entry of a medium, as lstat saw it during the walk.
type Record struct {
	Type  byte   // one of f d l b c p s
	Dev   uint64 // st_dev at enumeration time: tells partitions apart, changes with every mount
	Ino   uint64 // st_ino
	Nlink uint64 // st_nlink
	Size  int64  // st_size (for a symlink: the length of its target)
	Mtime int64  // st_mtime in whole seconds since the epoch (floor; negative before 1970)
	// Path is the raw bytes of the absolute path as walked: any byte but
	// 0x00. A Record returned by Reader.Read shares Path with the reader's
	// buffer; it is valid only until the next Read (use Clone to keep it).
	Path []byte
}

// Clone returns a copy of r whose Path does not share memory with r's.
func (r Record) Clone() Record {
	r.Path = append([]byte(nil), r.Path...)
	return r
}

// Errors describing why a record is malformed. A *RecordError wraps one of
// them, so callers test with errors.Is.
var (
	ErrEmpty        = errors.New("empty input: no records")
	ErrTruncated    = errors.New("truncated record: input ends before the terminating 0x00")
	ErrMissingField = errors.New("missing field: fewer than six 0x1C separators")
	ErrBadNumber    = errors.New("malformed number")
	ErrBadType      = errors.New("unknown entry type")
	ErrEmptyPath    = errors.New("empty path")
	ErrNULInPath    = errors.New("path contains byte 0x00")
	ErrTooLong      = errors.New("record longer than the reader's limit")
)

// RecordError reports a malformed record by its position in the raw stream.
// Index counts records from 0 (the walk root); Offset is the byte offset of
// the record's first byte. Field names the offending field when known.
type RecordError struct {
	Index  int64
	Offset int64
	Field  string
	Err    error
}

func (e *RecordError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("raw record index %d at byte offset %d: field %s: %v", e.Index, e.Offset, e.Field, e.Err)
	}
	return fmt.Sprintf("raw record index %d at byte offset %d: %v", e.Index, e.Offset, e.Err)
}

func (e *RecordError) Unwrap() error { return e.Err }

// Validate checks that r can be encoded and read back unchanged.
func (r *Record) Validate() error {
	if !ValidType(r.Type) {
		return fmt.Errorf("%w %q", ErrBadType, r.Type)
	}
	if len(r.Path) == 0 {
		return ErrEmptyPath
	}
	for _, c := range r.Path {
		if c == RecordEnd {
			return ErrNULInPath
		}
	}
	return nil
}

// AppendRecord appends the raw encoding of r to dst. It does not validate r
// (Writer does); the walk calls it with values it built itself.
func AppendRecord(dst []byte, r *Record) []byte {
	dst = append(dst, r.Type, FieldSep)
	dst = strconv.AppendUint(dst, r.Dev, 10)
	dst = append(dst, FieldSep)
	dst = strconv.AppendUint(dst, r.Ino, 10)
	dst = append(dst, FieldSep)
	dst = strconv.AppendUint(dst, r.Nlink, 10)
	dst = append(dst, FieldSep)
	dst = strconv.AppendInt(dst, r.Size, 10)
	dst = append(dst, FieldSep)
	dst = strconv.AppendInt(dst, r.Mtime, 10)
	dst = append(dst, FieldSep)
	dst = append(dst, r.Path...)
	return append(dst, RecordEnd)
}
