package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/HRDAG/ntt/archive"
	"github.com/HRDAG/ntt/internal/demo"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loopdev"
	"github.com/stretchr/testify/require"
	"github.com/zeebo/blake3"
)

func (e *env) queueArgs(extra ...string) []string {
	return append([]string{"--db", e.url, "--root", e.root, "--store", e.store, "--dest", e.dest, "--work", e.work,
		"--images", e.images, "--workers", "3"}, extra...)
}

// queue runs ntt-pipeline with the queue's arguments and returns its exit
// code, stdout and stderr.
func (e *env) queue(extra ...string) (int, string, string) {
	e.t.Helper()
	cmd := exec.Command(testenv.Binary(e.t), e.queueArgs(extra...)...)
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

// queueMedia builds the queue test's directory: four ready ext4 media, two
// of them sharing most of their files, and one being imaged by a real
// process. It returns the ready media's entries by hash and the imaging
// medium's hash.
func queueMedia(t *testing.T, e *env) (map[string][]testimg.Entry, string) {
	ready := map[string][]testimg.Entry{}
	add := func(name string, files map[string]uint64) {
		h, _, entries := smallMediumSpec(t, e.images, name, files)
		ready[h] = entries
	}
	common := map[string]uint64{}
	for i := range 8 {
		common[fmt.Sprintf("shared/doc-%d.txt", i)] = uint64(500 + i)
	}
	withOne := func(p string, seed uint64) map[string]uint64 {
		m := map[string]uint64{p: seed}
		for k, v := range common {
			m[k] = v
		}
		return m
	}
	add("office-a", withOne("only-a.txt", 901))
	add("office-b", withOne("notes/only-b.txt", 902))
	add("floppy-1", map[string]uint64{"letter.txt": 11, "dir/x.bin": 12, "dir/y.bin": 13})
	add("floppy-2", map[string]uint64{"one.txt": 21})
	imaging := hashOf("still-imaging")
	startImager(t, filepath.Join(e.images, imaging+".img"), filepath.Join(e.images, imaging+".map"))
	return ready, imaging
}

// checkArchivedTree: the medium is archived and its tree holds exactly
// the spec's files, each a hardlink to the blob of its content.
func checkArchivedTree(t *testing.T, e *env, h string, entries []testimg.Entry) {
	t.Helper()
	var copyDone *string
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT copy_done::text FROM medium WHERE medium_hash = $1`, h).Scan(&copyDone))
	require.NotNil(t, copyDone, "medium %s archived", h)
	st := e.state(h)
	require.Zero(t, st.Pending+st.Claimed)
	files := 0
	for _, en := range entries {
		sum := blake3.Sum256(en.Content())
		require.Equal(t, hex.EncodeToString(sum[:]), st.Tree["/"+en.Path], "medium %s: %s", h, en.Path)
		files++
	}
	n := 0
	for _, v := range st.Tree {
		if v != "dir" {
			n++
		}
	}
	require.Equal(t, files, n, "medium %s: the tree has exactly the image's files", h)
}

// queueImageMedia adds to the queue's directory the media read from their
// image when the kernel cannot mount them: the demo's floppy and CD-ROM,
// and a second FAT floppy and ISO CD-ROM built from specs, all settled. It
// returns the demo media and the spec media's files by hash.
func queueImageMedia(t *testing.T, e *env) ([]*demo.Medium, map[string][]testimg.Entry) {
	testimg.RequireFATTools(t)
	var built []*demo.Medium
	for _, c := range imageMedia {
		m := e.medium(c.build)
		settled(t, m.Image)
		built = append(built, m)
	}
	files := func(es []testimg.Entry) []testimg.Entry {
		var out []testimg.Entry
		for _, en := range es {
			if en.Kind == testimg.File {
				out = append(out, en)
			}
		}
		return out
	}
	spec := map[string][]testimg.Entry{}
	fat := testimg.FATSpec{Bits: 12, Label: "LETTERS", Entries: []testimg.Entry{
		{Path: "LETTER.TXT", Kind: testimg.File, Seed: 31, Size: 3000},
		{Path: "Photos", Kind: testimg.Dir},
		{Path: "Photos/scan of page 1.jpg", Kind: testimg.File, Seed: 32, Size: 40000},
		{Path: "Photos/empty.jpg", Kind: testimg.File},
	}}
	h := hashOf("fat-floppy-2")
	require.NoError(t, testimg.BuildFATImage(filepath.Join(e.images, h+".img"), fat))
	settled(t, filepath.Join(e.images, h+".img"))
	spec[h] = files(fat.Entries)
	iso := []testimg.Entry{
		{Path: "README.TXT", Kind: testimg.File, Seed: 41, Size: 700},
		{Path: "Reports", Kind: testimg.Dir},
		{Path: "Reports/annual report 1999.pdf", Kind: testimg.File, Seed: 42, Size: 90000},
		{Path: "Reports/annex.txt", Kind: testimg.File, Seed: 43, Size: 5000},
	}
	h = hashOf("iso-cdrom-2")
	img := filepath.Join(e.images, h+".img")
	require.NoError(t, testimg.BuildISO(img, testimg.Spec{Entries: iso}, "xorriso", "-as", "mkisofs", "-R", "-J", "-o", testimg.ISOImage, testimg.ISOTree))
	settled(t, img)
	spec[h] = files(iso)
	return built, spec
}

// The queue test: ten media — four ext4 (two sharing most of their
// files), two FAT floppies and two ISO CD-ROMs, one of random bytes, one
// being imaged — taken three at a time with --read auto.
func TestQueueAllArchivesReadyMediaAndLeavesImaging(t *testing.T) {
	e := newEnv(t)
	ready, imaging := queueMedia(t, e)
	mounted := map[string]bool{}
	for h := range ready {
		mounted[h] = true
	}
	built, fromSpec := queueImageMedia(t, e)
	for h, entries := range fromSpec {
		ready[h] = entries
	}
	unread := unreadableMedium(t, e.images, "random-in-queue")
	names, err := os.ReadDir(e.images)
	require.NoError(t, err)
	media := 0
	for _, n := range names {
		if strings.HasSuffix(n.Name(), ".img") {
			media++
		}
	}
	require.GreaterOrEqual(t, media, 10)
	logFile := filepath.Join(e.dir, "queue.log")
	metrics := filepath.Join(e.dir, "run.json")

	code, out, errs := e.queue("--all", "--jobs", "3", "--archive-unreadable", "--log", logFile, "--metrics", metrics)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	for h, entries := range ready {
		checkArchivedTree(t, e, h, entries)
		require.Contains(t, out, "start    "+h)
		require.Regexp(t, `archived +`+h+` in `, out)
		_, err := os.Stat(filepath.Join(e.images, h+".img"))
		require.True(t, os.IsNotExist(err), "the sources of %s are removed", h)
		e.checkNothingLeft(h, filepath.Join(e.images, h+".img"))
	}
	for _, m := range built {
		e.checkImageRun(m) // read from the image: the kernel has no vfat or iso9660
		require.Regexp(t, `archived +`+m.Hash+` in `, out)
	}
	// --read auto: the ext4 media are mounted, the FAT and ISO ones read
	// from their image.
	kernel, err := kernelFilesystems("/proc/filesystems")
	require.NoError(t, err)
	require.False(t, kernel["vfat"] || kernel["iso9660"], "this test expects a kernel without vfat and iso9660")
	for h := range ready {
		var reader string
		require.NoError(t, e.db.QueryRow(context.Background(), `SELECT reader FROM medium WHERE medium_hash = $1`, h).Scan(&reader))
		want := readImage
		if mounted[h] {
			want = readMount
		}
		require.Equal(t, want, reader, "medium %s", h)
	}
	// The two offices share their common files: one blob each.
	a, b := e.state(hashOf("office-a")), e.state(hashOf("office-b"))
	for i := range 8 {
		p := fmt.Sprintf("/shared/doc-%d.txt", i)
		require.Equal(t, a.Tree[p], b.Tree[p])
	}
	// The imaging medium is untouched: image kept, nothing in the catalog.
	require.Contains(t, out, "skip     "+imaging+": imaging")
	_, err = os.Stat(filepath.Join(e.images, imaging+".img"))
	require.NoError(t, err)
	var n int
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT count(*) FROM medium WHERE medium_hash = $1`, imaging).Scan(&n))
	require.Zero(t, n)
	// Summary and run metrics.
	require.Contains(t, out, "8 archived, 1 archived unreadable, 1 skipped")
	_, err = archive.Verify(context.Background(), filepath.Join(e.dest, unread+".tar.zst"))
	require.NoError(t, err, "the unreadable medium is sealed")
	var rm runMetrics
	b2, err := os.ReadFile(metrics)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b2, &rm))
	require.Len(t, rm.Media, 10)
	require.Equal(t, 3, rm.Jobs)
	require.Equal(t, 1, rm.Workers, "three jobs share --workers 3")
	for _, m := range rm.Media {
		if m.Hash == imaging {
			require.Equal(t, "skipped", m.Outcome)
			continue
		}
		if m.Hash == unread {
			require.Equal(t, stateArchivedUnreadable, m.Outcome)
			require.Contains(t, m.Reason, "no known filesystem")
			continue
		}
		require.Equal(t, "archived", m.Outcome, "%+v", m)
		require.NotNil(t, m.Metrics)
		require.Equal(t, m.Hash, m.Metrics.Medium)
		require.Positive(t, m.Metrics.FilesCopied)
	}
	// Routine lines go to the log file, not the terminal.
	lb, err := os.ReadFile(logFile)
	require.NoError(t, err)
	require.Contains(t, string(lb), "Batch completed")
	require.NotContains(t, errs, "Batch completed")

	// A rerun has nothing to do.
	code, out, errs = e.queue("--all", "--jobs", "3", "--archive-unreadable")
	require.Equal(t, 2, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	require.Contains(t, out, "Nothing to do")
	require.Contains(t, out, "skip     "+imaging)
}

