package copier_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/copier/diagpolicy"
	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/imagefs"
	_ "github.com/HRDAG/ntt/imagefs/all"
	"github.com/HRDAG/ntt/internal/demo"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loader"
)

// imageMedium is a medium read from its image, as ntt-pipeline --read
// image has it: enumerated from the image, loaded, copied from the image.
type imageMedium struct {
	t     *testing.T
	m     *demo.Medium
	store string
	db    *pgxpool.Pool
}

func newImageMedium(t *testing.T, build func(string) (*demo.Medium, error)) *imageMedium {
	t.Helper()
	m, err := build(t.TempDir())
	if err != nil && strings.Contains(err.Error(), "not installed") {
		testenv.SkipOrFail(t, err.Error())
	}
	require.NoError(t, err)
	im := &imageMedium{t: t, m: m, store: filepath.Join(t.TempDir(), "store")}
	require.NoError(t, os.MkdirAll(im.store, 0o755))
	return im
}

// load enumerates the image and loads it into a fresh catalog.
func (im *imageMedium) load() {
	t := im.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := imagefs.OpenMediumFile(ctx, im.m.Image, imagefs.MediumOptions{Medium: im.m.Hash})
	require.NoError(t, err)
	defer m.Close()
	var raw bytes.Buffer
	_, err = enumerate.WalkImage(ctx, m, enumerate.ImageOptions{}, &raw)
	require.NoError(t, err)
	im.db = pgtest.New(t)
	_, err = loader.Load(ctx, im.db, im.m.Hash, &raw, loader.Options{ImagePath: im.m.Image})
	require.NoError(t, err)
}

func (im *imageMedium) options() copier.Options {
	return copier.Options{Medium: im.m.Hash, StoreRoot: im.store, Image: im.m.Image, WorkerID: "image-worker",
		Workers: 2, BatchSize: 7, Logger: testLogger(im.t),
		// No mount root exists: the image source must not need one.
		MountRoot: filepath.Join(im.t.TempDir(), "nothing-mounted-here")}
}

func (im *imageMedium) run(o copier.Options) copier.Stats {
	im.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := copier.Run(ctx, im.db, o)
	require.NoError(im.t, err)
	return st
}

func (im *imageMedium) tree() string { return filepath.Join(im.store, "archived", im.m.Hash) }

// Every file of a FAT floppy and of a Rock Ridge + Joliet CD-ROM is copied
// from the image, byte-identical to what was put on the medium, with the
// tree (directories, symlinks, hardlinks) as a mount would give it.
func TestCopyFromImage(t *testing.T) {
	for _, c := range []struct {
		name  string
		build func(string) (*demo.Medium, error)
	}{{"floppy", demo.Floppy}, {"cdrom", demo.CDROM}, {"two-partitions", twoFATs}} {
		t.Run(c.name, func(t *testing.T) {
			if c.name != "cdrom" {
				testimg.RequireFATTools(t)
			}
			im := newImageMedium(t, c.build)
			im.load()
			st := im.run(im.options())
			require.True(t, st.Complete)
			require.Zero(t, st.Errors)
			require.Positive(t, st.Deduped, "the medium holds duplicate contents")
			require.NoError(t, demo.CheckTree(im.tree(), im.m.Tree))
			var notOK int
			require.NoError(t, im.db.QueryRow(context.Background(), `SELECT count(*) FROM inode WHERE medium_hash = $1
				AND NOT (copied AND status = 'success')`, im.m.Hash).Scan(&notOK))
			require.Zero(t, notOK)
			// A rerun finds nothing to do and changes nothing.
			st = im.run(im.options())
			require.Zero(t, st.Processed)
		})
	}
}

