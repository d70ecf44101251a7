package loopdev

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
)

// ---- image builders (mkfs -d from e2fsprogs; MBR bytes written here) ----

// mkfsImage makes a typ filesystem image (ext2/3/4) of size bytes holding
// files, with mkfs.<typ> -d.
func mkfsImage(t *testing.T, path, typ string, size int64, label string, files map[string]string) string {
	t.Helper()
	stage := t.TempDir()
	for name, body := range files {
		p := filepath.Join(stage, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	}
	require.NoError(t, os.WriteFile(path, nil, 0o644))
	require.NoError(t, os.Truncate(path, size))
	out, err := exec.Command("mkfs."+typ, "-q", "-F", "-L", label, "-d", stage, path).CombinedOutput()
	require.NoError(t, err, "mkfs.%s: %s", typ, out)
	return path
}

// dirtyJournal leaves a committed, unreplayed transaction in the journal
// (debugfs journal_open/journal_write/journal_close), as a crash does.
func dirtyJournal(t *testing.T, path string) {
	t.Helper()
	script := filepath.Join(t.TempDir(), "dirty.debugfs")
	require.NoError(t, os.WriteFile(script, []byte("jo\njw -b 300 /dev/null\njc\n"), 0o644))
	out, err := exec.Command("debugfs", "-w", "-f", script, path).CombinedOutput()
	require.NoError(t, err, string(out))
	b := make([]byte, 4)
	f, err := os.Open(path)
	require.NoError(t, err)
	_, err = f.ReadAt(b, 1024+0x60)
	f.Close()
	require.NoError(t, err)
	require.NotZero(t, binary.LittleEndian.Uint32(b)&0x4, "needs_recovery must be set")
}

type mbrPart struct {
	typ        byte
	start, cnt uint32 // sectors
	fs         string // filesystem image copied to start, if any
}

// writeDisk makes a disk image of size bytes with an MBR holding primaries
// and, inside the first extended primary, a chain of logical partitions
// (their start and count absolute here).
func writeDisk(t *testing.T, path string, size int64, primaries []mbrPart, logicals []mbrPart) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Truncate(size))
	mbr := make([]byte, 512)
	var extStart uint32
	for i, p := range primaries {
		e := mbr[446+16*i:]
		e[4] = p.typ
		binary.LittleEndian.PutUint32(e[8:], p.start)
		binary.LittleEndian.PutUint32(e[12:], p.cnt)
		if p.typ == 0x05 {
			extStart = p.start
		}
	}
	mbr[510], mbr[511] = 0x55, 0xaa
	_, err = f.WriteAt(mbr, 0)
	require.NoError(t, err)
	// The first EBR sits at the start of the extended container, the
	// others one sector before their logical; links are relative to the
	// container, logical starts to their own EBR.
	ebrAt := func(i int) uint32 {
		if i == 0 {
			return extStart
		}
		return logicals[i].start - 1
	}
	for i, l := range logicals {
		ebr := make([]byte, 512)
		e := ebr[446:]
		e[4] = l.typ
		binary.LittleEndian.PutUint32(e[8:], l.start-ebrAt(i))
		binary.LittleEndian.PutUint32(e[12:], l.cnt)
		if i+1 < len(logicals) {
			n := logicals[i+1]
			e[16+4] = 0x05
			binary.LittleEndian.PutUint32(e[16+8:], ebrAt(i+1)-extStart)
			binary.LittleEndian.PutUint32(e[16+12:], n.cnt+1)
		}
		ebr[510], ebr[511] = 0x55, 0xaa
		_, err = f.WriteAt(ebr, int64(ebrAt(i))*512)
		require.NoError(t, err)
	}
	for _, p := range append(append([]mbrPart{}, primaries...), logicals...) {
		if p.fs == "" {
			continue
		}
		b, err := os.ReadFile(p.fs)
		require.NoError(t, err)
		_, err = f.WriteAt(b, int64(p.start)*512)
		require.NoError(t, err)
	}
}

// ---- harness ----

type env struct {
	t    *testing.T
	dir  string
	root string
	log  *testenv.Buffer
}

// newEnv checks root and gives a mount root and image directory of the
// test's own, with an Unmount registered as a safety net.
func newEnv(t *testing.T) *env {
	// Mount reaps NTT's stale loops: never while a test keeps one on purpose.
	testenv.Shared(t, testenv.StaleLoops)
	return env0(t)
}

// newStaleEnv is newEnv for a test that makes or reaps stale loops: it
// holds the stale-loop lock alone.
func newStaleEnv(t *testing.T) *env {
	testenv.Exclusive(t, testenv.StaleLoops)
	return env0(t)
}

func env0(t *testing.T) *env {
	testenv.RequireRoot(t)
	if _, err := os.Stat(loopControl); err != nil {
		testenv.SkipOrFail(t, "no /dev/loop-control")
	}
	dir := t.TempDir()
	e := &env{t: t, dir: dir, root: filepath.Join(dir, "mnt"), log: &testenv.Buffer{}}
	return e
}

func (e *env) logger() *slog.Logger { return slog.New(slog.NewTextHandler(e.log, nil)) }

// guard unmounts the medium and detaches the image's loops at the end of
// the test, whatever happened (registered after TempDir, so it runs first).
func (e *env) guard(hash, image string) {
	e.t.Cleanup(func() {
		_, _ = Unmount(context.Background(), hash, e.root, &UnmountOptions{Image: image})
	})
}