// A failed medium is recorded and the queue goes on; the exit status says
// one failed.
func TestQueueFailureGoesOn(t *testing.T) {
	e := newEnv(t)
	good, goodImg := smallMedium(t, e.images, "good", map[string]uint64{"a.txt": 1})
	bad := hashOf("bad")
	oldFile(t, filepath.Join(e.images, bad+".img"), make([]byte, 1<<20)) // zeros: nothing to mount

	code, out, errs := e.queue("--order", "name", goodImg, filepath.Join(e.images, bad+".img"))
	require.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	require.Regexp(t, `failed +`+bad+` after .*: mount: `, out)
	require.Regexp(t, `archived +`+good, out)
	var flag bool
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT problems ? 'mount_failed' FROM medium WHERE medium_hash = $1`, bad).Scan(&flag))
	require.True(t, flag)
	require.Contains(t, out, "1 archived, 1 failed")
	e.checkNothingLeft(bad, filepath.Join(e.images, bad+".img"))
	var problems string
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT problems::text FROM medium WHERE medium_hash = $1`, bad).Scan(&problems))
	// Bad input changes nothing: an image not named by a hash.
	code, _, errs = e.queue(filepath.Join(e.images, bad+".img"), filepath.Join(e.images, "NOT-A-HASH.img"))
	require.Equal(t, 1, code)
	require.Contains(t, errs, "NOT-A-HASH.img")
	var after string
	require.NoError(t, e.db.QueryRow(context.Background(), `SELECT problems::text FROM medium WHERE medium_hash = $1`, bad).Scan(&after))
	require.Equal(t, problems, after, "a refused command line changes nothing")
	_ = good
}

