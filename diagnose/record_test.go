package diagnose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// catalog returns a database with the medium, its partitions and a pending
// file inode (dev 2049, ino 12).
func catalog(t *testing.T, hash string) *pgxpool.Pool {
	h := medium.MustParse(hash)
	t.Helper()
	ctx := context.Background()
	db := pgtest.New(t)
	tx, err := db.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, `INSERT INTO medium (medium_hash, medium_human) VALUES ($1, 'floppy_20251008_143045_c9894f16')`, string(h))
	require.NoError(t, err)
	require.NoError(t, schema.CreatePartitions(ctx, tx, h))
	_, err = tx.Exec(ctx, `INSERT INTO inode (medium_hash, dev, ino, fs_type, nlink, size, mtime) VALUES ($1, 2049, 12, 'f', 1, 3000000, 0)`, string(h))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	return db
}

func TestAppendInodeErrorKeepsLastTen(t *testing.T) {
	ctx := context.Background()
	db := catalog(t, testHash)
	k := Key{Medium: testHash, Dev: 2049, Ino: 12}
	for i := 1; i <= 25; i++ {
		require.NoError(t, AppendInodeError(ctx, db, k, ErrorTypeIO, fmt.Sprintf("error %d", i)))
		var errs []string
		var count int
		require.NoError(t, db.QueryRow(ctx, `SELECT errors, error_count FROM inode WHERE medium_hash = $1 AND ino = 12`, string(testHash)).Scan(&errs, &count))
		assert.Equal(t, i, count)
		require.Len(t, errs, min(i, MaxInodeErrors))
		assert.Equal(t, fmt.Sprintf("error %d", i), errs[len(errs)-1], "newest last")
		assert.Equal(t, fmt.Sprintf("error %d", max(1, i-9)), errs[0], "oldest kept")
	}
	err := AppendInodeError(ctx, db, Key{Medium: testHash, Dev: 2049, Ino: 13}, ErrorTypeIO, "x")
	assert.True(t, errors.Is(err, ErrNoInode))
	assert.Contains(t, err.Error(), "ino 13")
}

// The seed's Test 3 as the catalog sees it: retries, a checkpoint, an
// auto-skip with its reason in claimed_by, diagnostic events, a problem flag.
func TestRecordDecisionSkip(t *testing.T) {
	ctx := context.Background()
	db := catalog(t, testHash)
	kl := fixtureLog(t, "kmsg-linux-6.18-shrunk-loop.txt")
	tr := NewTracker(DefaultPolicy())
	k := Key{Medium: testHash, Dev: 2049, Ino: 12}
	env := Env{Health: HealthIncomplete, KernelLog: kl, Devices: []string{"loop0"}, WorkerID: "test-worker"}
	var d Decision
	for range 10 {
		d = tr.Failure(ctx, k, errEIO, env)
		require.NoError(t, RecordDecision(ctx, db, d))
	}
	require.Equal(t, Skip, d.Action)
	require.NoError(t, MarkFinal(ctx, db, d))

	var copied bool
	var claimedBy, status, errorType string
	var count int
	require.NoError(t, db.QueryRow(ctx, `SELECT copied, claimed_by, status, error_type, error_count FROM inode WHERE medium_hash = $1 AND dev = 2049 AND ino = 12`,
		string(testHash)).Scan(&copied, &claimedBy, &status, &errorType, &count))
	assert.True(t, copied)
	assert.Equal(t, "DIAGNOSTIC_SKIP:BEYOND_EOF", claimedBy)
	assert.Equal(t, "failed_permanent", status)
	assert.Equal(t, "io_error", errorType)
	assert.Equal(t, 10, count)

	rows, err := db.Query(ctx, `SELECT worker_id, retry_count, checks, action, exception FROM diagnostic_event WHERE medium_hash = $1 AND dev = 2049 AND ino = 12`, string(testHash))
	require.NoError(t, err)
	type event struct {
		worker, action, exception string
		retry                     int
		checks                    []Check
	}
	var events []event
	for rows.Next() {
		var e event
		var raw []byte
		require.NoError(t, rows.Scan(&e.worker, &e.retry, &raw, &e.action, &e.exception))
		require.NoError(t, json.Unmarshal(raw, &e.checks))
		events = append(events, e)
	}
	require.NoError(t, rows.Err())
	require.Len(t, events, 1, "one row: the checkpoint that skipped")
	assert.Equal(t, "test-worker", events[0].worker)
	assert.Equal(t, 10, events[0].retry)
	assert.Equal(t, "skip", events[0].action)
	assert.Contains(t, events[0].exception, "input/output error")
	require.Len(t, events[0].checks, 1)
	assert.Equal(t, ResultBeyondEOF, events[0].checks[0].Result)

	var problems map[string]map[string]any
	require.NoError(t, db.QueryRow(ctx, `SELECT problems FROM medium WHERE medium_hash = $1`, string(testHash)).Scan(&problems))
	require.Contains(t, problems, ProblemBeyondEOF)
	assert.Equal(t, float64(12), problems[ProblemBeyondEOF]["ino"])
	assert.Equal(t, "beyond_eof", problems[ProblemBeyondEOF]["class"])
	assert.Contains(t, problems[ProblemBeyondEOF], "at")

	// Another flag merges in; the first stays.
	require.NoError(t, RecordDecision(ctx, db, Decision{Action: Retry, Key: k, Class: ClassStaleMount,
		Checkpoint: true, Problem: ProblemStaleMount, Exception: "gone"}))
	problems = nil
	require.NoError(t, db.QueryRow(ctx, `SELECT problems FROM medium WHERE medium_hash = $1`, string(testHash)).Scan(&problems))
	assert.Contains(t, problems, ProblemBeyondEOF)
	assert.Contains(t, problems, ProblemStaleMount)

	assert.NoError(t, RecordDecision(ctx, db, Decision{Action: Settled, Key: k}), "settled records nothing")
	assert.Error(t, MarkFinal(ctx, db, Decision{Action: Retry, Key: k}))
}

