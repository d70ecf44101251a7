package hfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/HRDAG/ntt/imagefs"
)

var be = binary.BigEndian

// HFS B-tree nodes are 512 bytes, HFS+ ones 512 to 32768 (a power of two
// the header node gives); a node starts with a 14-byte descriptor and ends
// with the offsets of its records, the first at the very end.
const (
	nodeSize      = 512 // HFS's, and the least of HFS+
	maxNodeSize   = 32768
	descSize      = 14
	kindIndex     = 0
	kindHeader    = 1
	kindMap       = 2
	kindLeaf      = -1
	maxLeafHeight = 1
)

// btree is one of the volume's B-tree files (catalog, extents overflow,
// attributes), read through its extents.
type btree struct {
	name     string        // "catalog", "extents overflow", "attributes", for reports
	file     io.ReaderAt   // the file's content (a run reader)
	runs     []imagefs.Run // where the file lies on the volume
	size     int64         // the file's bytes
	plus     bool          // HFS+: nodes of the size the header gives
	nodeSize int           // bytes per node (set by header)
	nodes    uint32        // nodes the file holds (its size / nodeSize)
	first    uint32        // bthFNode: the first leaf node
	// keyCompare is the header's keyCompareType (HFSX catalog: 0xCF
	// case-folding, 0xBC binary — case-sensitive names).
	keyCompare byte
	opts       *imagefs.Options
}

// nodeOffset is the volume byte offset of node n, for reports (-1 if the
// file's runs do not map it).
func (t *btree) nodeOffset(n uint32) int64 {
	pos := int64(n) * int64(t.nodeSize)
	for _, r := range t.runs {
		if pos >= r.Logical && pos < r.Logical+r.Length {
			return r.Offset + pos - r.Logical
		}
	}
	return -1
}

// errNode: a node does not check out; its reason is in the wrapping error.
var errNode = fmt.Errorf("B-tree node does not check out: %w", imagefs.ErrCorrupt)

// node reads node n and checks its descriptor and record offsets: kind
// want, height (1 for a leaf), a record count whose offsets fit, offsets
// increasing from 14 to at most the start of the offset table. It returns
// the node and its records.
func (t *btree) node(n uint32, want int8) ([]byte, [][]byte, error) {
	if n >= t.nodes {
		return nil, nil, fmt.Errorf("node %d is past the %d nodes of the %s file: %w", n, t.nodes, t.name, errNode)
	}
	nodeSize := t.nodeSize
	b := make([]byte, nodeSize)
	if _, err := t.file.ReadAt(b, int64(n)*int64(nodeSize)); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("reading node %d of the %s file: %w", n, t.name, err)
	}
	kind := int8(b[8])
	height := b[9]
	nrecs := int(be.Uint16(b[10:]))
	switch {
	case kind != want:
		return nil, nil, fmt.Errorf("node %d of the %s file is of kind %d, want %d: %w", n, t.name, kind, want, errNode)
	case kind == kindLeaf && height != maxLeafHeight:
		return nil, nil, fmt.Errorf("leaf node %d of the %s file has height %d: %w", n, t.name, height, errNode)
	case descSize+2*(nrecs+1) > nodeSize:
		return nil, nil, fmt.Errorf("node %d of the %s file claims %d records: %w", n, t.name, nrecs, errNode)
	}
	recs := make([][]byte, 0, nrecs)
	limit := nodeSize - 2*(nrecs+1) // where the offset table starts
	prev := 0
	for i := 0; i <= nrecs; i++ {
		off := int(be.Uint16(b[nodeSize-2*(i+1):]))
		if (i == 0 && off != descSize) || (i > 0 && off <= prev) || off > limit {
			return nil, nil, fmt.Errorf("node %d of the %s file: record %d at offset %d is out of order or past the node: %w", n, t.name, i, off, errNode)
		}
		if i > 0 {
			recs = append(recs, b[prev:off])
		}
		prev = off
	}
	return b, recs, nil
}

// leaves calls fn for every record of every leaf node, following the leaf
// chain (ndFLink) from the header's first leaf. The index nodes are not
// read: the chain holds every record in key order. A node already visited
// (a loop) or one that does not check out ends the chain and is reported;
// the chain is at most as long as the file has nodes. When the chain ends
// that way, the leaves it did not reach are looked for among the nodes the
// header's node map marks in use (see rescue).
func (t *btree) leaves(fn func(rec []byte, off int64)) {
	visited := make(map[uint32]bool)
	for n := t.first; n != 0; {
		if visited[n] {
			t.opts.Reportf(t.nodeOffset(n), "loop", "the %s file's leaf chain comes back to node %d; the rest of the chain is not read", t.name, n)
			t.rescue(visited, fn)
			return
		}
		if len(visited) >= int(t.nodes) {
			t.opts.Reportf(t.nodeOffset(n), "loop", "the %s file's leaf chain is longer than its %d nodes", t.name, t.nodes)
			return
		}
		visited[n] = true
		b, recs, err := t.node(n, kindLeaf)
		if err != nil {
			t.opts.Reportf(t.nodeOffset(n), "corrupt", "%v; the rest of the %s file's leaf chain is not read", err, t.name)
			t.rescue(visited, fn)
			return
		}
		t.records(n, recs, fn)
		n = be.Uint32(b[0:])
	}
}