func (e *env) mount(hash, image string) (*Layout, error) {
	e.guard(hash, image)
	return Mount(context.Background(), MountSpec{Medium: hash, Image: image, Root: e.root, Logger: e.logger()})
}

// imageLoops lists the loop devices backed by image.
func imageLoops(t *testing.T, image string) []Loop {
	t.Helper()
	ls, err := FindByImage(image)
	require.NoError(t, err)
	return ls
}

// loopsAfterDetach is imageLoops once an autoclear under way has had a
// moment to finish (the kernel may complete it just after umount returns).
func loopsAfterDetach(t *testing.T, image string) []Loop {
	t.Helper()
	var ls []Loop
	for i := 0; i < 100; i++ {
		if ls = imageLoops(t, image); len(ls) == 0 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ls
}

func mountEntry(t *testing.T, dir string) *MountInfo {
	t.Helper()
	ms, err := Mounts(func(m *MountInfo) (bool, bool) { return m.Mountpoint != dir, false })
	require.NoError(t, err)
	if len(ms) == 0 {
		return nil
	}
	return ms[len(ms)-1]
}

func (e *env) requireGone(hash, image string) {
	t := e.t
	t.Helper()
	require.Empty(t, loopsAfterDetach(t, image), "no loop device of the image may remain")
	_, err := os.Stat(filepath.Join(e.root, hash))
	require.True(t, errors.Is(err, os.ErrNotExist), "mount directory must be gone: %v", err)
	_, err = os.Stat(filepath.Join(e.root, "."+hash+".layout.json"))
	require.True(t, errors.Is(err, os.ErrNotExist), "layout record must be gone: %v", err)
}

const (
	h1 = "c9894f1681b5b542eb3a4b75967e9aea"
	h2 = "ece03c6779caa14be2b00d380add8475"
)

// ---- tests ----

func TestMountSingleExt4(t *testing.T) {
	e := newEnv(t)
	spec := testimg.Spec{FSType: "ext4", Size: 16 << 20, Label: "single", Entries: []testimg.Entry{
		{Path: "docs", Kind: testimg.Dir},
		{Path: "docs/report.txt", Data: []byte("evidence\n")},
		{Path: "link", Kind: testimg.Symlink, Target: "docs/report.txt"},
	}}
	img := filepath.Join(e.dir, h1+".img")
	require.NoError(t, testimg.BuildImage(img, spec))

	lay, err := e.mount(h1, img)
	require.NoError(t, err)
	base := filepath.Join(e.root, h1)
	require.Equal(t, LayoutSingle, lay.Layout)
	require.Equal(t, base, lay.Mount)
	require.Equal(t, "ext4", lay.FSType)
	require.Equal(t, int64(0), lay.Offset)
	require.Equal(t, img, lay.Image)
	require.True(t, strings.HasPrefix(lay.Device, "/dev/loop"))
	require.NoError(t, testimg.Check(base, spec))

	m := mountEntry(t, base)
	require.NotNil(t, m)
	require.Equal(t, lay.Device, m.Source)
	for _, o := range []string{"ro", "nosuid", "nodev", "noexec", "noatime"} {
		require.Contains(t, strings.Split(m.Options, ","), o)
	}
	ls := imageLoops(t, img)
	require.Len(t, ls, 1)
	require.True(t, ls[0].ReadOnly)
	require.True(t, ls[0].Autoclear)
	require.False(t, ls[0].Stale())

	st, err := Status(h1, e.root)
	require.NoError(t, err)
	require.Equal(t, lay.Device, st.Device)
	require.Equal(t, img, st.Image)
	require.Equal(t, LayoutSingle, st.Layout)

	again, err := e.mount(h1, img)
	require.NoError(t, err)
	require.True(t, again.AlreadyMounted)
	require.Equal(t, lay.Device, again.Device)
	require.Contains(t, e.log.String(), "Already mounted at "+base)

	rep, err := Unmount(context.Background(), h1, e.root, nil)
	require.NoError(t, err)
	require.Equal(t, []string{base}, rep.Unmounted)
	e.requireGone(h1, img)
	_, err = Status(h1, e.root)
	require.ErrorIs(t, err, ErrNotMounted)

	// Idempotent.
	rep, err = Unmount(context.Background(), h1, e.root, nil)
	require.NoError(t, err)
	require.Empty(t, rep.Unmounted)
}

func TestMountDirtyJournals(t *testing.T) {
	e := newEnv(t)
	for _, typ := range []string{"ext4", "ext3"} {
		img := mkfsImage(t, filepath.Join(e.dir, typ+".img"), typ, 16<<20, "dirty", map[string]string{"a.txt": "A"})
		dirtyJournal(t, img)

		// A plain read-only mount of the read-only loop fails: the kernel
		// wants to replay the journal and cannot write.
		a, err := Attach(context.Background(), img, AttachParams{Autoclear: true})
		require.NoError(t, err)
		plain := filepath.Join(e.dir, "plain-"+typ)
		require.NoError(t, os.Mkdir(plain, 0o755))
		err = unix.Mount(a.Device, plain, typ, unix.MS_RDONLY, "")
		if err == nil {
			_ = unix.Unmount(plain, 0)
		}
		require.NoError(t, a.Detach())
		require.Error(t, err, "%s: plain ro mount of a dirty journal should fail", typ)

		hash := map[string]string{"ext4": h1, "ext3": h2}[typ]
		lay, err := e.mount(hash, img)
		require.NoError(t, err, typ)
		require.Equal(t, typ, lay.FSType)
		b, err := os.ReadFile(filepath.Join(lay.Mount, "a.txt"))
		require.NoError(t, err)
		require.Equal(t, "A", string(b))
		m := mountEntry(t, lay.Mount)
		want := map[string]string{"ext4": "noload", "ext3": "norecovery"}[typ]
		// The kernel shows both spellings as "norecovery".
		require.True(t, strings.Contains(m.VFSOptions, want) || strings.Contains(m.VFSOptions, "norecovery"), m.VFSOptions)
		_, err = Unmount(context.Background(), hash, e.root, nil)
		require.NoError(t, err)
		e.requireGone(hash, img)
	}
}

func TestMountMBRExt4AndSwapIsSingle(t *testing.T) {
	e := newEnv(t)
	p1 := mkfsImage(t, filepath.Join(e.dir, "p1.fs"), "ext4", 8<<20, "p1", map[string]string{"one": "1"})
	sw := filepath.Join(e.dir, "swap.fs")
	require.NoError(t, os.WriteFile(sw, nil, 0o644))
	require.NoError(t, os.Truncate(sw, 4<<20))
	out, err := exec.Command("mkswap", sw).CombinedOutput()
	require.NoError(t, err, string(out))
	img := filepath.Join(e.dir, "disk.img")
	writeDisk(t, img, 16<<20, []mbrPart{{0x83, 2048, 16384, p1}, {0x82, 18432, 8192, sw}}, nil)

	lay, err := e.mount(h1, img)
	require.NoError(t, err)
	require.Equal(t, LayoutSingle, lay.Layout)
	require.Equal(t, filepath.Join(e.root, h1), lay.Mount)
	require.Equal(t, int64(2048*512), lay.Offset)
	require.Len(t, lay.Partitions, 2)
	require.Equal(t, StatusMounted, lay.Partitions[0].Status)
	require.Equal(t, lay.Mount, lay.Partitions[0].Mount)
	require.Equal(t, StatusSkipped, lay.Partitions[1].Status)
	require.Equal(t, ReasonSwap, lay.Partitions[1].Reason)
	_, err = os.Stat(filepath.Join(lay.Mount, "one"))
	require.NoError(t, err)
	ls := imageLoops(t, img)
	require.Len(t, ls, 1)
	require.Equal(t, int64(2048*512), ls[0].Offset)
	require.Equal(t, int64(16384*512), ls[0].SizeLimit)

	// Status re-derives the skipped swap partition from the image.
	st, err := Status(h1, e.root)
	require.NoError(t, err)
	require.Equal(t, "mbr", st.Table)
	require.Len(t, st.Partitions, 2)
	require.Equal(t, StatusMounted, st.Partitions[0].Status)
	require.Equal(t, ReasonSwap, st.Partitions[1].Reason)

	_, err = Unmount(context.Background(), h1, e.root, nil)
	require.NoError(t, err)
	e.requireGone(h1, img)
}

func TestMountTwoPartitionsIsMulti(t *testing.T) {
	e := newEnv(t)
	p1 := mkfsImage(t, filepath.Join(e.dir, "p1.fs"), "ext4", 8<<20, "p1", map[string]string{"one": "1"})
	p2 := mkfsImage(t, filepath.Join(e.dir, "p2.fs"), "ext2", 4<<20, "p2", map[string]string{"two": "2"})
	img := filepath.Join(e.dir, "disk.img")
	writeDisk(t, img, 16<<20, []mbrPart{{0x83, 2048, 16384, p1}, {0x83, 18432, 8192, p2}}, nil)

	lay, err := e.mount(h1, img)
	require.NoError(t, err)
	base := filepath.Join(e.root, h1)
	require.Equal(t, LayoutMulti, lay.Layout)
	require.Equal(t, base, lay.Mount)
	require.Equal(t, []string{base + "/p1", base + "/p2"}, lay.MountPoints())
	require.Equal(t, "ext4", lay.Partitions[0].FSType)
	require.Equal(t, "ext2", lay.Partitions[1].FSType)
	_, err = os.Stat(filepath.Join(base, "p1", "one"))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(base, "p2", "two"))
	require.NoError(t, err)
	require.Nil(t, mountEntry(t, base), "the base of a multi layout is a plain directory")
	require.Len(t, imageLoops(t, img), 2)
	// What was mounted is recorded for the copier: image, devices, offsets.
	b, err := os.ReadFile(filepath.Join(e.root, "."+h1+".layout.json"))
	require.NoError(t, err)
	var rec Layout
	require.NoError(t, json.Unmarshal(b, &rec))
	require.Equal(t, lay.Image, rec.Image)
	require.Equal(t, lay.Partitions, rec.Partitions)
	require.Equal(t, int64(2048*512), rec.Partitions[0].Offset)

	st, err := Status(h1, e.root)
	require.NoError(t, err)
	require.Equal(t, LayoutMulti, st.Layout)
	require.Equal(t, lay.MountPoints(), st.MountPoints())
	// Found mounted without its record (mounted by hand or an older
	// build): the log says the copier will not trust it.
	require.NoError(t, os.Remove(filepath.Join(e.root, "."+h1+".layout.json")))
	again, err := e.mount(h1, img)
	require.NoError(t, err)
	require.True(t, again.AlreadyMounted)
	require.Contains(t, e.log.String(), "no layout record for this mount")

	rep, err := Unmount(context.Background(), h1, e.root, nil)
	require.NoError(t, err)
	require.Len(t, rep.Unmounted, 2)
	e.requireGone(h1, img)
}

