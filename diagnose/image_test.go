package diagnose

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// twoFiles is a small ext4 image: "small" near the start, "big" (3 MB,
// contiguous) after it.
func twoFiles() testimg.Spec {
	return testimg.Spec{
		FSType: "ext4", BlockSize: 4096, Size: 8 << 20,
		Entries: []testimg.Entry{
			{Path: "small", Kind: testimg.File, Size: 20000, Seed: 1},
			{Path: "big", Kind: testimg.File, Size: 3_000_000, Seed: 2},
		},
	}
}

func openKernelLog(t *testing.T) *KernelLog {
	t.Helper()
	kl, err := OpenKernelLog(KernelLogOptions{})
	if err != nil {
		testenv.SkipOrFail(t, fmt.Sprintf("cannot read the kernel log: %v", err))
	}
	t.Cleanup(func() { kl.Close() })
	return kl
}

func extentsOf(t *testing.T, path string) []Extent {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	exts, method, err := FileExtents(f)
	require.NoError(t, err)
	assert.Equal(t, "fiemap", method)
	return exts
}

// provoke repeats read until the kernel log holds an event of kind for
// dev. The kernel rate-limits these messages machine-wide (10 per 5 s for
// each kind), so while other tests flood the log ours can be suppressed;
// every failed read asks again (failed reads are not cached). Bounded: about
// 40 s, i.e. 8 rate-limit windows.
func provoke(t *testing.T, kl *KernelLog, dev string, kind EventKind, read func() error) {
	t.Helper()
	name := DeviceName(dev)
	for range 40 {
		require.Error(t, read(), "the damaged read must fail")
		require.NoError(t, kl.Poll())
		d := kl.Events([]string{name})[name]
		if kind == EventBeyondEOF && d.BeyondEOF > 0 || kind == EventIOError && d.IOErrors > 0 {
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("the kernel logged no %s for %s in 40 s (rate-limited by other tests' messages?)", kind, name)
}

func setCapacity(t *testing.T, dev string) {
	t.Helper()
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, unix.IoctlSetInt(fd, unix.LOOP_SET_CAPACITY, 0), "LOOP_SET_CAPACITY %s", dev)
}

// A truncated image whose file runs past its end: the read fails, the
// failure is classified, and at the checkpoint the kernel log attributes
// "attempt to access beyond end of device" to this medium's loop device —
// not to a second loop device with a healthy image, read at the same time.
//
// ext4 refuses to mount a device smaller than its superblock says, so the
// image is truncated under the mount and the loop device told its new size
// (LOOP_SET_CAPACITY): the kernel then sees what a truncated floppy gives.
func TestTruncatedImageBeyondEOF(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	kl := openKernelLog(t)

	imgA := testimg.Build(t, twoFiles())
	imgB := testimg.Build(t, twoFiles())
	la := testimg.AttachLoop(t, imgA, 0, 0)
	lb := testimg.AttachLoop(t, imgB, 0, 0)
	ma := testimg.Mount(t, la.Path, "ext4", "")
	mb := testimg.Mount(t, lb.Path, "ext4", "")
	devA, devB := DeviceName(la.Path), DeviceName(lb.Path)

	bigA := filepath.Join(ma, "big")
	exts := extentsOf(t, bigA)
	require.Len(t, exts, 1, "big is one contiguous extent")
	cut := exts[0].Physical + 1<<20 // the image ends 1 MiB into big
	require.NoError(t, testimg.Truncate(imgA, cut))
	setCapacity(t, la.Path)

	got, err := os.ReadFile(filepath.Join(mb, "big"))
	require.NoError(t, err, "the healthy image reads")
	assert.Equal(t, twoFiles().Entries[1].Content(), got)
	head := make([]byte, 1<<20)
	fa, err := os.Open(bigA)
	require.NoError(t, err)
	_, err = fa.ReadAt(head, 0)
	fa.Close()
	require.NoError(t, err, "big's bytes before the cut read")
	assert.Equal(t, twoFiles().Entries[1].Content()[:1<<20], head)

	_, readErr := os.ReadFile(bigA)
	require.Error(t, readErr)
	provoke(t, kl, la.Path, EventBeyondEOF, func() error { _, err := os.ReadFile(bigA); return err })
	assert.True(t, errors.Is(readErr, unix.EIO), "%v", readErr)
	assert.Equal(t, ClassIO, Classify(readErr), "the errno alone says io")

	// The copier's view: no mapfile (health unknown, degraded: 5 and 5).
	tr := NewTracker(DefaultPolicy())
	env := Env{
		Health: HealthUnknown, KernelLog: kl, Devices: []string{la.Path},
		MountPoint: ma, MountDevice: la.Path, Path: bigA, Image: imgA, WorkerID: "test-worker",
	}
	var st unix.Stat_t
	require.NoError(t, unix.Stat(bigA, &st))
	key := Key{Medium: testHash, Dev: int64(st.Dev), Ino: int64(st.Ino)}
	var d Decision
	for n := 1; n <= 5; n++ {
		_, err := os.ReadFile(bigA) // the copier's retry
		require.Error(t, err)
		d = tr.Failure(ctx, key, err, env)
		if n < 5 {
			require.Equal(t, Retry, d.Action)
		}
	}
	require.True(t, d.Checkpoint)
	assert.Equal(t, Skip, d.Action)
	assert.Equal(t, ClassBeyondEOF, d.Class)
	assert.Equal(t, "DIAGNOSTIC_SKIP:BEYOND_EOF", d.ClaimedBy)
	assert.Contains(t, d.LogLines()[1], fmt.Sprintf("SKIPPED ino=%d reason=DIAGNOSTIC_SKIP:BEYOND_EOF", st.Ino))

	checks := map[string]Check{}
	for _, c := range d.Checks {
		checks[c.Name] = c
	}
	require.Contains(t, checks, KernelLogCheck)
	assert.Equal(t, ResultBeyondEOF, checks[KernelLogCheck].Result)
	require.NotEmpty(t, checks[KernelLogCheck].Lines)
	assert.Contains(t, checks[KernelLogCheck].Lines[0], devA+": rw=")
	assert.Equal(t, ResultHealthy, checks[MountCheck].Result, checks[MountCheck].Detail)
	assert.Equal(t, ResultBeyondEOF, checks[ExtentsCheck].Result, checks[ExtentsCheck].Detail)
	assert.Equal(t, ResultBeyondEOF, checks[SizeCheck].Result, checks[SizeCheck].Detail)

	// The damage: big from 1 MiB on, all past the end of the image.
	require.Len(t, d.Damage, 1)
	assert.Equal(t, Damage{FileOffset: 1 << 20, ImageOffset: cut, Length: 3_000_000 - 1<<20, BeyondImage: true}, d.Damage[0])

	// Attribution: the kernel's lines name loop A only.
	require.NoError(t, kl.Poll())
	evA := kl.Events([]string{devA})[devA]
	assert.Positive(t, evA.BeyondEOF)
	for _, ev := range evA.Recent {
		assert.Equal(t, devA, ev.Device)
		assert.True(t, ev.Sector+ev.Sectors > cut/512, "sector %d+%d is past the new end %d", ev.Sector, ev.Sectors, cut/512)
	}
	assert.Empty(t, kl.Events([]string{devB}), "nothing is blamed on the healthy image's loop device")

	// A failure on the healthy medium is not confirmed by A's messages.
	var stB unix.Stat_t
	require.NoError(t, unix.Stat(filepath.Join(mb, "big"), &stB))
	envB := Env{Health: HealthUnknown, KernelLog: kl, Devices: []string{devB}, MountPoint: mb, MountDevice: devB,
		Path: filepath.Join(mb, "big"), Image: imgB}
	keyB := Key{Medium: testHash2, Dev: int64(stB.Dev), Ino: int64(stB.Ino)}
	for range 5 {
		d = tr.Failure(ctx, keyB, errEIO, envB)
	}
	assert.True(t, d.Checkpoint)
	assert.Equal(t, GiveUp, d.Action, "no evidence: the degraded cap gives up instead of skipping")
	assert.Equal(t, ClassIO, d.Class)
	for _, c := range d.Checks {
		assert.Contains(t, []string{ResultClean, ResultHealthy}, c.Result, "%s: %s", c.Name, c.Detail)
	}
	assert.Empty(t, d.Damage)
}

// The image file truncated under an attached loop device whose size is not
// updated: the loop driver fails reads past the backing file's end with
// EIO and the kernel logs "I/O error, dev loopN". The kernel log alone
// confirms an I/O error (skip IO); with the file's extents the cause is
// known exactly (skip BEYOND_EOF).
func TestTruncatedBackingFileIOError(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	kl := openKernelLog(t)
	img := testimg.Build(t, twoFiles())
	l := testimg.AttachLoop(t, img, 0, 0)
	m := testimg.Mount(t, l.Path, "ext4", "")
	big := filepath.Join(m, "big")
	exts := extentsOf(t, big)
	require.NoError(t, testimg.Truncate(img, exts[0].Physical+64<<10))

	_, err := os.ReadFile(big)
	require.Error(t, err)
	require.Equal(t, ClassIO, Classify(err))
	provoke(t, kl, l.Path, EventIOError, func() error { _, err := os.ReadFile(big); return err })

	tr := NewTracker(DefaultPolicy())
	logOnly := Env{Health: HealthOK, KernelLog: kl, Devices: []string{l.Path}}
	var d Decision
	for range 10 {
		d = tr.Failure(ctx, Key{Medium: testHash, Ino: 1}, err, logOnly)
	}
	require.True(t, d.Checkpoint)
	assert.Equal(t, Skip, d.Action)
	assert.Equal(t, "DIAGNOSTIC_SKIP:IO", d.ClaimedBy)
	require.Len(t, d.Checks, 1)
	assert.Equal(t, ResultIOError, d.Checks[0].Result)
	assert.Contains(t, d.Checks[0].Lines[0], "I/O error, dev "+DeviceName(l.Path)+",")

	// A remembered position: a log resumed after the last record read
	// sees none of these messages again; one read from the start does.
	require.NoError(t, kl.Poll())
	seq := kl.LastSeq()
	require.NotZero(t, seq)
	resumed, err := OpenKernelLog(KernelLogOptions{AfterSeq: seq})
	require.NoError(t, err)
	defer resumed.Close()
	require.NoError(t, resumed.Poll())
	assert.Empty(t, resumed.Events([]string{l.Path}))
	assert.GreaterOrEqual(t, resumed.LastSeq(), seq)
	whole, err := OpenKernelLog(KernelLogOptions{FromStart: true})
	require.NoError(t, err)
	defer whole.Close()
	require.NoError(t, whole.Poll())
	assert.Positive(t, whole.Events([]string{l.Path})[DeviceName(l.Path)].IOErrors)

	withExtents := logOnly
	withExtents.Path, withExtents.MountPoint, withExtents.MountDevice = big, m, l.Path
	for range 10 {
		d = tr.Failure(ctx, Key{Medium: testHash, Ino: 2}, err, withExtents)
	}
	assert.Equal(t, Skip, d.Action)
	assert.Equal(t, "DIAGNOSTIC_SKIP:BEYOND_EOF", d.ClaimedBy)
	require.Len(t, d.Damage, 1)
	assert.Equal(t, int64(64<<10), d.Damage[0].FileOffset)
}

// FIEMAP of a file in a mounted ext4 partition (at 1 MiB in a disk image)
// against a synthetic mapfile marking one of the file's blocks bad: exactly
// that block comes back, at the right image offset.
func TestInspectFileOneBadBlock(t *testing.T) {
	testenv.RequireRoot(t)
	const partOff = 1 << 20
	spec := testimg.Spec{FSType: "ext4", BlockSize: 4096, Size: 8 << 20, Entries: []testimg.Entry{
		{Path: "dir/data", Kind: testimg.File, Size: 10*4096 + 100, Seed: 7},
		{Path: "escape", Kind: testimg.Symlink, Target: "/etc"},
	}}
	fsImg := testimg.Build(t, spec)
	disk := filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, testimg.Place(disk, partOff, fsImg))
	l := testimg.AttachLoop(t, disk, partOff, 8<<20)
	m := testimg.Mount(t, l.Path, "ext4", "")
	path := filepath.Join(m, "dir", "data")

	exts := extentsOf(t, path)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	fib, err := FileExtentsFIBMAP(f)
	require.NoError(t, err)
	require.Len(t, fib, len(exts))
	for i := range exts {
		assert.Equal(t, exts[i].Logical, fib[i].Logical)
		assert.Equal(t, exts[i].Physical, fib[i].Physical)
		assert.Equal(t, exts[i].Length, fib[i].Length, "FIBMAP agrees with FIEMAP")
	}

	// Block 3 of the file, in image coordinates.
	bad := partOff + exts[0].Physical + 3*4096
	require.True(t, exts[0].Length >= 4*4096)
	diskSize := int64(partOff + 8<<20)
	mapText := fmt.Sprintf("# current_pos  current_status  current_pass\n0x%X + 1\n"+
		"0x0 0x%X +\n0x%X 0x1000 -\n0x%X 0x%X +\n", bad, bad, bad, bad+0x1000, diskSize-bad-0x1000)
	mf, err := ParseMapfile(strings.NewReader(mapText))
	require.NoError(t, err)

	fd, err := InspectFile(context.Background(), path, FileDamageOptions{Image: disk, Bad: mf.BadRanges()})
	require.NoError(t, err)
	assert.Equal(t, DeviceName(l.Path), fd.Loop)
	assert.Equal(t, int64(partOff), fd.LoopOffset)
	assert.Equal(t, []Damage{{FileOffset: 3 * 4096, ImageOffset: bad, Length: 4096}}, fd.Damaged)
	assert.Equal(t, int64(4096), fd.DamagedBytes)
	assert.False(t, fd.BeyondImage)

	// The translation is right: the image holds the file's bytes there.
	want := make([]byte, 4096)
	_, err = f.ReadAt(want, 3*4096)
	require.NoError(t, err)
	img, err := os.Open(disk)
	require.NoError(t, err)
	defer img.Close()
	have := make([]byte, 4096)
	_, err = img.ReadAt(have, bad)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, have), "image bytes at the damaged offset are the file's block 3")

	// Another image is refused: the file is not on it.
	_, err = InspectFile(context.Background(), path, FileDamageOptions{Image: fsImg})
	assert.True(t, errors.Is(err, ErrWrongImage), "%v", err)

	// Beneath the mount, a symlink in the image cannot lead the check out.
	fd, err = InspectFile(context.Background(), filepath.Join(m, "dir", "data"), FileDamageOptions{Root: m})
	require.NoError(t, err)
	assert.Empty(t, fd.Damaged)
	_, err = InspectFile(context.Background(), filepath.Join(m, "escape", "hostname"), FileDamageOptions{Root: m})
	assert.True(t, errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV), "%v", err)

	// The last, partial block is clipped to the file's size.
	last := exts[len(exts)-1]
	assert.Equal(t, int64(10*4096+100), last.Logical+last.Length)
}

