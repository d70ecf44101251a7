package testimg

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
)

// HFSPlusCompression is how a file's content is stored (decmpfs, the
// transparent compression of HFS+ since Mac OS X 10.6).
type HFSPlusCompression int

const (
	// NotCompressed: the content is the data fork.
	NotCompressed HFSPlusCompression = iota
	// DecmpfsInline is decmpfs type 3: one zlib stream (or 0xFF and the
	// content, when zlib does not make it smaller) inside the
	// com.apple.decmpfs attribute, after its 16-byte header. The
	// attribute record must fit one B-tree node.
	DecmpfsInline
	// DecmpfsRsrc is decmpfs type 4: the attribute is the header only;
	// the resource fork holds a resource of type 'cmpf' whose data is a
	// table of 64 KiB chunks each compressed with zlib (or 0xFF and the
	// chunk, as for DecmpfsInline).
	DecmpfsRsrc
)

const (
	hpDecmpfsName     = "com.apple.decmpfs"
	hpDecmpfsChunk    = 64 << 10
	hpUFCompressed    = 0x20   // UF_COMPRESSED in permissions.ownerFlags
	hpHasAttributes   = 0x0004 // kHFSHasAttributesMask
	hpAttrInlineData  = 0x10   // kHFSPlusAttrInlineData
	hpRsrcDataOffset  = 0x100  // where a resource fork's data section starts
	hpRsrcMapLen      = 50     // the map of one resource of one type
	hpDecmpfsHdrBytes = 16
)

// zlibBytes compresses p as one zlib stream, or, as Mac OS does when that
// is no smaller, keeps it as is after a byte 0xFF (a zlib stream's first
// byte never has its low nibble 0xF).
func zlibBytes(p []byte) []byte {
	var buf bytes.Buffer
	w, _ := zlib.NewWriterLevel(&buf, zlib.BestCompression)
	w.Write(p)
	w.Close()
	if buf.Len() >= len(p) {
		return append([]byte{0xFF}, p...)
	}
	return buf.Bytes()
}

// compress turns a file's content into its decmpfs attribute (and, for
// type 4, resource fork), leaving the data fork empty.
func (o *hpObj) compress(c HFSPlusCompression) error {
	content := o.data.data
	hdr := make([]byte, hpDecmpfsHdrBytes)
	copy(hdr, "fpmc") // 'cmpf' little-endian
	binary.LittleEndian.PutUint64(hdr[8:], uint64(len(content)))
	switch c {
	case DecmpfsInline:
		binary.LittleEndian.PutUint32(hdr[4:], 3)
		o.decmpfs = append(hdr, zlibBytes(content)...)
	case DecmpfsRsrc:
		binary.LittleEndian.PutUint32(hdr[4:], 4)
		o.decmpfs = hdr
		o.rsrc.data = decmpfsResourceFork(content)
	default:
		return fmt.Errorf("compression %d: want DecmpfsInline or DecmpfsRsrc", int(c))
	}
	o.content, o.compression = content, c
	o.data.data = nil
	o.ownerFlags |= hpUFCompressed
	o.flags |= hpHasAttributes
	return nil
}

// decmpfsResourceFork lays out a resource fork holding content as decmpfs
// type 4 keeps it: the resource header, at 0x100 the data section with one
// resource (its length, then the chunk table — count, then offset and
// length of each chunk, both little-endian and counted from the count —
// then the zlib chunks), and the resource map naming it 'cmpf' ID 1.
func decmpfsResourceFork(content []byte) []byte {
	var chunks [][]byte
	for off := 0; off < len(content); off += hpDecmpfsChunk {
		chunks = append(chunks, zlibBytes(content[off:min(off+hpDecmpfsChunk, len(content))]))
	}
	le, be := binary.LittleEndian, binary.BigEndian
	res := make([]byte, 4+8*len(chunks))
	le.PutUint32(res, uint32(len(chunks)))
	for i, ch := range chunks {
		le.PutUint32(res[4+8*i:], uint32(len(res)))
		le.PutUint32(res[8+8*i:], uint32(len(ch)))
		res = append(res, ch...)
	}
	dataLen := 4 + len(res)
	fork := make([]byte, hpRsrcDataOffset, hpRsrcDataOffset+dataLen+hpRsrcMapLen)
	hdr := fork[:16]
	be.PutUint32(hdr, hpRsrcDataOffset)
	be.PutUint32(hdr[4:], uint32(hpRsrcDataOffset+dataLen))
	be.PutUint32(hdr[8:], uint32(dataLen))
	be.PutUint32(hdr[12:], hpRsrcMapLen)
	fork = be.AppendUint32(fork, uint32(len(res)))
	fork = append(fork, res...)
	m := make([]byte, hpRsrcMapLen)
	copy(m, hdr)
	be.PutUint16(m[24:], 28) // type list, from the map's start
	be.PutUint16(m[26:], hpRsrcMapLen)
	// Type list: one type ('cmpf') of one resource, its reference list 10
	// bytes from the type list.
	copy(m[30:], "cmpf")
	be.PutUint16(m[36:], 10)
	be.PutUint16(m[38:], 1)      // resource ID
	be.PutUint16(m[40:], 0xFFFF) // no name
	return append(fork, m...)
}

// attrRecord is an attributes B-tree record: key (file ID, start block 0,
// name) and inline data (kHFSPlusAttrInlineData).
func attrRecord(cnid uint32, name string, data []byte) btRec {
	u, _ := hfsPlusName(name)
	be := binary.BigEndian
	key := make([]byte, 14+2*len(u))
	be.PutUint16(key, uint16(12+2*len(u)))
	be.PutUint32(key[4:], cnid)
	putName(key[12:], u)
	val := make([]byte, 16, 16+len(data)+1)
	be.PutUint32(val, hpAttrInlineData)
	be.PutUint32(val[12:], uint32(len(data)))
	val = append(val, data...)
	if len(val)%2 != 0 {
		val = append(val, 0)
	}
	return btRec{key, val}
}
