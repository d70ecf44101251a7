package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/HRDAG/ntt/archive"
	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/internal/demo"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is one archivist's machine in miniature: image dir, mount root,
// store, archive destination, work dir, and a catalog database.
type env struct {
	t                                    *testing.T
	dir, images, root, store, dest, work string
	db                                   *pgxpool.Pool
	url                                  string
}

func newEnv(t *testing.T) *env {
	// The mount phase reaps NTT's stale loops: never while a test keeps
	// one on purpose.
	testenv.Shared(t, testenv.StaleLoops)
	return env0(t)
}

func env0(t *testing.T) *env {
	testenv.RequireRoot(t)
	// The mount root must be short and outside t.TempDir's deep paths only
	// for readability; any directory works.
	dir := t.TempDir()
	e := &env{t: t, dir: dir, images: filepath.Join(dir, "img"), root: filepath.Join(dir, "mnt"),
		store: filepath.Join(dir, "cold"), dest: filepath.Join(dir, "cold", "img-read"), work: filepath.Join(dir, "work")}
	require.NoError(t, os.MkdirAll(e.dest, 0o755)) // the store's and archives' disks exist
	e.db = pgtest.New(t)
	e.url = e.db.Config().ConnString()
	return e
}

func (e *env) args(image string, extra ...string) []string {
	return append([]string{"--db", e.url, "--root", e.root, "--store", e.store, "--dest", e.dest, "--work", e.work, "--workers", "2"},
		append(extra, image)...)
}

// pipeline runs ntt-pipeline to the end and returns its exit code, stdout
// and stderr.
func (e *env) pipeline(image string, extra ...string) (int, string, string) {
	e.t.Helper()
	cmd := exec.Command(testenv.Binary(e.t), e.args(image, extra...)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(e.t, err)
	}
	return code, out.String(), errb.String()
}

// pipelineKilledAt starts ntt-pipeline and kills it with SIGKILL as soon as
// its log says the named phase started. It reports whether the phase was
// reached.
func (e *env) pipelineKilledAt(image, phase string, extra ...string) bool {
	e.t.Helper()
	cmd := exec.Command(testenv.Binary(e.t), e.args(image, extra...)...)
	stderr, err := cmd.StderrPipe()
	require.NoError(e.t, err)
	cmd.Stdout = io.Discard
	require.NoError(e.t, cmd.Start())
	reached := false
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev["msg"] == "phase started" && ev["phase"] == phase {
			cmd.Process.Signal(syscall.SIGKILL)
			reached = true
			break
		}
	}
	go io.Copy(io.Discard, stderr)
	cmd.Wait()
	return reached
}

func (e *env) sample() *demo.Sample {
	s, err := demo.Generate(e.images)
	require.NoError(e.t, err)
	return s
}

// finalState is everything a finished run leaves, in comparable form.
type finalState struct {
	Inodes, Paths, Pending, Claimed, Copied int64
	Statuses                                map[string]int64
	Blobs                                   []string
	Tree                                    map[string]string // path → blob or link target or "dir"
	Archive                                 []string          // member names with their BLAKE3
}

