package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/HRDAG/ntt/diagnose"
	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loader"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

const cliEnv = "NTT_COPIER_TEST_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(cliEnv) != "" {
		// The test binary re-executed as ntt-copier (for signals).
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	pgtest.Main(m)
}

type medium_ struct {
	h     medium.Hash
	root  string
	mount string
	store string
	url   string
	db    *pgxpool.Pool
	image string
	loop  string
}

// mounted builds spec, mounts it at <tmp>/mnt/<hash>, and loads it into a
// fresh catalog.
func mounted(t *testing.T, spec testimg.Spec) *medium_ {
	t.Helper()
	return mountedAt(t, spec, "")
}

// mountedAt is mounted with the catalog at url ("": a fresh database of the
// shared test cluster).
func mountedAt(t *testing.T, spec testimg.Spec, url string) *medium_ {
	t.Helper()
	testimg.RequireRoot(t)
	b := make([]byte, 16)
	rand.Read(b)
	m := &medium_{h: medium.MustParse(hex.EncodeToString(b))}
	dir := t.TempDir()
	m.root = filepath.Join(dir, "mnt")
	m.mount = m.h.MountPath(m.root)
	m.store = filepath.Join(dir, "store")
	require.NoError(t, os.MkdirAll(m.mount, 0o755))
	require.NoError(t, os.MkdirAll(m.store, 0o755))
	m.image = testimg.Build(t, spec)
	l := testimg.AttachLoop(t, m.image, 0, 0)
	m.loop = l.Path
	require.NoError(t, testimg.TryMount(l.Path, m.mount, "ext4", "noload"))
	t.Cleanup(func() {
		for range 50 {
			if err := unix.Unmount(m.mount, 0); err == nil || !errors.Is(err, unix.EBUSY) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		unix.Unmount(m.mount, unix.MNT_DETACH)
	})
	m.url = url
	if url == "" {
		m.url = pgtest.URL(t)
	}
	db, err := pgxpool.New(context.Background(), m.url)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	m.db = db
	var raw bytes.Buffer
	_, err = enumerate.Walk(context.Background(), []string{m.mount}, enumerate.Options{}, &raw)
	require.NoError(t, err)
	_, err = loader.Load(context.Background(), db, string(m.h), &raw, loader.Options{ImagePath: m.image})
	require.NoError(t, err)
	return m
}

func (m *medium_) args(extra ...string) []string {
	return append([]string{"--db", m.url, "--medium-hash", string(m.h), "--store", m.store, "--root", m.root}, extra...)
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var o, e bytes.Buffer
	code := run(args, &o, &e)
	return code, o.String(), e.String()
}

func (m *medium_) count(t *testing.T, where string) int64 {
	var n int64
	require.NoError(t, m.db.QueryRow(context.Background(),
		`SELECT count(*) FROM inode WHERE medium_hash = $1 AND `+where, string(m.h)).Scan(&n))
	return n
}

func files(n int) testimg.Spec {
	var es []testimg.Entry
	for i := range n {
		es = append(es, testimg.Entry{Path: fmt.Sprintf("d%d/f%03d", i%5, i), Kind: testimg.File, Size: int64(200 + i%(n-3)), Seed: uint64(i % (n - 3))})
	}
	return testimg.Spec{Entries: es}
}

// The runbook's command: a limited first run, then the rest; JSON summary
// on stdout, "Batch completed" JSON lines on stderr; a third run has
// nothing to do (exit 2).
func TestRunbookCommand(t *testing.T) {
	m := mounted(t, files(60))
	code, out, errOut := runCLI(t, m.args("--worker-id", "test-worker", "--batch-size", "10", "--limit", "25")...)
	require.Equal(t, 0, code, errOut)
	var sum map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &sum), out)
	assert.Equal(t, 25.0, sum["processed"])
	assert.Equal(t, false, sum["complete"])
	assert.Equal(t, 3, strings.Count(errOut, `"msg":"Batch completed"`), "25 = 10 + 10 + 5")
	assert.Equal(t, int64(25), m.count(t, `fs_type = 'f' AND status = 'success'`))

	code, out, errOut = runCLI(t, m.args("--worker-id", "test-worker", "--workers", "3")...)
	require.Equal(t, 0, code, errOut)
	require.NoError(t, json.Unmarshal([]byte(out), &sum), out)
	assert.Equal(t, 35.0, sum["processed"])
	assert.Equal(t, true, sum["complete"])
	assert.Less(t, sum["new"].(float64), 35.0, "some contents repeat")
	assert.Zero(t, m.count(t, `NOT copied`))

	code, _, _ = runCLI(t, m.args()...)
	assert.Equal(t, 2, code, "nothing to do")

	code, out, errOut = runCLI(t, "verify-store", "--db", m.url, "--store", m.store)
	require.Equal(t, 0, code, errOut)
	require.NoError(t, json.Unmarshal([]byte(out), &sum), out)
	assert.Equal(t, 0.0, sum["mismatched"])
	assert.Positive(t, sum["checked"])

	// Damage a blob: verify-store says so and exits 1.
	var id string
	require.NoError(t, m.db.QueryRow(context.Background(), `SELECT blobid FROM blobs LIMIT 1`).Scan(&id))
	p := filepath.Join(m.store, "by-hash", id[:2], id[2:4], id)
	require.NoError(t, os.WriteFile(p, []byte("not what it was"), 0o644))
	code, out, _ = runCLI(t, "verify-store", "--db", m.url, "--store", m.store, "--sample", "1000")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, id)

	code, _, errOut = runCLI(t, m.args("--workers", "0")...)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "--workers 0")
	code, _, errOut = runCLI(t, append(m.args(), "extra")...)
	assert.Equal(t, 1, code)
	code, _, errOut = runCLI(t, "--db", m.url, "--medium-hash", string(m.h), "--store", filepath.Join(m.store, "nope"), "--root", m.root)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "must exist")
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	assert.True(t, strings.HasPrefix(lines[len(lines)-1], "ntt-copier: store "), "one sentence naming the store: %s", errOut)
}

