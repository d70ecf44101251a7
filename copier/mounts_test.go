package copier_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/copier"
	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loader"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// newMultiMedium builds a disk with one partition per spec, mounts it as
// ntt-mount-helper does (loopdev.Mount: <root>/<hash>/p1, p2 …, recorded
// in the layout record) and gives the fixture its spec with /pN paths.
// The catalog is left to the caller.
func newMultiMedium(t *testing.T, specs []testimg.Spec) *fixture {
	t.Helper()
	testenv.Shared(t, testenv.StaleLoops) // a mount reaps NTT's stale loops
	testimg.RequireRoot(t)
	f := &fixture{t: t, h: randomHash(t)}
	dir := t.TempDir()
	f.mountRoot = filepath.Join(dir, "mnt")
	f.mount = f.h.MountPath(f.mountRoot)
	var disk testimg.Disk
	disk.Table = "mbr"
	for i, s := range specs {
		disk.Parts = append(disk.Parts, testimg.DiskPart{Image: testimg.Build(t, s)})
		for _, e := range s.Entries {
			e.Path = fmt.Sprintf("p%d/%s", i+1, e.Path)
			f.spec.Entries = append(f.spec.Entries, e)
		}
	}
	f.image = filepath.Join(dir, string(f.h)+".img")
	_, err := testimg.ComposeDisk(f.image, disk)
	require.NoError(t, err)
	lay, err := loopdev.Mount(context.Background(), loopdev.MountSpec{Medium: string(f.h), Image: f.image, Root: f.mountRoot})
	require.NoError(t, err)
	require.Equal(t, loopdev.LayoutMulti, lay.Layout)
	t.Cleanup(func() {
		loopdev.Unmount(context.Background(), string(f.h), f.mountRoot, &loopdev.UnmountOptions{Image: f.image})
	})
	f.setStore(filepath.Join(dir, "store"))
	return f
}

// bindHostDir bind-mounts a new directory holding a file passwd over dir
// and returns the passwd file's path there and its content.
func bindHostDir(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	host := t.TempDir()
	content := []byte("root:x:0:0:root:/root:/bin/bash\n")
	p := filepath.Join(host, "passwd")
	require.NoError(t, os.WriteFile(p, content, 0o644))
	require.NoError(t, unix.Mount(host, dir, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unmount(t, dir) })
	return p, content
}

// appendRow loads one crafted raw record for the file at host into the
// catalog at catalogPath (loader's append mode, as `ntt-loader --append`):
// its lstat as enumeration would record it.
func appendRow(t *testing.T, f *fixture, host, catalogPath string) {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(host, &st))
	rec := fmt.Sprintf("f\x1c%d\x1c%d\x1c%d\x1c%d\x1c%d\x1c%s\x00", st.Dev, st.Ino, st.Nlink, st.Size, st.Mtim.Sec, f.mount+catalogPath)
	_, err := loader.Load(context.Background(), f.db, string(f.h), strings.NewReader(rec), loader.Options{Root: f.mount, Mode: loader.Append})
	require.NoError(t, err)
}

// requireNotStored checks that no blob holds content, in by-hash or in the
// medium's tree.
func requireNotStored(t *testing.T, f *fixture, content []byte, catalogPath string) {
	t.Helper()
	sum := blake3.Sum256(content)
	id := fmt.Sprintf("%x", sum[:])
	_, err := os.Stat(filepath.Join(f.store, "by-hash", id[:2], id[2:4], id))
	require.True(t, os.IsNotExist(err), "the bind mount's file is in the store: %v", err)
	var n int
	require.NoError(t, f.db.QueryRow(context.Background(), `SELECT count(*) FROM blobs WHERE blobid = $1`, id).Scan(&n))
	require.Zero(t, n)
	_, err = os.Lstat(filepath.Join(f.store, "archived", string(f.h), catalogPath))
	require.True(t, os.IsNotExist(err), "the bind mount's file is in the tree: %v", err)
}

// pathError returns the row of catalogPath: status, error_type, last error.
func pathError(t *testing.T, f *fixture, catalogPath string) (status, errType, last string) {
	t.Helper()
	var et *string
	var errs []string
	require.NoError(t, f.db.QueryRow(context.Background(), `SELECT i.status, i.error_type, coalesce(i.errors, '{}')
		FROM inode i JOIN path p USING (medium_hash, dev, ino) WHERE p.medium_hash = $1 AND p.path = $2`,
		string(f.h), []byte(catalogPath)).Scan(&status, &et, &errs))
	if et != nil {
		errType = *et
	}
	if len(errs) > 0 {
		last = errs[len(errs)-1]
	}
	return status, errType, last
}

