// Package pgtest gives each test a fresh, migrated PostgreSQL database on a
// real server: by default one throwaway cluster per test binary, started
// from the system's initdb/pg_ctl on a unix socket in a short temp dir with
// fsync off; or the server named by NTT_TEST_DATABASE_URL when it is set.
//
// Each test gets its own database, cloned from a migrated template (cheap:
// CREATE DATABASE … TEMPLATE), so tests are isolated and can run in
// parallel.
//
// The throwaway cluster never outlives the test binary: a small watchdog
// process (sh, in its own session) holds the read end of a pipe whose write
// end only this process has. However the test binary ends — return from
// TestMain, a panicking test, os.Exit, kill -9 — the pipe closes, and the
// watchdog stops the server and removes its files. Main makes that
// synchronous on a normal exit.
//
// Without PostgreSQL binaries the tests are skipped with the reason, or fail
// under CI=true (internal/testenv).
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/pgcluster"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvURL names the variable that points the tests at an existing server.
const EnvURL = "NTT_TEST_DATABASE_URL"

type server struct {
	mu       sync.Mutex
	admin    *pgx.Conn // to the maintenance database; creates test databases
	baseURL  string    // URL of the maintenance database
	template string
	prefix   string
	n        int
	cluster  *pgcluster.Cluster
	dir      string
	watchdog *exec.Cmd
	pipe     *os.File // write end; closing it (or dying) triggers the watchdog
}

var (
	once    sync.Once
	srv     *server
	srvErr  error
	srvSkip string
)

// Main runs the package's tests and then removes the throwaway cluster
// (and the programs testenv.Binary built) before the test binary exits. Call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	shutdown()
	testenv.RemoveBinaries()
	os.Exit(code)
}

func shutdown() {
	if srv == nil {
		return
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if srv.admin != nil {
		if srv.cluster == nil { // external server: drop what we made
			dropOwned(ctx, srv.admin, srv.prefix)
		}
		srv.admin.Close(ctx)
		srv.admin = nil
	}
	if srv.pipe != nil {
		srv.pipe.Close()
		srv.pipe = nil
		done := make(chan struct{})
		go func() { srv.watchdog.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
}

func dropOwned(ctx context.Context, admin *pgx.Conn, prefix string) {
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE starts_with(datname, $1)`, prefix)
	if err != nil {
		return
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, n := range names {
		admin.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{n}.Sanitize()+` WITH (FORCE)`)
	}
}

func start() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := &server{prefix: fmt.Sprintf("ntt_t%d_", os.Getpid())}
	s.template = s.prefix + "template"
	if u := os.Getenv(EnvURL); u != "" {
		s.baseURL = u
	} else {
		if _, err := pgcluster.BinDir(); err != nil {
			srvSkip = err.Error()
			return
		}
		if err := s.startCluster(ctx); err != nil {
			srvErr = err
			return
		}
	}
	admin, err := pgx.Connect(ctx, s.baseURL)
	if err != nil {
		srvErr = fmt.Errorf("pgtest: connecting to %s: %w", s.baseURL, err)
		return
	}
	s.admin = admin
	if _, err := admin.Exec(ctx, `CREATE DATABASE `+s.template); err != nil {
		srvErr = fmt.Errorf("pgtest: creating the template database: %w", err)
		return
	}
	tc, err := pgx.Connect(ctx, withDatabase(s.baseURL, s.template))
	if err != nil {
		srvErr = fmt.Errorf("pgtest: connecting to the template database: %w", err)
		return
	}
	defer tc.Close(ctx)
	if err := schema.Migrate(ctx, tc); err != nil {
		srvErr = fmt.Errorf("pgtest: migrating the template database: %w", err)
		return
	}
	srv = s
}

func (s *server) startCluster(ctx context.Context) error {
	// Short path: the socket path must fit in ~100 bytes.
	dir, err := os.MkdirTemp("/tmp", "ntt-pg")
	if err != nil {
		return err
	}
	s.dir = dir
	// The watchdog first, so that even a failed start is cleaned up.
	if err := s.startWatchdog(); err != nil {
		os.RemoveAll(dir)
		return err
	}
	c, err := pgcluster.Init(ctx, pgcluster.Options{Dir: dir, Settings: map[string]string{
		"max_connections": "300",
		"shared_buffers":  "64MB",
	}})
	if err != nil {
		return err
	}
	s.cluster = c
	if err := c.Start(ctx); err != nil {
		return err
	}
	s.baseURL = c.URL("postgres")
	return nil
}

// startWatchdog starts the watchdog of the shared cluster.
func (s *server) startWatchdog() error {
	cmd, w, err := startWatchdog(s.dir)
	if err != nil {
		return err
	}
	s.watchdog, s.pipe = cmd, w
	return nil
}

// startWatchdog starts `sh` in its own session, reading from a pipe. When
// the read returns (the pipe's write end closed: this process exited or
// closed it) it stops the server in dir and removes the cluster's files.
func startWatchdog(dir string) (*exec.Cmd, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	script := `read _
pid=$(head -n 1 "$1/data/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ]; then
  kill -QUIT "$pid" 2>/dev/null
  i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$1"`
	cmd := exec.Command("/bin/sh", "-c", script, "pgtest-watchdog", dir)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, nil, fmt.Errorf("pgtest: starting the cleanup watchdog: %w", err)
	}
	r.Close()
	return cmd, w, nil
}

// withDatabase returns url u pointing at database db instead.
func withDatabase(u, db string) string {
	if strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://") {
		pu, err := url.Parse(u)
		if err == nil {
			pu.Path = "/" + db
			pu.RawPath = ""
			return pu.String()
		}
	}
	return u + " dbname=" + db
}

func server_(t testing.TB) *server {
	t.Helper()
	once.Do(start)
	if srvSkip != "" {
		testenv.SkipOrFail(t, "no PostgreSQL: "+srvSkip)
	}
	if srvErr != nil {
		t.Fatalf("pgtest: %v", srvErr)
	}
	return srv
}

// URL creates a fresh, migrated database for this test and returns its
// connection URL (for example binaries the test runs).
func URL(t testing.TB) string {
	t.Helper()
	return create(t, server_(t).template)
}

// EmptyURL creates a fresh database without the NTT schema (for tests of
// migrations and of the version check) and returns its URL.
func EmptyURL(t testing.TB) string {
	t.Helper()
	server_(t)
	return create(t, "template0")
}

func create(t testing.TB, template string) string {
	t.Helper()
	s := srv
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	name := fmt.Sprintf("%s%d", s.prefix, s.n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.admin.Exec(ctx, `CREATE DATABASE `+name+` TEMPLATE `+template); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	return withDatabase(s.baseURL, name)
}

// New returns a pool on a fresh, migrated database; it is closed when the
// test ends.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	u := URL(t)
	pool, err := pgxpool.New(context.Background(), u)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}
