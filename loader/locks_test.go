package loader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// idleInTransaction opens a session that runs stmts in a transaction and
// then sits idle, holding its locks until the test ends. It returns the
// session's backend pid.
func idleInTransaction(t *testing.T, pool *pgxpool.Pool, stmts ...string) uint32 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pool.Config().ConnConfig.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return conn.PgConn().PID()
}

// A session idle in transaction holding a conflicting lock makes the load
// fail with a lock-timeout error naming the table, the purpose and the
// blocking session — not a silent stall — and the database is unchanged.
func TestIdleTransactionGivesLockTimeout(t *testing.T) {
	onBothLoadPaths(t, idleTransactionGivesLockTimeout)
}

func idleTransactionGivesLockTimeout(t *testing.T) {
	pool := pgtest.New(t)
	mustLoad(t, pool, hashB, rawOf(t, rec('d', 5, 2, 2, "/r"), rec('f', 5, 3, 1, "/r/x")), Options{})

	t.Run("attach", func(t *testing.T) {
		// Someone ran ANALYZE in a transaction and went to lunch.
		pid := idleInTransaction(t, pool, `ANALYZE path`)
		before := dbState(t, pool)
		_, err := tryLoad(t, pool, hashA, firstRaw(t), Options{LockTimeout: 300 * time.Millisecond})
		t.Logf("error: %v", err)
		var le *LockTimeoutError
		if !errors.Is(err, ErrLockTimeout) || !errors.As(err, &le) {
			t.Fatalf("err = %v, want a LockTimeoutError", err)
		}
		if le.Object != "table path" || le.Mode != "SHARE UPDATE EXCLUSIVE" || len(le.Blockers) != 1 || le.Blockers[0].PID != int(pid) {
			t.Errorf("lock timeout = %+v, want table path held by pid %d", le, pid)
		}
		for _, want := range []string{"table path", "pid " + strconv.Itoa(int(pid)), "idle in transaction", "ANALYZE path", "attach", hashA} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		if dbState(t, pool) != before {
			t.Errorf("database changed")
		}
	})
	t.Run("replace", func(t *testing.T) {
		mustLoad(t, pool, hashA, firstRaw(t), Options{})
		// A reader left a transaction open: replacing needs to drop the
		// medium's old partitions, which waits for every reader of inode.
		pid := idleInTransaction(t, pool, `SELECT count(*) FROM inode`)
		before := dbState(t, pool)
		_, err := tryLoad(t, pool, hashA, firstRaw(t), Options{Mode: Replace, LockTimeout: 300 * time.Millisecond})
		t.Logf("error: %v", err)
		var le *LockTimeoutError
		if !errors.As(err, &le) || le.Object != "table inode" || le.Mode != "ACCESS EXCLUSIVE" {
			t.Fatalf("err = %v, want a lock timeout on table inode", err)
		}
		if len(le.Blockers) != 1 || le.Blockers[0].PID != int(pid) || le.Blockers[0].State != "idle in transaction" {
			t.Errorf("blockers = %+v, want pid %d idle in transaction", le.Blockers, pid)
		}
		if !strings.Contains(err.Error(), "drop the medium's old partitions") {
			t.Errorf("error %q does not say why the lock was needed", err)
		}
		if dbState(t, pool) != before {
			t.Errorf("database changed")
		}
	})
}

// Loads of one medium are serialized: a session holding the medium's load
// lock gives a lock timeout that names the lock and the holder.
func TestMediumLoadLockTimeout(t *testing.T) {
	pool := pgtest.New(t)
	key := "ntt-partitions:" + medium.MustParse(hashA).TableKey()
	pid := idleInTransaction(t, pool, fmt.Sprintf(`SELECT pg_advisory_xact_lock(hashtextextended('%s', 0))`, key))
	_, err := tryLoad(t, pool, hashA, firstRaw(t), Options{LockTimeout: 200 * time.Millisecond})
	t.Logf("error: %v", err)
	var le *LockTimeoutError
	if !errors.As(err, &le) || !strings.Contains(le.Object, "load lock of medium "+hashA) {
		t.Fatalf("err = %v, want a lock timeout on the medium's load lock", err)
	}
	if len(le.Blockers) != 1 || le.Blockers[0].PID != int(pid) {
		t.Errorf("blockers = %+v, want pid %d", le.Blockers, pid)
	}
	// Another medium is not blocked.
	mustLoad(t, pool, hashB, rawOf(t, rec('d', 5, 2, 2, "/r"), rec('f', 5, 3, 1, "/r/x")), Options{LockTimeout: 200 * time.Millisecond})
}

// A statement running past the statement timeout fails the load with an
// error naming the phase and the step, and changes nothing.
func TestStatementTimeout(t *testing.T) {
	pool := pgtest.New(t)
	recs := []enumerate.Record{rec('d', 5, 2, 2, rootA)}
	for i := 0; i < 200000; i++ {
		recs = append(recs, rec('f', 5, uint64(10+i), 1, fmt.Sprintf("%s/d%04d/file %07d.jpg", rootA, i%1000, i)))
	}
	raw := rawOf(t, recs...)
	before := dbState(t, pool)
	_, err := Load(context.Background(), pool, hashA, bytes.NewReader(raw), Options{StatementTimeout: 20 * time.Millisecond})
	t.Logf("error: %v", err)
	var te *TimeoutError
	if !errors.Is(err, ErrStatementTimeout) || !errors.As(err, &te) || te.Phase == "" || te.Step == "" {
		t.Fatalf("err = %v, want a statement timeout naming phase and step", err)
	}
	if !strings.Contains(err.Error(), "statement timeout of 20ms") || !strings.Contains(err.Error(), te.Phase+" phase") {
		t.Errorf("error %q", err)
	}
	if dbState(t, pool) != before {
		t.Errorf("database changed")
	}
}

