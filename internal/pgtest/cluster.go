package pgtest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/pgcluster"
	"github.com/HRDAG/ntt/internal/schema"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/jackc/pgx/v5"
)

// Cluster is a PostgreSQL server of one test's own, for tests of a catalog
// outage: the test restarts or stops it while the code under test runs,
// which the shared cluster (or a server named by NTT_TEST_DATABASE_URL)
// must never suffer. It needs the server binaries even when
// NTT_TEST_DATABASE_URL is set. It is stopped and removed when the test
// ends, and, like the shared one, by a watchdog if the test binary dies.
type Cluster struct {
	c   *pgcluster.Cluster
	url string
}

// NewCluster starts a throwaway cluster with one migrated database.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	if _, err := pgcluster.BinDir(); err != nil {
		testenv.SkipOrFail(t, "no PostgreSQL server binaries: "+err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("/tmp", "ntt-pg")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	cmd, pipe, err := startWatchdog(dir)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		pipe.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	})
	c, err := pgcluster.Init(ctx, pgcluster.Options{Dir: dir, Settings: map[string]string{"max_connections": "100"}})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	admin, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `CREATE DATABASE ntt`); err != nil {
		t.Fatalf("pgtest: creating the database: %v", err)
	}
	conn, err := pgx.Connect(ctx, c.URL("ntt"))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	if err := schema.Migrate(ctx, conn); err != nil {
		t.Fatalf("pgtest: migrating: %v", err)
	}
	return &Cluster{c: c, url: c.URL("ntt")}
}

// URL is the migrated database's connection URL.
func (c *Cluster) URL() string { return c.url }

// Restart stops the server in fast mode, terminating every session as
// `pg_ctl restart -m fast` does, and starts it again.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.c.Restart(ctx); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return nil
}

// Stop stops the server in fast mode: every session ends, and connection
// attempts fail until Start.
func (c *Cluster) Stop(ctx context.Context) error {
	if err := c.c.Stop(ctx, true); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return nil
}

// Start starts the stopped server again.
func (c *Cluster) Start(ctx context.Context) error {
	if err := c.c.Start(ctx); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return nil
}
