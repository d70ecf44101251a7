package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/HRDAG/ntt/internal/testimg"
)

const hash = "c9894f1681b5b542eb3a4b75967e9aea"

func findSorted(t *testing.T, roots ...string) []string {
	t.Helper()
	seen := map[string]bool{}
	var recs []string
	for _, r := range roots {
		out, err := exec.Command("find", r, "-xdev", "-printf", `%y\034%D\034%i\034%n\034%s\034%Ts\034%p\0`).Output()
		require.NoError(t, err)
		for _, rec := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
			if !seen[rec] {
				seen[rec] = true
				recs = append(recs, rec)
			}
		}
	}
	slices.Sort(recs)
	return recs
}

func rawSorted(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.HasSuffix(b, []byte{0}))
	recs := strings.Split(string(b[:len(b)-1]), "\x00")
	slices.Sort(recs)
	return recs
}

// lastJSON returns the last JSON log line of stderr.
func lastJSON(t *testing.T, stderr string) map[string]any {
	t.Helper()
	var last map[string]any
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			last = m
		}
	}
	require.NotNil(t, last, "no JSON line in %q", stderr)
	return last
}

func runEnum(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	rc := run(args, &stdout, &stderr)
	return rc, stdout.String(), stderr.String()
}

// noTemp checks that no temporary output was left behind in dir.
func noTemp(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		require.False(t, strings.Contains(e.Name(), ".tmp-"), "left behind: %s", e.Name())
	}
}

func TestEnumeratesMountedMedium(t *testing.T) {
	testimg.RequireRoot(t)
	mnt := testimg.MountImage(t, testimg.Build(t, testimg.EveryKind()), 0, 0, "ext4")
	dir := t.TempDir()
	out := filepath.Join(dir, hash[:8]+".raw")

	rc, stdout, stderr := runEnum(mnt, hash, out)
	require.Equal(t, 0, rc, stderr)
	want := findSorted(t, mnt)
	require.Equal(t, want, rawSorted(t, out))
	require.Equal(t, fmt.Sprintf("✓ Enumeration complete: %d records written to %s\n", len(want), out), stdout)
	ev := lastJSON(t, stderr)
	require.Equal(t, "enumeration complete", ev["msg"])
	require.EqualValues(t, len(want), ev["records"])
	require.Equal(t, hash, ev["medium"])
	noTemp(t, dir)
	st, err := os.Stat(out)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), st.Mode().Perm())
	require.EqualValues(t, st.Size(), ev["bytes"])

	// The seed's duplicate check finds nothing.
	seen := map[string]bool{}
	for _, rec := range want {
		p := strings.SplitN(rec, "\x1c", 7)[6]
		require.False(t, seen[p], "duplicate path %q", p)
		seen[p] = true
	}

	// A second run refuses to overwrite (exit 2) and leaves the file alone.
	before, _ := os.ReadFile(out)
	rc, _, stderr = runEnum(mnt, hash, out)
	require.Equal(t, 2, rc)
	require.Contains(t, stderr, "already exists")
	after, _ := os.ReadFile(out)
	require.Equal(t, before, after)
	rc, _, stderr = runEnum("--force", mnt, hash, out)
	require.Equal(t, 0, rc, stderr)
	require.Equal(t, want, rawSorted(t, out))
}

func TestEnumRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.raw")
	plain := t.TempDir()
	other := filepath.Join(t.TempDir(), "ece03c6779caa14be2b00d380add8475")
	require.NoError(t, os.Mkdir(other, 0o755))
	cases := []struct {
		name string
		args []string
		msg  string
	}{
		{"bad hash", []string{plain, "C9894F16", out}, "invalid medium hash"},
		{"short hash", []string{plain, "abc", out}, "invalid medium hash"},
		{"missing mount point", []string{filepath.Join(dir, "nope"), hash, out}, "no such file or directory"},
		{"not mounted", []string{plain, hash, out}, "nothing is mounted at " + plain},
		{"other medium", []string{"--allow-unmounted", other, hash, out}, "belongs to medium ece03c6779caa14be2b00d380add8475"},
		{"missing output dir", []string{"--allow-unmounted", plain, hash, filepath.Join(dir, "no", "x.raw")}, "cannot create the output"},
		{"bad ignore file", []string{"--allow-unmounted", "--ignore", filepath.Join(dir, "none"), plain, hash, out}, "ignore file"},
		{"too few arguments", []string{plain, hash}, "expected MOUNT_POINT MEDIUM_HASH OUT.raw"},
		{"zero workers", []string{"--workers", "0", plain, hash, out}, "--workers"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc, stdout, stderr := runEnum(c.args...)
			require.Equal(t, 1, rc)
			require.Empty(t, stdout)
			require.Contains(t, stderr, c.msg)
			require.Equal(t, 1, strings.Count(stderr, "\n"), "one clear sentence: %q", stderr)
			_, err := os.Stat(out)
			require.True(t, os.IsNotExist(err))
			noTemp(t, dir)
		})
	}
	rc, stdout, _ := runEnum("--help")
	require.Equal(t, 0, rc)
	require.Contains(t, stdout, "Usage: ntt-enum")
}

