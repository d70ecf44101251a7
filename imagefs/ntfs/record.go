package ntfs

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"
	"unicode/utf16"
)

var le = binary.LittleEndian

// Attribute types this reader looks at.
const (
	atStandardInfo = 0x10
	atAttrList     = 0x20
	atFileName     = 0x30
	atData         = 0x80
	atIndexRoot    = 0x90
	atIndexAlloc   = 0xA0
	atReparse      = 0xC0
	atEnd          = 0xFFFFFFFF
)

// Record header flags.
const (
	recInUse = 0x0001
	recDir   = 0x0002
)

// Attribute header flags.
const (
	attrCompressed = 0x0001
	attrEncrypted  = 0x4000
	attrSparse     = 0x8000
)

// $FILE_NAME namespaces.
const (
	nsPOSIX    = 0
	nsWin32    = 1
	nsDOS      = 2
	nsWin32DOS = 3
)

// fixupStride is the span each update-sequence entry protects: 512 bytes,
// whatever the sector size (NTFS_BLOCK_SIZE in the Linux driver).
const fixupStride = 512

// fixup checks and undoes the update sequence of a multi-sector record
// (an MFT record, "FILE"): the last two bytes of every 512-byte stride must
// equal the update sequence number and are replaced by the saved bytes. It
// returns why the record does not check out, or "".
func fixup(b []byte, magic string) string {
	if len(b) < 48 || string(b[:4]) != magic {
		return fmt.Sprintf("no %q signature", magic)
	}
	usaOff, usaCount := int(le.Uint16(b[4:])), int(le.Uint16(b[6:]))
	strides := len(b) / fixupStride
	if usaCount != strides+1 || usaOff < 8 || usaOff%2 != 0 || usaOff+2*usaCount > len(b) {
		return fmt.Sprintf("an update sequence array of %d entries at %d does not fit a %d-byte record", usaCount, usaOff, len(b))
	}
	usn := b[usaOff : usaOff+2]
	for i := 0; i < strides; i++ {
		end := (i+1)*fixupStride - 2
		if b[end] != usn[0] || b[end+1] != usn[1] {
			return fmt.Sprintf("the update sequence number does not match at the end of stride %d (a torn or damaged write)", i)
		}
	}
	for i := 0; i < strides; i++ {
		end := (i+1)*fixupStride - 2
		copy(b[end:end+2], b[usaOff+2+2*i:])
	}
	return ""
}

// header is the part of an MFT record header this reader uses.
type header struct {
	seq       uint16
	flags     uint16
	attrOff   int
	used      int
	base      uint64 // base record reference (0 for a base record)
	linkCount uint16
}

// parseHeader checks a fixed-up record's header: where its attributes start
// and the bytes it says are in use lie inside the record.
func parseHeader(b []byte) (header, string) {
	h := header{seq: le.Uint16(b[0x10:]), linkCount: le.Uint16(b[0x12:]), attrOff: int(le.Uint16(b[0x14:])),
		flags: le.Uint16(b[0x16:]), used: int(le.Uint32(b[0x18:])), base: le.Uint64(b[0x20:])}
	switch {
	case h.used > len(b) || h.used < 0x18:
		return h, fmt.Sprintf("bytes in use %d outside the %d-byte record", h.used, len(b))
	case h.attrOff < 0x18 || h.attrOff+8 > h.used:
		return h, fmt.Sprintf("first attribute at %d outside the %d bytes in use", h.attrOff, h.used)
	}
	return h, ""
}

// attr is one attribute of a record, checked: a resident value lies inside
// its attribute, a non-resident runlist decodes.
type attr struct {
	typ      uint32
	name     string // UTF-8; "" for the unnamed attribute
	key      string // name, or the UTF-16 bytes of a name with an unpaired surrogate (which name shows as U+FFFD)
	flags    uint16
	resident bool
	value    []byte // resident value (a copy)
	valueOff int    // where it starts in the attribute
	valuePos int    // where it starts in the record
	// Non-resident: the VCNs this fragment maps, its runs, and (first
	// fragment only) the stream's sizes.
	startVCN, lastVCN  int64
	runs               []vrun
	compUnit           uint8
	allocSize          int64
	dataSize, initSize int64
	off                int64 // volume offset of the attribute header
}