func (e *env) state(h string) finalState {
	t := e.t
	ctx := context.Background()
	var s finalState
	require.NoError(t, e.db.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM inode WHERE medium_hash = $1),
		(SELECT count(*) FROM path WHERE medium_hash = $1),
		(SELECT count(*) FROM inode WHERE medium_hash = $1 AND copied = false AND claimed_by IS NULL),
		(SELECT count(*) FROM inode WHERE medium_hash = $1 AND copied = false AND claimed_by IS NOT NULL),
		(SELECT count(*) FROM inode WHERE medium_hash = $1 AND copied = true)`, h).
		Scan(&s.Inodes, &s.Paths, &s.Pending, &s.Claimed, &s.Copied))
	rows, err := e.db.Query(ctx, `SELECT status || '/' || coalesce(claimed_by, ''), count(*) FROM inode WHERE medium_hash = $1 GROUP BY 1`, h)
	require.NoError(t, err)
	s.Statuses = map[string]int64{}
	for rows.Next() {
		var k string
		var n int64
		require.NoError(t, rows.Scan(&k, &n))
		s.Statuses[k] = n
	}
	rows, err = e.db.Query(ctx, `SELECT DISTINCT blobid FROM inode WHERE medium_hash = $1 AND blobid IS NOT NULL ORDER BY 1`, h)
	require.NoError(t, err)
	s.Blobs, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)

	s.Tree = map[string]string{}
	treeRoot := filepath.Join(e.store, "archived", h)
	require.NoError(t, filepath.WalkDir(treeRoot, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		rel := strings.TrimPrefix(p, treeRoot)
		switch {
		case d.IsDir():
			s.Tree[rel] = "dir"
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			require.NoError(t, err)
			s.Tree[rel] = "-> " + target
		default:
			s.Tree[rel] = blake3File(t, p)
		}
		return nil
	}))
	m, err := archive.Verify(ctx, filepath.Join(e.dest, h+".tar.zst"))
	require.NoError(t, err, "the archive verifies")
	for _, mem := range m.Members {
		s.Archive = append(s.Archive, mem.Name+" "+mem.BLAKE3)
	}
	return s
}

func blake3File(t *testing.T, p string) string {
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	h := blake3.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

// checkNothingLeft: no mount under the root, no loop device on the image.
func (e *env) checkNothingLeft(h, image string) {
	t := e.t
	st, err := loopdev.Status(h, e.root)
	if err == nil && st != nil {
		require.Empty(t, st.MountPoints(), "the medium is still mounted")
	}
	loops, err := loopdev.List()
	require.NoError(t, err)
	for _, l := range loops {
		require.NotEqual(t, image, l.BackingFile, "a loop device still backs the image: %s", l.Device)
	}
}

// metrics reads the metrics file the run wrote for medium h.
func (e *env) metrics(h string) Metrics {
	t := e.t
	t.Helper()
	var m Metrics
	b, err := os.ReadFile(filepath.Join(e.work, medium.MustParse(h).Short()+".metrics.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

// outcomes is each phase of m by name and outcome only.
func outcomes(m Metrics) []PhaseMetric {
	var out []PhaseMetric
	for _, ph := range m.Phases {
		out = append(out, PhaseMetric{Name: ph.Name, Outcome: ph.Outcome})
	}
	return out
}

// failureLine is the last line of the program's stderr that names medium
// h as a failure line does and contains substr; "" if there is none.
func failureLine(errs, h, substr string) string {
	var line string
	for _, l := range strings.Split(errs, "\n") {
		if strings.HasPrefix(l, "ntt-pipeline: medium "+h+": ") && strings.Contains(l, substr) {
			line = l
		}
	}
	return line
}

// openProblem returns the error text of flag in medium h's problems,
// after checking the flag is there, unresolved, recorded by phase.
func (e *env) openProblem(h, flag, phase string) string {
	t := e.t
	t.Helper()
	p := problemsOf(t, e, h)
	require.Contains(t, p, flag, "problems: %v", p)
	msg, ok := p[flag]["error"].(string)
	require.True(t, ok, "%s has no error text: %v", flag, p[flag])
	require.Equal(t, phase, p[flag]["phase"])
	require.NotContains(t, p[flag], "resolved_at")
	return msg
}

// checkNotCatalogued: medium h has no inode and no path row and is not
// marked enumerated.
func (e *env) checkNotCatalogued(h string) {
	t := e.t
	t.Helper()
	var inodes, paths int64
	var enumDone *time.Time
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM inode WHERE medium_hash = $1),
		(SELECT count(*) FROM path WHERE medium_hash = $1),
		enum_done FROM medium WHERE medium_hash = $1`, h).Scan(&inodes, &paths, &enumDone))
	require.Zero(t, inodes, "inode rows for medium %s", h)
	require.Zero(t, paths, "path rows for medium %s", h)
	require.Nil(t, enumDone, "medium %s marked enumerated", h)
}

