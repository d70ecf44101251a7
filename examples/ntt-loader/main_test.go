package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/HRDAG/ntt/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/medium"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const hash = "c9894f1681b5b542eb3a4b75967e9aea"

var root = "/mnt/ntt/" + hash

// writeRaw writes n records of a plausible medium (a directory every 50
// entries, a hardlink pair every 100) to a file and returns its path.
func writeRaw(t testing.TB, dir string, n int) string {
	t.Helper()
	p := filepath.Join(dir, medium.MustParse(hash).RawFileName())
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	var b []byte
	r := enumerate.Record{Type: 'd', Dev: 2049, Ino: 2, Nlink: 3, Size: 4096, Mtime: 1700000000, Path: []byte(root)}
	b = enumerate.AppendRecord(b, &r)
	d := ""
	for i := 1; i < n; i++ {
		r = enumerate.Record{Type: 'f', Dev: 2049, Ino: uint64(10 + i), Nlink: 1, Size: int64(i), Mtime: 1700000000 + int64(i)}
		switch {
		case i%50 == 1:
			d = fmt.Sprintf("/dir%06d", i)
			r.Type, r.Nlink, r.Path = 'd', 2, []byte(root+d)
		case i%100 == 3:
			r.Nlink, r.Ino, r.Path = 2, uint64(10+i-1), []byte(fmt.Sprintf("%s%s/link%06d", root, d, i))
		default:
			if i%100 == 2 {
				r.Nlink = 2
			}
			r.Path = []byte(fmt.Sprintf("%s%s/file %06d.jpg", root, d, i))
		}
		b = enumerate.AppendRecord(b, &r)
		if len(b) > 1<<20 {
			w.Write(b)
			b = b[:0]
		}
	}
	w.Write(b)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, strings.NewReader(""), &o, &e)
	return code, o.String(), e.String()
}

