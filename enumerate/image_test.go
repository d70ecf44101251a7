package enumerate_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/imagefs"
	_ "github.com/HRDAG/ntt/imagefs/all"
	"github.com/HRDAG/ntt/internal/demo"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
)

func buildMedium(t *testing.T, build func(string) (*demo.Medium, error)) *demo.Medium {
	t.Helper()
	m, err := build(t.TempDir())
	if err != nil && (strings.Contains(err.Error(), "not installed") || errors.Is(err, os.ErrNotExist)) {
		testenv.SkipOrFail(t, err.Error())
	}
	require.NoError(t, err)
	return m
}

// walkImage enumerates an image as ntt-enum --image does and returns the
// raw bytes and the records by catalog path.
func walkImage(t *testing.T, image, hash string) ([]byte, map[string]enumerate.Record, []*imagefs.MediumProblem) {
	t.Helper()
	var problems []*imagefs.MediumProblem
	m, err := imagefs.OpenMediumFile(context.Background(), image, imagefs.MediumOptions{Medium: hash, Root: "/mnt/ntt",
		Report: func(p *imagefs.MediumProblem) { problems = append(problems, p) }})
	require.NoError(t, err)
	defer m.Close()
	var raw bytes.Buffer
	res, err := enumerate.WalkImage(context.Background(), m, enumerate.ImageOptions{}, &raw)
	require.NoError(t, err)
	require.Equal(t, int64(raw.Len()), res.Bytes)
	recs := map[string]enumerate.Record{}
	rd := enumerate.NewReader(bytes.NewReader(raw.Bytes()))
	base := "/mnt/ntt/" + hash
	first := true
	for {
		r, err := rd.Read()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		p := string(r.Path)
		if first {
			require.Equal(t, base, p, "the first record is the medium root")
			first = false
		}
		require.True(t, p == base || strings.HasPrefix(p, base+"/"), "%q", p)
		rel := strings.TrimPrefix(strings.TrimPrefix(p, base), "/")
		_, dup := recs[rel]
		require.False(t, dup, "path %q twice", p)
		recs[rel] = r.Clone()
	}
	require.Equal(t, res.Records, int64(len(recs)))
	return raw.Bytes(), recs, problems
}

// checkRecords compares the records with the tree put on the medium.
func checkRecords(t *testing.T, recs map[string]enumerate.Record, tree demo.Tree, prefix string) {
	t.Helper()
	for p, want := range tree {
		r, ok := recs[strings.TrimPrefix(prefix+"/"+p, "/")]
		require.True(t, ok, "%q is on the medium but not enumerated", p)
		require.Equal(t, want.Type, r.Type, "%q", p)
		switch want.Type {
		case 'f':
			require.Equal(t, int64(len(want.Data)), r.Size, "%q", p)
		case 'l':
			require.Equal(t, int64(len(want.Target)), r.Size, "%q", p)
		}
	}
}

func TestWalkImageFloppy(t *testing.T) {
	testimg.RequireFATTools(t)
	m := buildMedium(t, demo.Floppy)
	raw, recs, problems := walkImage(t, m.Image, m.Hash)
	require.Empty(t, problems)
	require.Len(t, recs, len(m.Tree)+1) // the tree, its root, nothing deleted
	checkRecords(t, recs, m.Tree, "")
	require.Equal(t, byte('d'), recs[""].Type)
	for p, r := range recs {
		require.Equal(t, uint64(0), r.Dev, "%q: a whole-disk filesystem is partition 0", p)
	}
	// The same image gives the same records, byte for byte.
	again, _, _ := walkImage(t, m.Image, m.Hash)
	require.Equal(t, raw, again)
}

func TestWalkImageCDROM(t *testing.T) {
	m := buildMedium(t, demo.CDROM)
	_, recs, problems := walkImage(t, m.Image, m.Hash)
	require.Empty(t, problems)
	require.Len(t, recs, len(m.Tree)+1)
	checkRecords(t, recs, m.Tree, "")
	// A hardlink is one inode under two names.
	a, b := recs["Scans/page-002.tif"], recs["Scans/page-002-link.tif"]
	require.Equal(t, a.Ino, b.Ino)
	require.NotEqual(t, recs["Scans/page-001.tif"].Ino, a.Ino)
}

// A Zip disk's FAT is partition 4 of its MBR; a disk with two FATs is
// walked from the medium root, its partitions at /p1 and /p2.
func TestWalkImagePartitions(t *testing.T) {
	testimg.RequireFATTools(t)
	dir := t.TempDir()
	spec := testimg.FATSpec{Bits: 16, Label: "ZIP", Entries: []testimg.Entry{
		{Path: "a.txt", Kind: testimg.File, Data: []byte("on the zip disk\n")},
		{Path: "dir", Kind: testimg.Dir},
		{Path: "dir/b.bin", Kind: testimg.File, Size: 70000, Seed: 7},
	}}
	fat := testimg.BuildFAT(t, spec)
	zip := filepath.Join(dir, "zip.img")
	_, _, err := testimg.FATZipDisk(zip, fat)
	require.NoError(t, err)
	const hash = "0123456789abcdef0123456789abcdef"
	_, recs, _ := walkImage(t, zip, hash)
	require.Len(t, recs, 4)
	for p, r := range recs {
		require.Equal(t, uint64(4), r.Dev, "%q: the Zip disk's filesystem is partition 4", p)
	}
	require.Equal(t, int64(70000), recs["dir/b.bin"].Size)

	disk := filepath.Join(dir, "two.img")
	_, err = testimg.ComposeDisk(disk, testimg.Disk{Table: "mbr", Parts: []testimg.DiskPart{{Image: fat, Type: 0x06}, {Image: fat, Type: 0x06}}})
	require.NoError(t, err)
	_, recs, _ = walkImage(t, disk, hash)
	require.Len(t, recs, 1+2*4)
	require.Equal(t, byte('d'), recs[""].Type)
	require.Equal(t, uint64(0), recs[""].Dev)
	for _, n := range []uint64{1, 2} {
		pn := "p" + string(rune('0'+n))
		require.Equal(t, byte('d'), recs[pn].Type)
		require.Equal(t, n, recs[pn].Dev)
		require.Equal(t, n, recs[pn+"/dir/b.bin"].Dev)
		require.Equal(t, int64(16), recs[pn+"/a.txt"].Size)
	}
	// Same filesystem twice: the same ids, told apart by dev.
	require.Equal(t, recs["p1/a.txt"].Ino, recs["p2/a.txt"].Ino)
}
