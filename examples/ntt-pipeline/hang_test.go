package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Field failure: a corrupt filesystem made every reader hang. Here the
// medium's image is served by a disk that stops answering: the test serves
// the image file itself over FUSE (/dev/fuse, below) and never answers a
// read of the sectors that hold the filesystem's directories. The pipeline
// mounts the medium as always (the mount reads the superblock, the group
// descriptors and inode tables, all answered) and its walk blocks in a real
// read of the loop device, which the kernel's loop worker is serving from
// the image and waits on forever. ntt-pipeline must give up after
// --stall-timeout with enumerate.ErrStalled, record enum_failed on the
// medium and finish its run while those reads still hang — not wait for
// the disk. Answering the reads afterwards lets the kernel finish the
// process's exit (its last close of the loop device waits for the reads in
// flight) and detach the loop.
//
// Stopping an ntfs-3g daemon (SIGSTOP) that holds the image does not model
// this: ntfs-3g lets the kernel cache no attributes (it answers with
// attributes valid for 0 s, whatever -o attr_timeout says), so a stopped
// daemon hangs every stat and open of the image too, and loopdev.List
// stats every loop's backing file. The pipeline's pre-flight and mount
// (which probe the image) and its unmount after the stall would hang
// where the field failure never did: the image sits on a healthy disk.
// Serving the image ourselves keeps its metadata answering and hangs only
// the reads.
//
// A disk whose metadata hangs too ("the unmount hangs"): every stat of
// the image hangs once the walk's reads do, so the pipeline's unmount after
// the stall (loopdev lists the loops' backing files) waits on the disk. The
// stall must be in the catalog before that unmount returns.
func TestPipelineEnumerationStallOnHangingDisk(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.SkipOrFail(t, "no /dev/fuse: cannot serve a hanging disk")
	}
	if _, err := exec.LookPath("debugfs"); err != nil {
		testenv.SkipOrFail(t, "debugfs not installed (e2fsprogs)")
	}
	m := newHangingMedium(t)
	t.Run("reads hang", func(t *testing.T) { enumerationStall(t, m, false) })
	t.Run("the unmount hangs", func(t *testing.T) { enumerationStall(t, m, true) })
}

// hangingMedium is an ext4 image (only read, so shared by the subtests),
// its name, and the byte ranges of it that the disk will not answer.
type hangingMedium struct {
	backing string
	h       medium.Hash
	hang    [][2]int64
}

func newHangingMedium(t *testing.T) hangingMedium {
	// A medium with a few hundred files in many directories: the walk
	// must read directory blocks nothing read before it.
	var entries []testimg.Entry
	var dirs []string
	for d := 0; d < 24; d++ {
		dirs = append(dirs, fmt.Sprintf("/d%02d", d))
		for s := 0; s < 3; s++ {
			dirs = append(dirs, fmt.Sprintf("/d%02d/s%d", d, s))
		}
		for f := 0; f < 12; f++ {
			entries = append(entries, testimg.Entry{Path: fmt.Sprintf("d%02d/s%d/f%02d.txt", d, f%3, f), Kind: testimg.File,
				Data: []byte(fmt.Sprintf("file %d of directory %d\n", f, d))})
		}
	}
	const blockSize = 4096
	backing := filepath.Join(t.TempDir(), "medium.ext4")
	require.NoError(t, testimg.BuildImage(backing, testimg.Spec{FSType: "ext4", Size: 32 << 20, BlockSize: blockSize, Entries: entries}))
	m := hangingMedium{backing: backing, h: medium.MustParse(imageHash(t, backing))} // the seed names media by their image's md5

	// The sectors that will hang: every block of every directory below
	// the root (mke2fs puts the root's among the first blocks, where the
	// image probe reads). The test's premise is that nothing before the
	// walk reads them: the image probe reads the first 128 KiB at most,
	// the mount reads the superblock, group descriptors, journal and
	// inode tables.
	m.hang = dirBlocks(t, backing, blockSize, dirs)
	for _, r := range m.hang {
		require.GreaterOrEqual(t, r[0], int64(128<<10), "a directory block lies where the image probe reads")
	}
	return m
}