func count(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// The runbook's Phase 2: `ntt-loader RAW HASH`, the dedupe line in the log,
// the summary, and the seed's verification queries.
func TestRunbookLoad(t *testing.T) {
	pool := pgtest.New(t)
	url := pool.Config().ConnString()
	raw := writeRaw(t, t.TempDir(), 1000)
	code, out, errs := runCLI(t, raw, hash, "--db", url) // options after the operands, too
	if code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	if !strings.Contains(errs, `"msg":"Deduplication completed in `) {
		t.Errorf("stderr lacks the dedupe line:\n%s", errs)
	}
	var sum map[string]any
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("summary is not one JSON object: %v\n%s", err, out)
	}
	if sum["records"] != 1000.0 || sum["paths"] != 1000.0 || sum["inodes"] != 990.0 || sum["non_files"] != 21.0 {
		t.Errorf("summary = %v", sum)
	}
	if ph, _ := sum["phases_s"].(map[string]any); ph == nil || ph["dedupe"] == nil || ph["copy"] == nil {
		t.Errorf("summary lacks phase times: %v", sum)
	}
	if n := count(t, pool, `SELECT (SELECT COUNT(*) FROM inode WHERE medium_hash = $1) + 1000000 * (SELECT COUNT(*) FROM path WHERE medium_hash = $1)`, hash); n != 1000*1000000+990 {
		t.Errorf("seed count query: %d", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM pg_indexes WHERE tablename = 'path_p_`+hash+`' AND indexname LIKE '%fk%'`); n != 1 {
		t.Errorf("FK index query: %d rows", n)
	}
	if err := schema.CheckAttached(context.Background(), pool, medium.MustParse(hash)); err != nil {
		t.Error(err)
	}

	// Again: refused, one sentence naming the choices; nothing changes.
	code, _, errs = runCLI(t, "--db", url, raw, hash)
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	last := lines[len(lines)-1]
	if code != 1 || !strings.HasPrefix(last, "ntt-loader: ") || !strings.Contains(last, "--replace") || !strings.Contains(last, "--append") {
		t.Errorf("second load: exit %d, stderr:\n%s", code, errs)
	}
	// --append finds nothing new: exit 2.
	if code, _, errs = runCLI(t, "--db", url, "--append", raw, hash); code != 2 {
		t.Errorf("append of the same file: exit %d, want 2\n%s", code, errs)
	}
	if code, _, errs = runCLI(t, "--db", url, "--replace", "--append", raw, hash); code != 1 || !strings.Contains(errs, "exclude each other") {
		t.Errorf("--replace --append: exit %d\n%s", code, errs)
	}
	if code, out, errs = runCLI(t, "--db", url, "--replace", "--expect", "999", raw, hash); code != 0 {
		t.Errorf("replace: exit %d\n%s", code, errs)
	}
	if !strings.Contains(errs, "the enumeration reported 999 records") || !strings.Contains(errs, "record count differs") {
		t.Errorf("no warning for a record count that differs:\n%s", errs)
	}
}

// migrate creates the schema in an empty database; a load migrates too.
func TestMigrate(t *testing.T) {
	url := pgtest.EmptyURL(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCLI(t, "migrate", "--db", url); code != 0 || !strings.Contains(out, "version") || !strings.Contains(out, `"`+cfg.ConnConfig.Database+`"`) {
		t.Fatalf("migrate: exit %d\n%s%s", code, out, errs)
	}
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := schema.Require(context.Background(), pool, schema.Version); err != nil {
		t.Error(err)
	}
	url2 := pgtest.EmptyURL(t)
	if code, _, errs := runCLI(t, "--db", url2, writeRaw(t, t.TempDir(), 10), hash); code != 0 {
		t.Errorf("load into an empty database: exit %d\n%s", code, errs)
	}
}

// Errors: one sentence naming the record, the hash or the file; a bad
// hash is refused before any connection is made.
func TestErrors(t *testing.T) {
	url := pgtest.URL(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.raw")
	good, err := os.ReadFile(writeRaw(t, dir, 3))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, append(good, "f\x1c1\x1c2\x1c1\x1c0\x1cnope\x1c"+root+"/x\x00"...), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCLI(t, "--db", url, bad, hash)
	if code != 1 || !strings.Contains(errs, fmt.Sprintf("record 3 at byte %d", len(good))) || !strings.Contains(errs, "mtime") {
		t.Errorf("malformed record: exit %d\n%s", code, errs)
	}
	// No server at this URL: the hash must be refused before trying it.
	code, _, errs = runCLI(t, "--db", "postgres://nobody@/x?host=/nonexistent", bad, "C9894F1681B5B542EB3A4B75967E9AEA")
	if code != 1 || !strings.Contains(errs, "invalid medium hash") {
		t.Errorf("bad hash: exit %d\n%s", code, errs)
	}
	code, _, errs = runCLI(t, "--db", url, filepath.Join(dir, "missing.raw"), hash)
	if code != 1 || !strings.Contains(errs, "raw file") || !strings.Contains(errs, "no such file") {
		t.Errorf("missing raw file: exit %d\n%s", code, errs)
	}
	// RAW "-" is standard input.
	var o, e bytes.Buffer
	if code := run([]string{"--db", url, "-", hash}, bytes.NewReader(good), &o, &e); code != 0 || !strings.Contains(o.String(), `"records":3`) {
		t.Errorf("load from stdin: exit %d\n%s%s", code, o.String(), e.String())
	}
	if code, _, _ = runCLI(t, bad); code != 1 {
		t.Errorf("one operand: exit %d", code)
	}
	if code, out, _ := runCLI(t, "--help"); code != 0 || !strings.Contains(out, "--replace") {
		t.Errorf("--help: exit %d\n%s", code, out)
	}
}

// state is what a killed load must leave unchanged.
func state(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var parts []string
	for _, q := range []string{
		`SELECT string_agg(c.relname || ':' || c.relkind::text || ':' || coalesce(pg_get_expr(c.relpartbound, c.oid), ''), ',' ORDER BY c.relname)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'`,
		`SELECT coalesce(string_agg(medium_hash || ':' || coalesce(enum_done::text, '') || ':' || encode(coalesce(enum_root, ''), 'escape'), ','), '') FROM medium`,
		`SELECT count(*) || ':' || coalesce(sum(ino), 0) || ':' || count(*) FILTER (WHERE copied) FROM inode`,
		`SELECT count(*) || ':' || coalesce(sum(length(path)), 0) FROM path`,
	} {
		var s string
		if err := pool.QueryRow(context.Background(), q).Scan(&s); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "\n")
}

// `kill -9` of ntt-loader in the middle of a large load, once while it
// streams the COPY and once after it (building keys and indexes), leaves
// the database exactly as it was; a rerun then succeeds.
func TestKill9MidLoad(t *testing.T) {
	pool := pgtest.New(t)
	url := pool.Config().ConnString()
	bin := testenv.Binary(t)
	small := writeRaw(t, t.TempDir(), 100)
	if code, _, errs := runCLI(t, "--db", url, small, hash); code != 0 {
		t.Fatalf("first load: %s", errs)
	}
	if _, err := pool.Exec(context.Background(), `UPDATE inode SET copied = true, status = 'success' WHERE medium_hash = $1 AND ino < 40`, hash); err != nil {
		t.Fatal(err)
	}
	const n = 400000
	big := writeRaw(t, t.TempDir(), n)
	before := state(t, pool)

	for _, when := range []string{"during COPY", "after COPY"} {
		cmd := exec.Command(bin, "--db", url, "--replace", big, hash)
		var errs bytes.Buffer
		cmd.Stderr = &errs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid, q := waitForStatement(t, pool, cmd, when)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("%s: ntt-loader was not killed (%v): the load finished before the kill?\n%s", when, err, errs.String())
		}
		t.Logf("%s: killed while its backend (pid %d) ran %.60q", when, pid, q)
		// The server rolls back when it notices the client is gone.
		deadline := time.Now().Add(60 * time.Second)
		for count(t, pool, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: backend %d still there a minute after the kill", when, pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if after := state(t, pool); after != before {
			t.Fatalf("%s: the killed load changed the database:\nbefore %s\nafter  %s", when, before, after)
		}
	}
	code, out, errs := runCLI(t, "--db", url, "--replace", big, hash)
	if code != 0 {
		t.Fatalf("rerun: exit %d\n%s", code, errs)
	}
	if !strings.Contains(out, fmt.Sprintf(`"paths":%d`, n)) {
		t.Errorf("rerun summary: %s", out)
	}
	if got := count(t, pool, `SELECT count(*) FROM path WHERE medium_hash = $1`, hash); got != n {
		t.Errorf("after the rerun: %d paths, want %d", got, n)
	}
}

// waitForStatement polls pg_stat_activity for the loader's backend until it
// runs the COPY ("during COPY") or anything after the COPY ("after COPY").
func waitForStatement(t *testing.T, pool *pgxpool.Pool, cmd *exec.Cmd, when string) (int, string) {
	t.Helper()
	sawCopy := false
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		var pid int
		var q, st string
		err := pool.QueryRow(context.Background(), `SELECT pid, query, state FROM pg_stat_activity
			WHERE application_name = 'ntt-loader' AND backend_xid IS NOT NULL ORDER BY backend_start DESC LIMIT 1`).Scan(&pid, &q, &st)
		if err == nil {
			isCopy := strings.HasPrefix(q, "COPY ")
			sawCopy = sawCopy || isCopy
			switch {
			case when == "during COPY" && isCopy && st == "active":
				return pid, q
			case when == "after COPY" && sawCopy && !isCopy:
				return pid, q
			}
		}
		if cmd.ProcessState != nil {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("never saw ntt-loader's backend %s", when)
	return 0, ""
}
