package ntfs

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/HRDAG/ntt/imagefs"
)

// Type is the probe type name this reader registers for.
const Type = "ntfs"

// RootID is the root directory's MFT record number.
const RootID = 5

// Records of the metadata files: 0–15 are $MFT, $MFTMirr, $LogFile,
// $Volume, $AttrDef, the root, $Bitmap, $Boot, $BadClus, $Secure, $UpCase,
// $Extend and four reserved ones; none is a user file.
const (
	mftID       = 0
	extendID    = 11
	firstUserID = 16
)

func init() {
	imagefs.Register(imagefs.Driver{
		Types: []string{Type},
		Open: func(r io.ReaderAt, size int64, opts imagefs.Options) (imagefs.FS, error) {
			return Open(r, size, opts)
		},
	})
}

// ErrNotNTFS: the boot sector is not one of NTFS (always inside a
// *FormatError naming the field).
var ErrNotNTFS = errors.New("not a valid NTFS boot sector")

// FormatError is a boot sector field, or an $MFT structure, that does not
// check out: its byte offset on the volume, its name, its value and why. It
// wraps ErrNotNTFS and imagefs.ErrCorrupt.
type FormatError struct {
	Offset int64
	Field  string
	Value  int64
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("ntfs: %s at byte offset %d is %d: %s", e.Field, e.Offset, e.Value, e.Msg)
}

// Unwrap lets errors.Is find ErrNotNTFS and imagefs.ErrCorrupt.
func (e *FormatError) Unwrap() []error { return []error{ErrNotNTFS, imagefs.ErrCorrupt} }

// recInfo is what the MFT scan at Open keeps of one record.
type recInfo struct {
	flags uint16
	seq   uint16
	ok    bool       // fixed up and parsed; a base record in use
	names []fileName // its $FILE_NAMEs (and its extension records')
	ext   []uint32   // its extension records, in record order
}

// maxNames bounds the $FILE_NAMEs kept of one record: NTFS allows 1024
// links, each of which may have a DOS alias.
const maxNames = 2048

// maxExt bounds a record's extension records: no more than an
// $ATTRIBUTE_LIST (of at most maxAttrList bytes, 32 or more a record)
// can name.
const maxExt = maxAttrList / 32

// addNames adds names to the record's, up to maxNames; it returns how
// many it dropped.
func (ri *recInfo) addNames(names []fileName) int {
	n := min(len(names), maxNames-len(ri.names))
	ri.names = append(ri.names, names[:n]...)
	return len(names) - n
}

// child is one name of a record in its parent directory.
type child struct {
	rec  uint64
	name string
}

// Volume is an NTFS volume opened from an image. The MFT is scanned once,
// at Open, for the names and parents of every record in use; entries are
// built from their records as directories are read. Its methods may be
// called from several goroutines.
type Volume struct {
	r           io.ReaderAt
	size        int64
	opts        imagefs.Options
	clusterSize int64
	clusters    int64
	recSize     int64
	mft         io.ReaderAt // the $MFT's $DATA
	mftRuns     []imagefs.Run
	nrec        int64
	recs        []recInfo
	children    map[uint64][]child // by parent record, sorted by name
	mirrOff     int64              // volume offset of $MFTMirr
}

// Info describes a volume.
type Info struct {
	ClusterSize int64 // bytes per cluster
	Clusters    int64 // clusters on the volume
	RecordSize  int64 // bytes per MFT record
	Records     int64 // MFT records
	InUse       int   // base records in use
	Extended    int   // base records with extension records
}

// Info returns the volume's layout.
func (v *Volume) Info() Info {
	n, x := 0, 0
	for i := range v.recs {
		if v.recs[i].ok {
			n++
		}
		if len(v.recs[i].ext) > 0 {
			x++
		}
	}
	return Info{ClusterSize: v.clusterSize, Clusters: v.clusters, RecordSize: v.recSize, Records: v.nrec, InUse: n, Extended: x}
}

// maxScanRecords bounds the MFT records read (2^32: NTFS's own limit).
const maxScanRecords = 1 << 32

// Open reads the boot sector of the NTFS volume r of size bytes, the
// $MFT's own record (from $MFTMirr if it does not check out) and then every
// MFT record, for the names and parents of the files. Damage on the way is
// reported through opts.Report; a boot sector or $MFT record that does not
// check out is a *FormatError.
func Open(r io.ReaderAt, size int64, opts imagefs.Options) (*Volume, error) {
	b := make([]byte, 512)
	if size < 512 {
		return nil, &FormatError{Field: "volume size", Value: size, Msg: "shorter than a boot sector"}
	}
	if _, err := r.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("ntfs: reading the boot sector: %w", err)
	}
	bad := func(off int, field string, val int64, msg string) error {
		return &FormatError{Offset: int64(off), Field: "boot sector field " + field, Value: val, Msg: msg}
	}
	if string(b[3:11]) != "NTFS    " {
		return nil, bad(3, "OEM ID", int64(le.Uint64(b[3:])), `not "NTFS    "`)
	}
	bps := int64(le.Uint16(b[0x0B:]))
	if bps < 256 || bps > 4096 || bps&(bps-1) != 0 {
		return nil, bad(0x0B, "bytes per sector", bps, "not a power of two from 256 to 4096")
	}
	spc := int64(b[0x0D])
	if spc > 0x80 { // large clusters: 2^(256-n) sectors
		if 256-spc > 20 {
			return nil, bad(0x0D, "sectors per cluster", spc, "a cluster over 2^20 sectors")
		}
		spc = 1 << (256 - spc)
	}
	if spc == 0 || spc&(spc-1) != 0 {
		return nil, bad(0x0D, "sectors per cluster", spc, "not a power of two")
	}
	v := &Volume{r: r, size: size, opts: opts, clusterSize: bps * spc, children: map[uint64][]child{}}
	if v.clusterSize > 2<<20 {
		return nil, bad(0x0D, "sectors per cluster", spc, "clusters over 2 MiB")
	}
	sectors := int64(le.Uint64(b[0x28:]))
	if sectors <= 0 || sectors > 1<<50/bps {
		return nil, bad(0x28, "total sectors", sectors, "no sectors, or more than any disk")
	}
	v.clusters = sectors / spc
	if v.clusters == 0 {
		return nil, bad(0x28, "total sectors", sectors, "less than one cluster")
	}
	if end := sectors * bps; end > size {
		opts.Reportf(size, "truncated", "the image ends at byte %d, the boot sector gives the volume %d bytes: content past the end cannot be read", size, end)
	}
	recSize, ok := recordSize(int8(b[0x40]), v.clusterSize)
	if !ok {
		return nil, bad(0x40, "clusters per MFT record", int64(int8(b[0x40])), "not a record of 512 bytes to 64 KiB")
	}
	v.recSize = recSize
	mftLCN, mirrLCN := int64(le.Uint64(b[0x30:])), int64(le.Uint64(b[0x38:]))
	if mftLCN <= 0 || mftLCN >= v.clusters {
		return nil, bad(0x30, "$MFT cluster", mftLCN, "outside the volume")
	}
	if mirrLCN <= 0 || mirrLCN >= v.clusters {
		opts.Reportf(0x38, "corrupt", "the $MFTMirr cluster %d lies outside the volume; no mirror to fall back on", mirrLCN)
		mirrLCN = -1
	}
	v.mirrOff = -1
	if mirrLCN > 0 {
		v.mirrOff = mirrLCN * v.clusterSize
	}

	// The $MFT's own record: its $DATA maps the whole MFT.
	rec0, err := v.bootRecord(mftLCN * v.clusterSize)
	if err != nil {
		return nil, err
	}
	var data *attr
	for i := range rec0.attrs {
		if a := &rec0.attrs[i]; a.typ == atData && a.name == "" && !a.resident && a.startVCN == 0 {
			data = a
			break
		}
	}
	if data == nil {
		return nil, &FormatError{Offset: rec0.off, Field: "$MFT record", Msg: "no non-resident unnamed $DATA attribute"}
	}
	vruns := v.moreMFTRuns(rec0, data.runs, data.dataSize)
	runs, covered := v.streamRuns(vruns, "$MFT", rec0.off)
	mftSize := min(data.dataSize, covered)
	if data.dataSize > covered {
		opts.Reportf(data.off, "corrupt", "the $MFT's runlists cover %d of its %d bytes; only the records they cover are read", covered, data.dataSize)
	}
	v.mftRuns = trimRuns(runs, mftSize)
	v.mft = imagefs.NewRunReader(r, size, v.mftRuns, mftSize)
	v.nrec = min(mftSize/v.recSize, maxScanRecords, (size/v.recSize)+1)
	if v.nrec < firstUserID {
		return nil, &FormatError{Offset: data.off, Field: "$MFT size", Value: mftSize, Msg: "fewer records than the metadata files"}
	}
	v.scan()
	return v, nil
}

