package fat

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/HRDAG/ntt/imagefs"
)

// Attribute bits of a directory record.
const (
	attrVolume   = 0x08
	attrDir      = 0x10
	attrLongName = 0x0F // read-only | hidden | system | volume: a VFAT long-name slot
	attrReserved = 0xC0
	// Lowercase flags in byte 12 (Windows NT): the 8.3 base name and the
	// extension are shown in lowercase.
	lowerBase = 0x08
	lowerExt  = 0x10
	// First name bytes.
	endOfDir = 0x00
	deleted  = 0xE5
	kanjiE5  = 0x05 // stands for a first byte 0xE5
)

// Characters that replace the bytes a name may not hold.
const (
	slashStandIn = '\u2215' // DIVISION SLASH for '/'
)

// record is one raw 32-byte directory record and where it lies.
type record struct {
	b   []byte
	off int64 // volume offset
}

func (r record) attr() byte { return r.b[11] }

// dirContent reads a directory's records through its runs, bounded by
// maxDirBytes. A run that cannot be read ends the directory there; with
// report, that is reported (Kind truncated past the image's end, else
// unreadable).
func (v *Volume) dirContent(dir *imagefs.Entry, report bool) ([]record, error) {
	var recs []record
	var total int64
	var readErr error
	for _, r := range dir.Runs {
		if r.Hole || r.Length <= 0 {
			continue
		}
		n := min(r.Length, maxDirBytes-total)
		if n <= 0 {
			break
		}
		// Never read past the volume: the reader may be a whole disk
		// whose next partition follows.
		var m int
		var err error
		if r.Offset >= 0 && r.Offset < v.size {
			buf := make([]byte, min(n, v.size-r.Offset))
			m, err = v.r.ReadAt(buf, r.Offset)
			m -= m % dirEntrySize
			for i := 0; i < m; i += dirEntrySize {
				recs = append(recs, record{b: buf[i : i+dirEntrySize], off: r.Offset + int64(i)})
			}
		}
		total += int64(m)
		if int64(m) < n {
			kind := "unreadable"
			if r.Offset+int64(m)+dirEntrySize > v.size {
				kind, err = "truncated", imagefs.ErrBeyondEnd
			} else if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			readErr = &imagefs.ReadError{Offset: r.Offset + int64(m), Err: err}
			if report {
				v.opts.Reportf(r.Offset+int64(m), kind, "directory %s: its records from byte %d on cannot be read: %v", v.dirName(dir), total, err)
			}
			break
		}
	}
	if len(recs) == 0 && readErr != nil {
		return nil, readErr
	}
	return recs, nil
}

func (v *Volume) dirName(dir *imagefs.Entry) string {
	if dir.ID == RootID {
		return "/"
	}
	return fmt.Sprintf("%q (record at byte %d)", dir.Name, dir.ID)
}

// longName gathers the slots of a VFAT long name, which precede their 8.3
// record, last part first.
type longName struct {
	next  int // the sequence number expected next; 0: none pending
	count int
	sum   byte
	start int64 // volume offset of the first slot
	units [20 * 13]uint16
}

func (l *longName) pending() bool { return l.count > 0 }

func (l *longName) reset() { l.next, l.count = 0, 0 }

// slot adds a long-name slot; it returns a problem detail if the slot does
// not continue the name gathered so far (the name is then dropped).
func (l *longName) slot(r record) string {
	ord := r.b[0]
	seq := int(ord & 0x1F)
	var why string
	if ord&0x40 != 0 {
		if l.pending() {
			why = fmt.Sprintf("a long name started at byte %d is cut off by another", l.start)
		}
		l.reset()
		if seq == 0 || seq > 20 {
			return joinWhy(why, fmt.Sprintf("long-name slot with sequence number %d (1..20)", seq))
		}
		l.count, l.next, l.sum, l.start = seq, seq, r.b[13], r.off
	} else if !l.pending() {
		return "a long-name slot without its first part"
	} else if seq != l.next || r.b[13] != l.sum {
		l.reset()
		return fmt.Sprintf("long-name slot %d (checksum %#02x) does not continue the name started at byte %d", seq, r.b[13], l.start)
	}
	u := l.units[(seq-1)*13:]
	for i := 0; i < 5; i++ {
		u[i] = le.Uint16(r.b[1+2*i:])
	}
	for i := 0; i < 6; i++ {
		u[5+i] = le.Uint16(r.b[14+2*i:])
	}
	for i := 0; i < 2; i++ {
		u[11+i] = le.Uint16(r.b[28+2*i:])
	}
	l.next--
	return why
}

