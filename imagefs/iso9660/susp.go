package iso9660

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"time"
)

// Bounds on what one directory record's System Use area may make the
// reader do. Real records stay far below them.
const (
	maxContinuations = 16      // CE hops followed per record
	maxSUBytes       = 1 << 16 // System Use bytes parsed per record, continuations included
	// Continuation bytes read per directory: a directory of records whose
	// CE chains all run to the bound would otherwise read up to 32 KB per
	// 34-byte record.
	maxDirCEBytes  = 4 << 20
	maxNameBytes   = 1024 // an NM name (Linux stops at 254)
	maxTargetBytes = 4096 // an SL target (PATH_MAX)
)

// rockRidge is what the SUSP and RRIP entries of one directory record say.
type rockRidge struct {
	// SP: the record is the root's "." and says SUSP is in use.
	sp   bool
	skip int // SP len_skp: bytes to skip at the start of every other System Use area
	er   bool
	rr   bool // the RRIP 1.09 "RR" flags entry

	px        bool
	mode      uint32
	nlink     uint32
	serial    uint32
	hasSerial bool // 44-byte PX (RRIP 1.12)

	nm     bool
	name   []byte
	nmMore bool // the last NM had CONTINUE

	sl       bool
	target   []byte
	slMore   bool // the last SL had CONTINUE (the link goes on in the next SL)
	slBroken bool // the target was longer than maxTargetBytes

	mtime    time.Time
	hasMtime bool

	cl int64 // CL: the relocated directory's block, or -1
	re bool  // RE: this is a relocated directory, hidden where it was moved to
	zf bool  // ZF: zisofs-compressed content
}

// parseSU parses a System Use area at volume offset off and follows its CE
// continuation areas, bounded and loop-checked: a continuation lies within
// one logical block (as Linux requires), at most maxContinuations are
// followed, and their bytes are taken from *budget (nil: no shared budget).
// who names the record in reports.
func (f *FS) parseSU(area []byte, off int64, who fmt.Stringer, budget *int) *rockRidge {
	rr := &rockRidge{cl: -1}
	seen := map[int64]bool{}
	total := 0
	for hop := 0; ; hop++ {
		total += len(area)
		ceBlock, ceOff, ceLen, hasCE := f.parseSUArea(rr, area, off, who)
		if !hasCE {
			break
		}
		at := ceBlock*f.bs + ceOff
		switch {
		case hop+1 > maxContinuations:
			f.opts.Reportf(off, "loop", "%s: more than %d System Use continuation areas; the rest is ignored", who, maxContinuations)
		case seen[at]:
			f.opts.Reportf(off, "loop", "%s: System Use continuation at byte offset %d was already read (a CE loop)", who, at)
		case ceLen == 0 || total+int(ceLen) > maxSUBytes || ceOff+ceLen > f.bs:
			f.opts.Reportf(off, "corrupt", "%s: System Use continuation of %d bytes at block offset %d is out of bounds", who, ceLen, ceOff)
		case budget != nil && *budget < int(ceLen):
			if *budget >= 0 {
				f.opts.Reportf(off, "corrupt", "%s: the directory's System Use continuations exceed %d bytes; no more are read", who, maxDirCEBytes)
				*budget = -1
			}
		case at+ceLen > f.size:
			f.opts.Reportf(off, "out_of_volume", "%s: System Use continuation at byte offset %d (%d bytes) lies past the end of the volume (%d bytes)", who, at, ceLen, f.size)
		default:
			if budget != nil {
				*budget -= int(ceLen)
			}
			seen[at] = true
			buf := make([]byte, ceLen)
			if _, err := f.r.ReadAt(buf, at); err != nil {
				f.opts.Reportf(at, "unreadable", "%s: System Use continuation: %v", who, err)
				return rr
			}
			area, off = buf, at
			continue
		}
		break
	}
	return rr
}

// parseSUArea parses the entries of one System Use area into rr and
// returns the continuation area the last CE entry named, if any.
func (f *FS) parseSUArea(rr *rockRidge, b []byte, off int64, who fmt.Stringer) (ceBlock, ceOff, ceLen int64, hasCE bool) {
	pos := 0
	for len(b)-pos >= 4 {
		e := b[pos:]
		if e[0] == 0 { // padding to the end of the area
			break
		}
		n := int(e[2])
		if n < 4 || n > len(e) {
			f.opts.Reportf(off+int64(pos), "corrupt", "%s: System Use entry %q has length %d (%d bytes left)", who, printable(e[:2]), n, len(e))
			break
		}
		e = e[:n]
		switch string(e[:2]) {
		case "ST":
			return
		case "CE":
			if n >= 28 {
				ceBlock = int64(le32(e[4:]))
				ceOff = int64(le32(e[12:]))
				ceLen = int64(le32(e[20:]))
				hasCE = true
			}
		case "SP":
			if n >= 7 && e[4] == 0xBE && e[5] == 0xEF {
				rr.sp = true
				rr.skip = int(e[6])
			}
		case "ER":
			rr.er = true
		case "RR":
			rr.rr = true
		case "PX":
			if n >= 36 {
				rr.px = true
				rr.mode = le32(e[4:])
				rr.nlink = le32(e[12:])
				if n >= 44 {
					rr.serial = le32(e[36:])
					rr.hasSerial = true
				}
			}
		case "NM":
			if n >= 5 {
				f.nameChunk(rr, e, off+int64(pos), who)
			}
		case "SL":
			if n >= 5 {
				f.symlinkChunk(rr, e)
			}
		case "TF":
			if n >= 5 {
				flags := e[4]
				size := 7
				if flags&0x80 != 0 {
					size = 17
				}
				if flags&0x02 != 0 {
					i := bits.OnesCount8(flags & 0x01) // a creation time comes first
					if at := 5 + i*size; at+size <= n {
						if size == 7 {
							rr.mtime = shortDate(e[at : at+7])
						} else {
							rr.mtime = longDate(e[at : at+17])
						}
						rr.hasMtime = true
					}
				}
			}
		case "CL":
			if n >= 12 {
				rr.cl = int64(le32(e[4:]))
			}
		case "RE":
			rr.re = true
		case "ZF":
			rr.zf = true
		}
		pos += n
	}
	return
}

