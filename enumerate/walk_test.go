package enumerate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

const findFormat = `%y\034%D\034%i\034%n\034%s\034%Ts\034%p\0`

// findRecords runs the reference: find ROOT -xdev -printf FORMAT, and
// returns its records sorted. Errors on stderr are returned, not fatal: on a
// damaged filesystem find complains and goes on, as the walk must.
func findRecords(t *testing.T, root string) ([]string, string) {
	t.Helper()
	cmd := exec.Command("find", root, "-xdev", "-printf", findFormat)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	if err != nil && stderr.Len() == 0 {
		t.Fatalf("find %s: %v", root, err)
	}
	return splitRecords(t, out.Bytes()), stderr.String()
}

func splitRecords(t *testing.T, b []byte) []string {
	t.Helper()
	if len(b) == 0 {
		return nil
	}
	require.Equal(t, byte(0), b[len(b)-1], "raw output must end with a record terminator")
	recs := strings.Split(string(b[:len(b)-1]), "\x00")
	slices.Sort(recs)
	return recs
}

// walkRecords runs Walk and returns its output, split and sorted, with the
// result. The first record must be the first root's.
func walkRecords(t *testing.T, roots []string, opts Options) ([]string, Result, []byte) {
	t.Helper()
	var out bytes.Buffer
	res, err := Walk(context.Background(), roots, opts, &out)
	require.NoError(t, err)
	raw := out.Bytes()
	return splitRecords(t, raw), res, raw
}

// requireSameRecords compares record sets and prints a short diff.
func requireSameRecords(t *testing.T, want, got []string) {
	t.Helper()
	if slices.Equal(want, got) {
		return
	}
	wm := map[string]bool{}
	for _, r := range want {
		wm[r] = true
	}
	gm := map[string]bool{}
	for _, r := range got {
		gm[r] = true
	}
	var msg []string
	for _, r := range want {
		if !gm[r] && len(msg) < 20 {
			msg = append(msg, fmt.Sprintf("missing: %q", r))
		}
	}
	for _, r := range got {
		if !wm[r] && len(msg) < 40 {
			msg = append(msg, fmt.Sprintf("extra:   %q", r))
		}
	}
	t.Fatalf("record sets differ (find %d, walk %d):\n%s", len(want), len(got), strings.Join(msg, "\n"))
}

// everyKindDeep is testimg's every-kind tree plus a 200-level nesting and a
// path longer than PATH_MAX.
func everyKindDeep() testimg.Spec {
	spec := testimg.EveryKind()
	spec.Entries = append(spec.Entries,
		testimg.Entry{Path: "nest/" + testimg.DeepPath(200, 1), Kind: testimg.File, Data: []byte("200 down\n")},
		testimg.Entry{Path: "long/" + testimg.DeepPath(18, 250), Kind: testimg.File, Data: []byte("beyond PATH_MAX\n")},
	)
	return spec
}

func TestWalkMatchesFind(t *testing.T) {
	testimg.RequireRoot(t)
	spec := everyKindDeep()
	mnt := testimg.MountImage(t, testimg.Build(t, spec), 0, 0, "ext4")

	want, stderr := findRecords(t, mnt)
	require.Empty(t, stderr)
	for _, workers := range []int{1, 3, 16} {
		got, res, raw := walkRecords(t, []string{mnt}, Options{Workers: workers})
		requireSameRecords(t, want, got)
		require.Zero(t, res.Errors)
		require.EqualValues(t, len(want), res.Records)
		require.EqualValues(t, len(raw), res.Bytes)

		// The walk root comes first, and the output reads back record by
		// record with the package's own Reader.
		r := NewReader(bytes.NewReader(raw))
		first, err := r.Read()
		require.NoError(t, err)
		require.Equal(t, mnt, string(first.Path))
		require.Equal(t, TypeDir, first.Type)
		types := map[byte]int{}
		var negative, past2038, deepest, hostile, sparse int
		for rec := first; err == nil; rec, err = r.Read() {
			types[rec.Type]++
			if rec.Mtime < 0 {
				negative++
			}
			if rec.Mtime > 1<<32 {
				past2038++
			}
			if bytes.HasSuffix(rec.Path, []byte("/leaf")) && bytes.Count(rec.Path, []byte("/")) > 200 {
				deepest++
			}
			if bytes.Contains(rec.Path, []byte("field\x1csep")) || bytes.Contains(rec.Path, []byte("new\nline")) {
				hostile++
			}
			if bytes.HasSuffix(rec.Path, []byte("/sparse.bin")) && rec.Size == 3<<20 {
				sparse++
			}
		}
		require.ErrorIs(t, err, io.EOF)
		for _, ty := range []byte("fdlbcps") {
			require.NotZero(t, types[ty], "no record of type %c", ty)
		}
		require.NotZero(t, negative, "no negative mtime")
		require.NotZero(t, past2038, "no mtime past 2106")
		require.Equal(t, 1, deepest, "200-level leaf")
		require.Equal(t, 1, sparse, "sparse file size")
		require.GreaterOrEqual(t, hostile, 4)
	}
}