// acrossFixup reports whether the resident value of a spans the end of a
// 512-byte stride of its record, whose last two bytes the update sequence
// holds on the volume (the value's own are in the update sequence array).
func (a *attr) acrossFixup() bool {
	end := a.valuePos + len(a.value)
	for k := a.valuePos / fixupStride; k*fixupStride+fixupStride-2 < end; k++ {
		if k*fixupStride+fixupStride-1 >= a.valuePos {
			return true
		}
	}
	return false
}

// vrun is one run of a runlist: n clusters from vcn at lcn, or a hole.
type vrun struct {
	vcn, lcn, n int64
	sparse      bool
}

// maxRuns bounds the runs of one stream (a runlist entry takes at least
// 2 bytes of a record of at most 64 KiB, so a record holds fewer; many
// extension records could hold more).
const maxRuns = 1 << 20

// parseAttrs returns the attributes of a fixed-up record b whose first byte
// lies at volume offset off. A damaged attribute ends the list; what it says
// is returned as problem (with the attribute's volume offset).
func parseAttrs(b []byte, h header, off int64, totalClusters, maxCluster int64) (attrs []attr, problem string, poff int64) {
	p := h.attrOff
	for p+8 <= h.used {
		typ := le.Uint32(b[p:])
		if typ == atEnd {
			return attrs, "", 0
		}
		n := int(le.Uint32(b[p+4:]))
		if n < 0x18 || n%8 != 0 || p+n > h.used {
			return attrs, fmt.Sprintf("attribute type %#x of length %d at %d runs past the %d bytes in use", typ, n, p, h.used), off + int64(p)
		}
		a, why := parseAttr(b[p:p+n], totalClusters, maxCluster)
		if why != "" {
			return attrs, fmt.Sprintf("attribute type %#x: %s", typ, why), off + int64(p)
		}
		a.valuePos = p + a.valueOff
		a.off = -1
		if off >= 0 {
			a.off = off + int64(p)
		}
		attrs = append(attrs, a)
		p += n
	}
	return attrs, "the attribute list has no end marker", off + int64(p)
}

func parseAttr(b []byte, totalClusters, maxCluster int64) (attr, string) {
	a := attr{typ: le.Uint32(b), flags: le.Uint16(b[0x0C:]), resident: b[8] == 0}
	if nl := int(b[9]); nl > 0 {
		no := int(le.Uint16(b[0x0A:]))
		if no+2*nl > len(b) {
			return a, "its name runs past the attribute"
		}
		a.name, a.key = decodeUTF16(b[no:no+2*nl]), ""
		if lossyUTF16(b[no : no+2*nl]) {
			a.key = "\x00" + string(b[no:no+2*nl]) // a name never starts with NUL
		}
	}
	if a.key == "" {
		a.key = a.name
	}
	if a.resident {
		vl, vo := int(le.Uint32(b[0x10:])), int(le.Uint16(b[0x14:]))
		if vo+vl > len(b) || vl < 0 {
			return a, fmt.Sprintf("a resident value of %d bytes at %d runs past the attribute", vl, vo)
		}
		a.value, a.valueOff = slices.Clone(b[vo:vo+vl]), vo
		return a, ""
	}
	if len(b) < 0x40 {
		return a, "a non-resident header shorter than 64 bytes"
	}
	a.startVCN, a.lastVCN = int64(le.Uint64(b[0x10:])), int64(le.Uint64(b[0x18:]))
	a.compUnit = b[0x22]
	a.allocSize, a.dataSize, a.initSize = int64(le.Uint64(b[0x28:])), int64(le.Uint64(b[0x30:])), int64(le.Uint64(b[0x38:]))
	if a.startVCN < 0 || a.startVCN > maxCluster || a.lastVCN < a.startVCN-1 || a.dataSize < 0 || a.initSize < 0 || a.allocSize < 0 {
		return a, fmt.Sprintf("VCNs %d–%d or sizes %d/%d/%d out of range", a.startVCN, a.lastVCN, a.allocSize, a.dataSize, a.initSize)
	}
	ro := int(le.Uint16(b[0x20:]))
	if ro >= len(b) || ro < 0x40 {
		return a, fmt.Sprintf("its runlist at %d lies outside the attribute", ro)
	}
	runs, why := decodeRuns(b[ro:], a.startVCN, totalClusters, maxCluster)
	if why != "" {
		return a, why
	}
	a.runs = runs
	return a, ""
}

