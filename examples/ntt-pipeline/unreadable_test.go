package main

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/archive"
	"github.com/HRDAG/ntt/internal/demo"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/require"
)

// garbagePartitionMedium writes a settled MBR disk whose only partition
// holds random bytes: a table, and no filesystem in it.
func garbagePartitionMedium(t *testing.T, dir, name string) string {
	t.Helper()
	h := hashOf(name)
	part := filepath.Join(t.TempDir(), "garbage")
	b := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{2}).Read(b)
	require.NoError(t, os.WriteFile(part, b, 0o644))
	img := filepath.Join(dir, h+".img")
	_, err := testimg.ComposeDisk(img, testimg.Disk{Table: "mbr", Parts: []testimg.DiskPart{{Image: part}}})
	require.NoError(t, err)
	settled(t, img)
	return h
}

// failedFATDisk writes a settled MBR disk of two FAT12 partitions whose
// boot sectors say their root directory holds no entry: the probe still
// knows each as vfat, the FAT reader refuses both.
func failedFATDisk(t *testing.T, dir, name string) string {
	t.Helper()
	h := hashOf(name)
	var parts []testimg.DiskPart
	for i := range 2 {
		p := filepath.Join(t.TempDir(), "fat")
		require.NoError(t, testimg.BuildFATImage(p, testimg.FATSpec{Bits: 12, Size: 512 << 10,
			Entries: []testimg.Entry{{Path: "LOST.TXT", Kind: testimg.File, Seed: uint64(50 + i), Size: 2000}}}))
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		require.NoError(t, err)
		_, err = f.WriteAt([]byte{0, 0}, 17) // BPB_RootEntCnt
		require.NoError(t, err)
		require.NoError(t, f.Close())
		parts = append(parts, testimg.DiskPart{Image: p, Type: 0x01})
	}
	img := filepath.Join(dir, h+".img")
	_, err := testimg.ComposeDisk(img, testimg.Disk{Table: "mbr", Parts: parts})
	require.NoError(t, err)
	settled(t, img)
	return h
}

// In image mode an image holding no filesystem any image reader knows, or
// whose every filesystem failed in its reader, is sealed with its reason; a readable FAT floppy in the same run is
// archived with its files, never sealed unreadable.
func TestQueueArchiveUnreadableImageMode(t *testing.T) {
	testimg.RequireFATTools(t)
	e := newEnv(t)
	ctx := context.Background()
	random := unreadableMedium(t, e.images, "random-image-mode")
	garbage := garbagePartitionMedium(t, e.images, "garbage-partition")
	failedFS := failedFATDisk(t, e.images, "every-filesystem-failed")
	floppy := e.medium(demo.Floppy)
	settled(t, floppy.Image)

	code, out, errs := e.queue("--all", "--read", "image", "--archive-unreadable")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	require.Contains(t, out, "1 archived, 3 archived unreadable")
	for h, want := range map[string]string{
		random:   "no partition table and no known filesystem",
		garbage:  "no known filesystem in any of the 1 partitions of its mbr table",
		failedFS: "every filesystem failed: no filesystem of the image could be read: partition 1 (vfat)",
	} {
		var reason, reader string
		var archivePath *string
		require.NoError(t, e.db.QueryRow(ctx, `SELECT problems->'archived_unreadable'->>'reason', problems->'archived_unreadable'->>'reader', archive_path
			FROM medium WHERE medium_hash = $1`, h).Scan(&reason, &reader, &archivePath))
		require.Contains(t, reason, want, "medium %s", h)
		require.Equal(t, readImage, reader)
		require.NotNil(t, archivePath)
		_, err := archive.Verify(ctx, *archivePath)
		require.NoError(t, err, "medium %s sealed", h)
		_, err = os.Stat(filepath.Join(e.images, h+".img"))
		require.True(t, os.IsNotExist(err), "the image of %s is removed", h)
		e.checkNothingLeft(h, filepath.Join(e.images, h+".img"))
	}
	e.checkImageRun(floppy)
	var flagged bool
	require.NoError(t, e.db.QueryRow(ctx, `SELECT problems ? 'archived_unreadable' FROM medium WHERE medium_hash = $1`, floppy.Hash).Scan(&flagged))
	require.False(t, flagged, "a readable floppy is never sealed unreadable")

	code, out, errs = e.queue("--all", "--read", "image", "--archive-unreadable")
	require.Equal(t, 2, code, "stdout:\n%s\nstderr:\n%s", out, errs)
}

// The image reader's witness: a medium it reads, or whose filesystem it
// does not know (a mount may read it), is never unreadable.
func TestUnreadableImageWhyRefusesReadableMedia(t *testing.T) {
	testimg.RequireFATTools(t)
	ctx := context.Background()
	dir := t.TempDir()
	fat := filepath.Join(dir, hashOf("fat")+".img")
	require.NoError(t, testimg.BuildFATImage(fat, testimg.FATSample(12, 3)))
	_, err := unreadableImageWhy(ctx, fat, medium.Hash(hashOf("fat")), dir)
	require.ErrorIs(t, err, errReadable)
	require.ErrorContains(t, err, "the image reader reads 1")

	ext := filepath.Join(dir, hashOf("ext")+".img")
	require.NoError(t, testimg.BuildImage(ext, testimg.Spec{FSType: "ext4", Size: 2 << 20}))
	_, err = unreadableImageWhy(ctx, ext, medium.Hash(hashOf("ext")), dir)
	require.ErrorIs(t, err, errReadable)
	require.ErrorContains(t, err, "--read mount may read it")

	garbage := garbagePartitionMedium(t, dir, "garbage")
	why, err := unreadableImageWhy(ctx, filepath.Join(dir, garbage+".img"), medium.Hash(garbage), dir)
	require.NoError(t, err)
	require.Contains(t, why, "no known filesystem")
}