func enumerationStall(t *testing.T, m hangingMedium, statHangs bool) {
	e := newEnv(t)
	bin := testenv.Binary(t) // built before anything hangs
	ctx := context.Background()
	h, hang := m.h, m.hang

	// The images directory is the disk's mount: <images>/<hash>.img.
	disk := serveHangingDisk(t, e.images, h.ImageFileName(), m.backing, statHangs, func(off, n int64) bool {
		for _, r := range hang {
			if off < r[1] && r[0] < off+n {
				return true
			}
		}
		return false
	})
	image := filepath.Join(e.images, h.ImageFileName())

	const stall = 2 * time.Second
	cmd := exec.Command(bin, e.args(image, "-v", "--stall-timeout", stall.String())...)
	var stdout, stderr testenv.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// Whatever failed: the disk answers again, the run ends, nothing
		// stays mounted or attached.
		disk.release()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
		}
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("ntt-pipeline (pid %d) did not exit", cmd.Process.Pid)
		}
		loopdev.Unmount(context.Background(), string(h), e.root, &loopdev.UnmountOptions{Image: image})
	})

	// The stall is recorded on the medium while the disk still hangs.
	recorded := func() bool {
		var has bool
		err := e.db.QueryRow(ctx, `SELECT coalesce(problems ? 'enum_failed', false) FROM medium WHERE medium_hash = $1`, string(h)).Scan(&has)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			require.NoError(t, err)
		}
		return has
	}
	deadline := time.After(60 * time.Second)
wait:
	for !recorded() {
		select {
		case <-exited:
			t.Fatalf("ntt-pipeline exited (%v) without recording enum_failed\nstdout:\n%s\nstderr:\n%s", cmd.ProcessState, stdout.String(), stderr.String())
		case <-deadline:
			held, _ := disk.counts()
			t.Fatalf("no enum_failed after 60 s: the pipeline waits for the disk (%d reads held)\nstderr:\n%s", held, stderr.String())
		case <-time.After(100 * time.Millisecond):
			continue wait
		}
	}
	recordedAfter := time.Since(start)
	held, _ := disk.counts()
	require.Positive(t, held, "the walk's reads must still be hanging when the stall is recorded")

	if statHangs {
		// The unmount after the stall waits on a stat of the image: the
		// problem was recorded before it, and the run has not ended.
		for disk.stats() == 0 {
			select {
			case <-exited:
				t.Fatalf("ntt-pipeline exited (%v) without a stat of the image after the stall\nstderr:\n%s", cmd.ProcessState, stderr.String())
			case <-deadline:
				t.Fatalf("no stat of the image after the stall\nthreads:\n%s\nstderr:\n%s", threads(cmd.Process.Pid), stderr.String())
			case <-time.After(100 * time.Millisecond):
			}
		}
		require.NotContains(t, stdout.String(), "Metrics written to", "the run ended although a stat of its image hangs")
		t.Logf("stall recorded after %v, while the unmount waits on the image", recordedAfter.Round(time.Millisecond))
	} else {
		// The run ends without the disk: the summary and metrics are written
		// and the process exits — all of it but one thread, which the kernel
		// keeps in the last close of the loop device (bdev_release drops the
		// device's page cache and waits, uninterruptibly, on the page the hung
		// read holds locked), as it would on a real disk until the driver gives
		// up on the read.
		for !strings.Contains(stdout.String(), "Metrics written to") || !exiting(cmd.Process.Pid, exited) {
			select {
			case <-deadline:
				t.Fatalf("the run did not end after recording the stall\nthreads:\n%s\nstdout:\n%s\nstderr:\n%s", threads(cmd.Process.Pid), stdout.String(), stderr.String())
			case <-time.After(100 * time.Millisecond):
			}
		}
		endedAfter := time.Since(start)
		held, total := disk.counts()
		require.Positive(t, held)
		require.Equal(t, total, held, "a held read was answered before the run ended")
		t.Logf("stall recorded after %v, run ended after %v with %d reads of the image hanging",
			recordedAfter.Round(time.Millisecond), endedAfter.Round(time.Millisecond), held)
		// No timing is a pass criterion beyond "did not wait forever" (the
		// 60 s deadline above).
	}

	// The disk answers again: the process's exit completes.
	disk.release()
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("ntt-pipeline did not exit after the disk answered again\nstderr:\n%s", stderr.String())
	}
	out, errs := stdout.String(), stderr.String()
	require.Equal(t, 1, cmd.ProcessState.ExitCode(), "a failed phase exits 1\nstdout:\n%s\nstderr:\n%s", out, errs)

	// The operator's line names the medium, the stall and where it was
	// recorded; the walk's own warning is in the log.
	line := failureLine(errs, string(h), "enumeration stalled")
	require.NotEmpty(t, line, "no line naming medium %s and \"enumeration stalled\" in stderr:\n%s", h, errs)
	require.Contains(t, line, "enumerate failed: enumeration stalled: no progress for")
	require.Contains(t, line, "(recorded as enum_failed in medium.problems)")
	require.Contains(t, errs, `"msg":"enumeration stalled"`)
	require.Contains(t, errs, `"msg":"Mounted medium"`, "the pipeline mounted the medium itself")

	// The catalog: enum_failed with the stall, unresolved; nothing
	// catalogued, not enumerated.
	msg := e.openProblem(string(h), "enum_failed", "enumerate")
	require.Contains(t, msg, "enumeration stalled: no progress for")
	require.Contains(t, msg, `stuck in "`+h.MountPath(e.root), "the stall names where the walk was reading")
	e.checkNotCatalogued(string(h))

	// The runbook's rollback: no raw file, partial or whole; the metrics
	// say where the run stopped.
	_, err := os.Stat(filepath.Join(e.work, h.RawFileName()))
	require.ErrorIs(t, err, os.ErrNotExist)
	partial, err := filepath.Glob(filepath.Join(e.work, "."+h.Short()+".raw-*"))
	require.NoError(t, err)
	require.Empty(t, partial)
	metrics := e.metrics(string(h))
	require.Equal(t, []PhaseMetric{{Name: "preflight", Outcome: "ran"}, {Name: "mount", Outcome: "ran"}, {Name: "enumerate", Outcome: "failed"}}, outcomes(metrics))
	require.Contains(t, metrics.Phases[2].Note, "enumeration stalled")
	e.checkNothingLeft(string(h), image)
}

