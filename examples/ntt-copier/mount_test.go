package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loader"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// A mount that is not the medium (issue 18), through the runbook's
// commands in order: mount (ntt-mount-helper's loopdev.Mount), enumerate,
// load; then a host directory holding passwd is bind-mounted at
// <mount>/p1 (the medium's own empty directory p1) and a crafted row
// /p1/passwd is appended (ntt-loader --append); then the runbook's copier
// command. Nothing from the bind mount reaches the store; the row is a
// path error whose message names the medium, the path and why; the
// medium's own files are copied.
func TestCopierRefusesBindMountAtP1(t *testing.T) {
	testenv.Shared(t, testenv.StaleLoops) // a mount reaps NTT's stale loops
	testenv.RequireRoot(t)
	b := make([]byte, 16)
	rand.Read(b)
	h := medium.MustParse(hex.EncodeToString(b))
	dir := t.TempDir()
	root, store := filepath.Join(dir, "mnt"), filepath.Join(dir, "cold")
	require.NoError(t, os.MkdirAll(store, 0o755))
	image := filepath.Join(dir, string(h)+".img")
	require.NoError(t, testimg.BuildImage(image, testimg.Spec{FSType: "ext4", Size: 16 << 20, Entries: []testimg.Entry{
		{Path: "p1", Kind: testimg.Dir},
		{Path: "docs/report.txt", Kind: testimg.File, Data: []byte("the medium's own report\n")},
		{Path: "etc/hosts", Kind: testimg.File, Data: []byte("127.0.0.1 evidence\n")},
	}}))
	ctx := context.Background()

	// Phase 1: mount, enumerate. Phase 2: load.
	lay, err := loopdev.Mount(ctx, loopdev.MountSpec{Medium: string(h), Image: image, Root: root})
	require.NoError(t, err)
	t.Cleanup(func() { loopdev.Unmount(context.Background(), string(h), root, &loopdev.UnmountOptions{Image: image}) })
	require.Equal(t, loopdev.LayoutSingle, lay.Layout)
	url := pgtest.URL(t)
	db, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	var raw bytes.Buffer
	_, err = enumerate.Walk(ctx, []string{lay.Mount}, enumerate.Options{}, &raw)
	require.NoError(t, err)
	_, err = loader.Load(ctx, db, string(h), &raw, loader.Options{})
	require.NoError(t, err)

	// Someone mounts another directory at <mount>/p1, and the catalog gets
	// a row for the file there.
	host := t.TempDir()
	passwd := []byte("root:x:0:0:root:/root:/bin/bash\n")
	require.NoError(t, os.WriteFile(filepath.Join(host, "passwd"), passwd, 0o644))
	p1 := filepath.Join(lay.Mount, "p1")
	require.NoError(t, unix.Mount(host, p1, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(p1, unix.MNT_DETACH) })
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(filepath.Join(p1, "passwd"), &st))
	rec := fmt.Sprintf("f\x1c%d\x1c%d\x1c%d\x1c%d\x1c%d\x1c%s/p1/passwd\x00", st.Dev, st.Ino, st.Nlink, st.Size, st.Mtim.Sec, lay.Mount)
	_, err = loader.Load(ctx, db, string(h), strings.NewReader(rec), loader.Options{Root: lay.Mount, Mode: loader.Append})
	require.NoError(t, err)

	// Phase 3, as the runbook types it.
	cmd := exec.Command(testenv.Binary(t), "--db", url, "--store", store, "--root", root,
		"--medium-hash", string(h), "--worker-id", "test-worker", "--batch-size", "50")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	// exitGaveUp: the run went through and gave up on one file (a path
	// error, kept as failed_retryable for reset-failed once the mount is fixed).
	require.Equal(t, exitGaveUp, code, errb.String())
	var sum map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &sum), out.String())
	require.Equal(t, 1.0, sum["gave_up"], out.String())

	// Nothing of the bind mount in the store or the tree.
	id := blake3.Sum256(passwd)
	hexID := hex.EncodeToString(id[:])
	_, err = os.Stat(filepath.Join(store, "by-hash", hexID[:2], hexID[2:4], hexID))
	require.True(t, os.IsNotExist(err), "the host's passwd is in the store")
	_, err = os.Lstat(filepath.Join(store, "archived", string(h), "p1", "passwd"))
	require.True(t, os.IsNotExist(err), "the host's passwd is in the tree")

	// The row is a path error that says why.
	var status, errType string
	var errs []string
	require.NoError(t, db.QueryRow(ctx, `SELECT i.status, i.error_type, i.errors FROM inode i JOIN path p USING (medium_hash, dev, ino)
		WHERE p.medium_hash = $1 AND p.path = $2`, string(h), []byte("/p1/passwd")).Scan(&status, &errType, &errs))
	require.Equal(t, "failed_retryable", status)
	require.Equal(t, "path_error", errType)
	require.NotEmpty(t, errs)
	msg := errs[len(errs)-1]
	require.Contains(t, msg, `"/p1/passwd"`)
	require.Contains(t, msg, "mount is not the medium's")
	require.Contains(t, msg, string(h))
	require.Contains(t, msg, p1+" is a mount on top of the medium's filesystem")

	// The medium's own files are copied.
	for path, want := range map[string]string{"docs/report.txt": "the medium's own report\n", "etc/hosts": "127.0.0.1 evidence\n"} {
		got, err := os.ReadFile(filepath.Join(store, "archived", string(h), path))
		require.NoError(t, err, path)
		require.Equal(t, want, string(got), path)
	}
	var pending int64
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM inode WHERE medium_hash = $1 AND NOT copied`, string(h)).Scan(&pending))
	require.Zero(t, pending)
}
