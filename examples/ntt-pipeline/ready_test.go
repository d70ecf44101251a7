package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/stretchr/testify/require"
)

const (
	hashA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	hashB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// fakeProc builds a /proc fixture: pid → fd → (target, octal flags).
func fakeProc(t *testing.T, procs map[int]map[int][2]string) string {
	root := t.TempDir()
	for pid, fds := range procs {
		p := filepath.Join(root, strconv.Itoa(pid))
		require.NoError(t, os.MkdirAll(filepath.Join(p, "fd"), 0o755))
		require.NoError(t, os.MkdirAll(filepath.Join(p, "fdinfo"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(p, "comm"), []byte("proc"+strconv.Itoa(pid)+"\n"), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(p, "cmdline"), []byte("proc\x00"), 0o644))
		for fd, tf := range fds {
			n := strconv.Itoa(fd)
			require.NoError(t, os.Symlink(tf[0], filepath.Join(p, "fd", n)))
			require.NoError(t, os.WriteFile(filepath.Join(p, "fdinfo", n),
				[]byte("pos:\t0\nflags:\t"+tf[1]+"\nmnt_id:\t29\nino:\t12\n"), 0o644))
		}
	}
	// Not processes: must be passed over.
	require.NoError(t, os.MkdirAll(filepath.Join(root, "self"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "uptime"), []byte("1 1\n"), 0o644))
	return root
}

func TestFindWritersFixture(t *testing.T) {
	img, mp, other := "/img/"+hashA+".img", "/img/"+hashA+".map", "/img/"+hashB+".img"
	proc := fakeProc(t, map[int]map[int][2]string{
		100: {3: {img, "0100002"}},                        // O_RDWR|O_LARGEFILE: writer
		101: {4: {other, "0100000"}, 5: {mp, "02100001"}}, // reader of B; O_WRONLY|O_APPEND… of A's map
		102: {3: {img, "0100000"}},                        // reader only
		103: {3: {"/elsewhere", "01"}},                    // writes something else
	})
	got, err := findWriters(proc, []string{img, mp, other})
	require.NoError(t, err)
	require.Equal(t, map[string][]fileWriter{
		img: {{PID: 100, Path: img, Comm: "proc100"}},
		mp:  {{PID: 101, Path: mp, Comm: "proc101"}},
	}, got)

	_, err = findWriters(filepath.Join(proc, "absent"), []string{img})
	require.Error(t, err)
}

func TestFdFlagsBadLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "3")
	require.NoError(t, os.WriteFile(p, []byte("pos:\t0\nflags:\t09x\n"), 0o644))
	_, err := fdFlags(p)
	require.ErrorContains(t, err, "flags")
	require.NoError(t, os.WriteFile(p, []byte("pos:\t0\n"), 0o644))
	_, err = fdFlags(p)
	require.ErrorContains(t, err, "no flags line")
}

func TestCurrentProblemsNewestFirst(t *testing.T) {
	ps := currentProblems(map[string]any{
		"mount_failed":  map[string]any{"at": "2026-01-02T00:00:00Z", "error": "boom", "phase": "mount"},
		"enum_failed":   map[string]any{"at": "2026-01-03T00:00:00Z", "resolved_at": "2026-01-04T00:00:00Z"},
		"copy_failed":   map[string]any{"at": "2026-01-01T00:00:00Z"},
		"by_hand":       true,
		"unrescued_gap": map[string]any{},
	})
	var flags []string
	for _, p := range ps {
		flags = append(flags, p.Flag)
	}
	require.Equal(t, []string{"mount_failed", "copy_failed", "by_hand", "unrescued_gap"}, flags)
	require.Equal(t, "boom", ps[0].Error)
	require.Equal(t, "mount", ps[0].Phase)
}