// threads describes each thread of pid (its state and kernel stack), for
// a failure message: on a kernel where the stuck read is not in the exit
// path, this says where it is.
func threads(pid int) string {
	var b strings.Builder
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s", pid, task.Name())
		st, _ := os.ReadFile(dir + "/stat")
		stack, _ := os.ReadFile(dir + "/stack")
		fmt.Fprintf(&b, "%s\n%s\n", strings.TrimSpace(string(st)), stack)
	}
	return b.String()
}

// exiting reports whether the process pid has exited, or is exiting: each
// of its threads is a zombie or blocked in the kernel's exit path (do_exit
// in its kernel stack; a thread in D state if the stack cannot be read).
func exiting(pid int, exited <-chan struct{}) bool {
	select {
	case <-exited:
		return true
	default:
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	for _, task := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s", pid, task.Name())
		b, err := os.ReadFile(dir + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// tid (comm) state ...: comm may hold spaces and parentheses.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		switch {
		case len(f) == 0:
			return false
		case f[0] == "Z" || f[0] == "X":
		case f[0] == "D":
			if stack, err := os.ReadFile(dir + "/stack"); err == nil && !strings.Contains(string(stack), "do_exit") {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// dirBlocks returns the byte ranges [start, end) of the data blocks of the
// directories of an ext image whose blocks are bs bytes, from one debugfs
// run ("blocks DIR" for each; debugfs echoes each command as "debugfs: …").
func dirBlocks(t *testing.T, image string, bs int64, dirs []string) [][2]int64 {
	t.Helper()
	cmd := exec.Command("debugfs", "-f", "-", image)
	cmd.Stdin = strings.NewReader("blocks " + strings.Join(dirs, "\nblocks ") + "\n")
	out, err := cmd.Output()
	require.NoError(t, err)
	var ranges [][2]int64
	perDir := map[string]int{}
	var dir string
	for _, l := range strings.Split(string(out), "\n") {
		if d, ok := strings.CutPrefix(l, "debugfs: blocks "); ok {
			dir = d
			continue
		}
		for _, f := range strings.Fields(l) {
			n, err := strconv.ParseInt(f, 10, 64)
			require.NoError(t, err, "debugfs blocks %s: %q", dir, l)
			ranges = append(ranges, [2]int64{n * bs, (n + 1) * bs})
			perDir[dir]++
		}
	}
	for _, d := range dirs {
		require.Positive(t, perDir[d], "debugfs: %s has no blocks:\n%s", d, out)
	}
	return ranges
}

// hangingDisk is a read-only FUSE filesystem served by the test: a root
// directory holding one file, whose reads are answered from a local file
// except those hang says hang, which are held unanswered (a disk that
// stopped answering) until release. It speaks just enough of the FUSE
// protocol (linux/fuse.h, 7.31) for stat, open, read and close.
type hangingDisk struct {
	name    string
	backing *os.File
	size    int64
	mtime   uint64
	fd      int
	hang    func(off, n int64) bool
	done    chan struct{}
	// statHangs: once a read is held, so is every stat of the image (the
	// kernel keeps no attributes, as ntfs-3g's do not): a disk that hangs
	// its metadata too.
	statHangs bool

	mu       sync.Mutex
	held     map[uint64]heldRequest // by the request's unique
	total    int                    // reads held in all
	released bool
	serveErr error // why serve stopped, if not because of the unmount
}

// heldRequest is a request left unanswered: answer gives its answer.
type heldRequest struct {
	stat   bool // a GETATTR; else a read
	answer func()
}

// hold keeps request unique unanswered until release; the caller holds mu.
func (d *hangingDisk) hold(unique uint64, stat bool, answer func()) {
	d.held[unique] = heldRequest{stat: stat, answer: answer}
	if !stat {
		d.total++
	}
}

// FUSE opcodes and flags (linux/fuse.h).
const (
	fuseLookup      = 1
	fuseForget      = 2
	fuseGetattr     = 3
	fuseOpen        = 14
	fuseRead        = 15
	fuseStatfs      = 17
	fuseRelease     = 18
	fuseFlush       = 25
	fuseInit        = 26
	fuseOpendir     = 27
	fuseReaddir     = 28
	fuseReleasedir  = 29
	fuseInterrupt   = 36
	fuseBatchForget = 42

	fuseRootID      = 1
	fuseFileID      = 2
	fopenKeepCache  = 1 << 1
	fuseInHeaderLen = 40
	fuseValidSecs   = 3600 // entries and attributes never change
)

var fuseLE = binary.LittleEndian

// serveHangingDisk mounts the disk at dir (created) with the file name
// holding backing's bytes, and unmounts it when the test ends.
func serveHangingDisk(t *testing.T, dir, name, backing string, statHangs bool, hang func(off, n int64) bool) *hangingDisk {
	t.Helper()
	f, err := os.Open(backing)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	d := &hangingDisk{name: name, backing: f, held: map[uint64]heldRequest{}, size: fi.Size(), mtime: uint64(fi.ModTime().Unix()),
		fd: fd, hang: hang, statHangs: statHangs, done: make(chan struct{})}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd)
	if err := unix.Mount("ntt-hanging-disk", dir, "fuse", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		unix.Close(fd)
		testenv.SkipOrFail(t, "cannot mount a FUSE filesystem: "+err.Error())
	}
	go d.serve()
	t.Cleanup(func() {
		d.release()
		var st unix.Stat_t
		statErr := unix.Stat(dir, &st)
		err := unix.Unmount(dir, 0)
		for i := 0; errors.Is(err, unix.EBUSY) && i < 50; i++ {
			time.Sleep(100 * time.Millisecond)
			err = unix.Unmount(dir, 0)
		}
		if err != nil {
			// A forced unmount aborts the FUSE connection, failing
			// whatever still waits on it; failing that, detach.
			t.Errorf("unmounting the hanging disk %s: %v (forcing it)", dir, err)
			if unix.Unmount(dir, unix.MNT_FORCE) != nil {
				unix.Unmount(dir, unix.MNT_DETACH)
			}
		}
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			// The kernel still holds the connection: abort it, which
			// fails whatever is still waiting on it.
			if statErr == nil {
				os.WriteFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", unix.Minor(st.Dev)), []byte("1"), 0o200)
			}
			select {
			case <-d.done:
			case <-time.After(10 * time.Second):
				t.Errorf("the hanging disk's server at %s did not stop: its FUSE connection is still open", dir)
			}
		}
		unix.Close(fd)
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.serveErr != nil {
			t.Errorf("the hanging disk's server stopped early: reading /dev/fuse: %v", d.serveErr)
		}
	})
	return d
}

// release answers every held read and stops holding new ones.
func (d *hangingDisk) release() {
	d.mu.Lock()
	held := d.held
	d.held, d.released = map[uint64]heldRequest{}, true
	d.mu.Unlock()
	for _, r := range held {
		r.answer()
	}
}

// stats returns how many stats of the image are held now.
func (d *hangingDisk) stats() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, r := range d.held {
		if r.stat {
			n++
		}
	}
	return n
}

// counts returns how many reads are held now, and how many were in all.
func (d *hangingDisk) counts() (held, total int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range d.held {
		if !r.stat {
			held++
		}
	}
	return held, d.total
}

func (d *hangingDisk) serve() {
	defer close(d.done)
	buf := make([]byte, 1<<20)
	for {
		n, err := unix.Read(d.fd, buf)
		switch {
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ENOENT), errors.Is(err, unix.EAGAIN):
			continue // interrupted, or a request withdrawn before we read it
		case errors.Is(err, unix.ENODEV):
			return // unmounted
		case err != nil:
			// Every later request would hang: the cleanup says why.
			d.mu.Lock()
			d.serveErr = err
			d.mu.Unlock()
			return
		case n < fuseInHeaderLen:
			continue
		}
		op, unique, node := fuseLE.Uint32(buf[4:]), fuseLE.Uint64(buf[8:]), fuseLE.Uint64(buf[16:])
		d.handle(op, unique, node, buf[fuseInHeaderLen:n])
	}
}