func TestMountLogicalPartitions(t *testing.T) {
	e := newEnv(t)
	l5 := mkfsImage(t, filepath.Join(e.dir, "l5.fs"), "ext2", 4<<20, "l5", map[string]string{"five": "5"})
	l6 := mkfsImage(t, filepath.Join(e.dir, "l6.fs"), "ext2", 4<<20, "l6", map[string]string{"six": "6"})
	img := filepath.Join(e.dir, "disk.img")
	writeDisk(t, img, 16<<20,
		[]mbrPart{{0x05, 2048, 28672, ""}},
		[]mbrPart{{0x83, 4096, 8192, l5}, {0x83, 14336, 8192, l6}})

	lay, err := e.mount(h1, img)
	require.NoError(t, err)
	require.Equal(t, LayoutMulti, lay.Layout)
	require.Len(t, lay.Partitions, 3)
	require.Equal(t, ReasonExtended, lay.Partitions[0].Reason)
	require.Equal(t, 5, lay.Partitions[1].Num)
	require.Equal(t, 6, lay.Partitions[2].Num)
	base := filepath.Join(e.root, h1)
	b, err := os.ReadFile(filepath.Join(base, "p5", "five"))
	require.NoError(t, err)
	require.Equal(t, "5", string(b))
	b, err = os.ReadFile(filepath.Join(base, "p6", "six"))
	require.NoError(t, err)
	require.Equal(t, "6", string(b))
	_, err = Unmount(context.Background(), h1, e.root, nil)
	require.NoError(t, err)
	e.requireGone(h1, img)
}