func TestScanImagesOnlyMedia(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{hashA + ".img", hashA + ".map", hashB + ".img", "notahash.img", "ABCDEFABCDEFABCDEF.img", hashB + ".img.part"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644))
	}
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(filepath.Join(dir, hashA+".img"), old, old))
	got, err := scanImages(dir)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, medium.Hash(hashA), got[0].Hash)
	require.Equal(t, medium.Hash(hashB), got[1].Hash)
	// The mapfile is newer than the image: its time counts.
	require.WithinDuration(t, time.Now(), got[0].ModTime, time.Minute)
}

// startImager starts a real process that looks like a ddrescue at work: its
// argv[0] is "ddrescue", its command line names the image and mapfile, and
// it holds the image open for writing (fd 3). It is killed at the end of
// the test.
func startImager(t *testing.T, image, mapfile string) *exec.Cmd {
	t.Helper()
	f, err := os.OpenFile(image, os.O_WRONLY|os.O_CREATE, 0o644)
	require.NoError(t, err)
	defer f.Close()
	bash, err := exec.LookPath("bash")
	require.NoError(t, err)
	// "sleep …; :" keeps bash itself running (no exec of the last command),
	// so the process with the ddrescue command line is the one we started.
	cmd := &exec.Cmd{Path: bash, Args: []string{"ddrescue", "-c", "sleep 600; :", "ddrescue", "/dev/sdz", image, mapfile},
		ExtraFiles: []*os.File{f}, SysProcAttr: &syscall.SysProcAttr{Setpgid: true}}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { stopGroup(cmd) })
	return cmd
}

// stopGroup kills the process group the test started (bash and its
// sleep, which inherits the open image) and reaps bash.
func stopGroup(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
}

func TestReadinessRealImager(t *testing.T) {
	dir := t.TempDir()
	imaging := filepath.Join(dir, hashA+".img")
	ready := filepath.Join(dir, hashB+".img")
	require.NoError(t, os.WriteFile(ready, make([]byte, 4096), 0o644))
	cmd := startImager(t, imaging, filepath.Join(dir, hashA+".map"))
	// The process is started: its fd and its command line are in /proc.
	require.Eventually(t, func() bool {
		_, err := os.Readlink("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/fd/3")
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)

	w, err := findWriters("/proc", []string{imaging, ready})
	require.NoError(t, err)
	// bash's child (sleep) inherits fd 3: it is a writer too.
	var pids []int
	for _, x := range w[imaging] {
		pids = append(pids, x.PID)
	}
	require.Contains(t, pids, cmd.Process.Pid)
	require.Empty(t, w[ready])

	procs, err := findDdrescue("/proc", imaging, medium.Hash(hashA))
	require.NoError(t, err)
	pids = nil
	for _, x := range procs {
		pids = append(pids, x.PID)
	}
	require.Contains(t, pids, cmd.Process.Pid)

	r := readiness{images: dir, procRoot: "/proc", settle: 30 * time.Second}
	files, err := scanImages(dir)
	require.NoError(t, err)
	require.Len(t, files, 2)
	st := map[medium.Hash]*mediumStatus{}
	for _, f := range files {
		st[f.Hash] = &mediumStatus{Hash: f.Hash, Image: f.Path, ImageBytes: f.Size, ModTime: f.ModTime}
	}
	later := time.Now().Add(time.Minute)
	for _, s := range st {
		r.decide(s, w, later)
	}
	require.Equal(t, stateImaging, st[hashA].State, st[hashA].Detail)
	require.Contains(t, st[hashA].Detail, hashA+".img")
	require.False(t, st[hashA].processable())
	require.Equal(t, stateReady, st[hashB].State)
	require.True(t, st[hashB].processable())

	// Just written: settling until the settle time has passed.
	s := &mediumStatus{Hash: hashB, Image: ready, ModTime: time.Now()}
	r.decide(s, nil, time.Now())
	require.Equal(t, stateSettling, s.State)
	require.False(t, s.processable())

	// The imager gone (only its command line named the hash before):
	// nothing writes, and after the settle time the medium is ready.
	stopGroup(cmd)
	require.Eventually(t, func() bool { // the killed sleep is reaped by init
		w, err = findWriters("/proc", []string{imaging})
		return err == nil && len(w) == 0
	}, 10*time.Second, 20*time.Millisecond)
	w, err = findWriters("/proc", []string{imaging})
	require.NoError(t, err)
	require.Empty(t, w)
	s = &mediumStatus{Hash: hashA, Image: imaging, ModTime: time.Now()}
	r.decide(s, w, later)
	require.Equal(t, stateReady, s.State)
}

// A process that names the hash on its command line but holds nothing open
// is still imaging (ddrescue between two passes, or not yet started
// writing).
func TestReadinessCommandLineOnly(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, hashA+".img")
	require.NoError(t, os.WriteFile(img, nil, 0o644))
	bash, err := exec.LookPath("bash")
	require.NoError(t, err)
	cmd := &exec.Cmd{Path: bash, Args: []string{"ddrescue", "-c", "sleep 600; :", "ddrescue", "-r3", "/dev/sdz", hashA + ".img"},
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true}}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { stopGroup(cmd) })
	r := readiness{images: dir, procRoot: "/proc", settle: time.Second}
	require.Eventually(t, func() bool {
		s := &mediumStatus{Hash: hashA, Image: img}
		r.decide(s, nil, time.Now().Add(time.Hour))
		return s.State == stateImaging
	}, 10*time.Second, 20*time.Millisecond)
}

