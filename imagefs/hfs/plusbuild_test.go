package hfs_test

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"sort"
	"strings"
	"unicode/utf16"
)

// plusBuilder writes small HFS+ volumes for the reader's tests, from
// TN1150: a volume header, an extents-overflow, a catalog and an
// attributes B-tree (leaves in as many nodes as their records need, under
// one index node, keys in HFS+'s case-folding order with NUL last, as
// Apple's FastUnicodeCompare sorts them), files with data and resource
// forks, fragmented forks continued in extents-overflow records, symlinks,
// hardlinks through indirect node files, and decmpfs-compressed files. The
// Sleuth Kit reads what it writes (TestPlusTSK).
type plusBuilder struct {
	blkSize  int
	img      []byte
	next     uint32 // next free allocation block
	cnid     uint32
	cat      []plusRec
	ext      []plusRec
	attrs    []plusRec
	hfsx     bool
	private  uint32
	inodeNum uint32
	nodeSize int    // of every B-tree (4096 unless set)
	special  uint32 // blocks kept for the B-tree files (specialBlocks unless set)
}

type plusRec struct {
	key  []byte // without the length
	sort []uint16
	data []byte
}

const macT0 = 3786912000 // 2024-01-01 in seconds since 1904

// specialBlocks are the blocks (after block 0) kept for the B-tree files,
// at the start of the volume as macOS puts them; files come after.
const specialBlocks = 192

func newPlusBuilder(blkSize, blocks int) *plusBuilder {
	return newPlusBuilderSized(blkSize, blocks, 4096, specialBlocks)
}

func newPlusBuilderSized(blkSize, blocks, nodeSize int, special uint32) *plusBuilder {
	b := &plusBuilder{blkSize: blkSize, img: make([]byte, blkSize*blocks), next: special, cnid: 16, nodeSize: nodeSize, special: special}
	b.catRec(1, "Test", folderRec(2, 0))
	b.catRec(2, "", threadRec(3, 1, "Test"))
	return b
}

var pbe = binary.BigEndian

func uni(s string) []uint16 { return utf16.Encode([]rune(s)) }

func uniBytes(s string) []byte {
	u := uni(s)
	out := make([]byte, 2+2*len(u))
	pbe.PutUint16(out, uint16(len(u)))
	for i, c := range u {
		pbe.PutUint16(out[2+2*i:], c)
	}
	return out
}

func (b *plusBuilder) catRec(parent uint32, name string, data []byte) {
	key := append(pbe.AppendUint32(nil, parent), uniBytes(name)...)
	var fold []uint16
	for _, c := range uni(name) {
		switch {
		case c == 0:
			c = 0xffff
		case !b.hfsx && c < 0x80:
			c = uint16(strings.ToLower(string(rune(c)))[0])
		}
		fold = append(fold, c)
	}
	b.cat = append(b.cat, plusRec{key: key, sort: append([]uint16{uint16(parent >> 16), uint16(parent)}, fold...), data: data})
}

// alloc puts data in fresh blocks; gap leaves a free block after each
// block (fragmenting the fork). It returns the extents.
func (b *plusBuilder) alloc(data []byte, gap bool) [][2]uint32 {
	var ext [][2]uint32
	for off := 0; off < len(data); {
		n := (len(data) - off + b.blkSize - 1) / b.blkSize
		if gap {
			n = 1
		}
		copy(b.img[int(b.next)*b.blkSize:], data[off:min(len(data), off+n*b.blkSize)])
		ext = append(ext, [2]uint32{b.next, uint32(n)})
		b.next += uint32(n)
		if gap {
			b.next++
		}
		off += n * b.blkSize
	}
	return ext
}

// fork writes data and returns its fork data (80 bytes), putting extents
// past the eighth in extents-overflow records of (fork, cnid).
func (b *plusBuilder) fork(data []byte, gap bool, forkType byte, cnid uint32) []byte {
	ext := b.alloc(data, gap)
	fd := make([]byte, 80)
	pbe.PutUint64(fd, uint64(len(data)))
	total := uint32(0)
	for _, e := range ext {
		total += e[1]
	}
	pbe.PutUint32(fd[12:], total)
	fabn := uint32(0)
	for i := 0; i < len(ext); i += 8 {
		rec := make([]byte, 64)
		for j := 0; j < 8 && i+j < len(ext); j++ {
			pbe.PutUint32(rec[8*j:], ext[i+j][0])
			pbe.PutUint32(rec[8*j+4:], ext[i+j][1])
		}
		if i == 0 {
			copy(fd[16:], rec)
		} else {
			key := []byte{forkType, 0}
			key = pbe.AppendUint32(pbe.AppendUint32(key, cnid), fabn)
			b.ext = append(b.ext, plusRec{key: key, sort: []uint16{uint16(forkType), uint16(cnid >> 16), uint16(cnid), uint16(fabn >> 16), uint16(fabn)}, data: rec})
		}
		for j := 0; j < 8 && i+j < len(ext); j++ {
			fabn += ext[i+j][1]
		}
	}
	return fd
}