func TestMountTruncatedPartition(t *testing.T) {
	e := newEnv(t)
	p1 := mkfsImage(t, filepath.Join(e.dir, "p1.fs"), "ext4", 8<<20, "p1", map[string]string{"one": "1"})
	p2 := mkfsImage(t, filepath.Join(e.dir, "p2.fs"), "ext4", 8<<20, "p2", map[string]string{"two": "2"})
	img := filepath.Join(e.dir, "disk.img")
	writeDisk(t, img, 24<<20, []mbrPart{{0x83, 2048, 16384, p1}, {0x83, 18432, 16384, p2}}, nil)
	// The rescue stopped 4 MiB into partition 2.
	require.NoError(t, os.Truncate(img, 13<<20))

	lay, err := e.mount(h1, img)
	require.NoError(t, err)
	require.Equal(t, LayoutSingle, lay.Layout)
	require.Equal(t, StatusMounted, lay.Partitions[0].Status)
	require.Equal(t, StatusSkipped, lay.Partitions[1].Status)
	require.Equal(t, ReasonTruncated, lay.Partitions[1].Reason)
	require.Contains(t, lay.Partitions[1].Detail, fmt.Sprint(13<<20))
	require.Len(t, imageLoops(t, img), 1, "no loop is attached for the truncated partition")
	_, err = Unmount(context.Background(), h1, e.root, nil)
	require.NoError(t, err)
	e.requireGone(h1, img)
}

func TestMountZipOffset(t *testing.T) {
	e := newEnv(t)
	fsImg := mkfsImage(t, filepath.Join(e.dir, "zip.fs"), "ext2", 8<<20, "zip", map[string]string{"z": "Z"})
	b, err := os.ReadFile(fsImg)
	require.NoError(t, err)
	img := filepath.Join(e.dir, "zip.img")
	require.NoError(t, os.WriteFile(img, append(make([]byte, zipOffset), b...), 0o644))

	lay, err := e.mount(h1, img)
	require.NoError(t, err)
	require.Equal(t, int64(zipOffset), lay.Offset)
	require.Equal(t, "ext2", lay.FSType)
	got, err := os.ReadFile(filepath.Join(lay.Mount, "z"))
	require.NoError(t, err)
	require.Equal(t, "Z", string(got))
	require.Contains(t, e.log.String(), "trying offset 16384")
	_, err = Unmount(context.Background(), h1, e.root, nil)
	require.NoError(t, err)
	e.requireGone(h1, img)
}

func TestStaleLoopIsReaped(t *testing.T) {
	e := newStaleEnv(t) // it reaps or makes stale loops
	img := mkfsImage(t, filepath.Join(e.dir, h1+".img"), "ext4", 16<<20, "old", map[string]string{"v": "old"})
	// A loop left behind on the old copy of the image (no autoclear).
	old, err := Attach(context.Background(), img, AttachParams{})
	require.NoError(t, err)
	oldLoop := old.Loop
	require.NoError(t, old.Close())
	t.Cleanup(func() { _ = detachLoop(oldLoop) })

	// The image is deleted and written again under the same name.
	require.NoError(t, os.Remove(img))
	mkfsImage(t, img, "ext4", 16<<20, "new", map[string]string{"v": "new"})
	ls, err := List()
	require.NoError(t, err)
	var seen bool
	for _, l := range ls {
		if l.Number == oldLoop.Number && l.BackingIno == oldLoop.BackingIno {
			seen = true
			require.True(t, l.Deleted, "the old loop must show as deleted")
			require.Equal(t, img, l.BackingFile)
		}
	}
	require.True(t, seen)

	lay, err := e.mount(h1, img)
	require.NoError(t, err)
	require.Contains(t, e.log.String(), fmt.Sprintf("Cleaning up stale loop device: %s (deleted inode)", oldLoop.Device))
	ls, err = List()
	require.NoError(t, err)
	for _, l := range ls {
		require.False(t, l.Number == oldLoop.Number && l.BackingIno == oldLoop.BackingIno, "stale loop still attached")
	}
	got, err := os.ReadFile(filepath.Join(lay.Mount, "v"))
	require.NoError(t, err)
	require.Equal(t, "new", string(got))
	require.Len(t, imageLoops(t, img), 1)
	_, err = Unmount(context.Background(), h1, e.root, nil)
	require.NoError(t, err)
	e.requireGone(h1, img)
}