// maxAttrList bounds an $ATTRIBUTE_LIST (NTFS keeps them under 256 KiB).
const maxAttrList = 256 << 10

// moreMFTRuns returns the $MFT's runs: those of record 0's own $DATA
// (first), then — when they cover less than its size bytes — those of the
// further $DATA fragments record 0's $ATTRIBUTE_LIST names, each read from
// its extension record through the runs found so far, in VCN order, as
// long as each continues where the previous ended. So an $MFT too
// fragmented for one record is read whole.
func (v *Volume) moreMFTRuns(rec0 *parsed, first []vrun, size int64) []vrun {
	runs := first
	end := func() int64 {
		if len(runs) == 0 {
			return 0
		}
		return runs[len(runs)-1].vcn + runs[len(runs)-1].n
	}
	if end()*v.clusterSize >= size {
		return runs
	}
	var list []byte
	var listOff int64
	for _, a := range rec0.attrs {
		if a.typ != atAttrList {
			continue
		}
		listOff = a.off
		if a.resident {
			list = a.value
			break
		}
		n := min(a.dataSize, maxAttrList)
		list = make([]byte, n)
		if k, _ := imagefs.NewRunReader(v.r, v.size, v.byteRuns(a.runs), n).ReadAt(list, 0); int64(k) < n {
			v.opts.Reportf(a.off, "corrupt", "the $MFT's $ATTRIBUTE_LIST cannot be read")
			return runs
		}
		break
	}
	type frag struct {
		vcn int64
		rec uint64
	}
	var frags []frag
	for p := 0; p+0x18 <= len(list); {
		n := int(le.Uint16(list[p+4:]))
		if n < 0x1A || p+n > len(list) {
			v.opts.Reportf(listOff, "corrupt", "the $MFT's $ATTRIBUTE_LIST has an entry of %d bytes at %d; the rest is not read", n, p)
			break
		}
		if le.Uint32(list[p:]) == atData && list[p+6] == 0 {
			if vcn := int64(le.Uint64(list[p+8:])); vcn > 0 {
				frags = append(frags, frag{vcn, le.Uint64(list[p+0x10:]) & refMask})
			}
		}
		p += n
	}
	slices.SortFunc(frags, func(a, b frag) int { return int(min(max(a.vcn-b.vcn, -1), 1)) })
	b := make([]byte, v.recSize)
	bruns := v.byteRuns(runs) // kept in step with runs
	for _, f := range frags {
		if f.vcn != end() || end()*v.clusterSize >= size {
			break
		}
		at := int64(f.rec) * v.recSize
		off := mftOffset(bruns, at)
		if k, _ := imagefs.NewRunReader(v.r, v.size, bruns, end()*v.clusterSize).ReadAt(b, at); int64(k) < v.recSize {
			v.opts.Reportf(listOff, "corrupt", "the $MFT's fragment from VCN %d is in record %d, which the fragments before it do not map", f.vcn, f.rec)
			break
		}
		p, why := v.parse(b, off, f.rec)
		if why != "" {
			v.opts.Reportf(off, "corrupt", "MFT record %d, holding the $MFT's fragment from VCN %d: %s", f.rec, f.vcn, why)
			break
		}
		var more []vrun
		for _, a := range p.attrs {
			if a.typ == atData && a.name == "" && !a.resident && a.startVCN == f.vcn {
				more = a.runs
				break
			}
		}
		if len(more) == 0 || len(runs)+len(more) > maxRuns {
			v.opts.Reportf(off, "corrupt", "MFT record %d holds no $MFT fragment from VCN %d, or one of too many runs", f.rec, f.vcn)
			break
		}
		runs = append(slices.Clip(runs), more...)
		bruns = append(bruns, v.byteRuns(more)...)
	}
	return runs
}

// byteRuns converts runs to volume byte runs (holes kept), unreported.
func (v *Volume) byteRuns(runs []vrun) []imagefs.Run {
	out := make([]imagefs.Run, 0, len(runs))
	for _, r := range runs {
		run := imagefs.Run{Logical: r.vcn * v.clusterSize, Length: r.n * v.clusterSize, Hole: r.sparse}
		if !r.sparse {
			run.Offset = r.lcn * v.clusterSize
		}
		out = append(out, run)
	}
	return out
}

// mftOffset is the volume offset of byte at of the $MFT mapped by runs
// (-1 if they do not map it).
func mftOffset(runs []imagefs.Run, at int64) int64 {
	i := sort.Search(len(runs), func(i int) bool { return runs[i].Logical+runs[i].Length > at })
	if i < len(runs) && runs[i].Logical <= at && !runs[i].Hole {
		return runs[i].Offset + at - runs[i].Logical
	}
	return -1
}

