package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/loopdev"
)

const hash = "c9894f1681b5b542eb3a4b75967e9aea"

func call(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	rc := run(args, &out, &errb)
	return rc, out.String(), errb.String()
}

func TestHelpAndUsageErrors(t *testing.T) {
	rc, out, _ := call("--help")
	require.Equal(t, 0, rc)
	require.Contains(t, out, "mount HASH IMAGE")
	require.Contains(t, out, "-root")

	rc, _, errs := call()
	require.Equal(t, 1, rc)
	require.Contains(t, errs, "no command")

	rc, _, errs = call("frobnicate")
	require.Equal(t, 1, rc)
	require.Contains(t, errs, `unknown command "frobnicate"`)

	rc, _, errs = call("mount", hash)
	require.Equal(t, 1, rc)
	require.Contains(t, errs, "mount takes 2 argument(s)")

	rc, _, errs = call("status", "NOT-A-HASH")
	require.Equal(t, 1, rc)
	require.Contains(t, errs, "invalid medium hash")
}

// The seed's Phase 1: `status || mount`, then enumerate, then unmount; a
// stale loop of a deleted copy of the image is cleaned up with the log line.
func TestSeedMountFlow(t *testing.T) {
	testenv.Exclusive(t, testenv.StaleLoops) // it reaps or makes stale loops
	testenv.RequireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "mnt")
	img := filepath.Join(dir, hash+".img")
	mkfs := func(content string) {
		stage := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(stage, "f"), []byte(content), 0o644))
		require.NoError(t, os.WriteFile(img, nil, 0o644))
		require.NoError(t, os.Truncate(img, 16<<20))
		out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", stage, img).CombinedOutput()
		require.NoError(t, err, string(out))
	}
	mkfs("old")
	t.Cleanup(func() { call("--root", root, "unmount", hash) })

	// A stale loop: attached to the old image, which is then replaced.
	stale, err := loopdev.Attach(t.Context(), img, loopdev.AttachParams{})
	require.NoError(t, err)
	require.NoError(t, stale.Close())
	t.Cleanup(func() { _, _ = loopdev.Reap(t.Context(), loopdev.ReapOptions{}) })
	require.NoError(t, os.Remove(img))
	mkfs("new")

	rc, out, _ := call("--root", root, "status", hash)
	require.Equal(t, 1, rc, "not mounted yet")
	require.Contains(t, out, `"mounted": false`)

	rc, out, errs := call("--root", root, "mount", hash, img)
	require.Equal(t, 0, rc, errs)
	require.Contains(t, errs, fmt.Sprintf("Cleaning up stale loop device: %s (deleted inode)", stale.Device))
	var lay loopdev.Layout
	require.NoError(t, json.Unmarshal([]byte(out), &lay))
	require.Equal(t, "single", lay.Layout)
	require.Equal(t, filepath.Join(root, hash), lay.Mount)
	require.Equal(t, "ext4", lay.FSType)
	b, err := os.ReadFile(filepath.Join(lay.Mount, "f"))
	require.NoError(t, err)
	require.Equal(t, "new", string(b))
	// The log on stderr is JSON lines when it is not a terminal.
	for _, line := range strings.Split(strings.TrimSpace(errs), "\n") {
		require.True(t, json.Valid([]byte(line)), line)
	}

	rc, out, _ = call("--root", root, "status", hash)
	require.Equal(t, 0, rc)
	var st loopdev.Layout
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Equal(t, lay.Device, st.Device)

	rc, out, errs = call("--root", root, "mount", hash, img)
	require.Equal(t, 0, rc, errs)
	require.Contains(t, errs, "Already mounted at")
	require.Contains(t, out, `"already_mounted": true`)

	rc, out, errs = call("--root", root, "unmount", hash)
	require.Equal(t, 0, rc, errs)
	var rep loopdev.UnmountReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Equal(t, []string{lay.Mount}, rep.Unmounted)
	ls, err := loopdev.FindByImage(img)
	require.NoError(t, err)
	require.Empty(t, ls)
	_, err = os.Stat(lay.Mount)
	require.True(t, os.IsNotExist(err))

	rc, out, _ = call("reap")
	require.Equal(t, 0, rc)
	require.True(t, json.Valid([]byte(out)))
}

func TestMountArchiveFails(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	img := filepath.Join(dir, hash+".img")
	// zstd magic, as a .tar.zst renamed .img would start.
	require.NoError(t, os.WriteFile(img, append([]byte{0x28, 0xb5, 0x2f, 0xfd}, make([]byte, 4096)...), 0o644))
	rc, _, errs := call("--root", filepath.Join(dir, "mnt"), "mount", hash, img)
	require.Equal(t, 1, rc)
	require.Contains(t, errs, "archive, not a disk (zstd")
	_, err := os.Stat(filepath.Join(dir, "mnt", hash))
	require.True(t, os.IsNotExist(err))
}