func TestCheckMount(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	img := testimg.Build(t, twoFiles())
	l := testimg.AttachLoop(t, img, 0, 0)
	l2 := testimg.AttachLoop(t, testimg.Build(t, twoFiles()), 0, 0)
	m := testimg.Mount(t, l.Path, "ext4", "")

	st, err := CheckMount(ctx, m, l.Path)
	require.NoError(t, err)
	assert.True(t, st.Healthy(), "%+v", st)
	assert.Equal(t, "ext4", st.FSType)

	st, err = CheckMount(ctx, m, l2.Path)
	require.NoError(t, err)
	assert.False(t, st.Healthy())
	assert.True(t, st.Mounted)
	assert.False(t, st.Matches)
	assert.Contains(t, st.Problem, "not "+DeviceName(l2.Path))

	require.NoError(t, unix.Unmount(m, 0))
	st, err = CheckMount(ctx, m, l.Path)
	require.NoError(t, err)
	assert.False(t, st.Mounted)
	assert.Equal(t, "not mounted", st.Problem)

	// The copier sees ENOENT on the empty mount point; the checkpoint sees
	// why: stale mount, retryable, never skipped.
	tr := NewTracker(DefaultPolicy())
	_, openErr := os.Open(filepath.Join(m, "big"))
	require.Equal(t, ClassMissing, Classify(openErr))
	var d Decision
	for range 5 {
		d = tr.Failure(ctx, Key{Medium: testHash, Ino: 12}, openErr, Env{Health: HealthFailed, MountPoint: m, MountDevice: l.Path, Path: filepath.Join(m, "big")})
	}
	assert.Equal(t, GiveUp, d.Action)
	assert.Equal(t, ClassStaleMount, d.Class)
	assert.Equal(t, StatusFailedRetryable, d.Status)
	assert.Equal(t, ProblemStaleMount, d.Problem)
	require.Len(t, d.Checks, 1, "no extents check on a mount that is gone")
	assert.Equal(t, ResultUnhealthy, d.Checks[0].Result)
}

