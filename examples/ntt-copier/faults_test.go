package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/internal/pgtest"
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

// startCopier runs ntt-copier in a child process and calls at once the
// first "Batch completed" line is on its stderr; it returns the exit
// status, stdout and stderr.
func startCopier(t *testing.T, args []string, at func()) (int, string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
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
			at()
			break
		}
	}
	io.Copy(&log, stderr)
	err = cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return code, stdout.String(), log.String()
}

// `pg_ctl restart -m fast` after the first batch: ntt-copier waits it out
// and exits 0 with the medium complete, nothing claimed, every blob right.
func TestCatalogRestartExitStatus(t *testing.T) {
	pg := pgtest.NewCluster(t)
	m := mountedAt(t, files(300), pg.URL())
	code, out, log := startCopier(t, m.args("--worker-id", "restart", "--batch-size", "2", "--workers", "2"), func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, pg.Restart(ctx))
	})
	require.Equal(t, 0, code, log)
	assert.Contains(t, log, "catalog unavailable; retrying")
	var sum map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &sum), out)
	assert.Equal(t, true, sum["complete"])
	assert.Zero(t, m.count(t, `NOT copied`))
	assert.Zero(t, m.count(t, `fs_type = 'f' AND status <> 'success'`))
	code, _, errOut := runCLI(t, "verify-store", "--db", m.url, "--store", m.store)
	require.Equal(t, 0, code, errOut)
}

// The catalog stops for longer than --db-retry: ntt-copier exits 1 with one
// sentence saying so and what to do; once the catalog is back, the rerun
// exits 0 with the medium complete and nothing claimed.
func TestCatalogOutageExitStatus(t *testing.T) {
	pg := pgtest.NewCluster(t)
	m := mountedAt(t, files(300), pg.URL())
	code, _, log := startCopier(t, m.args("--worker-id", "outage", "--batch-size", "2", "--db-retry", "2s"), func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, pg.Stop(ctx))
	})
	require.Equal(t, 1, code, log)
	lines := strings.Split(strings.TrimSpace(log), "\n")
	last := lines[len(lines)-1]
	assert.Contains(t, last, "catalog database unavailable for more than 2s")
	assert.Contains(t, last, "run the copier again")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, pg.Start(ctx))
	code, out, errOut := runCLI(t, m.args("--worker-id", "outage")...)
	require.Equal(t, 0, code, errOut)
	var sum map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &sum), out)
	assert.Equal(t, true, sum["complete"])
	assert.Zero(t, m.count(t, `NOT copied`))
	code, _, errOut = runCLI(t, "verify-store", "--db", m.url, "--store", m.store)
	require.Equal(t, 0, code, errOut)
}