func TestSortQueue(t *testing.T) {
	t0 := time.Now()
	ms := []mediumStatus{
		{Hash: "cccccccccccccccc", ImageBytes: 10, ModTime: t0},
		{Hash: "aaaaaaaaaaaaaaaa", ImageBytes: 30, ModTime: t0.Add(-time.Hour)},
		{Hash: "bbbbbbbbbbbbbbbb", ImageBytes: 10, ModTime: t0.Add(time.Hour)},
	}
	order := func(by string) []medium.Hash {
		c := append([]mediumStatus(nil), ms...)
		sortQueue(c, by)
		var out []medium.Hash
		for _, m := range c {
			out = append(out, m.Hash)
		}
		return out
	}
	require.Equal(t, []medium.Hash{"bbbbbbbbbbbbbbbb", "cccccccccccccccc", "aaaaaaaaaaaaaaaa"}, order("size"))
	require.Equal(t, []medium.Hash{"aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"}, order("name"))
	require.Equal(t, []medium.Hash{"aaaaaaaaaaaaaaaa", "cccccccccccccccc", "bbbbbbbbbbbbbbbb"}, order("mtime"))
}

// Never two large media at once: while one runs, the next job takes the
// next small one, and waits when only large ones are left.
func TestSchedulerOneLargeAtATime(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	big1 := mediumStatus{Hash: "b1b1b1b1b1b1b1b1", ImageBytes: largeImage}
	big2 := mediumStatus{Hash: "b2b2b2b2b2b2b2b2", ImageBytes: largeImage + 1}
	small := mediumStatus{Hash: "5555555555555555", ImageBytes: 1 << 20}
	s := &scheduler{todo: []mediumStatus{big1, big2, small}}
	s.cond = sync.NewCond(&s.mu)
	stop := context.AfterFunc(ctx, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer stop()

	m, _, ok := s.next(ctx)
	require.True(t, ok)
	require.Equal(t, big1.Hash, m.Hash)
	m, _, ok = s.next(ctx) // big2 must wait: the small one goes first
	require.True(t, ok)
	require.Equal(t, small.Hash, m.Hash)

	got := make(chan medium.Hash)
	go func() {
		m, _, ok := s.next(ctx)
		if ok {
			got <- m.Hash
		}
		close(got)
	}()
	select {
	case h := <-got:
		t.Fatalf("%s started while a large medium runs", h)
	case <-time.After(100 * time.Millisecond):
	}
	s.done(big1)
	require.Equal(t, big2.Hash, <-got)

	// Cancelled: a waiting job gives up.
	s.todo = []mediumStatus{big1}
	done := make(chan bool)
	go func() { _, _, ok := s.next(ctx); done <- ok }()
	cancel()
	require.False(t, <-done)
}