// A file whose clusters lie past the end of a truncated floppy is skipped
// as BEYOND_EOF at its first failure — found from its runs, no kernel log
// needed — and never stored; every other file is copied whole.
func TestCopyFromTruncatedImage(t *testing.T) {
	testimg.RequireFATTools(t)
	im := newImageMedium(t, demo.Floppy)
	// Cut the image inside big.bin (its last cluster goes).
	m, err := imagefs.OpenMediumFile(context.Background(), im.m.Image, imagefs.MediumOptions{Medium: im.m.Hash})
	require.NoError(t, err)
	var cut int64
	var lost []string
	require.NoError(t, m.Walk(context.Background(), m.Volumes[0], func(p []byte, e *imagefs.Entry) error {
		if string(p) == "/big.bin" {
			last := e.Runs[len(e.Runs)-1]
			cut = last.Offset + last.Length - 512
		}
		return nil
	}))
	require.Positive(t, cut)
	m.Close()
	require.NoError(t, testimg.Truncate(im.m.Image, cut))
	// What the truncated image still lists: the files whose runs reach
	// past the cut are lost, the rest must come out whole. (Directories
	// whose own clusters were cut off are not listed at all.)
	m, err = imagefs.OpenMediumFile(context.Background(), im.m.Image, imagefs.MediumOptions{Medium: im.m.Hash})
	require.NoError(t, err)
	listed := demo.Tree{}
	require.NoError(t, m.Walk(context.Background(), m.Volumes[0], func(p []byte, e *imagefs.Entry) error {
		rel := strings.TrimPrefix(string(p), "/")
		if rel == "" {
			return nil
		}
		listed[rel] = im.m.Tree[rel]
		for _, r := range e.Runs {
			if e.Type == 'f' && r.Offset+r.Length > cut {
				lost = append(lost, string(p))
				delete(listed, rel)
				break
			}
		}
		return nil
	}))
	m.Close()
	require.Contains(t, lost, "/big.bin")
	im.load()

	pol, err := diagpolicy.New(diagpolicy.Options{Medium: im.m.Hash, Image: im.m.Image, KernelLog: &diagnose.KernelLog{}})
	require.NoError(t, err)
	o := im.options()
	o.Policy = pol
	log, buf := captureLog(t)
	o.Logger = log
	st := im.run(o)
	require.True(t, st.Complete)
	require.Equal(t, int64(len(lost)), st.Skipped)
	require.Contains(t, buf.String(), "SKIPPED ino=")
	require.Contains(t, buf.String(), "reason=DIAGNOSTIC_SKIP:BEYOND_EOF")

	ctx := context.Background()
	for _, p := range lost {
		var claimed, status string
		var blob *string
		require.NoError(t, im.db.QueryRow(ctx, `SELECT i.claimed_by, i.status, i.blobid FROM inode i JOIN path p USING (medium_hash, dev, ino)
			WHERE i.medium_hash = $1 AND p.path = $2`, im.m.Hash, []byte(p)).Scan(&claimed, &status, &blob))
		require.Equal(t, "DIAGNOSTIC_SKIP:BEYOND_EOF", claimed, p)
		require.Equal(t, "failed_permanent", status, p)
		require.Nil(t, blob, "%s must not be stored as if whole", p)
		_, err := os.Lstat(filepath.Join(im.tree(), p))
		require.ErrorIs(t, err, os.ErrNotExist, "%s is not in the tree", p)
	}
	var problems map[string]any
	require.NoError(t, im.db.QueryRow(ctx, `SELECT problems FROM medium WHERE medium_hash = $1`, im.m.Hash).Scan(&problems))
	require.Contains(t, problems, "beyond_eof_detected")
	require.NoError(t, demo.CheckTree(im.tree(), listed))
}

