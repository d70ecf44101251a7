package loader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HRDAG/ntt/enumerate"
	"github.com/HRDAG/ntt/internal/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// restartAt restarts the test's own cluster the first time the load
// enters phase (the transaction is open then: the server rolls it back).
type restartAt struct {
	t     *testing.T
	pg    *pgtest.Cluster
	phase string
	once  sync.Once
	done  bool
}

func (r *restartAt) Phase(name string) {
	if name != r.phase {
		return
	}
	r.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := r.pg.Restart(ctx); err != nil {
			r.t.Errorf("restarting the catalog: %v", err)
			return
		}
		r.done = true
	})
}

func (r *restartAt) Records(int64, int64) {}

func manyRecords(n int) []byte {
	recs := []enumerate.Record{rec('d', 2049, 2, 2, rootA)}
	for i := range n {
		recs = append(recs, rec('f', 2049, uint64(100+i), 1, fmt.Sprintf("%s/f%05d", rootA, i)))
	}
	var b bytes.Buffer
	w := enumerate.NewWriter(&b)
	for i := range recs {
		w.Write(&recs[i])
	}
	w.Flush()
	return b.Bytes()
}

// `pg_ctl restart -m fast` while the load's transaction copies rows: the
// load starts again from the beginning of its (seekable) input and
// completes; the catalog holds every record once.
func TestLoadRetriesAfterCatalogRestart(t *testing.T) {
	pg := pgtest.NewCluster(t)
	pool, err := pgxpool.New(context.Background(), pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	raw := manyRecords(2000)
	var logBuf bytes.Buffer
	prog := &restartAt{t: t, pg: pg, phase: PhaseCopy}
	st := mustLoad(t, pool, hashA, raw, Options{Progress: prog, DBRetry: time.Minute,
		Logger: slog.New(slog.NewJSONHandler(&logBuf, nil))})
	if !prog.done {
		t.Fatal("the catalog was not restarted")
	}
	if st.Records != 2001 || st.Inodes != 2001 || st.Paths != 2001 {
		t.Errorf("stats = %+v", st)
	}
	if !strings.Contains(logBuf.String(), "catalog unavailable; retrying") {
		t.Errorf("the outage is not in the log:\n%s", logBuf.String())
	}
	if ps := pathsOf(t, pool, hashA); len(ps) != 2001 {
		t.Errorf("%d paths in the catalog, want 2001", len(ps))
	}
}

// The same outage with the input on a pipe (standard input): the load
// cannot read it again, so it fails with ErrInputNotRewindable, saying
// so, and changes nothing.
func TestLoadFromPipeIsNotRetried(t *testing.T) {
	pg := pgtest.NewCluster(t)
	pool, err := pgxpool.New(context.Background(), pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	raw := manyRecords(500)
	prog := &restartAt{t: t, pg: pg, phase: PhaseCopy}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pipe := io.MultiReader(bytes.NewReader(raw)) // no Seek
	_, err = Load(ctx, pool, hashA, pipe, Options{Progress: prog, DBRetry: time.Minute})
	if !errors.Is(err, ErrInputNotRewindable) {
		t.Fatalf("err = %v, want ErrInputNotRewindable", err)
	}
	if !strings.Contains(err.Error(), "run the load again from the raw file") {
		t.Errorf("err = %v", err)
	}
	if ps := pathsOf(t, pool, hashA); len(ps) != 0 {
		t.Errorf("%d paths in the catalog, want none", len(ps))
	}
}