func TestWalkRootSpellings(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a", "f"), []byte("x"), 0o644))
	require.NoError(t, os.Symlink("a", filepath.Join(dir, "link")))
	t.Chdir(dir)
	for _, root := range []string{dir, dir + "/", dir + "//", ".", "a", "a/", "link", "link/", "a/f"} {
		want, stderr := findRecords(t, root)
		require.Empty(t, stderr)
		got, _, _ := walkRecords(t, []string{root}, Options{})
		requireSameRecords(t, want, got)
	}
}

func TestWalkMissingRoot(t *testing.T) {
	_, err := Walk(context.Background(), []string{filepath.Join(t.TempDir(), "nope")}, Options{}, io.Discard)
	require.ErrorIs(t, err, unix.ENOENT)
	var ee *EntryError
	require.ErrorAs(t, err, &ee)
}

// mountAt attaches image and mounts it read-only on dir (which must exist),
// undone when the test ends (before any mount made earlier).
func mountAt(t *testing.T, image, dir string) {
	t.Helper()
	l := testimg.AttachLoop(t, image, 0, 0)
	require.NoError(t, testimg.TryMount(l.Path, dir, "ext4", "noload"))
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
}

func smallSpec(label string, files ...string) testimg.Spec {
	spec := testimg.Spec{Label: label}
	for i, f := range files {
		spec.Entries = append(spec.Entries, testimg.Entry{Path: f, Kind: testimg.File, Size: int64(i * 100), Seed: uint64(i)})
	}
	return spec
}

func TestWalkDoesNotEnterOtherFilesystem(t *testing.T) {
	testimg.RequireRoot(t)
	outer := testimg.Build(t, smallSpec("outer", "top.txt", "dir/inner.txt", "mnt/hidden-under-mount"))
	inner := testimg.Build(t, smallSpec("inner", "foreign/a", "foreign/b"))
	mnt := testimg.MountImage(t, outer, 0, 0, "ext4")
	mountAt(t, inner, filepath.Join(mnt, "mnt"))

	want, stderr := findRecords(t, mnt)
	require.Empty(t, stderr)
	got, _, _ := walkRecords(t, []string{mnt}, Options{})
	requireSameRecords(t, want, got)
	joined := strings.Join(got, "\n")
	require.Contains(t, joined, mnt+"/mnt", "the mount point itself is recorded")
	require.NotContains(t, joined, "foreign", "the other filesystem is not entered")
	require.NotContains(t, joined, "hidden-under-mount")
}