// With a ddrescue mapfile, a file's runs ∩ the unrescued ranges are its
// inode.damage, exactly; the file is stored as imaged (the zeros ddrescue
// left), the others carry no damage.
func TestCopyFromImageRecordsDamage(t *testing.T) {
	im := newImageMedium(t, demo.CDROM)
	m, err := imagefs.OpenMediumFile(context.Background(), im.m.Image, imagefs.MediumOptions{Medium: im.m.Hash})
	require.NoError(t, err)
	var runs []imagefs.Run
	require.NoError(t, m.Walk(context.Background(), m.Volumes[0], func(p []byte, e *imagefs.Entry) error {
		if string(p) == "/Scans/page-001.tif" {
			runs = m.Volumes[0].ImageRuns(e.Runs)
		}
		return nil
	}))
	m.Close()
	require.Len(t, runs, 1)
	size := fileSize(t, im.m.Image)
	badPos, badLen := runs[0].Offset+100*2048, int64(3*2048)
	require.NoError(t, testimg.Zero(im.m.Image, badPos, badLen))
	mapfile := fmt.Sprintf("# Mapfile. Created by GNU ddrescue version 1.27\n0x%x +\n0x0 0x%x +\n0x%x 0x%x -\n0x%x 0x%x +\n",
		badPos, badPos, badPos, badLen, badPos+badLen, size-badPos-badLen)
	mapPath := filepath.Join(filepath.Dir(im.m.Image), im.m.Hash+".map")
	require.NoError(t, os.WriteFile(mapPath, []byte(mapfile), 0o644))
	im.load()

	pol, err := diagpolicy.New(diagpolicy.Options{Medium: im.m.Hash, Image: im.m.Image, KernelLog: &diagnose.KernelLog{}})
	require.NoError(t, err)
	o := im.options()
	o.Policy, o.Damage = pol, pol.DamageMapper()
	require.NotNil(t, o.Damage)
	st := im.run(o)
	require.True(t, st.Complete)
	require.Zero(t, st.Errors)

	rows, err := im.db.Query(context.Background(), `SELECT p.path, i.damage FROM inode i JOIN path p USING (medium_hash, dev, ino)
		WHERE i.medium_hash = $1 AND i.damage IS NOT NULL ORDER BY p.path`, im.m.Hash)
	require.NoError(t, err)
	got := map[string][]diagnose.Damage{}
	for rows.Next() {
		var p []byte
		var d []byte
		require.NoError(t, rows.Scan(&p, &d))
		var dmg []diagnose.Damage
		require.NoError(t, json.Unmarshal(d, &dmg))
		got[string(p)] = dmg
	}
	require.NoError(t, rows.Err())
	require.Equal(t, map[string][]diagnose.Damage{
		"/Scans/page-001.tif": {{FileOffset: 100 * 2048, ImageOffset: badPos, Length: badLen}},
	}, got)
	// Stored as imaged: the zeros are in the blob, the damage says where.
	want := append([]byte(nil), im.m.Tree["Scans/page-001.tif"].Data...)
	clear(want[100*2048 : 100*2048+badLen])
	b, err := os.ReadFile(filepath.Join(im.tree(), "Scans/page-001.tif"))
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, b))
}

func fileSize(t *testing.T, p string) int64 {
	st, err := os.Stat(p)
	require.NoError(t, err)
	return st.Size()
}

// twoFATs builds an MBR disk with two FAT16 partitions holding different
// trees: read as /p1/… and /p2/…, as two partition mounts would show them.
func twoFATs(dir string) (*demo.Medium, error) {
	tree := demo.Tree{"p1": {Type: 'd'}, "p2": {Type: 'd'}}
	var parts []testimg.DiskPart
	for i, name := range []string{"p1", "p2"} {
		spec := testimg.FATSpec{Bits: 16, Entries: []testimg.Entry{
			{Path: "same.txt", Kind: testimg.File, Data: []byte("on both partitions\n")},
			{Path: "docs", Kind: testimg.Dir},
			{Path: fmt.Sprintf("docs/only on %s.bin", name), Kind: testimg.File, Size: int64(5000 + 3000*i), Seed: uint64(10 + i)},
		}}
		fat := filepath.Join(dir, name+".fat")
		if err := testimg.BuildFATImage(fat, spec); err != nil {
			return nil, err
		}
		parts = append(parts, testimg.DiskPart{Image: fat, Type: 0x06})
		for _, e := range spec.Entries {
			te := demo.TreeEntry{Type: 'd'}
			if e.Kind == testimg.File {
				te = demo.TreeEntry{Type: 'f', Data: e.Content()}
			}
			tree[name+"/"+e.Path] = te
		}
	}
	img := filepath.Join(dir, "0123456789abcdef0123456789abcdef.img")
	if _, err := testimg.ComposeDisk(img, testimg.Disk{Table: "mbr", Parts: parts}); err != nil {
		return nil, err
	}
	return &demo.Medium{Hash: "0123456789abcdef0123456789abcdef", Image: img, Tree: tree}, nil
}