func TestMarkFinalGiveUpAndDamage(t *testing.T) {
	ctx := context.Background()
	db := catalog(t, testHash)
	k := Key{Medium: testHash, Dev: 2049, Ino: 12}
	d := Decision{Action: GiveUp, Key: k, Class: ClassMissing, Status: StatusFailedRetryable, RetryCount: 50}
	require.NoError(t, MarkFinal(ctx, db, d))
	dmg := []Damage{{FileOffset: 4096, ImageOffset: 1<<20 + 4096, Length: 512}}
	require.NoError(t, RecordDamage(ctx, db, k, dmg))

	var claimed *string
	var status, errorType string
	var damage []Damage
	require.NoError(t, db.QueryRow(ctx, `SELECT claimed_by, status, error_type, damage FROM inode WHERE medium_hash = $1 AND ino = 12`,
		string(testHash)).Scan(&claimed, &status, &errorType, &damage))
	assert.Nil(t, claimed, "giving up leaves claimed_by NULL")
	assert.Equal(t, "failed_retryable", status)
	assert.Equal(t, "path_error", errorType)
	assert.Equal(t, dmg, damage)

	// A retryable failure can be reset by the seed's kind of query.
	tag, err := db.Exec(ctx, `UPDATE inode SET copied = false, status = 'pending' WHERE medium_hash = $1 AND status = 'failed_retryable'`, string(testHash))
	require.NoError(t, err)
	assert.Equal(t, int64(1), tag.RowsAffected())
}

func TestRecordHealth(t *testing.T) {
	ctx := context.Background()
	db := catalog(t, testHash)
	read := func() (health *string, problems map[string]any) {
		require.NoError(t, db.QueryRow(ctx, `SELECT health, problems FROM medium WHERE medium_hash = $1`, string(testHash)).Scan(&health, &problems))
		return
	}
	h, p := read()
	assert.Nil(t, h)
	assert.Nil(t, p, "pre-flight expects problems NULL")

	m := mustMap(t, mapWith(9999, 10000))
	require.NoError(t, RecordHealth(ctx, db, testHash, m.Report("x.map")))
	h, p = read()
	require.NotNil(t, h)
	assert.Equal(t, "incomplete", *h)
	assert.Contains(t, p, "unrescued_bytes")

	// Recomputed on every run: a stale value does not survive.
	require.NoError(t, RecordHealth(ctx, db, testHash, mustMap(t, mapWith(10000, 10000)).Report("x.map")))
	h, _ = read()
	assert.Equal(t, "ok", *h)
	require.NoError(t, RecordHealth(ctx, db, testHash, HealthReport{Health: HealthUnknown}))
	h, _ = read()
	assert.Nil(t, h, "no mapfile: NULL, never failed")
}

func mustMap(t *testing.T, text string) *Mapfile {
	t.Helper()
	m, err := ParseMapfile(strings.NewReader(text))
	require.NoError(t, err)
	return m
}

// File names with invalid UTF-8, 0x1C, newlines and backslashes reach the
// error text: recording must not fail on them (PostgreSQL text takes
// neither invalid UTF-8 nor NUL).
func TestRecordHostileNames(t *testing.T) {
	ctx := context.Background()
	db := catalog(t, testHash)
	name := "/mnt/ntt/x/bad\xff\x1c\nname\\ \xc3\x28"
	err := pathErr("open", unix.ENOENT)
	err.(*fs.PathError).Path = name
	d := Decision{Action: GiveUp, Key: Key{Medium: testHash, Dev: 2049, Ino: 12}, Class: ClassMissing, Checkpoint: true,
		Status: StatusFailedRetryable, Exception: err.Error(),
		Checks: []Check{{Name: MountCheck, Result: ResultUnhealthy, Detail: "path " + name + " \x00nul"}}}
	require.NoError(t, RecordDecision(ctx, db, d))
	var exception string
	var errs []string
	require.NoError(t, db.QueryRow(ctx, `SELECT exception FROM diagnostic_event`).Scan(&exception))
	require.NoError(t, db.QueryRow(ctx, `SELECT errors FROM inode WHERE ino = 12`).Scan(&errs))
	assert.Contains(t, exception, `bad\xff`+"\x1c\nname\\\\ "+`\xc3(`)
	assert.Contains(t, errs[0], `bad\xff`)
	assert.Equal(t, "plain", DBText("plain"))
	assert.Equal(t, `a\x00b`, DBText("a\x00b"))
}