func TestWalkMultiPartitionMedium(t *testing.T) {
	testimg.RequireRoot(t)
	p1img := testimg.Build(t, smallSpec("p1", "etc/x", "home/u/f"))
	p2img := testimg.Build(t, smallSpec("p2", "data/y", "dir/z"))
	foreign := testimg.Build(t, smallSpec("foreign", "do-not-enter"))
	root := filepath.Join(t.TempDir(), "0123456789abcdef0123456789abcdef")
	for _, d := range []string{"p1", "p2", "elsewhere"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	mountAt(t, p1img, filepath.Join(root, "p1"))
	mountAt(t, p2img, filepath.Join(root, "p2"))
	mountAt(t, foreign, filepath.Join(root, "elsewhere"))
	mountAt(t, foreign, filepath.Join(root, "p1", "home"))

	mounts, err := PartitionMounts(root)
	require.NoError(t, err)
	require.Equal(t, []string{root + "/p1", root + "/p2"}, mounts)

	// The reference: find -xdev on the medium root and on each partition.
	seen := map[string]bool{}
	var want []string
	for _, r := range append([]string{root}, mounts...) {
		recs, stderr := findRecords(t, r)
		require.Empty(t, stderr)
		for _, rec := range recs {
			if !seen[rec] {
				seen[rec] = true
				want = append(want, rec)
			}
		}
	}
	slices.Sort(want)
	got, res, raw := walkRecords(t, []string{root}, Options{EnterMounts: mounts})
	requireSameRecords(t, want, got)
	// p2 is read from its device; p1, with a filesystem mounted beneath
	// it, and the medium root, a plain directory, through system calls.
	require.Equal(t, []string{root + "/p2"}, res.Direct.Roots)
	require.Len(t, res.Direct.Skipped, 2)
	require.Contains(t, strings.Join(res.Direct.Skipped, "\n"), root+"/p1/home\" is mounted beneath it")
	require.True(t, bytes.HasPrefix(raw, []byte("d\x1c")))
	require.Contains(t, string(raw), root+"/p2/data/y\x00")
	require.NotContains(t, string(raw), "do-not-enter")

	// A single-partition medium (the root is itself a mount) has nothing
	// to enter, even if it holds a directory named p1.
	single := testimg.MountImage(t, testimg.Build(t, smallSpec("single", "p1/f")), 0, 0, "ext4")
	mounts, err = PartitionMounts(single)
	require.NoError(t, err)
	require.Empty(t, mounts)
}

func TestWalkIgnore(t *testing.T) {
	testimg.RequireRoot(t)
	mnt := testimg.MountImage(t, testimg.Build(t, testimg.EveryKind()), 0, 0, "ext4")
	patterns := "# leave these out\n/names/[^/]*\\x1c\n\\.bin$\n\n/dirs/[^/]*$\n/times/dir[0-3]$\n"
	m, err := LoadIgnore(strings.NewReader(patterns))
	require.NoError(t, err)

	all, _ := findRecords(t, mnt)
	var want []string
	left := 0
	re := regexp.MustCompile(`/names/[^/]*\x1c|\.bin$|/dirs/[^/]*$|/times/dir[0-3]$`)
	for _, rec := range all {
		path := rec[nthSep(rec, 6)+1:]
		if path != mnt && re.MatchString(path) {
			left++
			continue
		}
		want = append(want, rec)
	}
	require.Greater(t, left, 20)
	got, res, _ := walkRecords(t, []string{mnt}, Options{Ignore: m})
	requireSameRecords(t, want, got)
	require.EqualValues(t, left, res.Ignored)
	// Subtrees of left-out directories are still walked.
	require.Contains(t, strings.Join(got, "\n"), "/inside")
}

func nthSep(s string, n int) int {
	i := -1
	for ; n > 0; n-- {
		i += 1 + strings.IndexByte(s[i+1:], FieldSep)
	}
	return i
}

// dirBlock returns the first data block of path in image, via debugfs.
func dirBlock(t *testing.T, image, path string) int64 {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "blocks "+path, image).Output()
	require.NoError(t, err)
	f := strings.Fields(string(out))
	require.NotEmpty(t, f, "debugfs blocks %s", path)
	n, err := strconv.ParseInt(f[0], 10, 64)
	require.NoError(t, err)
	return n
}

