package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/zeebo/blake3"

	"github.com/HRDAG/ntt/archive"
	"github.com/HRDAG/ntt/internal/demo"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
)

// imageMedia are the media the kernel here cannot mount, read from their
// images: a FAT12 floppy (mkfs.fat + mtools) and a Rock Ridge + Joliet
// CD-ROM (xorriso).
var imageMedia = []struct {
	name  string
	build func(string) (*demo.Medium, error)
}{{"floppy", demo.Floppy}, {"cdrom", demo.CDROM}}

func (e *env) medium(build func(string) (*demo.Medium, error)) *demo.Medium {
	e.t.Helper()
	require.NoError(e.t, os.MkdirAll(e.images, 0o755))
	m, err := build(e.images)
	if err != nil && strings.Contains(err.Error(), "not installed") {
		testenv.SkipOrFail(e.t, err.Error())
	}
	require.NoError(e.t, err)
	return m
}

// checkImageRun checks a finished image-mode run: every file in the store's
// tree byte-identical to what was put on the medium, the catalog done, the
// archive verified, the reader recorded, nothing mounted or attached.
func (e *env) checkImageRun(m *demo.Medium) {
	t := e.t
	t.Helper()
	ctx := context.Background()
	require.NoError(t, demo.CheckTree(filepath.Join(e.store, "archived", m.Hash), m.Tree))
	var reader, archivePath *string
	var pending int64
	require.NoError(t, e.db.QueryRow(ctx, `SELECT reader, archive_path,
		(SELECT count(*) FROM inode WHERE medium_hash = $1 AND NOT copied) FROM medium WHERE medium_hash = $1`, m.Hash).
		Scan(&reader, &archivePath, &pending))
	require.NotNil(t, reader)
	require.Equal(t, "image", *reader)
	require.Zero(t, pending)
	require.NotNil(t, archivePath)
	_, err := archive.Verify(ctx, *archivePath)
	require.NoError(t, err)
	var files int64
	require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*) FROM path p JOIN inode i USING (medium_hash, dev, ino)
		WHERE p.medium_hash = $1 AND i.fs_type = 'f' AND i.status = 'success'`, m.Hash).Scan(&files))
	require.Equal(t, int64(m.Tree.Files()), files)
	// Every resource fork is catalogued at <file>/..namedfork/rsrc, an
	// inode of its own holding its bytes' blob.
	for p, data := range m.Forks {
		var size int64
		var blobid *string
		require.NoError(t, e.db.QueryRow(ctx, `SELECT i.size, i.blobid FROM path p JOIN inode i USING (medium_hash, dev, ino)
			WHERE p.medium_hash = $1 AND p.path = $2 AND i.fs_type = 'f' AND i.status = 'success'`, m.Hash, []byte("/"+p)).
			Scan(&size, &blobid), "fork %s in the catalog", p)
		sum := blake3.Sum256(data)
		require.Equal(t, int64(len(data)), size, "%s", p)
		require.NotNil(t, blobid, "%s", p)
		require.Equal(t, hex.EncodeToString(sum[:]), *blobid, "%s", p)
	}
	_, err = os.Stat(filepath.Join(e.root, m.Hash))
	require.ErrorIs(t, err, os.ErrNotExist, "image mode makes no mount point")
	e.checkNothingLeft(m.Hash, m.Image)
}

func TestPipelineImageMode(t *testing.T) {
	for _, c := range imageMedia {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "floppy" {
				testimg.RequireFATTools(t)
			}
			e := newEnv(t)
			m := e.medium(c.build)
			code, out, errs := e.pipeline(m.Image, "--read", "image")
			require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
			e.checkImageRun(m)
			require.Equal(t, "image", e.metrics(m.Hash).Reader)
			require.Contains(t, out, "Reader")
			// A rerun has nothing to do.
			code, _, _ = e.pipeline(m.Image, "--read", "image")
			require.Equal(t, 2, code)
		})
	}
}

// --read auto reads the image of a medium whose filesystem the kernel does
// not have (vfat, iso9660 here), even as root.
func TestPipelineAutoReadsWhatTheKernelCannotMount(t *testing.T) {
	kernel, err := kernelFilesystems("/proc/filesystems")
	require.NoError(t, err)
	if kernel["iso9660"] {
		testenv.SkipOrFail(t, "this kernel mounts iso9660: auto would mount")
	}
	e := newEnv(t)
	m := e.medium(demo.CDROM)
	code, out, errs := e.pipeline(m.Image)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	e.checkImageRun(m)
}

// Image mode killed at the start of each phase, then rerun, ends with every
// file stored, byte-identical.
func TestPipelineImageModeKilledInEachPhase(t *testing.T) {
	testimg.RequireFATTools(t)
	for _, phase := range []string{"enumerate", "load", "copy", "archive"} {
		t.Run(phase, func(t *testing.T) {
			e := newEnv(t)
			m := e.medium(demo.Floppy)
			require.True(t, e.pipelineKilledAt(m.Image, phase, "--read", "image"), "phase %s never started", phase)
			code, out, errs := e.pipeline(m.Image, "--read", "image")
			require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
			e.checkImageRun(m)
		})
	}
}

// A medium catalogued by one reader is not copied by the other: the
// catalog's inode numbers are the reader's.
func TestPipelineKeepsTheReader(t *testing.T) {
	e := newEnv(t)
	m := e.medium(demo.CDROM)
	require.True(t, e.pipelineKilledAt(m.Image, "copy", "--read", "image"))
	code, _, errs := e.pipeline(m.Image, "--read", "mount")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "--read image")
	code, out, errs := e.pipeline(m.Image)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	e.checkImageRun(m)
}

// A truncated floppy read from its image: the walk reports what it cannot
// read (recorded as structural_damage, with its image offset), the files
// whose clusters are gone are skipped as BEYOND_EOF at once and never
// stored, and the rest of the medium is catalogued, copied and archived.
func TestPipelineImageModeTruncatedFloppy(t *testing.T) {
	testimg.RequireFATTools(t)
	e := newEnv(t)
	m := e.medium(demo.Floppy)
	st, err := os.Stat(m.Image)
	require.NoError(t, err)
	require.NoError(t, testimg.Truncate(m.Image, st.Size()/4))
	code, out, errs := e.pipeline(m.Image, "--read", "image")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	ctx := context.Background()
	var problems map[string]any
	require.NoError(t, e.db.QueryRow(ctx, `SELECT problems FROM medium WHERE medium_hash = $1`, m.Hash).Scan(&problems))
	require.Contains(t, problems, "structural_damage")
	require.Contains(t, problems, "beyond_eof_detected")
	sd := problems["structural_damage"].(map[string]any)
	first := sd["problems"].([]any)[0].(map[string]any)
	require.Contains(t, first, "image_offset")
	require.Contains(t, first, "kind")
	var skipped, stored int64
	require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE claimed_by = 'DIAGNOSTIC_SKIP:BEYOND_EOF' AND status = 'failed_permanent' AND blobid IS NULL),
		count(*) FILTER (WHERE status = 'success' AND fs_type = 'f') FROM inode WHERE medium_hash = $1`, m.Hash).Scan(&skipped, &stored))
	require.Positive(t, skipped)
	require.Positive(t, stored)
	// What was stored is what was put on the medium.
	tree := filepath.Join(e.store, "archived", m.Hash)
	require.NoError(t, filepath.WalkDir(tree, func(p string, d os.DirEntry, err error) error {
		require.NoError(t, err)
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(tree, p)
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			require.Equal(t, m.Tree[rel].Data, b, "%s", rel)
		}
		return nil
	}))
}

