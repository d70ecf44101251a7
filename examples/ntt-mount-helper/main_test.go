package main

import (
	"bytes"
	"encoding/json"
	"errors"
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

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBinaries()
	os.Exit(code)
}

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
	testenv.Shared(t, testenv.StaleLoops) // mount reaps NTT's stale loops
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

// program runs the built ntt-mount-helper, as the runbook does.
func program(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String(), errb.String()
	}
	require.NoError(t, err)
	return 0, out.String(), errb.String()
}

// staleLoop attaches a loop device to a new file at path and deletes the
// file, as a rescued image removed while still attached leaves it.
func staleLoop(t *testing.T, path string) loopdev.Loop {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, make([]byte, 1<<20), 0o644))
	a, err := loopdev.Attach(t.Context(), path, loopdev.AttachParams{})
	require.NoError(t, err)
	require.NoError(t, a.Close())
	dev := a.Device
	t.Cleanup(func() { _ = loopdev.Detach(dev) })
	require.NoError(t, os.Remove(path))
	return a.Loop
}

// losetupLine is the `losetup -l` line of dev, or "".
func losetupLine(t *testing.T, dev string) string {
	t.Helper()
	out, err := exec.Command("losetup", "-l").CombinedOutput()
	require.NoError(t, err, string(out))
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == dev {
			return line
		}
	}
	return ""
}

// The runbook's Test 1 under ntt-mount-helper: a stale loop of another
// medium's deleted image (loop27 → bb226d2a in the seed) is cleaned up by
// `mount` with the seed's log line, and `losetup -l | grep deleted` no
// longer shows it; a loop of a deleted file that is not NTT's is left
// attached, and the log says which loop was left alone.
func TestRunbookTest1ReapsOnlyNTTLoops(t *testing.T) {
	testenv.Exclusive(t, testenv.StaleLoops) // it makes stale loops
	testenv.RequireRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "mnt")
	images := filepath.Join(dir, "img")
	require.NoError(t, os.MkdirAll(images, 0o755))
	img := filepath.Join(images, hash+".img")
	stage := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(stage, "f"), []byte("evidence"), 0o644))
	require.NoError(t, os.WriteFile(img, nil, 0o644))
	require.NoError(t, os.Truncate(img, 16<<20))
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", stage, img).CombinedOutput()
	require.NoError(t, err, string(out))
	t.Cleanup(func() { program(t, "--root", root, "unmount", hash) })

	// Another medium's image, deleted while attached (elsewhere: only its
	// name says it is NTT's), and someone else's file, deleted likewise.
	ntt := staleLoop(t, filepath.Join(dir, "old-img", "bb226d2a5f0c4e0e9d1a2b3c4d5e6f70.img"))
	other := staleLoop(t, filepath.Join(dir, "home", "vm-disk.qcow"))
	require.Contains(t, losetupLine(t, ntt.Device), "(deleted)")
	require.Contains(t, losetupLine(t, other.Device), "(deleted)")

	// Phase 1 as written: status || mount.
	rc, _, _ := program(t, "--root", root, "status", hash)
	require.Equal(t, 1, rc)
	rc, _, errs := program(t, "--root", root, "mount", hash, img)
	require.Equal(t, 0, rc, errs)
	require.Contains(t, errs, fmt.Sprintf("Cleaning up stale loop device: %s (deleted inode)", ntt.Device))
	require.Contains(t, errs, fmt.Sprintf("Leaving loop device alone: %s (deleted inode, not an NTT image)", other.Device))
	require.NotContains(t, errs, fmt.Sprintf("Cleaning up stale loop device: %s ", other.Device))

	// Verification: sudo losetup -l | grep deleted — NTT's stale loop is gone.
	require.NotContains(t, losetupLine(t, ntt.Device), "deleted")
	require.Contains(t, losetupLine(t, other.Device), "(deleted)", "someone else's loop must stay attached")
	b, err := os.ReadFile(filepath.Join(root, hash, "f"))
	require.NoError(t, err)
	require.Equal(t, "evidence", string(b))
}