// unreadableMedium writes a settled image of random bytes (no partition
// table, no filesystem), a finished mapfile and a ddrescue log.
func unreadableMedium(t *testing.T, dir, name string) string {
	h := hashOf(name)
	b := make([]byte, 2<<20)
	rand.NewChaCha8([32]byte{1}).Read(b)
	b[510], b[511] = 0, 0 // no MBR signature by chance
	oldFile(t, filepath.Join(dir, h+".img"), b)
	oldFile(t, filepath.Join(dir, h+".map"), []byte(fmt.Sprintf("# Mapfile. Created by GNU ddrescue version 1.27\n"+
		"# current_pos  current_status  current_pass\n0x00000000     +               1\n#      pos        size  status\n0x00000000  0x%08X  +\n", len(b))))
	oldFile(t, filepath.Join(dir, h+"-ddrescue.log"), []byte("ddrescue log\n"))
	return h
}

func TestQueueArchiveUnreadable(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	unread := unreadableMedium(t, e.images, "random-bytes")
	good, _, entries := smallMediumSpec(t, e.images, "readable", map[string]uint64{"a.txt": 3, "b.txt": 4})

	// Without the flag, the unreadable medium fails at the mount and stays.
	code, out, errs := e.queue("--all")
	require.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	require.Regexp(t, `failed +`+unread+` after .*: mount: `, out)
	_, err := os.Stat(filepath.Join(e.images, unread+".img"))
	require.NoError(t, err, "sources kept")
	checkArchivedTree(t, e, good, entries)

	code, out, errs = e.queue("--all", "--archive-unreadable")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	require.Contains(t, out, "sealed unreadable: no partition table and no known filesystem")
	require.Contains(t, out, "1 archived unreadable")

	// Sealed and verified like any archive, with the mapfile and the log.
	arch := filepath.Join(e.dest, unread+".tar.zst")
	m, err := archive.Verify(ctx, arch)
	require.NoError(t, err)
	var names []string
	for _, mem := range m.Members {
		names = append(names, mem.Name)
	}
	require.ElementsMatch(t, []string{unread + ".img", unread + ".map", unread + "-ddrescue.log"}, names)
	for _, n := range names {
		_, err := os.Stat(filepath.Join(e.images, n))
		require.True(t, os.IsNotExist(err), "source %s removed", n)
	}
	var copyDone, archivePath *string
	var reason string
	require.NoError(t, e.db.QueryRow(ctx, `SELECT copy_done::text, archive_path, problems->'archived_unreadable'->>'reason' FROM medium WHERE medium_hash = $1`, unread).
		Scan(&copyDone, &archivePath, &reason))
	require.NotNil(t, copyDone)
	require.Equal(t, arch, *archivePath)
	require.Contains(t, reason, "unknown content")
	e.checkNothingLeft(unread, filepath.Join(e.images, unread+".img"))

	code, out, errs = e.status("--json")
	require.Equal(t, 0, code, errs)
	var st []mediumStatus
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	got := map[string]string{}
	for _, s := range st {
		got[string(s.Hash)] = s.State
	}
	require.Equal(t, map[string]string{unread: stateArchivedUnreadable, good: stateArchived}, got)
	code, out, errs = e.status()
	require.Equal(t, 0, code, errs)
	require.Regexp(t, unread+` +archived unreadable .*archived_unreadable`, out)

	code, _, _ = e.queue("--all", "--archive-unreadable")
	require.Equal(t, 2, code)
}

