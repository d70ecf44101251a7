package testimg

import (
	"encoding/binary"
	"fmt"

	"github.com/HRDAG/ntt/imagefs/hfs/macroman"
)

// An HFS wrapper (TN1150 "HFS Wrapper") is a classic HFS volume whose
// master directory block names an embedded HFS+ volume (drEmbedSigWord
// "H+", drEmbedExtent in HFS allocation blocks); Mac OS 8.1..9 booted HFS+
// disks this way. The wrapper written here is what Apple's newfs_hfs -w
// writes in substance: an extents-overflow B-tree whose one record marks
// the embedded volume's blocks as bad blocks (file 5, so that HFS-only
// systems leave them alone), a catalog with the root folder only, a
// bitmap with every block used (each B-tree 1024 bytes at least: a header
// node and a leaf), and the alternate MDB 1024 bytes before
// the end.

// HFS (classic) constants.
const (
	hfsSig          = 0x4244 // "BD"
	hfsBitmapSector = 3      // drVBMSt
	hfsBadBlocksID  = 5
)

// wrapHFS puts the HFS+ volume inner (whose blocks are w bytes, a
// multiple of 512) inside an HFS wrapper and returns the image and the
// byte offset of the embedded volume.
func wrapHFS(inner []byte, w int, label string, date uint32) ([]byte, int64, error) {
	if len(inner)%w != 0 {
		return nil, 0, fmt.Errorf("HFS wrapper: volume of %d bytes is not whole %d-byte blocks", len(inner), w)
	}
	embed := len(inner) / w
	tb := (1024 + w - 1) / w // blocks of each B-tree: 2 nodes at least
	n := 2*tb + embed        // the extents B-tree, the catalog B-tree, the volume
	if n > 65535 {
		return nil, 0, fmt.Errorf("HFS wrapper: %d blocks of %d bytes; HFS counts at most 65535", n, w)
	}
	bitmapSectors := ((n+7)/8 + 511) / 512
	alSt := hfsBitmapSector + bitmapSectors
	start := int64(alSt) * 512
	img := make([]byte, start+int64(n)*int64(w)+1024)
	be := binary.BigEndian
	for i := 0; i < n; i++ {
		img[hfsBitmapSector*512+i/8] |= 0x80 >> (i % 8)
	}
	raw, ok := macroman.Encode(label)
	if !ok || len(raw) > 27 || len(raw) == 0 {
		raw = []byte("Untitled")
	}
	// The B-trees, 512-byte nodes (W/512 of them each).
	ext := btTree{name: "HFS extents", nodeSize: 512, maxKeyLen: 7, classic: true}
	key := []byte{7, 0, 0, 0, 0, hfsBadBlocksID, 0, 0}
	val := make([]byte, 12)
	be.PutUint16(val, uint16(2*tb))
	be.PutUint16(val[2:], uint16(embed))
	extL, err := ext.pack([]btRec{{key, val}})
	if err != nil {
		return nil, 0, err
	}
	cat := btTree{name: "HFS catalog", nodeSize: 512, maxKeyLen: 37, classic: true}
	rootKey := append([]byte{byte(6 + len(raw)), 0, 0, 0, 0, 1, byte(len(raw))}, raw...)
	if len(rootKey)%2 != 0 {
		rootKey = append(rootKey, 0)
	}
	dir := make([]byte, 70)
	dir[0] = 1 // cdrDirRec
	be.PutUint32(dir[6:], hpRootID)
	be.PutUint32(dir[10:], date)
	be.PutUint32(dir[14:], date)
	thread := make([]byte, 46)
	thread[0] = 3 // cdrThdRec
	be.PutUint32(thread[10:], hpRootParentID)
	thread[14] = byte(len(raw))
	copy(thread[15:], raw)
	catL, err := cat.pack([]btRec{{rootKey, dir}, {[]byte{6, 0, 0, 0, 0, hpRootID, 0, 0}, thread}})
	if err != nil {
		return nil, 0, err
	}
	for i, t := range []struct {
		tree btTree
		laid btLaid
	}{{ext, extL}, {cat, catL}} {
		f, err := t.tree.file(t.laid, tb*w)
		if err != nil {
			return nil, 0, err
		}
		copy(img[start+int64(i*tb*w):], f)
	}
	embedOff := start + int64(2*tb*w)
	copy(img[embedOff:], inner)

	mdb := make([]byte, 162)
	be.PutUint16(mdb[0:], hfsSig)
	be.PutUint32(mdb[2:], date)
	be.PutUint32(mdb[6:], date)
	be.PutUint16(mdb[10:], 0x0100|0x0200) // unmounted, spared (bad) blocks
	be.PutUint16(mdb[14:], hfsBitmapSector)
	be.PutUint16(mdb[18:], uint16(n))
	be.PutUint32(mdb[20:], uint32(w))
	be.PutUint32(mdb[24:], uint32(w))
	be.PutUint16(mdb[28:], uint16(alSt))
	be.PutUint32(mdb[30:], hpFirstUserID)
	mdb[36] = byte(len(raw))
	copy(mdb[37:], raw)
	be.PutUint32(mdb[70:], 1)
	be.PutUint32(mdb[74:], uint32(w))
	be.PutUint32(mdb[78:], uint32(w))
	be.PutUint16(mdb[124:], hfsPlusSigH)  // drEmbedSigWord
	be.PutUint16(mdb[126:], uint16(2*tb)) // drEmbedExtent
	be.PutUint16(mdb[128:], uint16(embed))
	be.PutUint32(mdb[130:], uint32(tb*w)) // drXTFlSize
	be.PutUint16(mdb[134:], 0)
	be.PutUint16(mdb[136:], uint16(tb))
	be.PutUint32(mdb[146:], uint32(tb*w)) // drCTFlSize
	be.PutUint16(mdb[150:], uint16(tb))
	be.PutUint16(mdb[152:], uint16(tb))
	copy(img[1024:], mdb)
	copy(img[len(img)-1024:], mdb)
	return img, embedOff, nil
}
