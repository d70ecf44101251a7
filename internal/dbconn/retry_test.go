package dbconn

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The errors a real server gives: a session ended by a restart (57P01) and
// a server that is down are retryable; a constraint violation, a syntax
// error and a cancelled context are not.
func TestRetryableOnRealErrors(t *testing.T) {
	pg := pgtest.NewCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL())
	require.NoError(t, err)
	defer conn.Close(ctx)

	_, err = conn.Exec(ctx, `CREATE TEMP TABLE u (k int PRIMARY KEY); INSERT INTO u VALUES (1)`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO u VALUES (1)`)
	var pe *pgconn.PgError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "23505", pe.Code)
	assert.False(t, Retryable(fmt.Errorf("wrapped: %w", err)), "a constraint violation")
	_, err = conn.Exec(ctx, `SELEC 1`)
	require.Error(t, err)
	assert.False(t, Retryable(err), "a syntax error")
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	_, err = conn.Exec(cctx, `SELECT 1`)
	require.Error(t, err)
	assert.False(t, Retryable(err), "a cancelled context")

	require.NoError(t, pg.Restart(ctx))
	_, err = conn.Exec(ctx, `SELECT 1`)
	require.Error(t, err)
	assert.True(t, Retryable(fmt.Errorf("claiming inodes: %w", err)), "a session ended by a restart: %v", err)
	_, err = conn.Exec(ctx, `SELECT 1`)
	require.Error(t, err)
	assert.True(t, Retryable(err), "the closed connection afterwards: %v", err)

	require.NoError(t, pg.Stop(ctx))
	_, err = pgx.Connect(ctx, pg.URL())
	require.Error(t, err)
	assert.True(t, Retryable(err), "a server that is down: %v", err)
	require.NoError(t, pg.Start(ctx))
}

// Do retries a retryable error until it succeeds, gives up past the bound
// with ErrUnavailable, and returns other errors at once.
func TestRetryDo(t *testing.T) {
	ctx := context.Background()
	down := &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}
	n := 0
	err := Retry{Bound: time.Minute}.Do(ctx, "step", func() error {
		n++
		if n < 3 {
			return down
		}
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, 3, n)

	n = 0
	err = Retry{Bound: 300 * time.Millisecond}.Do(ctx, "claiming inodes", func() error { n++; return down })
	require.ErrorIs(t, err, ErrUnavailable)
	assert.ErrorAs(t, err, new(*pgconn.PgError))
	assert.Contains(t, err.Error(), "while claiming inodes")
	assert.GreaterOrEqual(t, n, 2)

	n = 0
	bad := &pgconn.PgError{Code: "23505"}
	err = Retry{}.Do(ctx, "step", func() error { n++; return bad })
	assert.Equal(t, 1, n)
	assert.True(t, errors.Is(err, bad))

	n = 0
	err = Retry{Bound: -1}.Do(ctx, "step", func() error { n++; return down })
	assert.Equal(t, 1, n, "no retry")
	assert.False(t, errors.Is(err, ErrUnavailable))
}
