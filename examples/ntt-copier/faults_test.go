package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func setCapacity(t *testing.T, loop string) {
	t.Helper()
	fd, err := unix.Open(loop, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, unix.IoctlSetInt(fd, unix.LOOP_SET_CAPACITY, 0))
}

// The loop device shrinks under the mounted medium after the first batch:
// ntt-copier exits 1 with one sentence saying the source is lost and what
// to do; nothing is claimed, no file is marked failed, source_lost is in
// medium.problems. With the image whole again, the rerun exits 0 and the
// medium is complete.
func TestSourceLostExitStatus(t *testing.T) {
	var es []testimg.Entry
	for i := range 300 {
		es = append(es, testimg.Entry{Path: fmt.Sprintf("d%d/f%03d", i%6, i), Kind: testimg.File, Size: 40 << 10, Seed: uint64(7 + i)})
	}
	m := mounted(t, testimg.Spec{BlockSize: 4096, Size: 40 << 20, Entries: es})
	var starts []int64
	for _, e := range es {
		f, err := os.Open(filepath.Join(m.mount, e.Path))
		require.NoError(t, err)
		exts, _, err := diagnose.FileExtents(f)
		f.Close()
		require.NoError(t, err)
		starts = append(starts, exts[0].Physical)
	}
	slices.Sort(starts)
	cut := starts[len(starts)/3]
	whole, err := os.ReadFile(m.image)
	require.NoError(t, err)

	cmd := exec.Command(os.Args[0], m.args("--worker-id", "lost", "--batch-size", "2")...)
	cmd.Env = append(os.Environ(), cliEnv+"=1")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stderr)
	var log strings.Builder
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "Batch completed") {
			require.NoError(t, testimg.Truncate(m.image, cut))
			setCapacity(t, m.loop)
			break
		}
	}
	io.Copy(&log, stderr)
	err = cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "exit status: %s", log.String())
	assert.Equal(t, 1, ee.ExitCode(), log.String())
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	last := lines[len(lines)-1]
	assert.Contains(t, last, "ntt-copier: medium "+string(m.h)+": the medium's source is lost")
	assert.Contains(t, last, "remount the medium")

	assert.Zero(t, m.count(t, `NOT copied AND claimed_by IS NOT NULL`), "nothing claimed")
	assert.Zero(t, m.count(t, `status IN ('failed_permanent', 'failed_retryable')`), "no file marked failed")
	assert.Positive(t, m.count(t, `fs_type = 'f' AND NOT copied`), "stopped before the end")
	var lost bool
	require.NoError(t, m.db.QueryRow(context.Background(), `SELECT problems ? 'source_lost' FROM medium WHERE medium_hash = $1`,
		string(m.h)).Scan(&lost))
	assert.True(t, lost)

	require.NoError(t, os.WriteFile(m.image, whole, 0o644))
	setCapacity(t, m.loop)
	code, _, errOut := runCLI(t, m.args("--worker-id", "lost")...)
	require.Equal(t, 0, code, errOut)
	assert.Zero(t, m.count(t, `fs_type = 'f' AND status <> 'success'`))
	code, _, errOut = runCLI(t, "verify-store", "--db", m.url, "--store", m.store)
	require.Equal(t, 0, code, errOut)
}

// reset-failed leaves failed_permanent rows alone unless asked with
// --include-permanent; then the next run copies them.
func TestResetFailedIncludePermanent(t *testing.T) {
	m := mounted(t, files(12))
	ctx := context.Background()
	_, err := m.db.Exec(ctx, `UPDATE inode SET copied = true, status = 'failed_permanent', error_type = 'io_error',
		claimed_by = 'DIAGNOSTIC_SKIP:BEYOND_EOF', error_count = 5 WHERE medium_hash = $1 AND fs_type = 'f' AND ino % 3 = 0`, string(m.h))
	require.NoError(t, err)
	permanent := m.count(t, `status = 'failed_permanent'`)
	require.Positive(t, permanent)

	code, _, _ := runCLI(t, "reset-failed", "--db", m.url, "--medium-hash", string(m.h), "--apply")
	assert.Equal(t, 2, code, "failed_permanent rows are not reset without the flag")
	assert.Equal(t, permanent, m.count(t, `status = 'failed_permanent'`))

	code, out, errOut := runCLI(t, "reset-failed", "--db", m.url, "--medium-hash", string(m.h), "--include-permanent", "--apply")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, fmt.Sprintf(`"failed_permanent":%d`, permanent))
	assert.Zero(t, m.count(t, `status = 'failed_permanent'`))
	assert.Zero(t, m.count(t, `claimed_by LIKE 'DIAGNOSTIC_SKIP%'`))

	code, _, errOut = runCLI(t, m.args()...)
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, m.count(t, `fs_type = 'f'`), m.count(t, `fs_type = 'f' AND status = 'success'`))
}