func joinWhy(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// name returns the gathered long name as UTF-8 if it is complete and its
// checksum matches the 8.3 name; else "" and why not.
func (l *longName) name(short []byte) (string, string) {
	if l.next != 0 {
		return "", fmt.Sprintf("the long name started at byte %d lacks %d slots", l.start, l.next)
	}
	if sum := shortChecksum(short); sum != l.sum {
		return "", fmt.Sprintf("the long name started at byte %d has checksum %#02x, the 8.3 name %q has %#02x", l.start, l.sum, short, sum)
	}
	u := l.units[:l.count*13]
	if i := indexUnit(u, 0); i >= 0 {
		u = u[:i]
	}
	return string(utf16.Decode(u)), ""
}

func indexUnit(u []uint16, x uint16) int {
	for i, c := range u {
		if c == x {
			return i
		}
	}
	return -1
}

// shortChecksum is the checksum a long name's slots carry of their 8.3 name.
func shortChecksum(short []byte) byte {
	var sum byte
	for _, c := range short[:11] {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// shortName decodes an 8.3 name (the 11 raw bytes and the case flags) with
// the code page, as Linux's vfat does by default (shortname=mixed): a NUL
// ends each part, trailing spaces are dropped, a first byte 0x05 stands for
// 0xE5, and the case flags lower the base name and extension.
func (v *Volume) shortName(raw []byte, flags byte) string {
	var sb strings.Builder
	part := func(b []byte, lower bool) {
		if i := bytes.IndexByte(b, 0); i >= 0 {
			b = b[:i]
		}
		for _, c := range bytes.TrimRight(b, " ") {
			if lower {
				sb.WriteRune(v.cp.lower[c])
			} else {
				sb.WriteRune(v.cp.rune(c))
			}
		}
	}
	base := raw[:8]
	if base[0] == kanjiE5 {
		base = append([]byte{deleted}, base[1:]...)
	}
	part(base, flags&lowerBase != 0)
	if ext := bytes.TrimRight(raw[8:11], " \x00"); len(ext) > 0 && ext[0] != 0 {
		sb.WriteByte('.')
		part(ext, flags&lowerExt != 0)
	}
	return sb.String()
}

// cleanName makes a decoded name safe as Entry.Name: '/' becomes U+2215
// DIVISION SLASH, NUL becomes U+2400 SYMBOL FOR NULL, invalid UTF-8 (an
// unpaired surrogate decodes to U+FFFD already) cannot occur.
func cleanName(s string) []byte {
	if !strings.ContainsAny(s, "/\x00") {
		return []byte(s)
	}
	s = strings.ReplaceAll(s, "/", string(slashStandIn))
	return []byte(strings.ReplaceAll(s, "\x00", "\u2400"))
}

// dosTime converts a DOS date and time (local time of the machine that
// wrote it, taken as UTC) to a time; false if either is not a valid value.
func dosTime(date, tm uint16) (time.Time, bool) {
	y, mo, d := 1980+int(date>>9), time.Month(date>>5&0x0F), int(date&0x1F)
	h, mi, s := int(tm>>11), int(tm>>5&0x3F), 2*int(tm&0x1F)
	if mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || s > 59 {
		return time.Time{}, false
	}
	t := time.Date(y, mo, d, h, mi, s, 0, time.UTC)
	if t.Day() != d { // 31 February and the like
		return time.Time{}, false
	}
	return t, true
}

// parsed is one directory record that names a file or directory.
type parsed struct {
	rec   record
	name  string
	isDir bool
}

// parseDir turns records into the entries they name, dropping deleted
// records, long-name slots, the volume label, "." and "..", and records
// that cannot be an entry. With report, damage is reported.
func (v *Volume) parseDir(recs []record, isRoot bool, report bool) []parsed {
	reportf := func(off int64, kind, format string, args ...any) {
		if report {
			v.opts.Reportf(off, kind, format, args...)
		}
	}
	var out []parsed
	var ln longName
	labelSeen := false
	for _, r := range recs {
		first, attr := r.b[0], r.attr()
		if first == endOfDir {
			if ln.pending() {
				reportf(ln.start, "lfn_mismatch", "a long name at the end of the directory has no 8.3 record")
			}
			break
		}
		if first == deleted {
			if ln.pending() {
				reportf(ln.start, "lfn_mismatch", "a long name is followed by a deleted record at byte %d", r.off)
				ln.reset()
			}
			continue
		}
		if attr&0x3F == attrLongName {
			if why := ln.slot(r); why != "" {
				reportf(r.off, "lfn_mismatch", "%s", why)
			}
			continue
		}
		raw := r.b[:11]
		if attr&attrVolume != 0 && attr&attrDir == 0 && attr&attrReserved == 0 {
			if !isRoot || labelSeen {
				reportf(r.off, "bad_entry", "a second volume label %q, or one outside the root directory; left out", raw)
			}
			labelSeen = true
			ln.reset()
			continue
		}
		if bytes.Equal(raw, []byte(".          ")) || bytes.Equal(raw, []byte("..         ")) {
			ln.reset()
			continue
		}
		if why := badRecord(r); why != "" {
			reportf(r.off, "bad_entry", "directory record %q is not an entry (%s); left out", raw, why)
			ln.reset()
			continue
		}
		name := ""
		if ln.pending() {
			var why string
			name, why = ln.name(raw)
			if why != "" {
				reportf(ln.start, "lfn_mismatch", "%s; the 8.3 name is used", why)
			}
			if name == "." || name == ".." {
				reportf(ln.start, "lfn_mismatch", "the long name %q is not a file name; the 8.3 name is used", name)
				name = ""
			}
		}
		if name == "" {
			name = v.shortName(raw, r.b[12])
		}
		ln.reset()
		out = append(out, parsed{rec: r, name: name, isDir: attr&attrDir != 0})
	}
	return out
}

// badRecord says why a record (not a long-name slot, label, dot entry or
// deleted one) cannot be a file or directory: control bytes in its 8.3
// name, reserved attribute bits, an empty name, a label that is also a
// directory. "" if it can.
func badRecord(r record) string {
	if r.attr()&attrReserved != 0 {
		return fmt.Sprintf("reserved attribute bits %#02x", r.attr())
	}
	if r.attr()&attrVolume != 0 {
		return "volume label and directory at once"
	}
	for i, c := range r.b[:11] {
		if c < 0x20 && !(i == 0 && c == kanjiE5) {
			return fmt.Sprintf("byte %#02x in the 8.3 name", c)
		}
	}
	if r.b[0] == ' ' {
		return "the 8.3 name starts with a space"
	}
	return ""
}