// A file whose FAT chain ends early (its FAT entries cut in both FATs):
// reading it runs into a structure that does not check out. It is skipped
// at its first failure (DIAGNOSTIC_SKIP:CORRUPT, found from its runs) and never
// stored, with the structure's image offset in the error.
func TestCopyFromImageWithCorruptChain(t *testing.T) {
	testimg.RequireFATTools(t)
	im := newImageMedium(t, demo.Floppy)
	img, err := os.ReadFile(im.m.Image)
	require.NoError(t, err)
	le16 := func(o int) int { return int(img[o]) | int(img[o+1])<<8 }
	bps, spc, reserved, nfats, rootEnts, fatSz := le16(11), int(img[13]), le16(14), int(img[16]), le16(17), le16(22)
	dataStart := int64((reserved + nfats*fatSz + (rootEnts*32+bps-1)/bps) * bps)
	clusterSize := int64(bps * spc)

	m, err := imagefs.OpenMediumFile(context.Background(), im.m.Image, imagefs.MediumOptions{Medium: im.m.Hash})
	require.NoError(t, err)
	var first int64 = -1
	require.NoError(t, m.Walk(context.Background(), m.Volumes[0], func(p []byte, e *imagefs.Entry) error {
		if string(p) == "/big.bin" {
			first = e.Runs[0].Offset
		}
		return nil
	}))
	m.Close()
	require.GreaterOrEqual(t, first, dataStart)
	// End big.bin's chain at its first cluster (FAT12: 0xFFF).
	c := int((first-dataStart)/clusterSize) + 2
	for f := range nfats {
		o := (reserved+f*fatSz)*bps + c*3/2
		w := le16(o)
		if c%2 == 0 {
			w = w&0xF000 | 0xFFF
		} else {
			w = w&0x000F | 0xFFF<<4
		}
		img[o], img[o+1] = byte(w), byte(w>>8)
	}
	require.NoError(t, os.WriteFile(im.m.Image, img, 0o644))
	im.load()

	pol, err := diagpolicy.New(diagpolicy.Options{Medium: im.m.Hash, Image: im.m.Image, KernelLog: &diagnose.KernelLog{}})
	require.NoError(t, err)
	o := im.options()
	o.Policy = pol
	log, buf := captureLog(t)
	o.Logger = log
	st := im.run(o)
	require.True(t, st.Complete)
	require.Equal(t, int64(1), st.Skipped, "big.bin only")
	require.Contains(t, buf.String(), "reason=DIAGNOSTIC_SKIP:CORRUPT")
	require.Contains(t, buf.String(), "class=corrupt")
	require.Contains(t, buf.String(), "image_runs:fs_error")
	var claimed, status string
	var blob *string
	var errs []string
	require.NoError(t, im.db.QueryRow(context.Background(), `SELECT i.claimed_by, i.status, i.blobid, i.errors FROM inode i JOIN path p USING (medium_hash, dev, ino)
		WHERE i.medium_hash = $1 AND p.path = '/big.bin'`, im.m.Hash).Scan(&claimed, &status, &blob, &errs))
	require.Equal(t, "DIAGNOSTIC_SKIP:CORRUPT", claimed)
	require.Equal(t, "failed_permanent", status)
	require.Nil(t, blob, "a file whose bytes cannot all be read is never stored")
	require.Contains(t, errs[len(errs)-1], "corrupt")
	var errorType string
	var corrupt, ioConfirmed bool
	require.NoError(t, im.db.QueryRow(context.Background(), `SELECT i.error_type FROM inode i JOIN path p USING (medium_hash, dev, ino)
		WHERE i.medium_hash = $1 AND p.path = '/big.bin'`, im.m.Hash).Scan(&errorType))
	require.Equal(t, "io_error", errorType)
	require.NoError(t, im.db.QueryRow(context.Background(), `SELECT coalesce(problems ? 'corrupt_structure_confirmed', false),
		coalesce(problems ? 'io_errors_confirmed', false) FROM medium WHERE medium_hash = $1`, im.m.Hash).Scan(&corrupt, &ioConfirmed))
	require.True(t, corrupt, "medium.problems records the corrupt structure")
	require.False(t, ioConfirmed, "no I/O error was confirmed: the image read fine")
	_, err = os.Lstat(filepath.Join(im.tree(), "big.bin"))
	require.ErrorIs(t, err, os.ErrNotExist)
	delete(im.m.Tree, "big.bin")
	require.NoError(t, demo.CheckTree(im.tree(), im.m.Tree))
}
