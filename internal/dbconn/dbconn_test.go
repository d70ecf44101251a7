package dbconn

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/pgcluster"
	"github.com/HRDAG/ntt/internal/testenv"

	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestResolveURLPrecedence(t *testing.T) {
	t.Setenv(EnvURL, "postgres:///fromenv")
	require.Equal(t, "postgres:///flag", ResolveURL("postgres:///flag"))
	require.Equal(t, "postgres:///fromenv", ResolveURL(""))
	t.Setenv(EnvURL, "")
	require.Equal(t, "", ResolveURL(""))
}

func TestOpenChecksOrMigrates(t *testing.T) {
	ctx := context.Background()
	u := pgtest.EmptyURL(t)
	_, err := Open(ctx, Options{URL: u})
	require.ErrorIs(t, err, schema.ErrVersion, "an unmigrated database is refused before use")
	pool, err := Open(ctx, Options{URL: u, Migrate: true})
	require.NoError(t, err)
	pool.Close()
	t.Setenv(EnvURL, u)
	pool, err = Open(ctx, Options{})
	require.NoError(t, err, "the URL comes from NTT_DB_URL")
	pool.Close()
}

func TestConfiguredByEnvironment(t *testing.T) {
	for _, v := range []string{EnvURL, "PGHOST", "PGHOSTADDR", "PGDATABASE", "PGSERVICE", "PGPORT"} {
		t.Setenv(v, "")
	}
	require.False(t, Configured(""))
	require.True(t, Configured("postgres:///x"))
	t.Setenv("PGDATABASE", "copyjob")
	require.True(t, Configured(""))
}

func TestPrivateClusterWhenNothingIsConfigured(t *testing.T) {
	if _, err := pgcluster.BinDir(); err != nil {
		testenv.SkipOrFail(t, err.Error())
	}
	for _, v := range []string{EnvURL, "PGHOST", "PGHOSTADDR", "PGDATABASE", "PGSERVICE", "PGPORT"} {
		t.Setenv(v, "")
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("/tmp", "ntt-state")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() {
		StopPrivate(context.Background(), dir)
		os.RemoveAll(dir)
	})
	var said []string
	pool, err := Open(ctx, Options{Private: &Private{Dir: dir, Say: func(l string) { said = append(said, l) }}})
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO medium (medium_hash) VALUES ('c9894f1681b5b542eb3a4b75967e9aea')`)
	require.NoError(t, err)
	pool.Close()
	require.Len(t, said, 1)
	require.Contains(t, said[0], filepath.Join(dir, "pg"))

	// A second program finds the same catalog, already running.
	pool, err = Open(ctx, Options{Private: &Private{Dir: dir}})
	require.NoError(t, err)
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM medium`).Scan(&n))
	require.Equal(t, 1, n)
	pool.Close()

	require.NoError(t, StopPrivate(ctx, dir))
	_, err = os.Stat(filepath.Join(dir, "pg", "data", "postmaster.pid"))
	require.True(t, os.IsNotExist(err), "stopped")
}

func firstLogLine(t *testing.T, buf *testenv.Buffer) map[string]any {
	t.Helper()
	line, _, _ := strings.Cut(buf.String(), "\n")
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(line), &m), "first log line %q", line)
	return m
}

// The runbook's "which database?": with only PGHOST/PGPORT (and the user)
// set, libpq's default database is the user's name, not copyjob. Open says
// so in its log line and its refusal names that database.
func TestOpenNamesTheDatabaseFromEnvironment(t *testing.T) {
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(pgtest.EmptyURL(t))
	require.NoError(t, err)
	for _, v := range []string{EnvURL, "PGHOSTADDR", "PGDATABASE", "PGSERVICE", "PGPASSWORD"} {
		t.Setenv(v, "")
	}
	t.Setenv("PGHOST", cfg.Host)
	t.Setenv("PGPORT", fmt.Sprint(cfg.Port))
	t.Setenv("PGUSER", cfg.User)
	if cfg.Password != "" {
		t.Setenv("PGPASSWORD", cfg.Password)
	}
	var buf testenv.Buffer
	_, err = Open(ctx, Options{Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	require.ErrorIs(t, err, schema.ErrVersion, "the user's default database has no NTT schema")
	require.Contains(t, err.Error(), fmt.Sprintf("database %q has no NTT schema", cfg.User))
	require.Contains(t, err.Error(), "PGDATABASE")
	require.NotContains(t, err.Error(), "schema.Migrate")
	m := firstLogLine(t, &buf)
	require.Equal(t, "catalog database", m["msg"])
	require.Equal(t, cfg.User, m["dbname"], "the database the server says it is")
	require.Equal(t, cfg.Host, m["host"])
	require.EqualValues(t, cfg.Port, m["port"])
	require.Contains(t, m["from"], "no PGDATABASE")
}

// With a URL the line names the URL's database, and never its password.
func TestOpenLogsTheDatabaseWithoutPassword(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	cfg, err := pgx.ParseConfig(u)
	require.NoError(t, err)
	if cfg.Password == "" {
		// The throwaway cluster trusts its socket: a password in the URL
		// is sent only if asked for, so the URL can carry one.
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme == "" {
			u += " password=s3cret-pw"
		} else {
			pu.User = url.UserPassword(cfg.User, "s3cret-pw")
			u = pu.String()
		}
	}
	var buf testenv.Buffer
	pool, err := Open(ctx, Options{URL: u, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	require.NoError(t, err)
	pool.Close()
	m := firstLogLine(t, &buf)
	require.Equal(t, "catalog database", m["msg"])
	require.Equal(t, cfg.Database, m["dbname"])
	require.Equal(t, "--db", m["from"])
	require.NotContains(t, buf.String(), "s3cret-pw")
	if cfg.Password != "" {
		require.NotContains(t, buf.String(), cfg.Password)
	}
}