func TestMediumDevicesAndLoop(t *testing.T) {
	testenv.RequireRoot(t)
	img := testimg.Build(t, twoFiles())
	l1 := testimg.AttachLoop(t, img, 0, 0)
	l2 := testimg.AttachLoop(t, img, 4096, 1<<20)
	other := testimg.AttachLoop(t, testimg.Build(t, twoFiles()), 0, 0)
	devs, err := MediumDevices(img)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{DeviceName(l1.Path), DeviceName(l2.Path)}, devs)
	assert.NotContains(t, devs, DeviceName(other.Path))

	ld, err := Loop(l2.Path)
	require.NoError(t, err)
	assert.Equal(t, int64(4096), ld.Offset)
	assert.Equal(t, int64(1<<20), ld.SizeLimit)
	assert.Equal(t, int64(1<<20), ld.Size)
	assert.Equal(t, img, ld.BackingFile)
}

// Metadata past the end: on a shrunk device, ext4 fails a lookup in a
// directory whose blocks are gone with ENOMEM (the buffer for a block past
// the device's end cannot be made), not EIO. The checkpoint still finds the
// cause: the file cannot even be opened for its extents, and the kernel
// logged beyond-end-of-device for this medium's device.
func TestDirectoryPastEndOfDevice(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	kl := openKernelLog(t)
	spec := testimg.Spec{FSType: "ext4", BlockSize: 1024, Size: 8 << 20, Entries: []testimg.Entry{
		{Path: "aa/big", Kind: testimg.File, Size: 3_000_000, Seed: 4},
	}}
	for i := range 300 {
		spec.Entries = append(spec.Entries, testimg.Entry{Path: fmt.Sprintf("zz/file-with-a-long-name-%03d", i), Kind: testimg.File, Size: 10, Seed: uint64(i)})
	}
	img := testimg.Build(t, spec)
	l := testimg.AttachLoop(t, img, 0, 0)
	m := testimg.Mount(t, l.Path, "ext4", "")
	exts := extentsOf(t, filepath.Join(m, "aa", "big"))
	require.NoError(t, testimg.Truncate(img, exts[0].Physical))
	setCapacity(t, l.Path)

	target := filepath.Join(m, "zz", "file-with-a-long-name-150")
	_, err := os.Open(target)
	require.Error(t, err)
	class := Classify(err)
	t.Logf("open of a name in a directory past the end: %v (class %s)", err, class)
	assert.Contains(t, []Class{ClassTransient, ClassIO}, class)

	tr := NewTracker(DefaultPolicy())
	env := Env{Health: HealthUnknown, KernelLog: kl, Devices: []string{l.Path}, MountPoint: m, MountDevice: l.Path, Path: target, Image: img}
	var d Decision
	for range 5 {
		_, err := os.Open(target)
		require.Error(t, err)
		d = tr.Failure(ctx, Key{Medium: testHash, Ino: 99}, err, env)
	}
	assert.Equal(t, Skip, d.Action, "%+v", d.Checks)
	assert.Equal(t, "DIAGNOSTIC_SKIP:BEYOND_EOF", d.ClaimedBy)
	results := map[string]string{}
	for _, c := range d.Checks {
		results[c.Name] = c.Result
	}
	assert.Equal(t, ResultHealthy, results[MountCheck])
	assert.Equal(t, ResultBeyondEOF, results[SizeCheck], "the filesystem is larger than its device")
	assert.Equal(t, ResultFailed, results[ExtentsCheck], "the file cannot be opened to map it")
	assert.Contains(t, results, KernelLogCheck)
}