// A classic HFS floppy (hfsutils) goes through every phase read from its
// image: catalogued, copied byte-identical with its resource forks (each
// found in the catalog at <file>/..namedfork/rsrc), archived, nothing
// mounted.
func TestPipelineHFSFloppyFromImage(t *testing.T) {
	testimg.RequireHFSTools(t)
	e := newEnv(t)
	m := e.medium(demo.HFSFloppy)
	code, out, errs := e.pipeline(m.Image, "--read", "image")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	e.checkImageRun(m)
}

// A hybrid ISO 9660 / HFS CD (genisoimage -hfs -part) and a hybrid ISO
// 9660 / HFS+ CD (xorriso -hfsplus) go through every phase read from their
// images: both views of the one medium are catalogued, the ISO side as
// partition 1 under /p1, the HFS or HFS+ side as partition 2 under /p2
// (with what only that side has: the Finder's desktop files, a file's
// resource fork, names in NFD), every file and fork stored byte-identical;
// a file on both sides is one blob, its bytes being the same sectors of
// the disc.
func TestPipelineHybridCDFromImage(t *testing.T) {
	for _, c := range []struct {
		name  string
		build func(string) (*demo.Medium, error)
		fork  string // the catalog path of the one resource fork, if any
	}{
		{"hfs", demo.HybridCD, "p2/Letters/Dear archivist/..namedfork/rsrc"},
		{"hfsplus", demo.HybridHFSPlusCD, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "hfs" {
				testimg.RequireHFSTools(t, "hls")
			}
			e := newEnv(t)
			m := e.medium(c.build)
			code, out, errs := e.pipeline(m.Image, "--read", "image")
			require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
			e.checkImageRun(m)
			e.checkHybrid(m, c.fork)
		})
	}
}

