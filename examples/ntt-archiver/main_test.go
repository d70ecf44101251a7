package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"github.com/HRDAG/ntt/internal/testenv"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/HRDAG/ntt/archive"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const hash = "ece03c6779caa14be2b00d380add8475"

type result struct {
	code           int
	stdout, stderr string
}

func ntt(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{code, o.String(), e.String()}
}

// writeImage writes a disk-image-like file: text, random and zeroed
// regions, holes.
func writeImage(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	r := rand.New(rand.NewChaCha8([32]byte{42}))
	words := strings.Fields("witness statement report archive medium record evidence interview 1998 village list names")
	const region = 1 << 20
	buf := make([]byte, region)
	for off := int64(0); off < size; off += region {
		b := buf[:min(region, size-off)]
		switch (off / region) % 6 {
		case 0, 3: // text
			var tb []byte
			for len(tb) < len(b) {
				tb = append(tb, words[r.IntN(len(words))]...)
				tb = append(tb, ' ')
			}
			copy(b, tb)
		case 1, 4: // random
			for i := 0; i+8 <= len(b); i += 8 {
				v := r.Uint64()
				for j := range 8 {
					b[i+j] = byte(v >> (8 * j))
				}
			}
		case 2: // zeroed
			clear(b)
		case 5: // hole
			continue
		}
		_, err := f.WriteAt(b, off)
		require.NoError(t, err)
	}
	require.NoError(t, f.Truncate(size))
}

type medium_ struct {
	db      *pgxpool.Pool
	url     string
	images  string
	dest    string
	sources []string
}

// setup makes a catalogued medium (inodes as given: true = copied) and its
// image files.
func setup(t *testing.T, imgSize int64, copied ...bool) medium_ {
	t.Helper()
	ctx := context.Background()
	url := pgtest.URL(t)
	db, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	tx, err := db.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `INSERT INTO medium (medium_hash) VALUES ($1)`, hash)
	require.NoError(t, err)
	require.NoError(t, schema.CreatePartitions(ctx, tx, medium.MustParse(hash)))
	for i, c := range copied {
		_, err := tx.Exec(ctx, `INSERT INTO inode (medium_hash, dev, ino, fs_type, nlink, size, mtime, copied, status)
			VALUES ($1, 1, $2, 'f', 1, 1, 0, $3, $4)`, hash, i+2, c, map[bool]string{true: "success", false: "pending"}[c])
		require.NoError(t, err)
	}
	require.NoError(t, tx.Commit(ctx))

	m := medium_{db: db, url: url, images: t.TempDir(), dest: t.TempDir()}
	img := filepath.Join(m.images, hash+".img")
	writeImage(t, img, imgSize)
	mp := filepath.Join(m.images, hash+".map")
	require.NoError(t, os.WriteFile(mp, []byte("# Mapfile. Created by GNU ddrescue version 1.27\n0x00000000  +  1\n"), 0o644))
	lg := filepath.Join(m.images, hash+"-ddrescue.log")
	require.NoError(t, os.WriteFile(lg, []byte("Finished\n"), 0o644))
	m.sources = []string{img, mp, lg}
	return m
}

func (m medium_) args(extra ...string) []string {
	return append([]string{"--db", m.url, "--images", m.images, "--dest", m.dest}, append(extra, hash)...)
}

func (m medium_) archive() string { return filepath.Join(m.dest, hash+".tar.zst") }

func (m medium_) marked(t *testing.T) bool {
	var done *time.Time
	var path *string
	require.NoError(t, m.db.QueryRow(context.Background(),
		`SELECT copy_done, archive_path FROM medium WHERE medium_hash = $1`, hash).Scan(&done, &path))
	if done != nil {
		require.NotNil(t, path)
		require.Equal(t, m.archive(), *path)
	}
	return done != nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestHelp(t *testing.T) {
	r := ntt(t, "--help")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stderr, "ntt-archiver verify ARCHIVE")
	require.Contains(t, r.stderr, "-keep-sources")
	r = ntt(t)
	require.Equal(t, 1, r.code)
	r = ntt(t, "--images", t.TempDir(), "--dest", t.TempDir(), "--no-catalog", "NOT-A-HASH")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "invalid medium hash")
	require.Equal(t, 1, strings.Count(strings.TrimSpace(r.stderr), "\n")+1, "one sentence: %q", r.stderr)
}

