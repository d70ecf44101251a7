package testimg

import (
	"encoding/binary"
	"fmt"
)

// HFS+ B-tree files (TN1150 "B-Trees"): node 0 is the header node; leaves
// hold the records in key order, linked left to right; index nodes hold the
// first key of each child and its node number, level by level up to one
// root. Every node ends with the offsets of its records, last first.

// Node kinds of the node descriptor.
const (
	btLeafKind   = 0xFF // -1
	btIndexKind  = 0
	btHeaderKind = 1
)

// B-tree header attributes.
const (
	btBigKeys      = 2 // kBTBigKeysMask: 16-bit key lengths
	btVarIndexKeys = 4 // kBTVariableIndexKeysMask: index keys as long as they are
)

// btRec is one leaf record: its key (with its key-length field) and data.
type btRec struct{ key, val []byte }

// btTree describes one B-tree file.
type btTree struct {
	name      string // for errors: "catalog", "extents", "attributes"
	nodeSize  int
	maxKeyLen int // the header's maxKeyLength; fixed index keys are padded to it
	attrs     uint32
	compType  uint8 // keyCompareType (HFSX catalog: 0xBC binary, 0xCF folding)
	classic   bool  // an HFS tree: the header's fields past the node counts are reserved
}

// btLaid is a packed tree: nodes 1..len(nodes) and the header's fields.
type btLaid struct {
	nodes                 [][]byte
	depth, root           uint32
	leafRecs, first, last uint32
}

// btNode serializes one node: descriptor, records, offset table.
func btNode(size int, kind byte, height uint8, flink, blink uint32, recs [][]byte) []byte {
	n := make([]byte, size)
	be := binary.BigEndian
	be.PutUint32(n[0:], flink)
	be.PutUint32(n[4:], blink)
	n[8] = kind
	n[9] = height
	be.PutUint16(n[10:], uint16(len(recs)))
	off := 14
	for i, r := range recs {
		be.PutUint16(n[size-2*(i+1):], uint16(off))
		copy(n[off:], r)
		off += len(r)
	}
	be.PutUint16(n[size-2*(len(recs)+1):], uint16(off)) // free space
	return n
}

// btGroup packs records greedily into nodes of the tree's size and returns
// the groups. A record that does not fit an empty node is an error.
func (t btTree) btGroup(recs [][]byte, what string) ([][][]byte, error) {
	var groups [][][]byte
	var cur [][]byte
	used := 0
	for i, r := range recs {
		if 14+len(r)+4 > t.nodeSize {
			return nil, fmt.Errorf("%s B-tree: %s record %d (%d bytes) does not fit a %d-byte node", t.name, what, i, len(r), t.nodeSize)
		}
		if 14+used+len(r)+2*(len(cur)+2) > t.nodeSize {
			groups = append(groups, cur)
			cur, used = nil, 0
		}
		cur = append(cur, r)
		used += len(r)
	}
	if len(cur) > 0 {
		groups = append(groups, cur)
	}
	return groups, nil
}