// recordSize decodes the boot sector's clusters-per-record byte: a
// positive count of clusters, or a negative power of two of bytes.
func recordSize(c int8, cluster int64) (int64, bool) {
	var n int64
	switch {
	case c > 0:
		n = int64(c) * cluster
	case c < 0 && c > -31:
		n = 1 << -c
	default:
		return 0, false
	}
	return n, n >= 512 && n <= 1<<16 && n%fixupStride == 0
}

// parsed is one MFT record read and fixed up, with its attributes.
type parsed struct {
	num   uint64
	off   int64 // volume offset (-1: not mapped)
	h     header
	attrs []attr
}

// bootRecord reads the $MFT's own record at volume offset off, falling
// back on its copy in $MFTMirr.
func (v *Volume) bootRecord(off int64) (*parsed, error) {
	b := make([]byte, v.recSize)
	p, why := v.parseAt(b, off, mftID)
	if why == "" {
		return p, nil
	}
	v.opts.Reportf(off, "corrupt", "MFT record 0 ($MFT): %s", why)
	if v.mirrOff < 0 {
		return nil, &FormatError{Offset: off, Field: "$MFT record", Msg: why}
	}
	p, why2 := v.parseAt(b, v.mirrOff, mftID)
	if why2 != "" {
		return nil, &FormatError{Offset: v.mirrOff, Field: "$MFTMirr record 0", Msg: why2}
	}
	v.opts.Reportf(v.mirrOff, "rescued", "MFT record 0 ($MFT) read from its copy in $MFTMirr")
	return p, nil
}

// parseAt reads, fixes up and parses the record at volume offset off into b.
func (v *Volume) parseAt(b []byte, off int64, num uint64) (*parsed, string) {
	if off < 0 || off+int64(len(b)) > v.size {
		return nil, fmt.Sprintf("record at %d lies past the end of the volume", off)
	}
	if n, err := v.r.ReadAt(b, off); n < len(b) {
		return nil, fmt.Sprintf("reading: %v", err)
	}
	return v.parse(b, off, num)
}

// parse fixes up and parses a record read into b.
func (v *Volume) parse(b []byte, off int64, num uint64) (*parsed, string) {
	if why := fixup(b, "FILE"); why != "" {
		return nil, why
	}
	h, why := parseHeader(b)
	if why != "" {
		return nil, why
	}
	attrs, why, aoff := parseAttrs(b, h, off, v.clusters, 1<<62/v.clusterSize)
	if why != "" {
		v.opts.Reportf(aoff, "corrupt", "MFT record %d: %s; the attributes before it are kept", num, why)
	}
	return &parsed{num: num, off: off, h: h, attrs: attrs}, ""
}

// recOffset is the volume offset of record num, -1 if the MFT's runs do
// not map it.
func (v *Volume) recOffset(num uint64) int64 {
	return mftOffset(v.mftRuns, int64(num)*v.recSize)
}

// readRecord reads record num through the $MFT's runs, fixed up and
// parsed. Records 0–3 that do not check out are read from $MFTMirr.
func (v *Volume) readRecord(num uint64) (*parsed, string) {
	if int64(num) >= v.nrec {
		return nil, fmt.Sprintf("record %d past the %d of the MFT", num, v.nrec)
	}
	b := make([]byte, v.recSize)
	off := v.recOffset(num)
	if n, err := v.mft.ReadAt(b, int64(num)*v.recSize); n < len(b) {
		return nil, fmt.Sprintf("reading MFT record %d: %v", num, err)
	}
	return v.parseMaybeMirror(b, off, num)
}

// A record 0–3 that does not check out is read from its copy in $MFTMirr
// and reported (Kind "rescued", at the copy's offset); record 0's rescue
// was reported by Open already.
func (v *Volume) parseMaybeMirror(b []byte, off int64, num uint64) (*parsed, string) {
	p, why := v.parse(b, off, num)
	if why == "" || num >= 4 || v.mirrOff < 0 {
		return p, why
	}
	m := make([]byte, v.recSize)
	moff := v.mirrOff + int64(num)*v.recSize
	p2, why2 := v.parseAt(m, moff, num)
	if why2 != "" {
		return nil, why
	}
	if num != mftID {
		v.opts.Reportf(moff, "rescued", "MFT record %d at byte offset %d: %s; read from its copy in $MFTMirr", num, off, why)
	}
	return p2, ""
}

// scanChunk is how many records the scan reads at once.
const scanChunk = 64