// A medium whose filesystem the probe knows is never sealed unreadable,
// even when the kernel cannot mount it; nor one with catalogued inodes.
func TestUnreadableRefusesReadableMedia(t *testing.T) {
	testimg.RequireFATTools(t)
	dir := t.TempDir()
	fat := filepath.Join(dir, hashOf("fat")+".img")
	require.NoError(t, testimg.BuildFATImage(fat, testimg.FATSample(12, 3)))
	_, err := unreadableWhy(fat)
	require.ErrorIs(t, err, errReadable)
	require.ErrorContains(t, err, "vfat")

	ext := filepath.Join(dir, hashOf("ext")+".img")
	require.NoError(t, testimg.BuildImage(ext, testimg.Spec{FSType: "ext4", Size: 2 << 20}))
	_, err = unreadableWhy(ext)
	require.ErrorIs(t, err, errReadable)

	zeros := filepath.Join(dir, hashOf("zeros")+".img")
	require.NoError(t, os.WriteFile(zeros, make([]byte, 1<<20), 0o644))
	why, err := unreadableWhy(zeros)
	require.NoError(t, err)
	require.Contains(t, why, "erased")
}

// resumeMedia builds the same five small media in any env (their names,
// hence hashes, and their files are fixed).
func resumeMedia(t *testing.T, e *env) []string {
	var hs []string
	for i := range 5 {
		files := map[string]uint64{}
		for j := range 6 + 3*i {
			files[fmt.Sprintf("d%d/f%d.bin", j%3, j)] = uint64(1000 + j + 7*i%3) // overlaps between media
		}
		h, _ := smallMedium(t, e.images, fmt.Sprintf("resume-%d", i), files)
		hs = append(hs, h)
	}
	return hs
}

// comparable is a medium's final state without the archive's member
// hashes (two builds of one spec differ in their ext4 UUIDs and times).
func comparable(s finalState) finalState {
	s.Archive = nil
	return s
}

// How queueStopped stops the queue after its first SIGTERM.
const (
	stopGraceful = iota // nothing more
	stopSecond          // a second SIGTERM
	stopKill            // SIGKILL
)