// reset-failed: a dry run by default, then --apply; the files are then
// copied by the next run.
func TestResetFailedVerb(t *testing.T) {
	m := mounted(t, files(10))
	ctx := context.Background()
	_, err := m.db.Exec(ctx, `UPDATE inode SET copied = true, status = 'failed_retryable', error_type = 'path_error',
		error_count = 50, errors = '{"no such file"}' WHERE medium_hash = $1 AND fs_type = 'f' AND ino % 2 = 0`, string(m.h))
	require.NoError(t, err)
	failed := m.count(t, `status = 'failed_retryable'`)
	require.Positive(t, failed)

	code, out, errOut := runCLI(t, "reset-failed", "--db", m.url, "--medium-hash", string(m.h))
	require.Equal(t, 0, code, errOut)
	var res map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	assert.Equal(t, false, res["applied"])
	assert.Equal(t, float64(failed), res["total"])
	assert.Equal(t, failed, m.count(t, `status = 'failed_retryable'`), "dry run changes nothing")

	code, _, errOut = runCLI(t, "reset-failed", "--db", m.url, "--medium-hash", string(m.h), "--error-type", "nonsense")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "nonsense")

	code, out, errOut = runCLI(t, "reset-failed", "--db", m.url, "--medium-hash", string(m.h), "--error-type", "path_error", "--apply")
	require.Equal(t, 0, code, errOut)
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	assert.Equal(t, true, res["applied"])
	assert.Zero(t, m.count(t, `status = 'failed_retryable'`))
	assert.Equal(t, m.count(t, `fs_type = 'f'`), m.count(t, `status = 'pending'`))

	code, _, _ = runCLI(t, "reset-failed", "--db", m.url, "--medium-hash", string(m.h), "--apply")
	assert.Equal(t, 2, code, "nothing left to reset")
	code, _, errOut = runCLI(t, m.args()...)
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, m.count(t, `fs_type = 'f'`), m.count(t, `fs_type = 'f' AND status = 'success'`))
}

// The runbook's grep on a truncated image: "DIAGNOSTIC CHECKPOINT" and
// "SKIPPED ino=X reason=DIAGNOSTIC_SKIP:BEYOND_EOF" on stderr.
func TestTruncatedImageLogLines(t *testing.T) {
	m := mounted(t, testimg.Spec{Size: 8 << 20, Entries: []testimg.Entry{
		{Path: "small", Kind: testimg.File, Size: 20000, Seed: 1},
		{Path: "big", Kind: testimg.File, Size: 3_000_000, Seed: 2},
	}})
	extent := func(name string) (start, end int64) {
		f, err := os.Open(filepath.Join(m.mount, name))
		require.NoError(t, err)
		defer f.Close()
		exts, _, err := diagnose.FileExtents(f)
		require.NoError(t, err)
		require.NotEmpty(t, exts)
		last := exts[len(exts)-1]
		return exts[0].Physical, last.Physical + last.Length
	}
	bigStart, _ := extent("big")
	cut := bigStart + 1<<20 // the image ends 1 MiB into big
	_, smallEnd := extent("small")
	beyond := 1.0
	if smallEnd > cut {
		beyond = 2
	}
	var st unix.Stat_t
	require.NoError(t, unix.Stat(filepath.Join(m.mount, "big"), &st))
	require.NoError(t, testimg.Truncate(m.image, cut))
	fd, err := unix.Open(m.loop, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, unix.IoctlSetInt(fd, unix.LOOP_SET_CAPACITY, 0))
	unix.Close(fd)

	code, out, errOut := runCLI(t, m.args("--worker-id", "test-worker", "--batch-size", "50")...)
	require.Equal(t, 3, code, "a run that gave up on files exits 3: %s", errOut)
	assert.Contains(t, errOut, fmt.Sprintf("gave up on %v files of medium %s", beyond, m.h))
	assert.Contains(t, errOut, "reset-failed --medium-hash "+string(m.h)+" --apply")
	assert.Contains(t, errOut, "DIAGNOSTIC CHECKPOINT")
	assert.Contains(t, errOut, fmt.Sprintf("SKIPPED ino=%d reason=DIAGNOSTIC_SKIP:BEYOND_EOF", st.Ino))
	var sum map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &sum), out)
	assert.Equal(t, beyond, sum["skipped"])
	assert.Equal(t, 2-beyond, sum["copied"])
}

// SIGINT finishes the files being read, records the batch, releases the
// other claims and exits 0.
func TestSIGINTReleasesClaims(t *testing.T) {
	m := mounted(t, files(300))
	cmd := exec.Command(os.Args[0], m.args("--worker-id", "sig", "--batch-size", "5")...)
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
			require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
			break
		}
	}
	io.Copy(&log, stderr)
	err = cmd.Wait()
	require.NoError(t, err, "exit status 0 after SIGINT: %s", log.String())
	var sum map[string]any
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &sum), stdout.String())
	assert.Contains(t, log.String(), "interrupted")
	assert.Less(t, sum["processed"].(float64), 300.0, "stopped early")
	assert.Zero(t, m.count(t, `NOT copied AND claimed_by IS NOT NULL`), "no claim left")
	assert.Equal(t, int64(sum["copied"].(float64)), m.count(t, `fs_type = 'f' AND status = 'success'`))
}