// scan reads every MFT record: of each base record in use its flags,
// sequence number and $FILE_NAMEs; of each extension record which base
// record it extends (checked against the base's sequence number). Then it
// files every name under its parent directory.
func (v *Volume) scan() {
	v.recs = make([]recInfo, v.nrec)
	buf := make([]byte, scanChunk*v.recSize)
	type extRef struct {
		num  uint64
		base uint64
		seq  uint16
		off  int64
	}
	var exts []extRef
	// Records that cannot be read (past the image, an I/O error) are
	// reported a range at a time.
	unreadable := int64(-1)
	flushUnreadable := func(end int64) {
		if unreadable >= 0 {
			v.opts.Reportf(v.recOffset(uint64(unreadable)), "truncated", "MFT records %d to %d cannot be read", unreadable, end-1)
			unreadable = -1
		}
	}
	for first := int64(0); first < v.nrec; first += scanChunk {
		n := min(scanChunk, v.nrec-first)
		m, _ := v.mft.ReadAt(buf[:n*v.recSize], first*v.recSize)
		for i := int64(0); i < n; i++ {
			num := uint64(first + i)
			off := v.recOffset(num)
			b := buf[i*v.recSize : (i+1)*v.recSize]
			if int64(m) < (i+1)*v.recSize {
				// Past a failed read, one record at a time: a later run
				// of the MFT may still be readable.
				if k, _ := v.mft.ReadAt(b, int64(num)*v.recSize); int64(k) < v.recSize {
					if unreadable < 0 {
						unreadable = int64(num)
					}
					continue
				}
			}
			flushUnreadable(int64(num))
			if isEmpty(b) {
				continue // never used
			}
			p, why := v.parseMaybeMirror(b, off, num)
			if why != "" {
				v.opts.Reportf(off, "corrupt", "MFT record %d: %s; left out", num, why)
				continue
			}
			if p.h.flags&recInUse == 0 {
				continue // deleted
			}
			ri := &v.recs[num]
			ri.flags, ri.seq = p.h.flags, p.h.seq
			if p.h.base != 0 {
				exts = append(exts, extRef{num: num, base: p.h.base & refMask, seq: uint16(p.h.base >> 48), off: off})
			} else {
				ri.ok = true
			}
			for _, a := range p.attrs {
				if a.typ == atFileName && a.resident {
					if fn, ok := parseFileName(a.value); ok {
						ri.names = append(ri.names, fn) // a record holds fewer than maxNames
					} else {
						v.opts.Reportf(a.off, "corrupt", "MFT record %d: a $FILE_NAME that does not check out; left out", num)
					}
				}
			}
		}
	}
	flushUnreadable(v.nrec)
	for _, e := range exts {
		if e.base >= uint64(v.nrec) || !v.recs[e.base].ok || v.recs[e.base].seq != e.seq || e.num > 1<<32-1 {
			v.opts.Reportf(e.off, "orphaned", "MFT record %d extends record %d (sequence %d), which is not a base record in use with that sequence; left out", e.num, e.base, e.seq)
			continue
		}
		b := &v.recs[e.base]
		if len(b.ext) >= maxExt {
			v.opts.Reportf(e.off, "corrupt", "MFT record %d extends record %d, which has %d extension records already; left out", e.num, e.base, maxExt)
			continue
		}
		b.ext = append(b.ext, uint32(e.num))
		if dropped := b.addNames(v.recs[e.num].names); dropped > 0 {
			v.opts.Reportf(e.off, "corrupt", "MFT record %d: %d names of record %d past the %d NTFS allows; left out", e.num, dropped, e.base, maxNames)
		}
	}
	for num := range v.recs {
		ri := &v.recs[num]
		if !ri.ok || num == RootID {
			continue
		}
		for _, fn := range presentedNames(ri.names) {
			v.children[fn.parent] = append(v.children[fn.parent], child{rec: uint64(num), name: fn.name})
		}
	}
	for p, cs := range v.children {
		slices.SortFunc(cs, func(a, b child) int {
			if c := strings.Compare(a.name, b.name); c != 0 {
				return c
			}
			return cmp.Compare(a.rec, b.rec)
		})
		v.children[p] = cs
	}
	v.checkTree()
}

// isEmpty reports a record slot never written (all zeros), which is not
// damage.
func isEmpty(b []byte) bool {
	return b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 0 && bytes.Count(b[:64], []byte{0}) == 64
}

// presentedNames are the names a record is listed by: each $FILE_NAME but
// the DOS 8.3 ones (namespace 2) when the record has a Win32 name, since
// those are the same link's short alias, not a link of their own.
func presentedNames(names []fileName) []fileName {
	hasLong := false
	for _, n := range names {
		if n.ns == nsWin32 {
			hasLong = true
		}
	}
	type link struct {
		parent uint64
		name   string
	}
	var out []fileName
	var seen map[link]bool // for the rare record of many names; else a scan of out
	if len(names) > 8 {
		seen = map[link]bool{}
	}
	for _, n := range names {
		if n.ns == nsDOS && hasLong {
			continue
		}
		// The same name twice is one link; but names that held unpaired
		// surrogates decode alike and may be distinct links.
		if !n.lossy {
			l := link{n.parent, n.name}
			if seen != nil && seen[l] || seen == nil && slices.ContainsFunc(out, func(o fileName) bool { return !o.lossy && o.parent == l.parent && o.name == l.name }) {
				continue
			}
			if seen != nil {
				seen[l] = true
			}
		}
		out = append(out, n)
	}
	return out
}

// checkTree reports the names the root cannot reach: names in a parent
// that is not a directory in use (with the sequence number the name
// gives), and directories whose parents lead round in a cycle. Both are
// left out of the walk (they are reachable from nowhere).
func (v *Volume) checkTree() {
	const (
		unknown = iota
		visiting
		reached
		unreached
	)
	state := make([]byte, len(v.recs))
	state[RootID] = reached
	// parentOf is a directory's parent, by its first presented name.
	parentOf := func(num uint64) (uint64, bool) {
		ns := presentedNames(v.recs[num].names)
		if len(ns) == 0 {
			return 0, false
		}
		return ns[0].parent, true
	}
	for num := range v.recs {
		ri := &v.recs[num]
		if !ri.ok || ri.flags&recDir == 0 || state[num] != unknown || num < firstUserID {
			continue
		}
		// Follow the parents up to a directory already decided; the path
		// is at most the number of records long (each is visited once).
		var path []uint64
		cur := uint64(num)
		result := byte(unreached)
		for {
			if cur >= uint64(len(v.recs)) {
				break
			}
			if st := state[cur]; st == reached || st == unreached {
				result = st
				break
			}
			if state[cur] == visiting {
				v.opts.Reportf(v.recOffset(cur), "cycle", "MFT record %d is a directory among its own ancestors (parent references run in a cycle); not reachable from the root", cur)
				break
			}
			if !v.recs[cur].ok || v.recs[cur].flags&recDir == 0 {
				break
			}
			state[cur] = visiting
			path = append(path, cur)
			p, ok := parentOf(cur)
			if !ok || p == cur {
				break
			}
			cur = p
		}
		for _, n := range path {
			state[n] = result
		}
	}
	// Names whose parent is not a directory in use with that sequence.
	for num := range v.recs {
		ri := &v.recs[num]
		if !ri.ok || num == RootID {
			continue
		}
		for _, fn := range presentedNames(ri.names) {
			p := fn.parent
			if p < uint64(len(v.recs)) && v.recs[p].ok && v.recs[p].flags&recDir != 0 && v.recs[p].seq == fn.parentSeq || v.lostRoot(p) {
				continue
			}
			v.opts.Reportf(v.recOffset(uint64(num)), "orphaned", "MFT record %d %q names record %d (sequence %d) as its directory, which is not a directory in use with that sequence; not reachable from the root", num, fn.name, p, fn.parentSeq)
		}
	}
}

// Type returns "ntfs".
func (v *Volume) Type() string { return Type }

// Root returns the root directory (MFT record 5). If its record is lost,
// the root is still listed (its entries are known by their parent
// references), with the Windows epoch as its mtime, and reported.
func (v *Volume) Root() (*imagefs.Entry, error) {
	if v.recs[RootID].ok && v.recs[RootID].flags&recDir != 0 {
		if e, err := v.entry(RootID, ""); err == nil {
			e.Name = nil
			return e, nil
		}
	}
	v.opts.Reportf(v.recOffset(RootID), "corrupt", "MFT record 5, the root directory, is not a directory in use; its entries are still listed")
	return &imagefs.Entry{ID: RootID, Type: 'd', Nlink: 2, Mtime: winTime(0)}, nil
}