// queueStopped starts the queue with -v and sends SIGTERM as soon as a
// copy phase starts, then what how says. It returns the exit code and the
// output.
func (e *env) queueStopped(how int, extra ...string) (int, string) {
	e.t.Helper()
	cmd := exec.Command(testenv.Binary(e.t), e.queueArgs(append([]string{"-v"}, extra...)...)...)
	stderr, err := cmd.StderrPipe()
	require.NoError(e.t, err)
	var out strings.Builder
	cmd.Stdout = &out
	require.NoError(e.t, cmd.Start())
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	sent := false
	var log strings.Builder
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		var ev map[string]any
		if !sent && json.Unmarshal(sc.Bytes(), &ev) == nil && ev["msg"] == "phase started" && ev["phase"] == "copy" {
			cmd.Process.Signal(syscall.SIGTERM)
			sent = true
		}
		// The second signal once the first is taken (the kernel merges
		// two pending SIGTERMs into one).
		if strings.Contains(sc.Text(), "signal again to stop at once") {
			switch how {
			case stopSecond:
				cmd.Process.Signal(syscall.SIGTERM)
			case stopKill:
				cmd.Process.Signal(syscall.SIGKILL)
			}
		}
	}
	require.True(e.t, sent, "a copy phase started: %s", log.String())
	err = cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return code, out.String() + log.String()
}

func TestQueueStoppedBySignalResumes(t *testing.T) {
	ref := newEnv(t)
	hs := resumeMedia(t, ref)
	code, out, errs := ref.queue("--all", "--jobs", "2")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
	want := map[string]finalState{}
	for _, h := range hs {
		want[h] = comparable(ref.state(h))
	}

	for how, name := range []string{"graceful", "second signal", "SIGKILL"} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			resumeMedia(t, e)
			code, out := e.queueStopped(how, "--all", "--jobs", "2")
			ctx := context.Background()
			if how == stopKill {
				// Killed: mounts and claims may stay; the rerun takes
				// them over (stale loops reaped, claims back by lease).
				require.Equal(t, -1, code, out)
			} else {
				require.Equal(t, 1, code, out)
			}
			switch how {
			case stopGraceful:
				require.Contains(t, out, "stopping — running media finish their batch")
				require.Contains(t, out, "interrupted")
				// Claims given back, no interruption recorded as a failure.
				var claimed, failedFlags int
				require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*) FROM inode WHERE NOT copied AND claimed_by IS NOT NULL`).Scan(&claimed))
				require.Zero(t, claimed)
				require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*) FROM medium, jsonb_each(problems) WHERE key LIKE '%_failed'`).Scan(&failedFlags))
				require.Zero(t, failedFlags)
			case stopSecond:
				require.Contains(t, out, "stopping at once")
			}
			// Nothing mounted or attached (the kernel releases a lazily
			// detached filesystem and its autoclear loop after the exit);
			// after a SIGKILL the rerun takes the mounts over.
			require.Eventually(t, func() bool {
				if how == stopKill {
					return true
				}
				for _, h := range hs {
					img := filepath.Join(e.images, h+".img")
					if ms, err := loopdev.Mounts(loopdev.MountpointFilter(filepath.Join(e.root, h))); err != nil || len(ms) > 0 {
						return false
					}
					if ls, err := loopdev.FindByImage(img); err != nil || len(ls) > 0 {
						return false
					}
				}
				return true
			}, 30*time.Second, 100*time.Millisecond)

			code, out, errs := e.queue("--all", "--jobs", "2")
			require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errs)
			for _, h := range hs {
				require.Equal(t, want[h], comparable(e.state(h)), "medium %s", h)
				e.checkNothingLeft(h, filepath.Join(e.images, h+".img"))
			}
			code, _, _ = e.queue("--all")
			require.Equal(t, 2, code)
		})
	}
}

// The single-medium run takes --log too: the full log goes to the file.
func TestSingleRunLogFile(t *testing.T) {
	e := newEnv(t)
	_, img := smallMedium(t, e.images, "single-log", map[string]uint64{"a.txt": 1, "b.txt": 2})
	logFile := filepath.Join(e.dir, "copier.log")
	code, _, errs := e.pipeline(img, "--log", logFile)
	require.Equal(t, 0, code, errs)
	b, err := os.ReadFile(logFile)
	require.NoError(t, err)
	require.Contains(t, string(b), `"msg":"Batch completed"`)
	require.Contains(t, string(b), `"msg":"phase started"`)
	require.Contains(t, errs, `"msg":"phase started"`, "off a terminal stderr keeps its JSON lines")
}