// checkHybrid checks a hybrid disc's catalog and store after a run: every
// entry under /p1 is partition 1, under /p2 partition 2, as many files in
// each as were put there; the fork (if any) on the HFS side; the files of
// both sides stored once.
func (e *env) checkHybrid(m *demo.Medium, fork string) {
	t := e.t
	t.Helper()
	ctx := context.Background()
	type entry struct {
		Path []byte
		Dev  int64
		Type string
	}
	rows, err := e.db.Query(ctx, `SELECT p.path, i.dev, i.fs_type FROM path p JOIN inode i USING (medium_hash, dev, ino)
		WHERE p.medium_hash = $1`, m.Hash)
	require.NoError(t, err)
	catalog, err := pgx.CollectRows(rows, pgx.RowToStructByPos[entry])
	require.NoError(t, err)
	perDev := map[int64]int{}
	for _, c := range catalog {
		rel := string(c.Path) // relative to the medium root, with a leading "/"
		switch {
		case rel == "/":
			continue
		case rel == "/p1" || strings.HasPrefix(rel, "/p1/"):
			require.Equal(t, int64(1), c.Dev, "%s: the ISO side is partition 1", rel)
		case rel == "/p2" || strings.HasPrefix(rel, "/p2/"):
			require.Equal(t, int64(2), c.Dev, "%s: the HFS side is partition 2", rel)
		default:
			t.Fatalf("%s: outside the views", rel)
		}
		if c.Type == "f" {
			perDev[c.Dev]++
		}
	}
	files := map[int64]int{}
	for p, te := range m.Tree {
		if te.Type == 'f' {
			files[map[bool]int64{true: 1, false: 2}[strings.HasPrefix(p, "p1/")]]++
		}
	}
	require.Equal(t, files, perDev, "files catalogued per view")
	if fork != "" {
		// The Mac file's resource fork is catalogued on the HFS side,
		// found from its file (checkImageRun compared its blob).
		require.Equal(t, []string{fork}, slices.Collect(maps.Keys(m.Forks)), "the fork the reference reader reads")
		i := slices.IndexFunc(catalog, func(c entry) bool { return string(c.Path) == "/"+fork })
		require.GreaterOrEqual(t, i, 0, "the resource fork's catalog path")
		require.Equal(t, "f", catalog[i].Type)
		require.Equal(t, int64(2), catalog[i].Dev)
	}

	// Stored once: the files on both sides are one blob each, and the
	// store holds one blob per distinct content.
	st := e.state(m.Hash)
	for _, p := range []string{"README.TXT", "Interviews/witness one.txt", "Scans/page-001.tif"} {
		a, err := os.Stat(filepath.Join(e.store, "archived", m.Hash, "p1", p))
		require.NoError(t, err)
		b, err := os.Stat(filepath.Join(e.store, "archived", m.Hash, "p2", p))
		require.NoError(t, err)
		require.True(t, os.SameFile(a, b), "%s: both views' names are links to the one stored blob", p)
	}
	distinct := map[string]bool{}
	for _, te := range m.Tree {
		if te.Type == 'f' {
			distinct[string(te.Data)] = true
		}
	}
	require.Len(t, st.Blobs, len(distinct), "one blob per distinct content")
	stored := 0
	require.NoError(t, filepath.WalkDir(filepath.Join(e.store, "by-hash"), func(p string, d os.DirEntry, err error) error {
		require.NoError(t, err)
		if d.Type().IsRegular() {
			stored++
		}
		return nil
	}))
	require.Equal(t, len(distinct), stored, "the store's blobs")
}

// An NTFS disk (mkntfs, written through ntfs-3g) goes through every phase
// read from its image: every file byte-identical (sparse and compressed
// ones too), hardlinks, symlinks and reparse points, every alternate data
// stream stored and found in the catalog at <file>/..namedfork/<stream>,
// the deleted file and the metadata files absent, archived, nothing
// mounted.
func TestPipelineNTFSDiskFromImage(t *testing.T) {
	testimg.RequireNTFSTools(t)
	e := newEnv(t)
	m := e.medium(demo.NTFSDisk)
	require.NotEmpty(t, m.Forks)
	code, out, errs := e.pipeline(m.Image, "--read", "image")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	e.checkImageRun(m)
}