// A mount that is not the medium's (issue 18): a directory of the host
// bind-mounted over p1 of a two-partition medium, and a crafted catalog
// row /p1/passwd matching the host's file. Nothing from the bind mount is
// stored: every /p1 row is a path error naming the medium, the mount and
// why; the medium's other partition is copied.
func TestBindMountOverPartitionIsNotTheMedium(t *testing.T) {
	specs := []testimg.Spec{
		{Entries: []testimg.Entry{{Path: "etc/x", Kind: testimg.File, Data: []byte("partition one\n")}}},
		{Entries: []testimg.Entry{{Path: "etc/y", Kind: testimg.File, Data: []byte("partition two\n")},
			{Path: "docs/z", Kind: testimg.File, Data: []byte("more of two\n")}}},
	}
	f := newMultiMedium(t, specs)
	f.url = mustURL(t)
	f.db = mustPool(t, f.url)
	ctx := context.Background()
	parts, err := enumerate.PartitionMounts(f.mount)
	require.NoError(t, err)
	var raw bytes.Buffer
	_, err = enumerate.Walk(ctx, []string{f.mount}, enumerate.Options{EnterMounts: parts}, &raw)
	require.NoError(t, err)
	_, err = loader.Load(ctx, f.db, string(f.h), &raw, loader.Options{})
	require.NoError(t, err)

	p1 := f.h.PartitionMountPath(f.mountRoot, 1)
	host, content := bindHostDir(t, p1)
	appendRow(t, f, host, "/p1/passwd")

	st := f.mustRun(f.options())
	assert.Equal(t, int64(2), st.Copied, "p2's two files")
	assert.Equal(t, int64(2), st.GaveUp, "/p1/passwd and the medium's own /p1/etc/x, hidden under the bind mount")
	requireNotStored(t, f, content, "/p1/passwd")
	for _, p := range []string{"/p1/passwd", "/p1/etc/x"} {
		status, et, last := pathError(t, f, p)
		assert.Equal(t, "failed_retryable", status, p)
		assert.Equal(t, "path_error", et, p)
		assert.Contains(t, last, "mount is not the medium's", p)
		assert.Contains(t, last, string(f.h), p)
		assert.Contains(t, last, p1+" is mounted from ", p)
	}
	for _, p := range []string{"/p2/etc/y", "/p2/docs/z"} {
		status, _, _ := pathError(t, f, p)
		assert.Equal(t, "success", status, p)
	}
	got, err := os.ReadFile(filepath.Join(f.store, "archived", string(f.h), "p2", "etc", "y"))
	require.NoError(t, err)
	assert.Equal(t, "partition two\n", string(got))
	_, pending, claimed := f.monitor()
	assert.Zero(t, pending)
	assert.Zero(t, claimed)
}

// A partition mount loopdev did not record (mounted by hand, or before the
// layout record existed) is not trusted: with none of the medium's own the
// copier refuses to start, names the mount and says how to fix it, and
// marks nothing.
func TestUnrecordedPartitionMountIsRefused(t *testing.T) {
	f := newMultiMedium(t, []testimg.Spec{
		{Entries: []testimg.Entry{{Path: "a", Kind: testimg.File, Data: []byte("a\n")}}},
		{Entries: []testimg.Entry{{Path: "b", Kind: testimg.File, Data: []byte("b\n")}}},
	})
	f.url = mustURL(t)
	f.db = mustPool(t, f.url)
	ctx := context.Background()
	parts, err := enumerate.PartitionMounts(f.mount)
	require.NoError(t, err)
	var raw bytes.Buffer
	_, err = enumerate.Walk(ctx, []string{f.mount}, enumerate.Options{EnterMounts: parts}, &raw)
	require.NoError(t, err)
	_, err = loader.Load(ctx, f.db, string(f.h), &raw, loader.Options{})
	require.NoError(t, err)
	require.NoError(t, os.Remove(f.h.LayoutRecordPath(f.mountRoot)))

	_, err = f.run(f.options())
	require.ErrorIs(t, err, copier.ErrNotMounted)
	assert.Contains(t, err.Error(), "unmount and mount the medium again with ntt-mount-helper")
	assert.Contains(t, err.Error(), f.h.PartitionMountPath(f.mountRoot, 2))
	_, pending, claimed := f.monitor()
	assert.Equal(t, int64(2), pending, "both files stay pending")
	assert.Zero(t, claimed)
}