func TestConcurrentMountsShareOne(t *testing.T) {
	e := newEnv(t)
	img := mkfsImage(t, filepath.Join(e.dir, "c.img"), "ext4", 16<<20, "c", map[string]string{"x": "x"})
	e.guard(h1, img)
	const n = 10
	var wg sync.WaitGroup
	lays := make([]*Layout, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			lays[i], errs[i] = Mount(context.Background(), MountSpec{Medium: h1, Image: img, Root: e.root})
		}(i)
	}
	close(start)
	wg.Wait()
	fresh := 0
	for i := 0; i < n; i++ {
		require.NoError(t, errs[i])
		require.Equal(t, lays[0].Device, lays[i].Device)
		require.Equal(t, lays[0].Mount, lays[i].Mount)
		if !lays[i].AlreadyMounted {
			fresh++
		}
	}
	require.Equal(t, 1, fresh, "exactly one call mounts")
	ms, err := Mounts(MountpointFilter(filepath.Join(e.root, h1)))
	require.NoError(t, err)
	require.Len(t, ms, 1, "one mount")
	require.Len(t, imageLoops(t, img), 1, "one loop")
	_, err = Unmount(context.Background(), h1, e.root, nil)
	require.NoError(t, err)
	e.requireGone(h1, img)
}

// The flock half of the medium lock: a second process cannot take the
// lock while this one holds it, and can once it is released.
func TestLockAcrossProcesses(t *testing.T) {
	if root := os.Getenv("LOOPDEV_LOCK_CHILD"); root != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		unlock, err := lockMedium(ctx, testHash, root)
		if err != nil {
			fmt.Println("LOCK-BUSY")
			return
		}
		unlock()
		fmt.Println("LOCK-TAKEN")
		return
	}
	root := t.TempDir()
	child := func() string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLockAcrossProcesses$", "-test.count=1")
		cmd.Env = append(os.Environ(), "LOOPDEV_LOCK_CHILD="+root)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		return string(out)
	}
	unlock, err := lockMedium(context.Background(), testHash, root)
	require.NoError(t, err)
	require.Contains(t, child(), "LOCK-BUSY")
	unlock()
	require.Contains(t, child(), "LOCK-TAKEN")
}

func TestFailureAfterAttachLeavesNothing(t *testing.T) {
	e := newEnv(t)
	// Single: fail right after the first attach.
	img := mkfsImage(t, filepath.Join(e.dir, "f.img"), "ext4", 16<<20, "f", nil)
	injected := errors.New("injected failure")
	var attachedDev string
	testHookAfterAttach = func(a *Attached) error { attachedDev = a.Device; return injected }
	t.Cleanup(func() { testHookAfterAttach = nil })
	_, err := e.mount(h1, img)
	require.ErrorIs(t, err, injected)
	require.NotEmpty(t, attachedDev, "the hook ran after a real attach")
	e.requireGone(h1, img)

	// Multi: partition 1 is mounted, then the second attach fails.
	p1 := mkfsImage(t, filepath.Join(e.dir, "p1.fs"), "ext4", 8<<20, "p1", nil)
	p2 := mkfsImage(t, filepath.Join(e.dir, "p2.fs"), "ext2", 4<<20, "p2", nil)
	disk := filepath.Join(e.dir, "disk.img")
	writeDisk(t, disk, 16<<20, []mbrPart{{0x83, 2048, 16384, p1}, {0x83, 18432, 8192, p2}}, nil)
	calls := 0
	testHookAfterAttach = func(a *Attached) error {
		calls++
		if calls == 2 {
			require.NotNil(t, mountEntry(t, filepath.Join(e.root, h2, "p1")), "p1 is mounted by now")
			return injected
		}
		return nil
	}
	_, err = e.mount(h2, disk)
	require.ErrorIs(t, err, injected)
	require.Equal(t, 2, calls)
	e.requireGone(h2, disk)
	ms, err := Mounts(MountpointFilter(filepath.Join(e.root, h2)))
	require.NoError(t, err)
	require.Empty(t, ms)
}

func TestMountTimeoutIsAnError(t *testing.T) {
	e := newEnv(t)
	img := mkfsImage(t, filepath.Join(e.dir, "slow.img"), "ext4", 16<<20, "slow", nil)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	sysMount = func(src, target, fstype string, flags uintptr, data string) error {
		entered <- struct{}{}
		<-release // a mount stuck in the kernel
		return unix.EIO
	}
	t.Cleanup(func() { close(release); sysMount = unix.Mount })
	e.guard(h1, img)
	lay, err := Mount(context.Background(), MountSpec{Medium: h1, Image: img, Root: e.root, Timeout: 200 * time.Millisecond})
	<-entered
	require.ErrorIs(t, err, ErrMountTimeout)
	var me *MountError
	require.ErrorAs(t, err, &me)
	require.Equal(t, "ext4", me.FSType)
	require.NotNil(t, lay)
	e.requireGone(h1, img)
}