func folderRec(cnid, valence uint32) []byte {
	r := make([]byte, 88)
	pbe.PutUint16(r, 1)
	pbe.PutUint32(r[4:], valence)
	pbe.PutUint32(r[8:], cnid)
	for i := 12; i < 28; i += 4 {
		pbe.PutUint32(r[i:], macT0+cnid)
	}
	pbe.PutUint16(r[42:], 0o40755)
	return r
}

func threadRec(typ uint16, parent uint32, name string) []byte {
	r := pbe.AppendUint16(nil, typ)
	r = pbe.AppendUint16(r, 0)
	r = pbe.AppendUint32(r, parent)
	return append(r, uniBytes(name)...)
}

// plusFile describes a file record.
type plusFile struct {
	data, rsrc     []byte
	gap            bool // fragment both forks, a free block after each block
	typ, creator   string
	mode           uint16
	special        uint32
	ownerFlags     byte
	create         uint32 // createDate, if not the default
	dataFD, rsrcFD []byte // fork data given as is
}

// dir adds a directory and returns its CNID.
func (b *plusBuilder) dir(parent uint32, name string) uint32 {
	id := b.cnid
	b.cnid++
	b.catRec(parent, name, folderRec(id, 0))
	b.catRec(id, "", threadRec(3, parent, name))
	return id
}

// file adds a file and returns its CNID.
func (b *plusBuilder) file(parent uint32, name string, f plusFile) uint32 {
	id := b.cnid
	b.cnid++
	r := make([]byte, 248)
	pbe.PutUint16(r, 2)
	pbe.PutUint16(r[2:], 2) // kHFSThreadExistsMask
	pbe.PutUint32(r[8:], id)
	for i := 12; i < 28; i += 4 {
		pbe.PutUint32(r[i:], macT0+id)
	}
	if f.create != 0 {
		pbe.PutUint32(r[12:], f.create)
	}
	r[41] = f.ownerFlags
	mode := f.mode
	if mode == 0 {
		mode = 0o100644
	}
	pbe.PutUint16(r[42:], mode)
	pbe.PutUint32(r[44:], f.special)
	copy(r[48:52], f.typ)
	copy(r[52:56], f.creator)
	if f.dataFD != nil {
		copy(r[88:], f.dataFD)
	} else {
		copy(r[88:], b.fork(f.data, f.gap, 0, id))
	}
	if f.rsrcFD != nil {
		copy(r[168:], f.rsrcFD)
	} else {
		copy(r[168:], b.fork(f.rsrc, f.gap, 0xff, id))
	}
	b.catRec(parent, name, r)
	b.catRec(id, "", threadRec(4, parent, name))
	return id
}

// hardlinks adds a file of content data with a name in each of parents.
func (b *plusBuilder) hardlinks(data []byte, names map[uint32]string) {
	if b.private == 0 {
		b.private = b.dir(2, "\x00\x00\x00\x00HFS+ Private Data")
	}
	b.inodeNum = b.cnid
	b.file(b.private, "iNode"+itoa(b.inodeNum), plusFile{data: data, special: uint32(len(names))})
	parents := make([]uint32, 0, len(names))
	for p := range names {
		parents = append(parents, p)
	}
	sort.Slice(parents, func(i, j int) bool { return parents[i] < parents[j] })
	for _, p := range parents {
		// A link's createDate is the private directory's, which The
		// Sleuth Kit checks.
		b.file(p, names[p], plusFile{typ: "hlnk", creator: "hfs+", special: b.inodeNum, create: macT0 + b.private})
	}
}

