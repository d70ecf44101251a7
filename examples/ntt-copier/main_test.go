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
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

func blake3Hex(b []byte) string {
	s := blake3.Sum256(b)
	return hex.EncodeToString(s[:])
}

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
	// The test's own pool checks every connection it hands out: some
	// tests restart the cluster under it, and pgx by default pings only
	// connections idle for over a second, so a short copier run would
	// leave a dead one to the test's next query.
	cfg, err := pgxpool.ParseConfig(m.url)
	require.NoError(t, err)
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	db, err := pgxpool.NewWithConfig(context.Background(), cfg)
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

// verify-store on a store with a flipped byte and a truncated blob: exit
// 1, both quarantined, the truncation reported as a wrong size, the medium
// and its paths named with the command to run; for an archived medium
// whose image is gone, the archive to restore it from. The next copy
// stores the blobs again, and verify-store is clean.
func TestVerifyStoreQuarantinesAndSaysWhatToRun(t *testing.T) {
	m := mounted(t, files(12))
	ctx := context.Background()
	code, _, errOut := runCLI(t, m.args()...)
	require.Equal(t, 0, code, errOut)

	var ids []string
	rows, err := m.db.Query(ctx, `SELECT blobid FROM blobs ORDER BY blobid LIMIT 2`)
	require.NoError(t, err)
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	blob := func(id string) string { return filepath.Join(m.store, "by-hash", id[:2], id[2:4], id) }
	b, err := os.ReadFile(blob(ids[0]))
	require.NoError(t, err)
	b[7] ^= 0x80
	require.NoError(t, os.WriteFile(blob(ids[0]), b, 0o644))
	st, err := os.Stat(blob(ids[1]))
	require.NoError(t, err)
	require.NoError(t, os.Truncate(blob(ids[1]), 10))

	type affected struct {
		Medium      string   `json:"medium"`
		ArchivePath string   `json:"archive_path"`
		Files       int64    `json:"files"`
		Pending     int64    `json:"pending"`
		Paths       []string `json:"paths"`
	}
	type report struct {
		Quarantined   int64            `json:"quarantined"`
		InodesReset   int64            `json:"inodes_reset"`
		AwaitingCopy  int64            `json:"awaiting_copy"`
		Mismatched    int64            `json:"mismatched"`
		WrongSize     int64            `json:"wrong_size"`
		AffectedMedia int64            `json:"affected_media"`
		Problems      []map[string]any `json:"problems"`
		Affected      []affected       `json:"affected"`
		Next          []string         `json:"next"`
	}
	parse := func(out string) report {
		var r report
		require.NoError(t, json.Unmarshal([]byte(out), &r), out)
		return r
	}

	code, out, errOut := runCLI(t, "verify-store", "--db", m.url, "--store", m.store)
	require.Equal(t, 1, code, errOut)
	r := parse(out)
	assert.Equal(t, int64(2), r.Quarantined)
	assert.Equal(t, int64(1), r.Mismatched)
	assert.Equal(t, int64(1), r.WrongSize)
	assert.Equal(t, int64(2), r.AwaitingCopy)
	assert.GreaterOrEqual(t, r.InodesReset, int64(2))
	require.Len(t, r.Problems, 2)
	for _, p := range r.Problems {
		assert.Equal(t, true, p["quarantined"])
		assert.FileExists(t, filepath.Join(m.store, p["moved_to"].(string)))
		if p["blob"] == ids[1] {
			assert.Equal(t, "size", p["problem"])
			assert.Equal(t, 10.0, p["found_size"])
			assert.Contains(t, p["detail"], fmt.Sprintf("wrong size: %d bytes expected, 10 found", st.Size()))
		}
	}
	require.Len(t, r.Affected, 1)
	assert.Equal(t, string(m.h), r.Affected[0].Medium)
	assert.Equal(t, r.InodesReset, r.Affected[0].Pending)
	assert.NotEmpty(t, r.Affected[0].Paths)
	for _, p := range r.Affected[0].Paths {
		assert.True(t, strings.HasPrefix(p, "/d"), p)
	}
	require.NotEmpty(t, r.Next)
	assert.Contains(t, r.Next[0], "ntt-copier --medium-hash "+string(m.h))
	assert.Contains(t, errOut, "ntt-copier: next: ")
	assert.Equal(t, r.InodesReset, m.count(t, `NOT copied AND status = 'pending'`))
	reset := r.InodesReset

	// Archived, image removed (what ntt-archiver leaves in the catalog): the
	// advice names the archive to restore the image from. Nothing failed in
	// this run (quarantined blobs are not checked again): exit 0.
	_, err = m.db.Exec(ctx, `UPDATE medium SET archive_path = '/srv/archive/x.tar.zst', image_path = '/gone/x.img' WHERE medium_hash = $1`, string(m.h))
	require.NoError(t, err)
	code, out, errOut = runCLI(t, "verify-store", "--db", m.url, "--store", m.store, "--root", m.root, "--report-only")
	require.Equal(t, 0, code, errOut)
	r = parse(out)
	assert.Zero(t, r.Quarantined)
	assert.Equal(t, int64(2), r.AwaitingCopy)
	require.Len(t, r.Affected, 1)
	assert.Equal(t, "/srv/archive/x.tar.zst", r.Affected[0].ArchivePath)
	require.NotEmpty(t, r.Next)
	assert.Contains(t, r.Next[0], "restore its image from /srv/archive/x.tar.zst")
	assert.Contains(t, r.Next[0], "ntt-mount-helper --root "+m.root+" mount "+string(m.h))
	assert.Contains(t, r.Next[0], "ntt-copier relink --medium-hash "+string(m.h))
	// relink: nothing to link while the blobs are quarantined (exit 2).
	code, out, errOut = runCLI(t, "relink", "--db", m.url, "--medium-hash", string(m.h), "--store", m.store)
	require.Equal(t, 2, code, errOut)
	assert.Contains(t, out, `"relinked":0`)
	assert.Contains(t, errOut, "still wait for their content")
	_, err = m.db.Exec(ctx, `UPDATE medium SET archive_path = NULL, image_path = $2 WHERE medium_hash = $1`, string(m.h), m.image)
	require.NoError(t, err)

	// The next copy writes the blobs again; the store is clean.
	code, out, errOut = runCLI(t, m.args()...)
	require.Equal(t, 0, code, errOut)
	var sum map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &sum), out)
	assert.Equal(t, float64(reset), sum["processed"])
	assert.Equal(t, true, sum["complete"], out+errOut)
	assert.Zero(t, m.count(t, `NOT copied`))
	code, out, errOut = runCLI(t, "verify-store", "--db", m.url, "--store", m.store)
	require.Equal(t, 0, code, errOut)
	r = parse(out)
	assert.Zero(t, r.AwaitingCopy)
	assert.Empty(t, r.Affected)
	assert.Empty(t, r.Next)
	for _, id := range ids {
		got, err := os.ReadFile(blob(id))
		require.NoError(t, err)
		assert.Equal(t, id, blake3Hex(got))
	}
}