func (d *hangingDisk) handle(op uint32, unique, node uint64, body []byte) {
	switch op {
	case fuseInit:
		minor := fuseLE.Uint32(body[4:])
		out := make([]byte, 64) // fuse_init_out
		fuseLE.PutUint32(out[0:], 7)
		fuseLE.PutUint32(out[4:], min(minor, 31))
		fuseLE.PutUint32(out[8:], 0)     // max_readahead: every read is asked for, none is guessed
		fuseLE.PutUint32(out[12:], 0)    // flags: no optional feature
		fuseLE.PutUint16(out[16:], 16)   // max_background
		fuseLE.PutUint16(out[18:], 12)   // congestion_threshold
		fuseLE.PutUint32(out[20:], 4096) // max_write (nothing is written)
		fuseLE.PutUint32(out[24:], 1)    // time_gran
		d.reply(unique, 0, out)
	case fuseLookup:
		name, _, _ := strings.Cut(string(body), "\x00")
		if node != fuseRootID || name != d.name {
			d.reply(unique, unix.ENOENT, nil)
			return
		}
		out := make([]byte, 40, 128) // fuse_entry_out
		fuseLE.PutUint64(out[0:], fuseFileID)
		fuseLE.PutUint64(out[16:], fuseValidSecs)
		if !d.statHangs {
			fuseLE.PutUint64(out[24:], fuseValidSecs)
		}
		d.reply(unique, 0, append(out, d.attr(fuseFileID)...))
	case fuseGetattr:
		d.mu.Lock()
		if d.statHangs && node == fuseFileID && !d.released && d.total > 0 {
			d.hold(unique, true, func() { d.answerGetattr(unique, node) })
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		d.answerGetattr(unique, node)
	case fuseOpen, fuseOpendir:
		out := make([]byte, 16) // fuse_open_out
		fuseLE.PutUint32(out[8:], fopenKeepCache)
		d.reply(unique, 0, out)
	case fuseRead:
		off, size := int64(fuseLE.Uint64(body[8:])), int64(fuseLE.Uint32(body[16:]))
		d.mu.Lock()
		if !d.released && d.hang(off, size) {
			d.hold(unique, false, func() { d.answerRead(unique, off, size) })
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		d.answerRead(unique, off, size)
	case fuseReaddir:
		d.reply(unique, 0, d.readdir(int(fuseLE.Uint64(body[8:])), int(fuseLE.Uint32(body[16:]))))
	case fuseStatfs:
		out := make([]byte, 80) // fuse_kstatfs
		fuseLE.PutUint64(out[0:], uint64(d.size/4096))
		fuseLE.PutUint32(out[40:], 4096)
		fuseLE.PutUint32(out[44:], 255)
		fuseLE.PutUint32(out[48:], 4096)
		d.reply(unique, 0, out)
	case fuseRelease, fuseReleasedir, fuseFlush:
		d.reply(unique, 0, nil)
	case fuseForget, fuseBatchForget:
		// no reply
	case fuseInterrupt:
		// A held request whose caller gives up is answered EINTR.
		target := fuseLE.Uint64(body[0:])
		d.mu.Lock()
		_, ok := d.held[target]
		delete(d.held, target)
		d.mu.Unlock()
		if ok {
			d.reply(target, unix.EINTR, nil)
		}
	default:
		d.reply(unique, unix.ENOSYS, nil)
	}
}

// attr is the fuse_attr of node: the root directory or the file.
func (d *hangingDisk) attr(node uint64) []byte {
	a := make([]byte, 88)
	mode, nlink, size := uint32(unix.S_IFDIR|0o755), uint32(2), int64(0)
	if node == fuseFileID {
		mode, nlink, size = unix.S_IFREG|0o444, 1, d.size
	}
	fuseLE.PutUint64(a[0:], node)
	fuseLE.PutUint64(a[8:], uint64(size))
	fuseLE.PutUint64(a[16:], uint64((size+511)/512))
	fuseLE.PutUint64(a[24:], d.mtime)
	fuseLE.PutUint64(a[32:], d.mtime)
	fuseLE.PutUint64(a[40:], d.mtime)
	fuseLE.PutUint32(a[60:], mode)
	fuseLE.PutUint32(a[64:], nlink)
	fuseLE.PutUint32(a[80:], 4096)
	return a
}

// readdir lists ".", ".." and the file from entry index off, in at most
// size bytes of fuse_dirent records.
func (d *hangingDisk) readdir(off, size int) []byte {
	ents := []struct {
		ino  uint64
		name string
		typ  uint32
	}{{fuseRootID, ".", unix.DT_DIR}, {fuseRootID, "..", unix.DT_DIR}, {fuseFileID, d.name, unix.DT_REG}}
	var out []byte
	for i := off; i < len(ents); i++ {
		rec := make([]byte, (24+len(ents[i].name)+7)&^7)
		fuseLE.PutUint64(rec[0:], ents[i].ino)
		fuseLE.PutUint64(rec[8:], uint64(i+1))
		fuseLE.PutUint32(rec[16:], uint32(len(ents[i].name)))
		fuseLE.PutUint32(rec[20:], ents[i].typ)
		copy(rec[24:], ents[i].name)
		if len(out)+len(rec) > size {
			break
		}
		out = append(out, rec...)
	}
	return out
}

func (d *hangingDisk) answerGetattr(unique, node uint64) {
	out := make([]byte, 16, 104) // fuse_attr_out
	if !d.statHangs {
		fuseLE.PutUint64(out[0:], fuseValidSecs)
	}
	d.reply(unique, 0, append(out, d.attr(node)...))
}

func (d *hangingDisk) answerRead(unique uint64, off, size int64) {
	b := make([]byte, size)
	n, err := d.backing.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		d.reply(unique, unix.EIO, nil)
		return
	}
	d.reply(unique, 0, b[:n])
}

// reply writes the answer to request unique: fuse_out_header and payload.
// A request withdrawn meanwhile (ENOENT) needs none.
func (d *hangingDisk) reply(unique uint64, errno unix.Errno, payload []byte) {
	out := make([]byte, 16+len(payload))
	fuseLE.PutUint32(out[0:], uint32(len(out)))
	fuseLE.PutUint32(out[4:], uint32(-int32(errno)))
	fuseLE.PutUint64(out[8:], unique)
	copy(out[16:], payload)
	unix.Write(d.fd, out)
}