func TestMountRefusesArchiveAndReportsFailures(t *testing.T) {
	e := newEnv(t)
	if _, err := exec.LookPath("bzip2"); err != nil {
		testenv.SkipOrFail(t, "bzip2 not installed (tar -j)")
	}
	// A tar.bz2 named .img.
	src := filepath.Join(e.dir, "f.txt")
	require.NoError(t, os.WriteFile(src, []byte("data"), 0o644))
	arch := filepath.Join(e.dir, h1+".img")
	out, err := exec.Command("tar", "-cjf", arch, "-C", e.dir, "f.txt").CombinedOutput()
	require.NoError(t, err, string(out))
	_, err = e.mount(h1, arch)
	require.ErrorIs(t, err, ErrNotADisk)
	require.Contains(t, err.Error(), "bzip2")
	e.requireGone(h1, arch)

	// A FAT12 floppy: this kernel has no vfat, so the mount fails for
	// real; the failure is reported and nothing is left behind.
	fat := make([]byte, 1474560)
	copy(fat, []byte{0xeb, 0x3c, 0x90})
	binary.LittleEndian.PutUint16(fat[11:], 512)
	fat[13], fat[16], fat[21] = 1, 2, 0xf0
	binary.LittleEndian.PutUint16(fat[14:], 1)
	binary.LittleEndian.PutUint16(fat[17:], 224)
	binary.LittleEndian.PutUint16(fat[19:], 2880)
	binary.LittleEndian.PutUint16(fat[22:], 9)
	fat[510], fat[511] = 0x55, 0xaa
	floppy := filepath.Join(e.dir, "floppy.img")
	require.NoError(t, os.WriteFile(floppy, fat, 0o644))
	if fsSupported("vfat") {
		t.Log("kernel has vfat: the floppy mounts, not testing the failure path with it")
		return
	}
	lay, err := e.mount(h2, floppy)
	require.ErrorIs(t, err, ErrNothingMounted)
	require.Equal(t, LayoutSingle, lay.Layout)
	var me *MountError
	require.True(t, strings.Contains(err.Error(), "vfat"), err.Error())
	require.False(t, errors.As(err, &me), "a per-partition failure is reported in words, not as the cause")
	e.requireGone(h2, floppy)
}

func fsSupported(name string) bool {
	b, _ := os.ReadFile("/proc/filesystems")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(strings.TrimPrefix(l, "nodev")) == name {
			return true
		}
	}
	return false
}

func TestAttachBothPathsAndList(t *testing.T) {
	e := newEnv(t)
	img := filepath.Join(e.dir, "raw.img")
	require.NoError(t, os.WriteFile(img, nil, 0o644))
	require.NoError(t, os.Truncate(img, 8<<20))
	for _, configure := range []bool{true, false} {
		useLoopConfigure = configure
		a, err := Attach(context.Background(), img, AttachParams{Offset: 1 << 20, SizeLimit: 2 << 20, Autoclear: true})
		useLoopConfigure = true
		require.NoError(t, err)
		ls, err := FindByImage(img)
		require.NoError(t, err)
		require.Len(t, ls, 1)
		l := ls[0]
		require.Equal(t, a.Device, l.Device)
		require.Equal(t, img, l.BackingFile)
		require.Equal(t, int64(1<<20), l.Offset)
		require.Equal(t, int64(2<<20), l.SizeLimit)
		require.True(t, l.Autoclear)
		require.True(t, l.ReadOnly)
		require.False(t, l.Stale())
		// The device is 2 MiB: the size limit is in force.
		f, err := os.Open(a.Device)
		require.NoError(t, err)
		size, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
		f.Close()
		require.NoError(t, err)
		require.Equal(t, uint64(2<<20), size)
		require.NoError(t, a.Detach())
		require.Empty(t, loopsAfterDetach(t, img), "configure=%v", configure)
	}
}

