package dbconn

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/internal/pgcluster"
	"github.com/HRDAG/ntt/internal/testenv"

	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/schema"
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