// ReadDir returns the records whose $FILE_NAMEs name dir as their parent
// (with its sequence number), sorted by name; in the root, the metadata
// files (records 0–15) are left out.
func (v *Volume) ReadDir(dir *imagefs.Entry) ([]*imagefs.Entry, error) {
	if dir == nil || dir.Type != 'd' || dir.ID >= uint64(len(v.recs)) {
		return nil, fmt.Errorf("ntfs: ReadDir of a non-directory")
	}
	seq := v.recs[dir.ID].seq
	var out []*imagefs.Entry
	taken := map[string]bool{}
	// Each record is read once, however many of its names the directory
	// holds (each name read anew would cost names × extension records).
	built := map[uint64]*imagefs.Entry{}
	for _, c := range v.children[dir.ID] {
		if dir.ID == RootID && c.rec < firstUserID {
			continue
		}
		if !v.linked(c, dir.ID, seq) {
			continue
		}
		var e *imagefs.Entry
		if e0, seen := built[c.rec]; seen {
			if e0 == nil {
				continue // reported already
			}
			e = cloneEntry(e0)
			e.Name = []byte(v.cleanName(c.rec, c.name))
		} else {
			var err error
			if e, err = v.entry(c.rec, c.name); err != nil {
				built[c.rec] = nil
				v.opts.Reportf(v.recOffset(c.rec), "corrupt", "MFT record %d %q: %v; left out", c.rec, c.name, err)
				continue
			}
			built[c.rec] = cloneEntry(e)
		}
		if taken[string(e.Name)] {
			// Names distinct on the medium that show alike (unpaired
			// surrogates as U+FFFD, '/' as U+2215): each link keeps an
			// entry of its own, under a name of its own.
			name := fmt.Sprintf("%s_mft_%d", e.Name, c.rec)
			for k := 2; taken[name]; k++ {
				name = fmt.Sprintf("%s_mft_%d_%d", e.Name, c.rec, k)
			}
			v.opts.Reportf(v.recOffset(c.rec), "bad_name", "MFT record %d: a second entry named %q in directory %d; named %q", c.rec, e.Name, dir.ID, name)
			e.Name = []byte(name)
		}
		taken[string(e.Name)] = true
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b *imagefs.Entry) int { return bytes.Compare(a.Name, b.Name) })
	return out, nil
}

// cloneEntry copies e and its forks (their runs and target shared).
func cloneEntry(e *imagefs.Entry) *imagefs.Entry {
	c := *e
	c.Forks = make([]*imagefs.Entry, len(e.Forks))
	for i, f := range e.Forks {
		fc := *f
		c.Forks[i] = &fc
	}
	if e.Forks == nil {
		c.Forks = nil
	}
	return &c
}

// linked reports whether c's name in parent carries parent's sequence.
func (v *Volume) linked(c child, parent uint64, seq uint16) bool {
	for _, fn := range v.recs[c.rec].names {
		if fn.parent == parent && fn.name == c.name {
			return fn.parentSeq == seq || v.lostRoot(parent)
		}
	}
	return false
}

// lostRoot reports whether p is the root and its record was lost: then
// any sequence number names it.
func (v *Volume) lostRoot(p uint64) bool { return p == RootID && !v.recs[RootID].ok }

// file is a base record with its extension records' attributes.
type file struct {
	num   uint64
	off   int64
	h     header
	attrs []attr
}

// load reads record num and its extension records.
func (v *Volume) load(num uint64) (*file, error) {
	p, why := v.readRecord(num)
	if why != "" {
		return nil, fmt.Errorf("MFT record %d: %s", num, why)
	}
	f := &file{num: num, off: p.off, h: p.h, attrs: p.attrs}
	for _, x := range v.recs[num].ext {
		xp, why := v.readRecord(uint64(x))
		if why != "" {
			v.opts.Reportf(v.recOffset(uint64(x)), "corrupt", "MFT record %d (extension of %d): %s; its attributes are lost", x, num, why)
			continue
		}
		f.attrs = append(f.attrs, xp.attrs...)
	}
	return f, nil
}

// stream is one $DATA attribute of a file, its fragments put together.
type stream struct {
	name       string
	resident   bool
	data       []byte // resident value
	runs       []vrun
	size, init int64
	compressed bool
	unit       int64 // clusters per compression unit; 0 for one NTFS does not write (reading fails)
	encrypted  bool
	off        int64 // volume offset of the first fragment's header
	valueOff   int64 // volume offset of a resident value, -1 if unknown
	fixedUp    bool  // a resident value spanning a stride end (its runs are not its bytes)
}