// nameChunk appends an NM entry to the alternate name.
func (f *FS) nameChunk(rr *rockRidge, e []byte, off int64, who fmt.Stringer) {
	flags := e[4]
	if rr.nm && !rr.nmMore {
		return // a second, unrelated NM: the first name stands, as in Linux
	}
	rr.nm = true
	rr.nmMore = flags&0x01 != 0
	switch {
	case flags&0x02 != 0:
		rr.name = append(rr.name, '.')
	case flags&0x04 != 0:
		rr.name = append(rr.name, '.', '.')
	default:
		rr.name = append(rr.name, e[5:]...)
	}
	if len(rr.name) > maxNameBytes {
		f.opts.Reportf(off, "corrupt", "%s: Rock Ridge name longer than %d bytes; cut", who, maxNameBytes)
		rr.name = rr.name[:maxNameBytes]
		rr.nmMore = false
	}
}

// symlinkChunk appends an SL entry's components to the target, the way
// Linux's get_symlink_chunk does: components are joined by '/', a component
// with CONTINUE goes on in the next one without a '/', and the ROOT
// component is the leading '/'.
func (f *FS) symlinkChunk(rr *rockRidge, e []byte) {
	if rr.sl && !rr.slMore {
		return // a second SL after a complete one
	}
	rr.sl = true
	slFlags := e[4]
	rr.slMore = slFlags&0x01 != 0
	c := e[5:]
	add := func(p ...byte) {
		if len(rr.target)+len(p) > maxTargetBytes {
			rr.slBroken = true
			return
		}
		rr.target = append(rr.target, p...)
	}
	for len(c) >= 2 {
		cflags, clen := c[0], int(c[1])
		if 2+clen > len(c) {
			clen = len(c) - 2
		}
		root := false
		switch cflags &^ 0x01 {
		case 0:
			add(c[2 : 2+clen]...)
		case 0x02:
			add('.')
		case 0x04:
			add('.', '.')
		case 0x08:
			root = true
			add('/')
		}
		c = c[2+clen:]
		last := len(c) < 2
		if last {
			// Another SL follows: a component that is not continued
			// ends here.
			if !root && rr.slMore && cflags&0x01 == 0 {
				add('/')
			}
			break
		}
		if !root && cflags&0x01 == 0 {
			add('/')
		}
	}
}

// shortDate decodes a 7-byte date (ECMA-119 9.1.5): years since 1900,
// month, day, hour, minute, second, and the offset from GMT in 15-minute
// units, as Linux's iso_date does (an offset outside ±13 hours is ignored).
func shortDate(b []byte) time.Time {
	t := time.Date(1900+int(b[0]), time.Month(b[1]), int(b[2]), int(b[3]), int(b[4]), int(b[5]), 0, time.UTC)
	if tz := int(int8(b[6])); tz >= -52 && tz <= 52 {
		t = t.Add(-time.Duration(tz) * 15 * time.Minute)
	}
	return t
}

// longDate decodes a 17-byte date (ECMA-119 8.4.26.1): "YYYYMMDDHHMMSScc"
// in ASCII digits and the GMT offset. Non-digits give the zero time.
func longDate(b []byte) time.Time {
	num := func(i, n int) (int, bool) {
		v := 0
		for _, c := range b[i : i+n] {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	var v [7]int
	for i, f := range [][2]int{{0, 4}, {4, 2}, {6, 2}, {8, 2}, {10, 2}, {12, 2}, {14, 2}} {
		x, ok := num(f[0], f[1])
		if !ok {
			return time.Time{}
		}
		v[i] = x
	}
	t := time.Date(v[0], time.Month(v[1]), v[2], v[3], v[4], v[5], v[6]*10_000_000, time.UTC)
	if tz := int(int8(b[16])); tz >= -52 && tz <= 52 {
		t = t.Add(-time.Duration(tz) * 15 * time.Minute)
	}
	return t
}

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }

// printable renders a signature for a report.
func printable(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		out[i] = c
	}
	return string(out)
}