func TestReapDeletedAndOrphans(t *testing.T) {
	e := newStaleEnv(t) // it reaps or makes stale loops
	// Two loops on images that are then deleted; one of them mounted.
	var olds []Loop
	for i, name := range []string{"gone1.img", "gone2.img"} {
		img := mkfsImage(t, filepath.Join(e.dir, name), "ext2", 4<<20, "g", nil)
		a, err := Attach(context.Background(), img, AttachParams{})
		require.NoError(t, err)
		olds = append(olds, a.Loop)
		l := a.Loop
		t.Cleanup(func() { _ = detachLoop(l) })
		if i == 1 {
			mp := filepath.Join(e.dir, "m")
			require.NoError(t, os.Mkdir(mp, 0o755))
			require.NoError(t, unix.Mount(a.Device, mp, "ext2", mountFlags, ""))
			t.Cleanup(func() { _ = unix.Unmount(mp, unix.MNT_DETACH) })
		}
		require.NoError(t, a.Close())
		require.NoError(t, os.Remove(img))
	}
	// An orphan of a live image: reaped only when that image is named.
	live := mkfsImage(t, filepath.Join(e.dir, "live.img"), "ext2", 4<<20, "l", nil)
	orphan, err := Attach(context.Background(), live, AttachParams{})
	require.NoError(t, err)
	ol := orphan.Loop
	require.NoError(t, orphan.Close())
	t.Cleanup(func() { _ = detachLoop(ol) })

	rep, err := Reap(context.Background(), ReapOptions{ImagesDirs: []string{e.dir}, Logger: e.logger()})
	require.NoError(t, err)
	reaped := map[string]ReapedLoop{}
	for _, r := range rep.Reaped {
		reaped[r.Device] = r
	}
	for i, o := range olds {
		r, ok := reaped[o.Device]
		require.True(t, ok, "%s not reaped", o.Device)
		require.Equal(t, "deleted inode", r.Reason)
		require.Contains(t, e.log.String(), fmt.Sprintf("Cleaning up stale loop device: %s (deleted inode)", o.Device))
		if i == 1 {
			require.Equal(t, []string{filepath.Join(e.dir, "m")}, r.Unmounted)
		}
	}
	_, ok := reaped[ol.Device]
	require.False(t, ok, "a live image's loop is not reaped without the image")
	require.Len(t, imageLoops(t, live), 1)

	rep, err = Reap(context.Background(), ReapOptions{Image: live, Logger: e.logger()})
	require.NoError(t, err)
	found := false
	for _, r := range rep.Reaped {
		if r.Device == ol.Device {
			found = true
			require.Equal(t, "not mounted", r.Reason)
		}
	}
	require.True(t, found)
	require.Empty(t, loopsAfterDetach(t, live))
}

// Unmount detaches orphans of the image that earlier failed attempts left.
func TestUnmountDetachesOrphans(t *testing.T) {
	e := newEnv(t)
	img := mkfsImage(t, filepath.Join(e.dir, h1+".img"), "ext4", 16<<20, "o", nil)
	lay, err := e.mount(h1, img)
	require.NoError(t, err)
	orphan, err := Attach(context.Background(), img, AttachParams{Offset: 4096})
	require.NoError(t, err)
	require.NoError(t, orphan.Close())
	require.Len(t, imageLoops(t, img), 2)
	rep, err := Unmount(context.Background(), h1, e.root, nil)
	require.NoError(t, err)
	require.Equal(t, []string{lay.Mount}, rep.Unmounted)
	require.Contains(t, rep.Detached, orphan.Device)
	e.requireGone(h1, img)
}

// An Apple-partition-map hybrid CD whose whole disk is ISO9660: the whole
// disk is what Mount tries, with iso9660 and then udf. This kernel has
// neither, so both real attempts fail and are reported; nothing is left.
func TestMountAPMHybridTriesWholeDisk(t *testing.T) {
	e := newEnv(t)
	if fsSupported("iso9660") || fsSupported("udf") {
		t.Log("kernel mounts optical filesystems; the failure path is not reachable here")
		return
	}
	m := make([]byte, 1<<20)
	copy(m, "ER")
	binary.BigEndian.PutUint16(m[2:], 2048)
	for i, typ := range []string{"Apple_partition_map", "Apple_HFS"} {
		o := (i + 1) * 2048
		copy(m[o:], "PM")
		binary.BigEndian.PutUint32(m[o+4:], 2)
		binary.BigEndian.PutUint32(m[o+8:], uint32(1+15*i))
		binary.BigEndian.PutUint32(m[o+12:], 100)
		copy(m[o+48:], typ)
	}
	m[32768] = 1
	copy(m[32769:], "CD001")
	m[32768+2048] = 255
	copy(m[32769+2048:], "CD001")
	img := filepath.Join(e.dir, "hybrid.img")
	require.NoError(t, os.WriteFile(img, m, 0o644))
	lay, err := e.mount(h1, img)
	require.ErrorIs(t, err, ErrNothingMounted)
	require.Contains(t, err.Error(), "iso9660")
	require.Contains(t, err.Error(), "udf")
	require.Equal(t, "apm", lay.Table)
	for _, p := range lay.Partitions {
		require.Equal(t, ReasonWholeDisk, p.Reason)
	}
	e.requireGone(h1, img)
}

// A hybrid ISO 9660 / HFS CD (genisoimage -hfs -part) is two views of one
// medium: Mount mounts the ISO side at p1 and the HFS side at p2, the
// partitions the image reader reads. This kernel has neither driver: each
// view fails naming its partition and the types tried, and nothing is
// left; a kernel with both mounts both, the same file in each.
func TestMountHybridCDViews(t *testing.T) {
	if _, err := exec.LookPath("genisoimage"); err != nil {
		testenv.SkipOrFail(t, "genisoimage is not installed (scripts/deps.sh installs it)")
	}
	e := newEnv(t)
	stage := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(stage, "README.TXT"), []byte("both sides\n"), 0o644))
	img := filepath.Join(e.dir, "hybrid.img")
	out, err := exec.Command("genisoimage", "-quiet", "-r", "-hfs", "-part", "-o", img, stage).CombinedOutput()
	require.NoError(t, err, "%s", out)
	lay, err := e.mount(h1, img)
	if !fsSupported("iso9660") && !fsSupported("hfs") {
		require.ErrorIs(t, err, ErrNothingMounted)
		require.Regexp(t, `partition 1: mount \S+ on \S+/p1 \(type iso9660`, err.Error())
		require.Regexp(t, `partition 2: mount \S+ on \S+/p2 \(type hfs`, err.Error())
		require.Equal(t, LayoutMulti, lay.Layout)
		require.Len(t, lay.Partitions, 2)
		for i, p := range lay.Partitions {
			require.Equal(t, i+1, p.Num)
			require.Equal(t, StatusFailed, p.Status)
			require.Equal(t, ReasonMountFailed, p.Reason)
			require.NotEmpty(t, p.View)
		}
		e.requireGone(h1, img)
		return
	}
	require.NoError(t, err)
	t.Cleanup(func() { Unmount(context.Background(), h1, e.root, nil) })
	require.Equal(t, LayoutMulti, lay.Layout)
	for _, p := range lay.Partitions {
		if !fsSupported(map[int]string{1: "iso9660", 2: "hfs"}[p.Num]) {
			require.Equal(t, StatusFailed, p.Status, "partition %d", p.Num)
			continue
		}
		require.Equal(t, StatusMounted, p.Status, "partition %d", p.Num)
		b, err := os.ReadFile(filepath.Join(p.Mount, "README.TXT"))
		require.NoError(t, err)
		require.Equal(t, "both sides\n", string(b))
	}
}