// pack lays recs (sorted by key) out as leaves and index levels, nodes
// numbered from 1. It fails, rather than loops, when index records are so
// big that a level of index nodes would not be smaller than the one below.
func (t btTree) pack(recs []btRec) (btLaid, error) {
	var l btLaid
	if len(recs) == 0 {
		return l, nil
	}
	raw := make([][]byte, len(recs))
	for i, r := range recs {
		raw[i] = append(append([]byte(nil), r.key...), r.val...)
	}
	groups, err := t.btGroup(raw, "leaf")
	if err != nil {
		return l, err
	}
	type child struct {
		node uint32
		key  []byte
	}
	// addLevel appends one level's nodes, linked left to right, and
	// returns them with their first keys (firstKey(i): of record i).
	addLevel := func(groups [][][]byte, kind byte, height uint8, firstKey func(int) []byte) []child {
		var level []child
		start := uint32(len(l.nodes)) + 1
		i := 0
		for g, grp := range groups {
			num := start + uint32(g)
			var fl, bl uint32
			if g > 0 {
				bl = num - 1
			}
			if g < len(groups)-1 {
				fl = num + 1
			}
			l.nodes = append(l.nodes, btNode(t.nodeSize, kind, height, fl, bl, grp))
			level = append(level, child{num, firstKey(i)})
			i += len(grp)
		}
		return level
	}
	level := addLevel(groups, btLeafKind, 1, func(i int) []byte { return recs[i].key })
	l.leafRecs = uint32(len(recs))
	l.first, l.last = 1, uint32(len(groups))
	height := uint8(1)
	for len(level) > 1 {
		height++
		if height > 32 {
			return l, fmt.Errorf("%s B-tree: index records too big for %d-byte nodes (over 32 levels)", t.name, t.nodeSize)
		}
		idx := make([][]byte, len(level))
		for k, c := range level {
			key := c.key
			if t.attrs&btVarIndexKeys == 0 {
				// Fixed-size index keys: padded to maxKeyLength.
				k2 := make([]byte, 2+t.maxKeyLen)
				copy(k2, key)
				binary.BigEndian.PutUint16(k2, uint16(t.maxKeyLen))
				key = k2
			}
			idx[k] = binary.BigEndian.AppendUint32(append([]byte(nil), key...), c.node)
		}
		groups, err := t.btGroup(idx, "index")
		if err != nil {
			return l, err
		}
		if len(groups) >= len(level) {
			return l, fmt.Errorf("%s B-tree: index records too big for %d-byte nodes (a level of %d nodes needs %d above it)", t.name, t.nodeSize, len(level), len(groups))
		}
		below := level
		level = addLevel(groups, btIndexKind, height, func(i int) []byte { return below[i].key })
	}
	l.root = level[0].node
	l.depth = uint32(height)
	return l, nil
}

// nodesFor is the number of nodes the file of a packed tree needs.
func (l btLaid) nodesFor() int { return 1 + len(l.nodes) }

// file serializes the tree as a file of size bytes (a multiple of the node
// size, at least nodesFor nodes): header node, packed nodes, free nodes.
func (t btTree) file(l btLaid, size int) ([]byte, error) {
	ns := t.nodeSize
	total := size / ns
	mapBytes := ns - 256
	if total < l.nodesFor() || size%ns != 0 {
		return nil, fmt.Errorf("%s B-tree: %d bytes do not hold %d nodes of %d bytes", t.name, size, l.nodesFor(), ns)
	}
	if total > mapBytes*8 {
		return nil, fmt.Errorf("%s B-tree: %d nodes need map nodes (at most %d without)", t.name, total, mapBytes*8)
	}
	be := binary.BigEndian
	hdr := make([]byte, 106)
	be.PutUint16(hdr[0:], uint16(l.depth))
	be.PutUint32(hdr[2:], l.root)
	be.PutUint32(hdr[6:], l.leafRecs)
	be.PutUint32(hdr[10:], l.first)
	be.PutUint32(hdr[14:], l.last)
	be.PutUint16(hdr[18:], uint16(ns))
	be.PutUint16(hdr[20:], uint16(t.maxKeyLen))
	be.PutUint32(hdr[22:], uint32(total))
	be.PutUint32(hdr[26:], uint32(total-l.nodesFor()))
	if !t.classic {
		be.PutUint32(hdr[32:], uint32(size)) // clumpSize
		hdr[36] = 0                          // btreeType: kHFSBTreeType
		hdr[37] = t.compType
		be.PutUint32(hdr[38:], t.attrs)
	}
	user := make([]byte, 128)
	bitmap := make([]byte, mapBytes)
	for n := 0; n < l.nodesFor(); n++ {
		bitmap[n/8] |= 0x80 >> (n % 8)
	}
	out := make([]byte, 0, size)
	out = append(out, btNode(ns, btHeaderKind, 0, 0, 0, [][]byte{hdr, user, bitmap})...)
	for _, n := range l.nodes {
		out = append(out, n...)
	}
	return append(out, make([]byte, size-len(out))...), nil
}