func (t *btree) records(n uint32, recs [][]byte, fn func(rec []byte, off int64)) {
	base := t.nodeOffset(n)
	pos := descSize
	for _, r := range recs {
		at := int64(-1)
		if base >= 0 {
			at = base + int64(pos)
		}
		fn(r, at)
		pos += len(r)
	}
}

// rescue reads, in node order, the leaf nodes the broken chain did not
// reach: those the header node's map record marks in use (a freed node
// may still hold a leaf of deleted records, so an unmarked one is never
// read), that check out as leaves. Nodes past the header's map (map nodes
// of large trees) are not looked at. It reports how many it found.
func (t *btree) rescue(visited map[uint32]bool, fn func(rec []byte, off int64)) {
	_, hrecs, err := t.node(0, kindHeader)
	if err != nil || len(hrecs) < 3 {
		return
	}
	bitmap := hrecs[2]
	found := 0
	for n := uint32(1); n < t.nodes && int(n/8) < len(bitmap); n++ {
		if visited[n] || bitmap[n/8]&(0x80>>(n%8)) == 0 {
			continue
		}
		_, recs, err := t.node(n, kindLeaf)
		if err != nil {
			continue // an index or map node, or a damaged one
		}
		visited[n] = true
		t.records(n, recs, fn)
		found++
	}
	if found > 0 {
		t.opts.Reportf(t.nodeOffset(0), "rescued", "%d leaf nodes of the %s file off its broken leaf chain read from the header's node map", found, t.name)
	}
}

// header reads the header node (node 0): the node size (HFS: 512; HFS+:
// a power of two from 512 to 32768, read from the header record in the
// node's first 512 bytes before the whole node is checked), the number of
// nodes and the first leaf node.
func (t *btree) header() error {
	t.nodeSize = nodeSize
	t.nodes = uint32(min(t.size/nodeSize, 1<<32-1))
	if t.plus {
		b := make([]byte, nodeSize)
		if _, err := t.file.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading the header node of the %s file: %w", t.name, err)
		}
		ns := int(be.Uint16(b[descSize+18:]))
		if ns < nodeSize || ns > maxNodeSize || ns&(ns-1) != 0 || int64(ns) > t.size {
			return fmt.Errorf("the %s file's header gives nodes of %d bytes, HFS+ has a power of two from 512 to 32768 inside the file: %w", t.name, ns, errNode)
		}
		t.nodeSize = ns
		t.nodes = uint32(min(t.size/int64(ns), 1<<32-1))
	}
	_, recs, err := t.node(0, kindHeader)
	if err != nil {
		return err
	}
	if len(recs) < 1 || len(recs[0]) < 32 {
		return fmt.Errorf("the %s file's header node has no header record: %w", t.name, errNode)
	}
	h := recs[0]
	if ns := int(be.Uint16(h[18:])); ns != t.nodeSize {
		return fmt.Errorf("the %s file's header gives nodes of %d bytes, want %d: %w", t.name, ns, t.nodeSize, errNode)
	}
	if total := be.Uint32(h[22:]); total < t.nodes {
		t.nodes = total // nodes past bthNNodes are not part of the tree
	}
	t.first = be.Uint32(h[10:])
	if len(h) >= 38 {
		t.keyCompare = h[37]
	}
	return nil
}

// recordKey splits a leaf record into its key (without the length byte)
// and its data, which starts at the next even offset after the key.
func recordKey(rec []byte) (key, data []byte, ok bool) {
	if len(rec) < 1 {
		return nil, nil, false
	}
	kl := int(rec[0])
	d := 1 + kl
	if d%2 == 1 {
		d++
	}
	if kl == 0 || d > len(rec) {
		return nil, nil, false
	}
	return rec[1 : 1+kl], rec[d:], true
}

// recordKeyPlus splits an HFS+ leaf record into its key (after its 16-bit
// length) and its data, which starts at the next even offset after the
// key.
func recordKeyPlus(rec []byte) (key, data []byte, ok bool) {
	if len(rec) < 2 {
		return nil, nil, false
	}
	kl := int(be.Uint16(rec))
	d := 2 + kl
	if d%2 == 1 {
		d++
	}
	if kl == 0 || d > len(rec) {
		return nil, nil, false
	}
	return rec[2 : 2+kl], rec[d:], true
}
