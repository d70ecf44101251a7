package ntfs_test

import (
	"bytes"
	"io"
	"sync/atomic"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/ntfs"
)

// countingReader counts the reads made of the medium.
type countingReader struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.n.Add(1)
	return c.r.ReadAt(p, off)
}

// TestReadDirLoadsOnce: listing a directory reads each record (with its
// extension records) once, however many of its names the directory holds
// — "many names" holds 31 of one record's names, spread over extension
// records. Read once per name, a crafted record of thousands of names in
// thousands of extension records would cost their product.
func TestReadDirLoadsOnce(t *testing.T) {
	img := sampleImage(t)
	cr := &countingReader{r: bytes.NewReader(img)}
	v, err := ntfs.Open(cr, int64(len(img)), imagefs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	root, err := v.Root()
	if err != nil {
		t.Fatal(err)
	}
	es, err := v.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var dir *imagefs.Entry
	for _, e := range es {
		if string(e.Name) == "many names" {
			dir = e
		}
	}
	if dir == nil {
		t.Fatal("no many names")
	}
	before := cr.n.Load()
	kids, err := v.ReadDir(dir)
	if err != nil || len(kids) != 31 {
		t.Fatalf("%d entries, %v; want 31", len(kids), err)
	}
	for _, k := range kids {
		if k.ID != kids[0].ID || k.Nlink != 31 {
			t.Fatalf("%q: ID %d nlink %d, want one record of 31 names", k.Name, k.ID, k.Nlink)
		}
	}
	if n := cr.n.Load() - before; n > 16 {
		t.Errorf("listing 31 names of one record took %d reads of the medium", n)
	}
}
