package archive

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stopAtVerify stops the catalog when the archive's verification starts
// (after the seal, before the archived mark).
type stopAtVerify struct {
	NopProgress
	t    *testing.T
	pg   *pgtest.Cluster
	once sync.Once
}

func (s *stopAtVerify) Start(p Phase, _ int64) {
	if p != PhaseVerify {
		return
	}
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.pg.Stop(ctx); err != nil {
			s.t.Errorf("stopping the catalog: %v", err)
		}
	})
}

// startOnRetry starts the catalog again when the archiver logs its first
// retry, so that the outage lasts one attempt.
type startOnRetry struct {
	slog.Handler
	t    *testing.T
	pg   *pgtest.Cluster
	once *sync.Once
}

func (h startOnRetry) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "catalog unavailable; retrying" {
		h.once.Do(func() {
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := h.pg.Start(cctx); err != nil {
				h.t.Errorf("starting the catalog: %v", err)
			}
		})
	}
	return h.Handler.Handle(ctx, r)
}

// The catalog goes away between the seal and the archived mark: Complete
// waits it out, marks the medium archived and removes the sources; the
// seal is not redone.
func TestCompleteWaitsOutCatalogOutage(t *testing.T) {
	pg := pgtest.NewCluster(t)
	pool, err := pgxpool.New(context.Background(), pg.URL())
	require.NoError(t, err)
	defer pool.Close()
	db := catalogIn(t, pool, copiedRow, nonFileRow)
	src := mediumDir(t, 1<<20)
	dest := t.TempDir()
	logs := &testenv.Buffer{}
	logger := slog.New(startOnRetry{Handler: slog.NewJSONHandler(logs, nil), t: t, pg: pg, once: &sync.Once{}})
	spec := Spec{Medium: testHash, ImagesDirs: []string{src}, Dest: dest, Logger: logger,
		Progress: &stopAtVerify{t: t, pg: pg}}
	res, err := Complete(context.Background(), db, spec, CompleteOptions{DBRetry: time.Minute})
	require.NoError(t, err, logs.String())
	assert.Contains(t, logs.String(), "catalog unavailable; retrying")
	assert.Contains(t, logs.String(), "catalog reachable again")
	copyDone, path := archivedMark(t, db)
	require.NotNil(t, copyDone)
	require.NotNil(t, path)
	assert.Equal(t, res.Path, *path)
	assert.Equal(t, filepath.Join(dest, testHash+".tar.zst"), res.Path)
	assert.NotEmpty(t, res.Removed)
	for _, p := range res.Removed {
		assert.False(t, exists(p), p)
	}
}