func itoa(n uint32) string {
	s := ""
	for ; n > 0 || s == ""; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

// compressed adds a file compressed with decmpfs type 3 (inline) or 4 (in
// its resource fork).
func (b *plusBuilder) compressed(parent uint32, name string, content []byte, typ uint32) uint32 {
	hdr := []byte("fpmc")
	hdr = binary.LittleEndian.AppendUint32(hdr, typ)
	hdr = binary.LittleEndian.AppendUint64(hdr, uint64(len(content)))
	var f plusFile
	f.ownerFlags = 0x20
	if typ == 3 {
		hdr = append(hdr, deflate(content)...)
	} else {
		var blocks [][]byte
		for off := 0; off < len(content); off += 64 << 10 {
			blocks = append(blocks, deflate(content[off:min(len(content), off+64<<10)]))
		}
		tbl := binary.LittleEndian.AppendUint32(nil, uint32(len(blocks)))
		off := 4 + 8*len(blocks)
		var body []byte
		for _, blk := range blocks {
			tbl = binary.LittleEndian.AppendUint32(tbl, uint32(off))
			tbl = binary.LittleEndian.AppendUint32(tbl, uint32(len(blk)))
			off += len(blk)
			body = append(body, blk...)
		}
		data := append(tbl, body...)
		rf := make([]byte, 256)
		pbe.PutUint32(rf, 256)
		pbe.PutUint32(rf[4:], uint32(256+4+len(data)))
		pbe.PutUint32(rf[8:], uint32(4+len(data)))
		pbe.PutUint32(rf[12:], 50)
		rf = pbe.AppendUint32(rf, uint32(len(data)))
		rf = append(append(rf, data...), make([]byte, 50)...)
		f.rsrc = rf
	}
	id := b.file(parent, name, f)
	key := pbe.AppendUint16(nil, 0)
	key = pbe.AppendUint32(pbe.AppendUint32(key, id), 0)
	key = append(key, uniBytes("com.apple.decmpfs")...)
	rec := pbe.AppendUint32(nil, 0x10)
	rec = pbe.AppendUint32(pbe.AppendUint32(rec, 0), 0)
	rec = pbe.AppendUint32(rec, uint32(len(hdr)))
	rec = append(rec, hdr...)
	if len(rec)%2 == 1 {
		rec = append(rec, 0)
	}
	b.attrs = append(b.attrs, plusRec{key: key, sort: []uint16{uint16(id >> 16), uint16(id)}, data: rec})
	return id
}

func deflate(b []byte) []byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func less(a, b []uint16) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

// tree lays out a B-tree of nodeSize-byte nodes: header node, leaves
// (records in key order, as many per leaf as fit), an index node over
// them when there are several.
func tree(recs []plusRec, nodeSize int, maxKey uint16, cmp byte) []byte {
	sort.SliceStable(recs, func(i, j int) bool { return less(recs[i].sort, recs[j].sort) })
	raw := func(r plusRec) []byte {
		k := pbe.AppendUint16(nil, uint16(len(r.key)))
		k = append(k, r.key...)
		if len(k)%2 == 1 {
			k = append(k, 0)
		}
		return append(k, r.data...)
	}
	var leaves [][][]byte
	var firstKeys [][]byte
	used := nodeSize
	for _, r := range recs {
		b := raw(r)
		if used+len(b)+2 > nodeSize-16 {
			leaves = append(leaves, nil)
			firstKeys = append(firstKeys, r.key)
			used = 14 + 2
		}
		leaves[len(leaves)-1] = append(leaves[len(leaves)-1], b)
		used += len(b) + 2
	}
	nLeaves := len(leaves)
	depth, root := uint16(0), uint32(0)
	total := 1 + nLeaves
	if nLeaves == 1 {
		depth, root = 1, 1
	} else if nLeaves > 1 {
		depth, root = 2, uint32(1+nLeaves)
		total++
	}
	total++ // a free node at the end
	out := make([]byte, total*nodeSize)
	node := func(n int, flink uint32, kind int8, height byte, recs [][]byte) {
		b := out[n*nodeSize : (n+1)*nodeSize]
		pbe.PutUint32(b, flink)
		b[8], b[9] = byte(kind), height
		pbe.PutUint16(b[10:], uint16(len(recs)))
		off := 14
		for i, r := range recs {
			pbe.PutUint16(b[nodeSize-2*(i+1):], uint16(off))
			copy(b[off:], r)
			off += len(r)
		}
		pbe.PutUint16(b[nodeSize-2*(len(recs)+1):], uint16(off))
	}
	hdr := make([]byte, 106)
	pbe.PutUint16(hdr, depth)
	pbe.PutUint32(hdr[2:], root)
	pbe.PutUint32(hdr[6:], uint32(len(recs)))
	if nLeaves > 0 {
		pbe.PutUint32(hdr[10:], 1)
		pbe.PutUint32(hdr[14:], uint32(nLeaves))
	}
	pbe.PutUint16(hdr[18:], uint16(nodeSize))
	pbe.PutUint16(hdr[20:], maxKey)
	pbe.PutUint32(hdr[22:], uint32(total))
	pbe.PutUint32(hdr[26:], 1)
	hdr[37] = cmp
	pbe.PutUint32(hdr[38:], 6) // big keys, variable index keys
	bitmap := make([]byte, nodeSize-14-106-128-8)
	for n := 0; n < total-1; n++ {
		bitmap[n/8] |= 0x80 >> (n % 8)
	}
	node(0, 0, 1, 0, [][]byte{hdr, make([]byte, 128), bitmap})
	for i, l := range leaves {
		next := uint32(i + 2)
		if i == nLeaves-1 {
			next = 0
		}
		node(1+i, next, -1, 1, l)
	}
	if nLeaves > 1 {
		var idx [][]byte
		for i, k := range firstKeys {
			r := pbe.AppendUint16(nil, uint16(len(k)))
			r = append(r, k...)
			if len(r)%2 == 1 {
				r = append(r, 0)
			}
			idx = append(idx, pbe.AppendUint32(r, uint32(1+i)))
		}
		node(1+nLeaves, 0, 0, 2, idx)
	}
	return out
}

// build lays out the special files and the volume header and returns the
// image.
func (b *plusBuilder) build() []byte {
	// Fix the folders' valences.
	val := map[uint32]uint32{}
	for _, r := range b.cat {
		if t := pbe.Uint16(r.data); t == 1 || t == 2 {
			val[pbe.Uint32(r.key)]++
		}
	}
	for _, r := range b.cat {
		if pbe.Uint16(r.data) == 1 {
			pbe.PutUint32(r.data[4:], val[pbe.Uint32(r.data[8:])])
		}
	}
	cmp := byte(0xCF)
	sig, ver := "H+", uint16(4)
	if b.hfsx {
		cmp, sig, ver = 0xBC, "HX", 5
	}
	// The special files go before the files, each in one extent.
	if int(b.next)*b.blkSize > len(b.img) {
		panic("plusBuilder: volume full")
	}
	files := b.next
	b.next = uint32((1536 + b.blkSize - 1) / b.blkSize) // after the volume header
	at := b.fork(tree(b.attrs, b.nodeSize, 266, 0), false, 0, 8)
	ct := b.fork(tree(b.cat, b.nodeSize, 516, cmp), false, 0, 4)
	xt := b.fork(tree(b.ext, b.nodeSize, 10, 0), false, 0, 3)
	if b.next > b.special {
		panic("plusBuilder: B-trees too large")
	}
	b.next = files
	vh := b.img[1024:1536]
	copy(vh, sig)
	pbe.PutUint16(vh[2:], ver)
	copy(vh[8:], "10.0")
	pbe.PutUint32(vh[16:], macT0)
	pbe.PutUint32(vh[20:], macT0)
	pbe.PutUint32(vh[40:], uint32(b.blkSize))
	pbe.PutUint32(vh[44:], uint32(len(b.img)/b.blkSize))
	pbe.PutUint32(vh[64:], b.cnid)
	copy(vh[0xc0:], xt)
	copy(vh[0x110:], ct)
	copy(vh[0x160:], at)
	return b.img
}

// wrap embeds an HFS+ volume in an HFS wrapper of blkSize blocks, whose
// allocation area starts at sector 8, at wrapper block 2.
func wrap(plus []byte, blkSize int) []byte {
	w := make([]byte, 8*512+2*blkSize+len(plus)+blkSize)
	m := w[1024:]
	copy(m, "BD")
	pbe.PutUint16(m[0x12:], uint16((len(w)-8*512)/blkSize))
	pbe.PutUint32(m[0x14:], uint32(blkSize))
	pbe.PutUint16(m[0x1c:], 8)
	copy(m[0x7c:], "H+")
	pbe.PutUint16(m[0x7e:], 2)
	pbe.PutUint16(m[0x80:], uint16(len(plus)/blkSize))
	copy(w[8*512+2*blkSize:], plus)
	return w
}