// A UDF-only disc (mkudffs) has no image reader yet: --read image, and
// --read auto on a kernel without a UDF driver, fail in enumerate with the
// medium, the partition (0: the whole disc) and "UDF: no image reader
// yet" in the error and in medium.problems (enum_failed); nothing is
// catalogued.
func TestPipelineUDFNamedAsMissing(t *testing.T) {
	kernel, err := kernelFilesystems("/proc/filesystems")
	require.NoError(t, err)
	for _, mode := range []string{"image", "auto"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "auto" && kernel["udf"] {
				testenv.SkipOrFail(t, "this kernel mounts udf: auto would mount")
			}
			e := newEnv(t)
			m := e.medium(demo.UDFDisc)
			code, out, errs := e.pipeline(m.Image, "--read", mode)
			require.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", out, errs)
			require.Contains(t, errs, "medium "+m.Hash)
			require.Contains(t, errs, "partition 0 (udf): UDF: no image reader yet")
			ctx := context.Background()
			var problems map[string]map[string]any
			var reader *string
			var inodes int64
			require.NoError(t, e.db.QueryRow(ctx, `SELECT problems, reader, (SELECT count(*) FROM inode WHERE medium_hash = $1)
				FROM medium WHERE medium_hash = $1`, m.Hash).Scan(&problems, &reader, &inodes))
			require.Contains(t, problems, "enum_failed")
			require.Contains(t, fmt.Sprint(problems["enum_failed"]), "UDF: no image reader yet")
			require.NotNil(t, reader)
			require.Equal(t, "image", *reader)
			require.Zero(t, inodes)
			e.checkNothingLeft(m.Hash, m.Image)
		})
	}
}

// A UDF bridge disc (genisoimage -udf) goes through every phase read from
// its image by its ISO 9660 side, under --read image and --read auto.
func TestPipelineUDFBridgeReadsISOSide(t *testing.T) {
	kernel, err := kernelFilesystems("/proc/filesystems")
	require.NoError(t, err)
	for _, mode := range []string{"image", "auto"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "auto" && (kernel["udf"] || kernel["iso9660"]) {
				testenv.SkipOrFail(t, "this kernel mounts udf or iso9660: auto would mount")
			}
			e := newEnv(t)
			m := e.medium(demo.BridgeDisc)
			code, out, errs := e.pipeline(m.Image, "--read", mode)
			require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
			e.checkImageRun(m)
		})
	}
}

// A hybrid ISO 9660 / HFS CD under --read auto is read from its image
// when the kernel lacks a driver for either view; under --read mount on
// such a kernel it fails naming each view and its type, and nothing is
// catalogued, mounted or attached.
func TestPipelineHybridCDAutoAndMount(t *testing.T) {
	testimg.RequireHFSTools(t, "hls")
	kernel, err := kernelFilesystems("/proc/filesystems")
	require.NoError(t, err)
	if kernel["iso9660"] && kernel["hfs"] {
		testenv.SkipOrFail(t, "this kernel mounts iso9660 and hfs: auto would mount")
	}
	t.Run("auto", func(t *testing.T) {
		e := newEnv(t)
		m := e.medium(demo.HybridCD)
		code, out, errs := e.pipeline(m.Image)
		require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
		e.checkImageRun(m)
	})
	t.Run("mount", func(t *testing.T) {
		if kernel["iso9660"] || kernel["hfs"] {
			testenv.SkipOrFail(t, "this kernel mounts one of the views")
		}
		testenv.RequireRoot(t)
		e := newEnv(t)
		m := e.medium(demo.HybridCD)
		code, out, errs := e.pipeline(m.Image, "--read", "mount")
		require.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", out, errs)
		require.Contains(t, errs, "medium "+m.Hash)
		require.Regexp(t, `partition 1: mount \S+ on \S+/p1 \(type iso9660`, errs)
		require.Regexp(t, `partition 2: mount \S+ on \S+/p2 \(type hfs`, errs)
		var inodes int64
		require.NoError(t, e.db.QueryRow(context.Background(), `SELECT count(*) FROM inode WHERE medium_hash = $1`, m.Hash).Scan(&inodes))
		require.Zero(t, inodes)
		e.checkNothingLeft(m.Hash, m.Image)
	})
}

// An HFS+ volume (testimg.WriteHFSPlus) goes through every phase read from
// its image: catalogued, copied byte-identical with its resource forks
// (each found in the catalog at <file>/..namedfork/rsrc), its symlink and
// its hardlink (one inode, two paths), archived, nothing mounted.
func TestPipelineHFSPlusFromImage(t *testing.T) {
	e := newEnv(t)
	m := e.medium(demo.HFSPlusDisk)
	require.Len(t, m.Forks, 4) // two files', and a hardlinked file's under both its names
	code, out, errs := e.pipeline(m.Image, "--read", "image")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	e.checkImageRun(m)
	var inodes, paths int64
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT count(DISTINCT (dev, ino)), count(*) FROM path
		WHERE medium_hash = $1 AND path IN ($2, $3)`, m.Hash, []byte("/Letters/Drafts/draft.txt"), []byte("/Letters/draft (hardlink)")).
		Scan(&inodes, &paths))
	require.Equal(t, [2]int64{1, 2}, [2]int64{inodes, paths}, "the hardlink's two names are one inode")
}