func TestWalkDamagedDirectory(t *testing.T) {
	testimg.RequireRoot(t)
	spec := smallSpec("damaged", "good/a", "good/b", "bad/one", "bad/two", "bad/sub/three", "z/after")
	img := testimg.Build(t, spec)
	// Clobber the directory block of /bad: the inode is fine (so its record
	// exists), its entries are garbage.
	blk := dirBlock(t, img, "/bad")
	garbage := bytes.Repeat([]byte{0xA5}, 4096)
	require.NoError(t, testimg.WriteAt(img, blk*4096, garbage))
	mnt := testimg.MountImage(t, img, 0, 0, "ext4")

	want, stderr := findRecords(t, mnt)
	require.Contains(t, stderr, "bad", "find itself reports the damaged directory")
	var mu sync.Mutex
	var reported []*EntryError
	got, res, _ := walkRecords(t, []string{mnt}, Options{OnError: func(e *EntryError) error {
		mu.Lock()
		defer mu.Unlock()
		reported = append(reported, e)
		return nil
	}})
	requireSameRecords(t, want, got)
	require.Len(t, reported, 1)
	require.EqualValues(t, 1, res.Errors)
	e := reported[0]
	require.Equal(t, mnt+"/bad", e.Path)
	require.Equal(t, "read directory", e.Op)
	var errno unix.Errno
	require.ErrorAs(t, e, &errno)
	require.True(t, errno == unix.EBADMSG || errno == unix.EUCLEAN || errno == unix.EIO, "errno %v", errno)
	require.Contains(t, e.Error(), mnt+"/bad")
	joined := strings.Join(got, "\n")
	for _, p := range []string{"/good/a", "/good/b", "/z/after", "/bad"} {
		require.Contains(t, joined, mnt+p)
	}
}

// stuckFS answers like the real filesystem except for directories named
// stuckName: opening one blocks in a real system call (a read from a pipe
// nobody writes), the way a reader blocks on a dying disk, ignoring
// cancellation. release unblocks it when the test ends.
type stuckFS struct {
	sysFS
	name    string
	r, w    int
	entered chan struct{}
	once    sync.Once
}

func newStuckFS(t *testing.T, name string) *stuckFS {
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	s := &stuckFS{name: name, r: p[0], w: p[1], entered: make(chan struct{})}
	t.Cleanup(func() { unix.Close(s.w) }) // the blocked read returns 0 and the goroutine exits
	return s
}

func (s *stuckFS) openDir(dirfd int, name []byte) (int, error) {
	if string(name[:len(name)-1]) == s.name {
		s.once.Do(func() { close(s.entered) })
		var b [1]byte
		unix.Read(s.r, b[:])
		return -1, unix.EIO
	}
	return s.sysFS.openDir(dirfd, name)
}

func TestWalkStallReturnsPromptly(t *testing.T) {
	testimg.RequireRoot(t)
	spec := smallSpec("stall", "a/1", "a/2", "stuck/never", "b/3")
	mnt := testimg.MountImage(t, testimg.Build(t, spec), 0, 0, "ext4")
	fs := newStuckFS(t, "stuck")

	type outcome struct {
		res Result
		err error
	}
	done := make(chan outcome, 1)
	var out testenv.Buffer
	go func() {
		res, err := Walk(context.Background(), []string{mnt},
			Options{Workers: 2, StallTimeout: 300 * time.Millisecond, fs: fs}, &out)
		done <- outcome{res, err}
	}()
	// A generous bound: the point is that Walk returns at all while a
	// worker is still blocked in the kernel, not how fast.
	select {
	case o := <-done:
		require.ErrorIs(t, o.err, ErrStalled)
		var se *StallError
		require.ErrorAs(t, o.err, &se)
		require.Equal(t, []string{mnt + "/stuck"}, se.Dirs)
		require.Contains(t, o.err.Error(), mnt+"/stuck")
	case <-time.After(30 * time.Second):
		t.Fatal("Walk did not return after the stall timeout while a worker was blocked")
	}
	select {
	case <-fs.entered:
	default:
		t.Fatal("the walk never reached the stuck directory")
	}
	// Nothing is written after Walk returned.
	n := out.Len()
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, n, out.Len())
}

func TestWalkCancelWhileStuck(t *testing.T) {
	testimg.RequireRoot(t)
	mnt := testimg.MountImage(t, testimg.Build(t, smallSpec("cancel", "stuck/x", "ok/y")), 0, 0, "ext4")
	fs := newStuckFS(t, "stuck")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Walk(ctx, []string{mnt}, Options{StallTimeout: -1, fs: fs}, io.Discard)
		done <- err
	}()
	<-fs.entered
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(30 * time.Second):
		t.Fatal("Walk did not return after cancellation while a worker was blocked")
	}
}

// failFS fails reading directories named failName with EIO.
type failFS struct {
	sysFS
	failName string
	failFd   sync.Map
}

