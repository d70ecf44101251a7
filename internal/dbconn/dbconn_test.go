package dbconn

import (
	"context"
	"testing"

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