// streams returns the file's $DATA streams, the unnamed one first, then the
// named ones by name. A fragment that does not continue where the previous
// one ended ends its stream's runs (reported).
func (v *Volume) streams(f *file) []*stream {
	// By key, not name: names distinct on the medium that show alike
	// (unpaired surrogates) are distinct streams.
	by := map[string][]*attr{}
	var keys []string
	for i := range f.attrs {
		a := &f.attrs[i]
		if a.typ != atData {
			continue
		}
		if _, seen := by[a.key]; !seen {
			keys = append(keys, a.key)
		}
		by[a.key] = append(by[a.key], a)
	}
	slices.SortFunc(keys, func(a, b string) int { // by name ("" first), then key
		if c := strings.Compare(by[a][0].name, by[b][0].name); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	var out []*stream
	for _, key := range keys {
		frags := by[key]
		n := frags[0].name
		slices.SortStableFunc(frags, func(a, b *attr) int { return int(min(max(a.startVCN-b.startVCN, -1), 1)) })
		first := frags[0]
		s := &stream{name: n, off: first.off, valueOff: -1}
		if first.resident {
			if first.off >= 0 {
				s.valueOff = first.off + int64(first.valueOff)
			}
			s.fixedUp = first.acrossFixup()
			s.resident, s.data, s.size, s.init = true, first.value, int64(len(first.value)), int64(len(first.value))
			out = append(out, s)
			continue
		}
		if first.startVCN != 0 {
			v.opts.Reportf(first.off, "corrupt", "MFT record %d: stream %q has no first fragment (it starts at VCN %d); left out", f.num, n, first.startVCN)
			continue
		}
		s.size, s.init = first.dataSize, min(first.initSize, first.dataSize)
		s.compressed = first.flags&attrCompressed != 0 && first.compUnit != 0
		s.encrypted = first.flags&attrEncrypted != 0
		if s.compressed {
			if first.compUnit > 8 || v.clusterSize > 4096 {
				// Its stored clusters are not its content: it stays
				// Encoded, and reading it fails (unit 0).
				v.opts.Reportf(first.off, "corrupt", "MFT record %d: stream %q is compressed in units of 2^%d clusters of %d bytes, which NTFS does not write; it cannot be read", f.num, n, first.compUnit, v.clusterSize)
			} else {
				s.unit = 1 << first.compUnit
			}
		}
		next := int64(0)
		for _, a := range frags {
			if a.resident || a.startVCN != next {
				v.opts.Reportf(a.off, "corrupt", "MFT record %d: a fragment of stream %q starts at VCN %d, not %d where the previous ended; the stream's runs end there", f.num, n, a.startVCN, next)
				break
			}
			if len(s.runs)+len(a.runs) > maxRuns {
				v.opts.Reportf(a.off, "corrupt", "MFT record %d: stream %q has more than %d runs; the rest are not read", f.num, n, maxRuns)
				break
			}
			s.runs = append(s.runs, a.runs...)
			if len(a.runs) > 0 {
				last := a.runs[len(a.runs)-1]
				next = last.vcn + last.n
			}
		}
		out = append(out, s)
	}
	return out
}

// streamRuns turns runs into volume byte runs (holes kept), reporting a
// run past the volume; it returns them and how many bytes they cover.
func (v *Volume) streamRuns(runs []vrun, what string, off int64) ([]imagefs.Run, int64) {
	for _, r := range runs {
		if !r.sparse && r.lcn+r.n > v.clusters && what != "" {
			v.opts.Reportf(off, "out_of_volume", "%s: a run of clusters %d+%d lies past the %d clusters of the volume", what, r.lcn, r.n, v.clusters)
		}
	}
	out := v.byteRuns(runs)
	var covered int64
	if len(out) > 0 {
		covered = out[len(out)-1].Logical + out[len(out)-1].Length
	}
	return out, covered
}

// trimRuns cuts runs to the first n bytes.
func trimRuns(runs []imagefs.Run, n int64) []imagefs.Run {
	out := runs[:0:0]
	for _, r := range runs {
		if r.Logical >= n {
			break
		}
		r.Length = min(r.Length, n-r.Logical)
		out = append(out, r)
	}
	return out
}

// Reparse tags presented as symlinks.
const (
	tagMountPoint = 0xA0000003
	tagSymlink    = 0xA000000C
)

// interixMagic starts the content of a symlink as ntfs-3g and Services for
// Unix write it by default: a system file holding "IntxLNK\1" and the
// target in UTF-16.
const interixMagic = "IntxLNK\x01"

// fileAttrSystem is FILE_ATTRIBUTE_SYSTEM in $STANDARD_INFORMATION.
const fileAttrSystem = 0x0004

// maxTarget bounds a symlink target's length in bytes.
const maxTarget = 1 << 16

// entry builds the entry of record num under name.
func (v *Volume) entry(num uint64, name string) (*imagefs.Entry, error) {
	f, err := v.load(num)
	if err != nil {
		return nil, err
	}
	e := &imagefs.Entry{ID: num, Name: []byte(v.cleanName(num, name)), Nlink: 1}
	var siFlags uint32
	for _, a := range f.attrs {
		if a.typ == atStandardInfo && a.resident && len(a.value) >= 0x24 {
			e.Mtime = winTime(le.Uint64(a.value[0x08:]))
			siFlags = le.Uint32(a.value[0x20:])
			break
		}
	}
	if e.Mtime.IsZero() {
		v.opts.Reportf(f.off, "corrupt", "MFT record %d %q has no $STANDARD_INFORMATION; its mtime is the Windows epoch", num, name)
		e.Mtime = winTime(0)
	}
	if t, ok := v.reparseTarget(f); ok {
		e.Type, e.Target, e.Size = 'l', []byte(t), int64(len(t))
		e.Nlink = uint64(len(presentedNames(v.recs[num].names)))
		return e, nil
	}
	if v.recs[num].flags&recDir != 0 {
		e.Type = 'd'
		e.Nlink = 2
		for _, c := range v.children[num] {
			if v.recs[c.rec].flags&recDir != 0 && v.recs[c.rec].ok && (num != RootID || c.rec >= firstUserID) {
				e.Nlink++
			}
		}
		// As ntfs-3g shows it: the $I30 index allocation's size, else
		// the index root's.
		for _, a := range f.attrs {
			if a.name == "$I30" && a.typ == atIndexAlloc && !a.resident && a.startVCN == 0 {
				e.Size = a.dataSize
			} else if a.name == "$I30" && a.typ == atIndexRoot && a.resident && e.Size == 0 {
				e.Size = int64(len(a.value))
			}
		}
		if f.off >= 0 {
			e.Runs = []imagefs.Run{{Offset: f.off, Length: v.recSize}}
		}
		v.addForks(e, f, v.streams(f))
		return e, nil
	}
	e.Type = 'f'
	e.Nlink = uint64(max(1, len(presentedNames(v.recs[num].names))))
	ss := v.streams(f)
	if len(ss) > 0 && ss[0].name == "" {
		s := ss[0]
		e.Size, e.Runs, e.Encoded = s.size, v.entryRuns(f, s), s.encoded()
		if siFlags&fileAttrSystem != 0 && s.size >= int64(len(interixMagic)) && s.size < maxTarget {
			if t, ok := v.interixTarget(f, s); ok {
				e.Type, e.Target, e.Size, e.Runs, e.Encoded = 'l', []byte(t), int64(len(t)), nil, false
				return e, nil
			}
		}
	}
	v.addForks(e, f, ss)
	return e, nil
}

// addForks lists the non-empty named streams ss of e's record (a file's
// or a directory's) as e's forks.
func (v *Volume) addForks(e *imagefs.Entry, f *file, ss []*stream) {
	taken := map[string]bool{}
	for k, s := range ss {
		if s.name == "" || s.size == 0 {
			continue
		}
		name := v.cleanName(f.num, s.name)
		if taken[name] {
			// Stream names distinct on the medium that show alike.
			alias := fmt.Sprintf("%s_%d", name, forkIndex(ss, k))
			for j := 2; taken[alias]; j++ {
				alias = fmt.Sprintf("%s_%d_%d", name, forkIndex(ss, k), j)
			}
			v.opts.Reportf(s.off, "bad_name", "MFT record %d: a second stream named %q; named %q", f.num, name, alias)
			name = alias
		}
		taken[name] = true
		if len(e.Forks) >= imagefs.MaxForks {
			v.opts.Reportf(s.off, "corrupt", "MFT record %d %q has more than %d named streams; the rest are left out", f.num, e.Name, imagefs.MaxForks)
			break
		}
		e.Forks = append(e.Forks, &imagefs.Entry{ID: imagefs.ForkID(f.num, forkIndex(ss, k)), Type: 'f',
			Name: []byte(name), Size: s.size, Mtime: e.Mtime, Nlink: 1, Runs: v.entryRuns(f, s), Encoded: s.encoded()})
	}
}

// forkIndex is the k of ForkID for ss[i]: its place among the named
// streams, from 1 (ss[0] is the unnamed stream when there is one).
func forkIndex(ss []*stream, i int) int {
	if len(ss) > 0 && ss[0].name == "" {
		return i
	}
	return i + 1
}

// encoded reports a stream whose runs are not its content's bytes
// (imagefs.Entry.Encoded): a compressed one, or a resident one across a
// stride end of its record.
func (s *stream) encoded() bool { return s.compressed || s.fixedUp }

// entryRuns are a stream's runs as an Entry shows them: a non-resident
// stream's clusters (holes for sparse runs; a compressed stream's runlist
// as stored, its compressed clusters at the VCNs of their units), up to
// its initialized size (the rest reads as zeros); a resident stream's
// value inside its MFT record.
func (v *Volume) entryRuns(f *file, s *stream) []imagefs.Run {
	if s.resident {
		if len(s.data) == 0 || s.valueOff < 0 {
			return nil
		}
		return []imagefs.Run{{Offset: s.valueOff, Length: int64(len(s.data))}}
	}
	runs, covered := v.streamRuns(s.runs, fmt.Sprintf("MFT record %d stream %q", f.num, s.name), s.off)
	if covered < s.size {
		v.opts.Reportf(s.off, "corrupt", "MFT record %d: the runlist of stream %q maps %d of its %d bytes; reading past them fails", f.num, s.name, covered, s.size)
	}
	limit := s.init
	if s.compressed {
		limit = s.size
	}
	return trimRuns(runs, limit)
}

// reparseTarget returns the target of a symlink or junction reparse point.
func (v *Volume) reparseTarget(f *file) (string, bool) {
	for _, a := range f.attrs {
		if a.typ != atReparse {
			continue
		}
		if !a.resident {
			// A long target makes the reparse point non-resident.
			a.value = v.readSmall(&a, maxReparse)
		}
		if len(a.value) < 8 {
			continue
		}
		tag := le.Uint32(a.value)
		var hdr int
		switch tag {
		case tagSymlink:
			hdr = 20
		case tagMountPoint:
			hdr = 16
		default:
			return "", false
		}
		if len(a.value) < hdr {
			v.opts.Reportf(a.off, "corrupt", "MFT record %d: a reparse point of %d bytes", f.num, len(a.value))
			return "", false
		}
		d := a.value[8:]
		buf := a.value[hdr:]
		subOff, subLen := int(le.Uint16(d[0:])), int(le.Uint16(d[2:]))
		prOff, prLen := int(le.Uint16(d[4:])), int(le.Uint16(d[6:]))
		name := func(o, n int) (string, bool) {
			if o+n > len(buf) || n%2 != 0 {
				return "", false
			}
			return decodeUTF16(buf[o : o+n]), true
		}
		t, ok := name(prOff, prLen)
		if !ok || t == "" {
			t, ok = name(subOff, subLen)
		}
		if tag == tagSymlink && len(a.value) >= 20 && le.Uint32(d[8:])&1 != 0 {
			// A relative symlink: the substitute name is the target.
			if s, ok2 := name(subOff, subLen); ok2 && s != "" {
				t, ok = s, true
			}
		}
		if !ok || t == "" {
			v.opts.Reportf(a.off, "corrupt", "MFT record %d: a reparse point whose target does not fit it", f.num)
			return "", false
		}
		t = strings.TrimPrefix(t, `\??\`)
		return strings.ReplaceAll(t, `\`, "/"), true
	}
	return "", false
}

// maxReparse is the most a reparse point holds (16 KiB, as NTFS allows).
const maxReparse = 16 << 10

// readSmall reads a non-resident attribute's value of at most max bytes
// (its first fragment's runs); nil if it is larger or cannot be read
// (reported).
func (v *Volume) readSmall(a *attr, max int64) []byte {
	if a.startVCN != 0 || a.dataSize > max {
		v.opts.Reportf(a.off, "corrupt", "a non-resident attribute type %#x of %d bytes (from VCN %d); not read", a.typ, a.dataSize, a.startVCN)
		return nil
	}
	init := min(a.initSize, a.dataSize)
	b := make([]byte, a.dataSize)
	runs := trimRuns(v.byteRuns(a.runs), init)
	if n, err := imagefs.NewRunReader(v.r, v.size, runs, init).ReadAt(b[:init], 0); int64(n) < init {
		v.opts.Reportf(a.off, "corrupt", "a non-resident attribute type %#x of %d bytes cannot be read: %v", a.typ, a.dataSize, err)
		return nil
	}
	return b
}

// interixTarget returns the target of an Interix symlink stream s.
func (v *Volume) interixTarget(f *file, s *stream) (string, bool) {
	r, err := v.open(s)
	if err != nil {
		return "", false
	}
	b := make([]byte, s.size)
	if n, _ := r.ReadAt(b, 0); int64(n) < s.size {
		return "", false
	}
	if string(b[:len(interixMagic)]) != interixMagic || (len(b)-len(interixMagic))%2 != 0 {
		return "", false
	}
	return decodeUTF16(b[len(interixMagic):]), true
}

// cleanName makes a name fit imagefs: a '/' becomes U+2215 DIVISION SLASH
// and a NUL U+2400; an empty name or "." or ".." becomes "_mft_<record>".
// Each change is reported.
func (v *Volume) cleanName(num uint64, name string) string {
	if name == "" && num == RootID {
		return ""
	}
	clean := strings.NewReplacer("/", "\u2215", "\x00", "\u2400").Replace(name)
	if clean == "" || clean == "." || clean == ".." {
		clean = fmt.Sprintf("_mft_%d", num)
	}
	if strings.ContainsRune(name, utf8.RuneError) {
		v.opts.Reportf(v.recOffset(num), "bad_name", "MFT record %d has the name %q: U+FFFD stands for an unpaired surrogate (or is the name's own)", num, name)
	}
	if clean != name {
		v.opts.Reportf(v.recOffset(num), "bad_name", "MFT record %d has the name %q; named %q", num, name, clean)
	}
	return clean
}

// Open returns a reader of a file's unnamed $DATA stream or, for a fork
// (ID ForkID(record, k)), of its k-th named stream. Sparse runs and the
// bytes past the initialized size read as zeros; a compressed stream is
// decompressed; a run past the volume fails with imagefs.ErrBeyondEnd, a
// runlist that ends before the stream's size or a compression unit that
// does not decode with imagefs.ErrCorrupt — never zeros.
func (v *Volume) Open(e *imagefs.Entry) (io.ReaderAt, error) {
	if e == nil || e.Type != 'f' {
		return nil, fmt.Errorf("ntfs: Open of a non-file")
	}
	num, k := e.ID&refMask, int(e.ID>>48)
	if num >= uint64(len(v.recs)) || !v.recs[num].ok {
		return nil, fmt.Errorf("ntfs: MFT record %d is not in use", num)
	}
	f, err := v.load(num)
	if err != nil {
		return nil, fmt.Errorf("ntfs: %w", err)
	}
	ss := v.streams(f)
	for i, s := range ss {
		if (k == 0 && s.name == "") || (k > 0 && s.name != "" && forkIndex(ss, i) == k) {
			r, err := v.open(s)
			if err != nil {
				return nil, err
			}
			return &recordReader{r: r, rec: num, stream: s.name}, nil
		}
	}
	if k == 0 {
		return bytes.NewReader(nil), nil // a file without $DATA is empty
	}
	return nil, fmt.Errorf("ntfs: MFT record %d has no stream %d", num, k)
}

func (v *Volume) open(s *stream) (io.ReaderAt, error) {
	if s.resident {
		return bytes.NewReader(s.data), nil
	}
	runs, covered := v.streamRuns(s.runs, "", -1)
	if s.compressed && s.unit == 0 {
		return imagefs.NewShortReader(bytes.NewReader(nil), 0, s.size, s.off,
			fmt.Sprintf("stream %q is compressed in units NTFS does not write", s.name)), nil
	}
	if s.compressed {
		return &compReader{v: v, s: s, runs: runs, unit: s.unit * v.clusterSize, cur: -1}, nil
	}
	runs = trimRuns(runs, s.init)
	rr := imagefs.NewRunReader(v.r, v.size, runs, s.size)
	if covered >= s.size {
		return rr, nil
	}
	// NTFS allocates every VCN up to the size (holes included), so bytes
	// past the runlist — even past the initialized size — are damage, not
	// zeros: a damaged size must not read as megabytes of zeros.
	return imagefs.NewShortReader(rr, covered, s.size, s.off,
		fmt.Sprintf("the runlist of stream %q ends %d bytes into its %d (%d initialized)", s.name, covered, s.size, s.init)), nil
}

// recordReader names a stream's record in its read errors (which stay
// *imagefs.ReadError, with the volume offset, for errors.As).
type recordReader struct {
	r      io.ReaderAt
	rec    uint64
	stream string
}

func (r *recordReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.r.ReadAt(p, off)
	if err != nil && err != io.EOF {
		what := "its unnamed stream"
		if r.stream != "" {
			what = fmt.Sprintf("stream %q", r.stream)
		}
		err = fmt.Errorf("ntfs: MFT record %d, %s, at byte %d: %w", r.rec, what, off, err)
	}
	return n, err
}

// compReader reads a compressed stream one compression unit at a time.
type compReader struct {
	v    *Volume
	s    *stream
	runs []imagefs.Run
	unit int64
	cur  int64 // the unit in buf, -1 for none
	buf  []byte
	err  error
}

func (c *compReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("ntfs: negative offset")
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= c.s.size {
			return n, io.EOF
		}
		u := pos / c.unit
		in := pos - u*c.unit
		end := min(c.unit, c.s.size-u*c.unit)
		if pos >= c.s.init {
			// Past the initialized size: zeros, as NTFS defines them
			// (and ntfs-3g reads them), whatever the clusters hold.
			n += len(clear0(p[n:min(len(p), n+int(end-in))]))
			continue
		}
		if err := c.load(u); err != nil {
			return n, err
		}
		m := copy(p[n:], c.buf[in:end])
		if pos+int64(m) > c.s.init {
			clear(p[n+int(c.s.init-pos) : n+m])
		}
		n += m
	}
	return n, nil
}

// load decodes unit u into c.buf: all holes read as zeros, all stored as
// they are, stored clusters followed by holes as LZNT1.
func (c *compReader) load(u int64) error {
	if c.cur == u {
		return c.err
	}
	c.cur, c.err = u, nil
	if c.buf == nil {
		c.buf = make([]byte, c.unit)
	}
	lo, hi := u*c.unit, (u+1)*c.unit
	var stored []imagefs.Run
	var mapped, holes int64
	// The runs are in logical order: from the first that reaches into
	// the unit, not from the start (a stream may have 2^20 runs).
	first := sort.Search(len(c.runs), func(i int) bool { return c.runs[i].Logical+c.runs[i].Length > lo })
	for _, r := range c.runs[first:] {
		if r.Logical >= hi {
			break
		}
		s, e := max(r.Logical, lo), min(r.Logical+r.Length, hi)
		if s >= e {
			continue
		}
		mapped += e - s
		if r.Hole {
			holes += e - s
			continue
		}
		stored = append(stored, imagefs.Run{Logical: s - lo, Offset: r.Offset + s - r.Logical, Length: e - s})
	}
	if mapped < min(hi, c.s.size)-lo {
		at := c.s.off
		c.err = &imagefs.ReadError{Offset: at, Err: fmt.Errorf("the runlist of compressed stream %q does not map its unit %d: %w", c.s.name, u, imagefs.ErrCorrupt)}
		return c.err
	}
	var data int64
	for _, r := range stored {
		data += r.Length
	}
	raw := make([]byte, data)
	if data > 0 {
		rr := imagefs.NewRunReader(c.v.r, c.v.size, packRuns(stored), data)
		if n, err := rr.ReadAt(raw, 0); int64(n) < data {
			if err == nil || err == io.EOF {
				err = &imagefs.ReadError{Offset: stored[0].Offset, Err: imagefs.ErrBeyondEnd}
			}
			c.err = err
			return err
		}
	}
	switch {
	case data == 0:
		clear(c.buf)
	case holes == 0:
		copy(c.buf, raw) // an incompressible unit, stored as it is
		clear(c.buf[len(raw):])
	default:
		n, err := DecompressLZNT1(c.buf, raw)
		if err != nil {
			c.err = &imagefs.ReadError{Offset: stored[0].Offset, Err: fmt.Errorf("compressed stream %q unit %d: %v: %w", c.s.name, u, err, imagefs.ErrCorrupt)}
			return c.err
		}
		clear(c.buf[n:])
	}
	return nil
}

// clear0 zeroes b and returns it.
func clear0(b []byte) []byte {
	clear(b)
	return b
}

// packRuns lays stored runs end to end from logical 0.
func packRuns(rs []imagefs.Run) []imagefs.Run {
	out := make([]imagefs.Run, len(rs))
	var l int64
	for i, r := range rs {
		out[i] = imagefs.Run{Logical: l, Offset: r.Offset, Length: r.Length}
		l += r.Length
	}
	return out
}

var _ imagefs.FS = (*Volume)(nil)
