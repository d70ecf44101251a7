package copier_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// manyFiles is a medium of n small files (every 7th a duplicate of another)
// plus big streamed ones.
func manyFiles(n, big int) testimg.Spec {
	var es []testimg.Entry
	for i := range n {
		seed := uint64(i)
		if i%7 == 6 {
			seed = uint64(i - 3)
		}
		es = append(es, testimg.Entry{Path: fmt.Sprintf("d%02d/f%04d", i%10, i), Kind: testimg.File, Size: int64(500 + i*37%9000), Seed: seed})
	}
	for i := range big {
		es = append(es, testimg.Entry{Path: fmt.Sprintf("big%d", i), Kind: testimg.File, Size: 17<<20 + int64(i), Seed: uint64(9000 + i)})
	}
	es = append(es, testimg.Entry{Path: "d00/link", Kind: testimg.Symlink, Target: "f0000"},
		testimg.Entry{Path: "empty-dir", Kind: testimg.Dir})
	return testimg.Spec{Entries: es}
}

// kill -9 of the copier at 10 random moments, each followed by a rerun:
// every file copied, every blob valid, no temporary file left in the store,
// no claimed row left. Half of the reruns use the killed worker's id (its
// own stale claims), half another id (orphans of a dead worker).
func TestKillNineAndRerun(t *testing.T) {
	f := newMedium(t, manyFiles(120, 2))
	base := f.store
	run := func(worker string) (*os.ProcessState, helperResult, *logBuffer) {
		cmd, out, logs := f.helper(worker, 2, 4)
		err := cmd.Wait()
		require.NoError(t, err, "helper: %s\n%s", out.String(), logs.String())
		return cmd.ProcessState, parseHelper(t, out, logs), logs
	}

	// Calibrate: how long a whole run takes, process start included.
	f.setStore(filepath.Join(base, "calibrate"))
	t0 := time.Now()
	_, res, _ := run("calibrate")
	full := time.Since(t0)
	require.Positive(t, res.Stats.Copied)
	f.checkComplete()

	for i := range 10 {
		f.newCatalog()
		f.setStore(filepath.Join(base, fmt.Sprint(i)))
		cmd, _, logs := f.helper("victim", 2, 2)
		delay := time.Duration(rand.Int64N(int64(full) * 8 / 10))
		time.Sleep(delay)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		err := cmd.Wait()
		killed := err != nil
		done, pending, claimed := f.monitor()
		t.Logf("kill %d after %v (killed: %v): done %d pending %d claimed %d", i, delay.Round(time.Millisecond), killed, done, pending, claimed)
		_ = logs

		worker := "victim"
		if i%2 == 1 {
			worker = "rescuer"
		}
		_, res, _ := run(worker)
		assert.Empty(t, res.Err)
		assert.True(t, res.Stats.Complete, "iteration %d", i)
		f.checkComplete()
	}
}

// Four processes with four workers each on one medium: every inode is
// copied exactly once.
func TestFourProcessesFourWorkers(t *testing.T) {
	f := newMedium(t, manyFiles(400, 1))
	files := countFiles(t, f)
	type proc struct {
		wait func() error
		res  func() helperResult
	}
	var procs []proc
	for i := range 4 {
		cmd, out, logs := f.helper(fmt.Sprintf("host%d", i), 4, 3)
		procs = append(procs, proc{cmd.Wait, func() helperResult { return parseHelper(t, out, logs) }})
	}
	seen := map[[2]int64]int{}
	var total int64
	for i, p := range procs {
		require.NoError(t, p.wait(), "process %d", i)
		r := p.res()
		assert.Empty(t, r.Err)
		total += r.Stats.Copied
		assert.Equal(t, int64(len(r.Copied)), r.Stats.Copied)
		for _, k := range r.Copied {
			seen[k]++
		}
		t.Logf("process %d copied %d", i, r.Stats.Copied)
	}
	assert.Equal(t, files, total, "copies over all processes")
	assert.Len(t, seen, int(files), "every inode copied")
	for k, n := range seen {
		assert.Equal(t, 1, n, "inode %v copied %d times", k, n)
	}
	f.checkComplete()
}
