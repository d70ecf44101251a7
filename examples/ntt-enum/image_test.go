package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/HRDAG/ntt/internal/demo"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
)

// ntt-enum --image reads a CD-ROM the kernel cannot mount, as an
// unprivileged user: one record per name put on the disc, under
// <root>/<hash> as a mount would show them.
func TestEnumImageUnprivileged(t *testing.T) {
	testenv.RequireRoot(t) // to become nobody
	// t.TempDir's parent is root's alone: the user needs a path to it.
	dir, err := os.MkdirTemp("", "ntt-enum-image-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	m, err := demo.CDROM(dir)
	if err != nil && strings.Contains(err.Error(), "not installed") {
		testenv.SkipOrFail(t, err.Error())
	}
	require.NoError(t, err)
	require.NoError(t, os.Chmod(m.Image, 0o644))
	out := filepath.Join(dir, m.Hash[:8]+".raw")

	// The test binary's directory is root's: run a copy the user can reach.
	bin := filepath.Join(dir, "ntt-enum")
	exe, err := os.ReadFile(testenv.Binary(t))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, exe, 0o755))
	cmd := exec.Command(bin, "--image", m.Image, "--root", "/media/archive", m.Hash, out)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", b)

	recs := rawSorted(t, out)
	require.Len(t, recs, len(m.Tree)+1)
	base := "/media/archive/" + m.Hash
	seen := map[string]bool{}
	for _, rec := range recs {
		f := strings.SplitN(rec, "\x1c", 7)
		require.Len(t, f, 7)
		p := f[6]
		require.False(t, seen[p], "duplicate path %q", p)
		seen[p] = true
		if p == base {
			require.Equal(t, "d", f[0])
			continue
		}
		rel := strings.TrimPrefix(p, base+"/")
		want, ok := m.Tree[rel]
		require.True(t, ok, "%q was not put on the disc", p)
		require.Equal(t, string(want.Type), f[0], "%q", p)
		require.Equal(t, "0", f[1], "dev: a whole-disk filesystem is partition 0")
	}
	st, err := os.Stat(out)
	require.NoError(t, err)
	require.Equal(t, uint32(65534), st.Sys().(*syscall.Stat_t).Uid, "written by the unprivileged user")

	// Bad input changes nothing.
	rc, _, stderr := runEnum("--image", filepath.Join(dir, "missing.img"), m.Hash, filepath.Join(dir, "x.raw"))
	require.Equal(t, 1, rc)
	require.Contains(t, stderr, "missing.img")
	_, err = os.Stat(filepath.Join(dir, "x.raw"))
	require.ErrorIs(t, err, os.ErrNotExist)
	rc, _, _ = runEnum("--image", m.Image, m.Hash, out)
	require.Equal(t, 2, rc, "OUT.raw exists")
	rc, _, stderr = runEnum("--image", m.Image, "not-a-hash", filepath.Join(dir, "y.raw"))
	require.Equal(t, 1, rc, stderr)
}

// demoMedium builds a sample medium in a fresh directory, skipping (or
// failing under CI) when its tool is not installed.
func demoMedium(t *testing.T, build func(string) (*demo.Medium, error)) (*demo.Medium, string) {
	t.Helper()
	dir := t.TempDir()
	m, err := build(dir)
	if err != nil && strings.Contains(err.Error(), "not installed") {
		testenv.SkipOrFail(t, err.Error())
	}
	require.NoError(t, err)
	return m, dir
}

// A UDF-only disc (mkudffs): no image reader reads UDF yet, and
// ntt-enum --image says so naming the medium and the partition (0: the
// whole disc), writes nothing and fails.
func TestEnumImageUDFNamedAsMissing(t *testing.T) {
	m, dir := demoMedium(t, demo.UDFDisc)
	out := filepath.Join(dir, "udf.raw")
	rc, _, stderr := runEnum("--image", m.Image, m.Hash, out)
	require.Equal(t, 1, rc, stderr)
	require.Contains(t, stderr, "medium "+m.Hash)
	require.Contains(t, stderr, "partition 0 (udf): UDF: no image reader yet")
	_, err := os.Stat(out)
	require.ErrorIs(t, err, os.ErrNotExist)
	noTemp(t, dir)
}

// checkImageRecords checks the raw records ntt-enum wrote to out for a
// medium read under base: one record per name of m (forks at their
// catalog paths) and the medium root, each of the type put on the medium, files of their size, and dev
// as devOf says for the name (relative to base).
func checkImageRecords(t *testing.T, out, base string, m *demo.Medium, devOf func(rel string) string) {
	t.Helper()
	tree := m.CatalogTree()
	recs := rawSorted(t, out)
	require.Len(t, recs, len(tree)+1)
	for _, rec := range recs {
		f := strings.SplitN(rec, "\x1c", 7)
		require.Len(t, f, 7)
		if f[6] == base {
			require.Equal(t, "d", f[0])
			continue
		}
		rel := strings.TrimPrefix(f[6], base+"/")
		want, ok := tree[rel]
		require.True(t, ok, "%q was not put on the disc", f[6])
		require.Equal(t, string(want.Type), f[0], "%q", f[6])
		require.Equal(t, devOf(rel), f[1], "%q: dev", f[6])
		if want.Type == 'f' {
			require.Equal(t, fmt.Sprint(len(want.Data)), f[4], "%q: size", f[6])
		}
	}
}

// A UDF bridge disc (genisoimage -udf) is read through its ISO 9660 side:
// one record per name put on it, as a whole-disc filesystem (dev 0).
func TestEnumImageUDFBridgeReadsISOSide(t *testing.T) {
	m, dir := demoMedium(t, demo.BridgeDisc)
	out := filepath.Join(dir, "bridge.raw")
	rc, _, stderr := runEnum("--image", m.Image, "--root", "/media/archive", m.Hash, out)
	require.Equal(t, 0, rc, stderr)
	checkImageRecords(t, out, "/media/archive/"+m.Hash, m, func(string) string { return "0" })
}

// A hybrid ISO 9660 / HFS CD: both views, the ISO side as partition 1
// under <root>/<hash>/p1, the HFS side as partition 2 under …/p2.
func TestEnumImageHybridCDViews(t *testing.T) {
	testimg.RequireHFSTools(t, "hls")
	m, dir := demoMedium(t, demo.HybridCD)
	out := filepath.Join(dir, "hybrid.raw")
	rc, _, stderr := runEnum("--image", m.Image, "--root", "/media/archive", m.Hash, out)
	require.Equal(t, 0, rc, stderr)
	checkImageRecords(t, out, "/media/archive/"+m.Hash, m, func(rel string) string {
		return strings.TrimPrefix(strings.SplitN(rel, "/", 2)[0], "p") // p1/… is dev 1, p2/… dev 2
	})
}