func TestPipelineEndToEnd(t *testing.T) {
	e := newEnv(t)
	s := e.sample()
	code, out, errs := e.pipeline(s.Image)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	ctx := context.Background()
	h := s.Hash

	// Catalog: enumerated, loaded, copied, archived.
	var enumDone, copyDone *time.Time
	var archivePath *string
	var health *string
	require.NoError(t, e.db.QueryRow(ctx, `SELECT enum_done, copy_done, archive_path, health FROM medium WHERE medium_hash = $1`, h).
		Scan(&enumDone, &copyDone, &archivePath, &health))
	require.NotNil(t, enumDone)
	require.NotNil(t, copyDone)
	require.NotNil(t, archivePath)
	require.Equal(t, filepath.Join(e.dest, h+".tar.zst"), *archivePath)
	require.NotNil(t, health)
	require.Equal(t, "incomplete", *health, "one unrescued 4 KiB region: ≥ 90 % rescued")

	st := e.state(h)
	require.Zero(t, st.Pending)
	require.Zero(t, st.Claimed)
	require.Equal(t, st.Inodes, st.Copied)
	require.Positive(t, st.Statuses["success/NON_FILE"], "directories and symlinks are NON_FILE")

	// Store: every blob's content re-hashes to its name, 0644.
	for _, b := range st.Blobs {
		p := filepath.Join(e.store, "by-hash", b[:2], b[2:4], b)
		require.Equal(t, b, blake3File(t, p))
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, fs.FileMode(0o644), fi.Mode().Perm())
	}
	// Duplicates within and across partitions are one blob.
	require.Equal(t, st.Tree["/p1/reports/2003/annual.doc"], st.Tree["/p1/reports/2003/annual-copy.doc"])
	require.Equal(t, st.Tree["/p1/reports/2003/annual.doc"], st.Tree["/p2/backup/annual.doc"])
	require.Equal(t, st.Tree["/p1/reports/2003/annual.doc"], st.Tree["/p1/reports/latest.doc"])
	require.Equal(t, "-> reports/2004", st.Tree["/p1/current"])
	// Every hostile name is in the tree.
	for _, n := range testimg.HostileNames() {
		_, ok := st.Tree["/p1/names/"+n]
		require.True(t, ok, "%q missing from the tree", n)
	}
	var files int64
	require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*) FROM path p JOIN inode i USING (medium_hash, dev, ino) WHERE p.medium_hash = $1 AND i.fs_type = 'f'`, h).Scan(&files))
	require.Equal(t, int64(s.Files), files)

	// The file over the unrescued region is copied as imaged, its damage recorded.
	var damage *string
	require.NoError(t, e.db.QueryRow(ctx, `SELECT i.damage::text FROM inode i JOIN path p USING (medium_hash, dev, ino) WHERE p.medium_hash = $1 AND p.path = $2`,
		h, []byte(demo.DamagedFile)).Scan(&damage))
	require.NotNil(t, damage, "damaged ranges of %s recorded", demo.DamagedFile)

	// Archive: sources removed, members are the seed's list that existed.
	for _, m := range s.Members {
		_, err := os.Stat(filepath.Join(e.images, m))
		require.True(t, os.IsNotExist(err), "%s not removed", m)
	}
	require.Len(t, st.Archive, len(s.Members), "the manifest lists every member that existed")

	// Metrics.
	m := e.metrics(h)
	require.Equal(t, h, m.Medium)
	require.Equal(t, st.Inodes, m.Inodes)
	require.Positive(t, m.EnumRecords)
	require.Positive(t, m.FilesCopied)
	require.Positive(t, m.FilesDeduped)
	require.Greater(t, m.DedupRatePct, 0.0)
	require.Positive(t, m.ArchiveBytes)
	require.Contains(t, out, "Dedup rate")
	e.checkNothingLeft(h, s.Image)

	// A rerun has nothing to do.
	code, _, errs = e.pipeline(s.Image)
	require.Equal(t, 2, code, errs)
}

// A run killed at the start of each phase, then rerun, ends exactly where
// an uninterrupted run ends.
func TestPipelineKilledInEachPhaseResumes(t *testing.T) {
	ref := newEnv(t)
	rs := ref.sample()
	code, _, errs := ref.pipeline(rs.Image)
	require.Equal(t, 0, code, errs)
	want := ref.state(rs.Hash)

	for _, phase := range []string{"enumerate", "load", "copy", "archive"} {
		t.Run(phase, func(t *testing.T) {
			e := newEnv(t)
			s := e.sample()
			require.Equal(t, rs.Hash, s.Hash, "the sample is deterministic")
			require.True(t, e.pipelineKilledAt(s.Image, phase), "phase %s never started", phase)
			code, out, errs := e.pipeline(s.Image)
			require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
			got := e.state(s.Hash)
			require.Equal(t, want, got)
			e.checkNothingLeft(s.Hash, s.Image)
		})
	}
}

// A medium whose image ends in the middle of a file (a truncated floppy):
// the pipeline finishes with the file skipped and the problem recorded —
// no hang, no endless retry.
func TestPipelineTruncatedImage(t *testing.T) {
	e := newEnv(t)
	spec := testimg.Spec{FSType: "ext4", Size: 16 << 20, Entries: []testimg.Entry{
		{Path: "a.txt", Kind: testimg.File, Data: []byte("first file\n")},
		{Path: "b.txt", Kind: testimg.File, Data: []byte("second file\n")},
		{Path: "big.bin", Kind: testimg.File, Seed: 7, Size: 4 << 20},
	}}
	h := "0123456789abcdef0123456789abcdef"
	require.NoError(t, os.MkdirAll(e.images, 0o755))
	image := filepath.Join(e.images, h+".img")
	require.NoError(t, testimg.BuildImage(image, spec))

	// Mount it as the pipeline will (it finds it mounted), then cut the
	// image 1 MiB into big.bin and tell the loop device: ext4 would refuse
	// to mount the short image, a FAT floppy would not.
	ctx := context.Background()
	lay, err := loopdev.Mount(ctx, loopdev.MountSpec{Medium: h, Image: image, Root: e.root})
	require.NoError(t, err)
	t.Cleanup(func() { loopdev.Unmount(context.Background(), h, e.root, nil) })
	f, err := os.Open(filepath.Join(lay.Mount, "big.bin"))
	require.NoError(t, err)
	exts, _, err := diagnose.FileExtents(f)
	f.Close()
	require.NoError(t, err)
	cut := exts[0].Physical + 1<<20
	require.NoError(t, testimg.Truncate(image, cut))
	fd, err := unix.Open(lay.Device, unix.O_RDONLY, 0)
	require.NoError(t, err)
	require.NoError(t, unix.IoctlSetInt(fd, unix.LOOP_SET_CAPACITY, 0))
	unix.Close(fd)
	// Drop cached pages so that reads reach the device.
	require.NoError(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200))
	// The ddrescue mapfile says the rest of the disk was never read.
	mapText := "# Mapfile. Created by GNU ddrescue version 1.27\n# current_pos  current_status  current_pass\n0x00000000     ?               1\n" +
		"#      pos        size  status\n" +
		hexLine(0, cut, '+') + hexLine(cut, 16<<20-cut, '?')
	require.NoError(t, os.WriteFile(filepath.Join(e.images, h+".map"), []byte(mapText), 0o644))

	done := make(chan struct{})
	var code int
	var out, errs string
	go func() { code, out, errs = e.pipeline(image, "--keep-sources"); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		t.Fatal("ntt-pipeline hangs on a truncated image")
	}
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	require.Contains(t, errs, "DIAGNOSTIC CHECKPOINT")
	require.Contains(t, errs, "SKIPPED ino=")

	var problems map[string]any
	require.NoError(t, e.db.QueryRow(ctx, `SELECT problems FROM medium WHERE medium_hash = $1`, h).Scan(&problems))
	require.Contains(t, problems, "beyond_eof_detected", "problems: %v", problems)
	var skipped, events int64
	require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*) FROM inode WHERE medium_hash = $1 AND claimed_by LIKE 'DIAGNOSTIC_SKIP:%' AND status = 'failed_permanent'`, h).Scan(&skipped))
	require.Equal(t, int64(1), skipped, "big.bin is skipped")
	require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*) FROM diagnostic_event WHERE medium_hash = $1`, h).Scan(&events))
	require.Positive(t, events)
	var good int64
	require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*) FROM inode WHERE medium_hash = $1 AND fs_type = 'f' AND status = 'success' AND blobid IS NOT NULL`, h).Scan(&good))
	require.Equal(t, int64(2), good, "the readable files are copied")

	m := e.metrics(h)
	require.Positive(t, m.Checkpoints)
	require.Positive(t, m.AutoSkips)
}