// Reap touches only NTT's loops: a deleted <hash>.img, a file deleted from
// an images directory, a loop mounted under the mount root. A loop of
// someone else's deleted file stays attached, and the log says so.
func TestReapOnlyNTTLoops(t *testing.T) {
	e := newStaleEnv(t) // it reaps or makes stale loops
	staleLoop := func(path string, mountAt string) Loop {
		t.Helper()
		if mountAt == "" {
			require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
			require.NoError(t, os.WriteFile(path, make([]byte, 1<<20), 0o644))
		} else {
			require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
			mkfsImage(t, path, "ext2", 4<<20, "s", nil)
		}
		a, err := Attach(context.Background(), path, AttachParams{})
		require.NoError(t, err)
		l := a.Loop
		t.Cleanup(func() { _ = detachLoop(l) })
		if mountAt != "" {
			require.NoError(t, os.MkdirAll(mountAt, 0o755))
			require.NoError(t, unix.Mount(a.Device, mountAt, "ext2", mountFlags, ""))
			t.Cleanup(func() { _ = unix.Unmount(mountAt, unix.MNT_DETACH) })
		}
		require.NoError(t, a.Close())
		require.NoError(t, os.Remove(path))
		return l
	}
	foreign := staleLoop(filepath.Join(e.dir, "elsewhere", "backup.bin"), "")
	named := staleLoop(filepath.Join(e.dir, "old", h2+".img"), "")
	images := filepath.Join(e.dir, "img")
	inImages := staleLoop(filepath.Join(images, "rescue-7.dd"), "")
	mounted := staleLoop(filepath.Join(e.dir, "tmp", "x.bin"), filepath.Join(e.root, h1))

	rep, err := Reap(context.Background(), ReapOptions{Root: e.root, ImagesDirs: []string{images}, Logger: e.logger()})
	require.NoError(t, err)
	reaped := map[string]bool{}
	for _, r := range rep.Reaped {
		reaped[r.Device] = true
	}
	for _, l := range []Loop{named, inImages, mounted} {
		require.True(t, reaped[l.Device], "%s (%s) not reaped", l.Device, l.BackingFile)
		require.Contains(t, e.log.String(), fmt.Sprintf("Cleaning up stale loop device: %s (deleted inode)", l.Device))
	}
	require.False(t, reaped[foreign.Device], "someone else's loop was reaped")
	require.Contains(t, e.log.String(), fmt.Sprintf("Leaving loop device alone: %s (deleted inode, not an NTT image)", foreign.Device))
	var left []string
	for _, l := range rep.LeftAlone {
		left = append(left, l.Device)
	}
	require.Contains(t, left, foreign.Device)
	// Still attached to the same deleted file.
	l, err := readLoop(foreign.Number)
	require.NoError(t, err)
	require.True(t, l.Deleted)
	require.Equal(t, foreign.BackingIno, l.BackingIno)
	ok, err := testimg.Mounted(filepath.Join(e.root, h1))
	require.NoError(t, err)
	require.False(t, ok, "the stale mount under the root was taken down")
}

// List while other processes attach and detach loop devices: a device
// that goes between the listing of /sys/block and the read of its
// backing_file is left out, not an error (seen as "read
// /sys/block/loop5/loop/backing_file: no such device" when two test
// binaries ran at once).
func TestListWhileLoopsComeAndGo(t *testing.T) {
	e := newEnv(t)
	img := filepath.Join(e.dir, "raw.img")
	require.NoError(t, os.WriteFile(img, nil, 0o644))
	require.NoError(t, os.Truncate(img, 1<<20))
	stop := make(chan struct{})
	var cycles atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			a, err := Attach(context.Background(), img, AttachParams{})
			if err != nil {
				t.Errorf("attach: %v", err)
				return
			}
			if err := a.Detach(); err != nil {
				t.Errorf("detach: %v", err)
				return
			}
			cycles.Add(1)
		}
	}()
	defer wg.Wait()
	defer close(stop)
	deadline := time.Now().Add(time.Second) // the race shows within milliseconds
	lists := 0
	for time.Now().Before(deadline) {
		_, err := List()
		require.NoError(t, err)
		lists++
	}
	n := cycles.Load()
	require.Greater(t, n, int64(10), "too few attach/detach cycles to race with")
	t.Logf("%d lists against %d attach/detach cycles", lists, n)
}