// Two media loaded at the same time both end up complete and attached.
func TestConcurrentMedia(t *testing.T) {
	pool := pgtest.New(t)
	raws := map[string][]byte{}
	for i, h := range []string{hashA, hashB} {
		var recs []enumerate.Record
		root := "/mnt/ntt/" + h
		recs = append(recs, rec('d', uint64(100+i), 2, 2, root))
		for j := 0; j < 20000; j++ {
			recs = append(recs, rec('f', uint64(100+i), uint64(10+j), 1, fmt.Sprintf("%s/d%03d/f%05d", root, j%100, j)))
		}
		raws[h] = rawOf(t, recs...)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for h, raw := range raws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := Load(context.Background(), pool, h, bytes.NewReader(raw), Options{})
			if err == nil && (st.Paths != 20001 || st.Inodes != 20001) {
				err = fmt.Errorf("medium %s: stats %+v", h, st)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for h := range raws {
		if err := schema.CheckAttached(context.Background(), pool, medium.MustParse(h)); err != nil {
			t.Error(err)
		}
		var n int64
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM path WHERE medium_hash = $1`, h).Scan(&n); err != nil || n != 20001 {
			t.Errorf("medium %s: %d paths (%v)", h, n, err)
		}
	}
}

// countingTracer counts the statements a pool sends.
type countingTracer struct{ n atomic.Int64 }

func (c *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// A hostile medium hash is rejected before any SQL is sent.
func TestHostileHashRejectedBeforeSQL(t *testing.T) {
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	tr := &countingTracer{}
	cfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, h := range []string{
		"", "x", "'; DROP TABLE inode; --", "C9894F1681B5B542EB3A4B75967E9AEA", hashA + " ", "../../etc/passwd0000000000",
		hashA[:15], strings.Repeat("a", 65), "c9894f1681b5b542eb3a4b75967e9ae\x00", "c9894f1681b5b542eb3a4b75967e9aeg",
	} {
		_, err := Load(context.Background(), pool, h, bytes.NewReader(firstRaw(t)), Options{})
		if !errors.Is(err, ErrInvalidHash) {
			t.Errorf("hash %q: err = %v, want ErrInvalidHash", h, err)
		}
	}
	if n := tr.n.Load(); n != 0 {
		t.Errorf("%d statements were sent for hostile hashes", n)
	}
}

// cancelReader cancels the load's context once the load has started
// reading.
type cancelReader struct {
	r      io.Reader
	cancel context.CancelFunc
	n      int
}

func (c *cancelReader) Read(p []byte) (int, error) {
	c.n++
	if c.n == 2 {
		c.cancel()
	}
	return c.r.Read(p[:min(len(p), 4096)])
}

// Cancelling the context (the CLI does on SIGINT) while the raw file is
// read stops the load; nothing is changed.
func TestCancelWhileReading(t *testing.T) {
	pool := pgtest.New(t)
	recs := []enumerate.Record{rec('d', 5, 2, 2, rootA)}
	for i := 0; i < 100000; i++ {
		recs = append(recs, rec('f', 5, uint64(10+i), 1, fmt.Sprintf("%s/f%07d", rootA, i)))
	}
	raw := rawOf(t, recs...)
	before := dbState(t, pool)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := Load(ctx, pool, hashA, &cancelReader{r: bytes.NewReader(raw), cancel: cancel}, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if dbState(t, pool) != before {
		t.Errorf("database changed")
	}
}

// A direct load takes the parents' locks in the order a large medium's
// attach does (inode, then path): waiting for inode, it holds nothing on
// path that such a load, holding inode, could be waiting for.
func TestDirectLoadLocksParentsInAttachOrder(t *testing.T) {
	pool := pgtest.New(t)
	ctx := context.Background()
	blocker := idleInTransaction(t, pool, `LOCK TABLE ONLY inode IN SHARE UPDATE EXCLUSIVE MODE`)
	done := make(chan error, 1)
	raw := firstRaw(t)
	go func() {
		_, err := Load(ctx, pool, hashA, bytes.NewReader(raw), Options{LockTimeout: 30 * time.Second})
		done <- err
	}()
	var waiter uint32
	for deadline := time.Now().Add(20 * time.Second); ; {
		err := pool.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'relation' AND relation = 'inode'::regclass
			AND NOT granted AND pid <> $1`, blocker).Scan(&waiter)
		if err == nil {
			break
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the load never waited for table inode")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var held []string
	rows, err := pool.Query(ctx, `SELECT mode FROM pg_locks WHERE locktype = 'relation' AND relation = 'path'::regclass
		AND pid = $1 AND mode <> 'AccessShareLock'`, waiter)
	if err != nil {
		t.Fatal(err)
	}
	if held, err = collectStrings(rows); err != nil {
		t.Fatal(err)
	}
	if len(held) > 0 {
		t.Errorf("a load waiting for table inode holds %v on table path", held)
	}
	if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, blocker); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the load after the blocker left: %v", err)
	}
}