// decodeRuns decodes a runlist (mapping pairs) starting at VCN vcn. Every
// length must be positive and a stored run's fit the volume's cluster
// count (a hole's may not: a sparse file may be larger than its volume);
// an LCN is
// not checked against the volume here (a run past it is kept and reported
// by the caller, reading it fails).
//
// VCNs and LCNs stay below maxCluster, so that a cluster's byte offset
// (times the cluster size) cannot overflow.
func decodeRuns(b []byte, vcn, totalClusters, maxCluster int64) ([]vrun, string) {
	var runs []vrun
	var lcn int64
	for p := 0; p < len(b); {
		h := b[p]
		if h == 0 {
			return runs, ""
		}
		nl, ol := int(h&0x0F), int(h>>4)
		if nl == 0 || nl > 8 || ol > 8 || p+1+nl+ol > len(b) {
			return nil, fmt.Sprintf("a runlist entry header %#02x at %d does not fit", h, p)
		}
		n := leInt(b[p+1:p+1+nl], false)
		// A hole may be longer than the volume (a sparse file larger
		// than its disk); stored clusters may not.
		if n <= 0 || n > maxCluster || ol > 0 && n > totalClusters {
			return nil, fmt.Sprintf("a run of %d clusters on a volume of %d", n, totalClusters)
		}
		r := vrun{vcn: vcn, n: n, sparse: ol == 0}
		if ol > 0 {
			lcn += leInt(b[p+1+nl:p+1+nl+ol], true)
			if lcn < 0 || lcn > maxCluster {
				return nil, fmt.Sprintf("a run at cluster %d, outside any volume", lcn)
			}
			r.lcn = lcn
		}
		if len(runs) >= maxRuns {
			return nil, fmt.Sprintf("more than %d runs", maxRuns)
		}
		runs = append(runs, r)
		vcn += n
		if vcn > maxCluster {
			return nil, "VCNs past any volume"
		}
		p += 1 + nl + ol
	}
	return nil, "the runlist has no end"
}

// leInt decodes a little-endian integer of 1–8 bytes, sign-extended if
// signed.
func leInt(b []byte, signed bool) int64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	if signed && len(b) < 8 && b[len(b)-1]&0x80 != 0 {
		v |= ^uint64(0) << (8 * len(b))
	}
	return int64(v)
}

// decodeUTF16 decodes a little-endian UTF-16 name; an unpaired surrogate
// becomes U+FFFD.
func decodeUTF16(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = le.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// lossyUTF16 reports whether a little-endian UTF-16 name holds an unpaired
// surrogate (which decodeUTF16 turns into U+FFFD, so two names that differ
// only there decode alike).
func lossyUTF16(b []byte) bool {
	for i := 0; i+1 < len(b); i += 2 {
		u := le.Uint16(b[i:])
		switch {
		case u >= 0xD800 && u < 0xDC00:
			if i+3 >= len(b) {
				return true
			}
			if n := le.Uint16(b[i+2:]); n < 0xDC00 || n >= 0xE000 {
				return true
			}
			i += 2
		case u >= 0xDC00 && u < 0xE000:
			return true
		}
	}
	return false
}

// fileName is a checked $FILE_NAME value.
type fileName struct {
	parent    uint64 // record number
	parentSeq uint16
	ns        byte
	lossy     bool // the name held an unpaired surrogate (now U+FFFD)
	name      string
}

func parseFileName(v []byte) (fileName, bool) {
	if len(v) < 0x42 {
		return fileName{}, false
	}
	n := int(v[0x40])
	if n == 0 || 0x42+2*n > len(v) {
		return fileName{}, false
	}
	ref := le.Uint64(v)
	raw := v[0x42 : 0x42+2*n]
	return fileName{parent: ref & refMask, parentSeq: uint16(ref >> 48), ns: v[0x41], lossy: lossyUTF16(raw), name: decodeUTF16(raw)}, true
}

// refMask keeps the record number of an MFT reference (its low 48 bits).
const refMask = 1<<48 - 1

// winTime converts a FILETIME: 100 ns units since 1601-01-01 UTC, the
// Windows epoch, 11644473600 s before the Unix one.
func winTime(ft uint64) time.Time {
	const perSec, epochDelta = 10_000_000, 11644473600
	return time.Unix(int64(ft/perSec)-epochDelta, int64(ft%perSec)*100).UTC()
}