func hexLine(pos, size int64, status byte) string {
	return fmt.Sprintf("0x%08X  0x%08X  %c\n", pos, size, status)
}

func TestMissingStoreIsRefusedBeforeAnything(t *testing.T) {
	e := newEnv(t)
	s := e.sample()
	require.NoError(t, os.RemoveAll(e.store))
	code, _, errs := e.pipeline(s.Image)
	require.Equal(t, 1, code)
	require.Contains(t, errs, e.store+" is not a directory")
	var n int
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT count(*) FROM inode WHERE medium_hash = $1`, s.Hash).Scan(&n))
	require.Zero(t, n, "nothing loaded")
	_, err := os.Stat(e.store)
	require.True(t, os.IsNotExist(err), "the store is not created")
	e.checkNothingLeft(s.Hash, s.Image)
}

func TestFindDdrescue(t *testing.T) {
	proc := t.TempDir()
	write := func(pid, cmdline string) {
		require.NoError(t, os.MkdirAll(filepath.Join(proc, pid), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(proc, pid, "cmdline"), []byte(cmdline), 0o644))
	}
	h := medium.MustParse("c9894f1681b5b542eb3a4b75967e9aea")
	write("100", "/usr/bin/ddrescue\x00-d\x00/dev/sr0\x00/data/fast/img/c9894f1681b5b542eb3a4b75967e9aea.img\x00/data/fast/img/c9894f1681b5b542eb3a4b75967e9aea.map\x00")
	write("101", "/usr/bin/ddrescue\x00/dev/sr1\x00/data/fast/img/9210e78b00000000000000000000000.img\x00")
	write("102", "vim\x00c9894f1681b5b542eb3a4b75967e9aea.img\x00")
	write("103", "")
	found, err := findDdrescue(proc, "/data/fast/img/c9894f1681b5b542eb3a4b75967e9aea.img", h)
	require.NoError(t, err)
	require.Len(t, found, 1)
	require.Equal(t, 100, found[0].PID)
}

// The runbook's Test 1 under ntt-pipeline: its mount phase reaps NTT's
// stale loops exactly as ntt-mount-helper mount does (loopdev.Mount): the
// stale loop of another medium's deleted image is detached with the seed's
// log line and `losetup -l | grep deleted` no longer shows it; a loop of a
// deleted file that is not NTT's is left attached.
func TestPipelineMountReapsStaleLoops(t *testing.T) {
	testenv.Exclusive(t, testenv.StaleLoops) // it makes stale loops
	e := env0(t)
	staleLoop := func(path string) loopdev.Loop {
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
	losetup := func(dev string) string {
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
	h := "0123456789abcdef0123456789abcdef"
	require.NoError(t, os.MkdirAll(e.images, 0o755))
	image := filepath.Join(e.images, h+".img")
	require.NoError(t, testimg.BuildImage(image, testimg.Spec{FSType: "ext4", Size: 8 << 20, Entries: []testimg.Entry{
		{Path: "a.txt", Kind: testimg.File, Data: []byte("first file\n")}}}))
	ntt := staleLoop(filepath.Join(e.dir, "old-img", "bb226d2a5f0c4e0e9d1a2b3c4d5e6f70.img"))
	other := staleLoop(filepath.Join(e.dir, "home", "vm-disk.qcow"))
	require.Contains(t, losetup(ntt.Device), "(deleted)")

	code, out, errs := e.pipeline(image)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	require.Contains(t, errs, fmt.Sprintf("Cleaning up stale loop device: %s (deleted inode)", ntt.Device))
	require.Contains(t, errs, fmt.Sprintf("Leaving loop device alone: %s (deleted inode, not an NTT image)", other.Device))
	require.NotContains(t, losetup(ntt.Device), "deleted")
	require.Contains(t, losetup(other.Device), "(deleted)", "someone else's loop must stay attached")
	e.checkNothingLeft(h, image)
}