// TestArchiveThenAlreadyArchived is the runbook: archive (exit 0, sources
// removed, catalog marked, tar lists it), then again (exit 2), then verify.
func TestArchiveThenAlreadyArchived(t *testing.T) {
	m := setup(t, 8<<20, true, true)
	r := ntt(t, m.args()...)
	require.Equal(t, 0, r.code, r.stderr)
	require.True(t, m.marked(t))
	for _, s := range m.sources {
		require.False(t, exists(s), s)
		require.Contains(t, r.stderr, s) // each removal reported
	}
	out, err := exec.Command("tar", "-I", "zstd -d", "-tvf", m.archive()).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), hash+".img")

	r = ntt(t, m.args()...)
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, "already archived")

	r = ntt(t, "verify", m.archive())
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "OK")

	// a damaged archive: verify names what is broken, exit 1
	f, err := os.OpenFile(m.archive(), os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0xde, 0xad}, 4096)
	require.NoError(t, err)
	f.Close()
	r = ntt(t, "verify", m.archive())
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, hash+".img")
}

func TestRefusesIncompleteCopy(t *testing.T) {
	m := setup(t, 2<<20, true, false)
	r := ntt(t, m.args()...)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "1 of 2 inodes pending")
	require.False(t, exists(m.archive()))
	entries, _ := os.ReadDir(m.dest)
	require.Empty(t, entries)
	require.False(t, m.marked(t))
	for _, s := range m.sources {
		require.True(t, exists(s))
	}
	// --force archives anyway; --keep-sources keeps them
	r = ntt(t, m.args("--force", "--keep-sources")...)
	require.Equal(t, 0, r.code, r.stderr)
	require.True(t, m.marked(t))
	for _, s := range m.sources {
		require.True(t, exists(s))
	}
}

func TestNoCatalogKeepsSources(t *testing.T) {
	m := setup(t, 2<<20)
	r := ntt(t, "--no-catalog", "--images", m.images, "--dest", m.dest, hash)
	require.Equal(t, 0, r.code, r.stderr)
	require.True(t, exists(m.archive()))
	for _, s := range m.sources {
		require.True(t, exists(s))
	}
	require.False(t, m.marked(t))
}

// checkInvariants is the crash contract: never a partial file under the
// final name; never a source gone without a verified archive and the
// catalog mark.
func checkInvariants(t *testing.T, m medium_, moment string) {
	t.Helper()
	final := exists(m.archive())
	if final {
		_, err := archive.Verify(context.Background(), m.archive())
		require.NoError(t, err, "%s: the file under the final name must verify", moment)
	}
	marked := m.marked(t)
	if marked {
		require.True(t, final, "%s: catalog marked without an archive", moment)
	}
	for _, s := range m.sources {
		if !exists(s) {
			require.True(t, final && marked, "%s: %s removed without a verified archive and the mark", moment, s)
		}
	}
}

// killAt runs the archiver and kills it with SIGKILL when trigger says so
// (polled every millisecond, and on each stderr line).
func killAt(t *testing.T, m medium_, moment string, trigger func(line string) bool) {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t), m.args()...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	cmd.Stdout = io.Discard
	require.NoError(t, cmd.Start())
	var once sync.Once
	killed := false
	kill := func() {
		once.Do(func() {
			killed = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL) == nil
		})
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				break loop
			}
			if trigger(l) {
				kill()
			}
		case <-tick.C:
			if trigger("") {
				kill()
			}
		}
	}
	err = cmd.Wait()
	t.Logf("%s: killed=%v (%v)", moment, killed, err)
	checkInvariants(t, m, moment)
}

// TestKillNineAnyMoment kills a real ntt-archiver sealing a 256 MiB image
// at several moments — while writing the temporary file, while reading it
// back, right after the rename, while removing sources — checking the
// invariants after each, then reruns it to completion. Each run starts from
// the state the previous kill left.
func TestKillNineAnyMoment(t *testing.T) {
	m := setup(t, 256<<20, true, true, true)
	partial := filepath.Join(m.dest, archive.PartialName(hash))
	partialAtLeast := func(n int64) func(string) bool {
		return func(string) bool {
			st, err := os.Stat(partial)
			return err == nil && st.Size() >= n
		}
	}
	killAt(t, m, "seal, 1 MiB written", partialAtLeast(1<<20))
	require.False(t, exists(m.archive()))
	killAt(t, m, "seal, 20 MiB written", partialAtLeast(20<<20))
	require.False(t, exists(m.archive()))
	killAt(t, m, "written, read-back finishing", func(l string) bool { return strings.Contains(l, "archive written") })
	// after the rename, before the catalog mark: the next run resumes
	killAt(t, m, "archive renamed into place", func(l string) bool { return strings.Contains(l, `"archive sealed"`) })
	killAt(t, m, "first source removed", func(l string) bool { return strings.Contains(l, "source removed") })

	r := ntt(t, m.args()...)
	require.Contains(t, []int{0, 2}, r.code, r.stderr)
	checkInvariants(t, m, "after the rerun")
	require.True(t, exists(m.archive()))
	require.True(t, m.marked(t))
	for _, s := range m.sources {
		require.False(t, exists(s), s)
	}
	require.False(t, exists(partial))
	r = ntt(t, m.args()...)
	require.Equal(t, 2, r.code, r.stderr)
}