func (f *failFS) openDir(dirfd int, name []byte) (int, error) {
	fd, err := f.sysFS.openDir(dirfd, name)
	if err == nil && string(name[:len(name)-1]) == f.failName {
		f.failFd.Store(fd, true)
	}
	return fd, err
}

func (f *failFS) getdents(fd int, buf []byte) (int, error) {
	if _, ok := f.failFd.Load(fd); ok {
		return 0, unix.EIO
	}
	return f.sysFS.getdents(fd, buf)
}

func (f *failFS) close(fd int) error {
	f.failFd.Delete(fd)
	return f.sysFS.close(fd)
}

func TestWalkOnErrorCanAbort(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "broken", "x"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "fine"), 0o755))
	stop := errors.New("operator said stop")
	_, err := Walk(context.Background(), []string{dir}, Options{
		fs:      &failFS{failName: "broken"},
		OnError: func(e *EntryError) error { return fmt.Errorf("%w: %w", stop, e) },
	}, io.Discard)
	require.ErrorIs(t, err, stop)
	require.ErrorIs(t, err, unix.EIO)
	require.Contains(t, err.Error(), dir+"/broken")

	// Without a callback the error is counted and the walk goes on.
	got, res, _ := walkRecords(t, []string{dir}, Options{fs: &failFS{failName: "broken"}})
	require.EqualValues(t, 1, res.Errors)
	require.Len(t, got, 3) // root, broken, fine
}

type failingSink struct{ n int }

func (f *failingSink) Write(p []byte) (int, error) {
	f.n++
	if f.n > 1 {
		return 0, unix.ENOSPC
	}
	return len(p), nil
}

func TestWalkSinkError(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 3000; i++ {
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("file-with-a-long-name-%05d", i)), nil, 0o644))
	}
	_, err := Walk(context.Background(), []string{dir}, Options{}, &failingSink{})
	require.ErrorIs(t, err, unix.ENOSPC)
}

func TestWalkProgress(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 50; i++ {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, fmt.Sprint(i), "sub"), 0o755))
	}
	var last Progress
	calls := 0
	res, err := Walk(context.Background(), []string{dir}, Options{Progress: func(p Progress) {
		calls++
		last = p
	}}, io.Discard)
	require.NoError(t, err)
	require.GreaterOrEqual(t, calls, 1)
	require.True(t, last.Done)
	require.EqualValues(t, 100, last.Entries)
	require.EqualValues(t, 101, last.Dirs)
	require.EqualValues(t, 101, res.Records)
	require.EqualValues(t, 101, res.Dirs)
}

func TestParseDirents(t *testing.T) {
	// Two records as the kernel lays them out: ino, off, reclen, type, name\0, padding.
	mk := func(ino uint64, name string) []byte {
		rl := (19 + len(name) + 1 + 7) &^ 7
		b := make([]byte, rl)
		b[0] = byte(ino)
		b[16] = byte(rl)
		copy(b[19:], name)
		return b
	}
	buf := slices.Concat(mk(1, "."), mk(2, ".."), mk(7, "a\x1cb"), mk(9, "..."), mk(3, ".x"))
	got := parseDirents(buf, nil)
	var names []string
	for _, d := range got {
		names = append(names, string(d.name))
	}
	require.Equal(t, []string{"a\x1cb\x00", "...\x00", ".x\x00"}, names)
	require.EqualValues(t, 7, got[0].ino)
	// A truncated buffer stops cleanly.
	require.Len(t, parseDirents(buf[:len(buf)-3], nil), 2)
}

// A root whose lstat never returns is caught by the watchdog too.
func TestWalkStallOnRoot(t *testing.T) {
	dir := t.TempDir()
	fs := &stuckStatFS{stuckFS: newStuckFS(t, "")}
	done := make(chan error, 1)
	go func() {
		_, err := Walk(context.Background(), []string{dir}, Options{StallTimeout: 200 * time.Millisecond, fs: fs}, io.Discard)
		done <- err
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrStalled)
	case <-time.After(30 * time.Second):
		t.Fatal("Walk did not return while the root's lstat was blocked")
	}
}

type stuckStatFS struct{ *stuckFS }

func (s *stuckStatFS) lstatAt(dirfd int, name []byte, st *unix.Stat_t) error {
	var b [1]byte
	unix.Read(s.r, b[:])
	return unix.EIO
}