func TestEnumDamagedMediumWritesNothingPartial(t *testing.T) {
	testimg.RequireRoot(t)
	spec := testimg.Spec{Label: "damaged", Entries: []testimg.Entry{
		{Path: "good/a", Kind: testimg.File, Data: []byte("a")},
		{Path: "bad/one", Kind: testimg.File, Data: []byte("1")},
		{Path: "bad/two", Kind: testimg.File, Data: []byte("2")},
	}}
	img := testimg.Build(t, spec)
	blocks, err := exec.Command("debugfs", "-R", "blocks /bad", img).Output()
	require.NoError(t, err)
	blk, err := strconv.ParseInt(strings.Fields(string(blocks))[0], 10, 64)
	require.NoError(t, err)
	require.NoError(t, testimg.WriteAt(img, blk*4096, bytes.Repeat([]byte{0x5A}, 4096)))
	mnt := testimg.MountImage(t, img, 0, 0, "ext4")
	dir := t.TempDir()
	out := filepath.Join(dir, "d.raw")

	rc, stdout, stderr := runEnum(mnt, hash, out)
	require.Equal(t, 1, rc)
	require.Empty(t, stdout)
	_, err = os.Stat(out)
	require.True(t, os.IsNotExist(err), "no partial OUT.raw")
	noTemp(t, dir)
	require.Contains(t, stderr, `"msg":"unreadable entry"`)
	require.Contains(t, stderr, `"path":"`+mnt+`/bad"`)
	require.Contains(t, stderr, "1 director(ies) or entries under "+mnt+" could not be read")

	// root, lost+found, good, good/a, bad: everything but the two names inside bad.
	rc, stdout, stderr = runEnum("--allow-errors", mnt, hash, out)
	require.Equal(t, 0, rc, stderr)
	require.Contains(t, stdout, "✓ Enumeration complete: 5 records written to "+out)
	require.Contains(t, stderr, "could not be read and are missing")
	ev := lastJSON(t, stderr)
	require.EqualValues(t, 1, ev["errors"])
}

func TestEnumMultiPartitionMediumAndIgnore(t *testing.T) {
	testimg.RequireRoot(t)
	root := filepath.Join(t.TempDir(), hash)
	for i, files := range [][]string{{"etc/x", "skip.tmp"}, {"data/y", "data/z.tmp"}} {
		spec := testimg.Spec{Label: fmt.Sprintf("p%d", i+1)}
		for _, f := range files {
			spec.Entries = append(spec.Entries, testimg.Entry{Path: f, Kind: testimg.File, Data: []byte(f)})
		}
		l := testimg.AttachLoop(t, testimg.Build(t, spec), 0, 0)
		p := filepath.Join(root, fmt.Sprintf("p%d", i+1))
		require.NoError(t, os.MkdirAll(p, 0o755))
		require.NoError(t, testimg.TryMount(l.Path, p, "ext4", "noload"))
		t.Cleanup(func() { unix.Unmount(p, 0) })
	}
	ign := filepath.Join(t.TempDir(), "ignore")
	require.NoError(t, os.WriteFile(ign, []byte("# temporary files\n\\.tmp$\n"), 0o644))
	out := filepath.Join(t.TempDir(), "m.raw")

	rc, stdout, stderr := runEnum("--ignore", ign, "--workers", "3", root, hash, out)
	require.Equal(t, 0, rc, stderr)
	var want []string
	for _, rec := range findSorted(t, root, root+"/p1", root+"/p2") {
		if !strings.HasSuffix(rec, ".tmp") {
			want = append(want, rec)
		}
	}
	got := rawSorted(t, out)
	require.Equal(t, want, got)
	require.Contains(t, strings.Join(got, "\n"), root+"/p2/data/y")
	b, _ := os.ReadFile(out)
	require.True(t, bytes.HasPrefix(b, []byte("d\x1c")) && bytes.Contains(b[:bytes.IndexByte(b, 0)], []byte(root)),
		"the medium root is the first record")
	require.Contains(t, stdout, fmt.Sprintf("%d records", len(want)))
	ev := lastJSON(t, stderr)
	require.EqualValues(t, 2, ev["ignored"])
}

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		testimg.RequireRoot(t) // only to explain; a machine without ptmx cannot run this
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	var unlock int32
	_, _, e := unix.Syscall(unix.SYS_IOCTL, m.Fd(), unix.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock)))
	require.Zero(t, e)
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

func TestEnumShowsProgressOnTerminal(t *testing.T) {
	src := t.TempDir()
	for i := 0; i < 20; i++ {
		require.NoError(t, os.MkdirAll(filepath.Join(src, fmt.Sprint(i)), 0o755))
	}
	master, slave := openPTY(t)
	out := filepath.Join(t.TempDir(), "t.raw")
	var stdout bytes.Buffer
	rc := run([]string{"--allow-unmounted", src, hash, out}, &stdout, slave)
	require.Equal(t, 0, rc)
	slave.Close()
	var screen []byte
	buf := make([]byte, 4096)
	for {
		n, err := master.Read(buf)
		screen = append(screen, buf[:n]...)
		if err != nil {
			break // EIO once the slave is closed and everything was read
		}
	}
	text := string(screen)
	require.Contains(t, text, "\r\033[K", "status line is redrawn in place")
	require.Contains(t, text, "enumeration complete")
	require.NotContains(t, text, `"msg"`, "no JSON on a terminal")
	require.Contains(t, stdout.String(), "✓ Enumeration complete: 21 records written to "+out)
}