// mountedMedium is setup with a real ext4 image, mounted at root/<hash> as
// the runbook's Phase 1 leaves it (loopdev.Mount is ntt-mount-helper
// mount).
func mountedMedium(t *testing.T) (medium_, string, *loopdev.Layout) {
	t.Helper()
	testenv.Shared(t, testenv.StaleLoops) // a mount reaps NTT's stale loops
	testenv.RequireRoot(t)
	m := setup(t, 1<<20, true, true)
	require.NoError(t, os.Remove(m.sources[0]))
	require.NoError(t, testimg.BuildImage(m.sources[0], testimg.Spec{FSType: "ext4", Size: 8 << 20,
		Entries: []testimg.Entry{{Path: "f", Kind: testimg.File, Data: []byte("evidence\n")}}}))
	root := filepath.Join(t.TempDir(), "mnt")
	lay, err := loopdev.Mount(t.Context(), loopdev.MountSpec{Medium: hash, Image: m.sources[0], Root: root})
	require.NoError(t, err)
	t.Cleanup(func() {
		loopdev.Unmount(context.Background(), hash, root, &loopdev.UnmountOptions{Image: m.sources[0]})
	})
	return m, root, lay
}

// deletedLoops lists `losetup -l` lines of loops whose backing file was
// deleted and was image (the runbook's `losetup -l | grep deleted`).
func deletedLoops(t *testing.T, image string) []string {
	t.Helper()
	out, err := exec.Command("losetup", "-l").CombinedOutput()
	require.NoError(t, err, string(out))
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, image) && strings.Contains(l, "deleted") {
			lines = append(lines, l)
		}
	}
	return lines
}

// Phase 4 on a medium still mounted from Phase 1: the archiver unmounts it
// (as the rollback's `ntt-mount-helper unmount` does) before it removes the
// image, so the runbook's checks hold: sources removed, mount point
// removed, no "(deleted)" loop left.
func TestArchiveUnmountsBeforeRemovingImage(t *testing.T) {
	m, root, lay := mountedMedium(t)
	r := ntt(t, m.args("--root", root)...)
	require.Equal(t, 0, r.code, r.stderr)
	require.True(t, m.marked(t))
	for _, s := range m.sources {
		require.False(t, exists(s), s)
	}
	require.False(t, exists(lay.Mount), "Mount point removed: %s", lay.Mount)
	ms, err := loopdev.Mounts(loopdev.MountpointFilter(lay.Mount))
	require.NoError(t, err)
	require.Empty(t, ms)
	require.Empty(t, deletedLoops(t, m.sources[0]))
}

// An image that is also mounted somewhere NTT did not mount it: the
// archiver takes its own mount down, finds the image still in use, keeps
// every source and says where it is mounted (exit 1). Once that mount is
// gone, a rerun finishes.
func TestArchiveRefusesImageMountedElsewhere(t *testing.T) {
	m, root, lay := mountedMedium(t)
	other := loopdevMountElsewhere(t, m.sources[0])
	r := ntt(t, m.args("--root", root)...)
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "is still in use: /dev/loop")
	require.Contains(t, r.stderr, "image in use, sources kept")
	require.Contains(t, r.stderr, other)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(r.stderr[strings.LastIndex(r.stderr, "ntt-archiver:"):]), "\n")+1, "one sentence")
	for _, s := range m.sources {
		require.True(t, exists(s), "%s kept", s)
	}
	require.True(t, m.marked(t), "sealed and marked: only the removal waits")
	require.False(t, exists(lay.Mount), "NTT's own mount is taken down")

	require.NoError(t, unix.Unmount(other, 0))
	r = ntt(t, m.args("--root", root)...)
	require.Equal(t, 0, r.code, r.stderr)
	for _, s := range m.sources {
		require.False(t, exists(s), s)
	}
	require.Empty(t, deletedLoops(t, m.sources[0]))
}

// loopdevMountElsewhere attaches image to a loop of its own (autoclear)
// and mounts it read-only at a directory outside the mount root.
func loopdevMountElsewhere(t *testing.T, image string) string {
	t.Helper()
	a, err := loopdev.Attach(t.Context(), image, loopdev.AttachParams{Autoclear: true})
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "media")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, unix.Mount(a.Device, dir, "ext4", unix.MS_RDONLY, "noload"))
	require.NoError(t, a.Close())
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}
