package copier_test

import (
	"sync"
	"testing"

	"github.com/HRDAG/ntt/copier"
	"github.com/stretchr/testify/require"
)

// Nothing is recorded before it is durable: with several workers whose
// batches are finished (syncfs, commit) while they copy the next ones,
// every blob a batch's commit names was stored before the start of a
// syncfs that ended before that commit began.
func TestBlobsDurableBeforeTheCatalogNamesThem(t *testing.T) {
	f := newMedium(t, manyFiles(300, 2))
	type span struct{ start, end int }
	var (
		mu      sync.Mutex
		seq     int
		stored  = map[string]int{}
		open    = map[string]int{} // a worker's sync begun: its start
		syncs   []span
		commits []struct {
			at  int
			ids []string
		}
	)
	defer copier.WatchDurability(func(ev int, ids []string) {
		mu.Lock()
		defer mu.Unlock()
		seq++
		switch ev {
		case copier.WatchStored:
			stored[ids[0]] = seq
		case copier.WatchSyncStart:
			open[ids[0]] = seq
		case copier.WatchSyncEnd:
			syncs = append(syncs, span{open[ids[0]], seq})
			delete(open, ids[0])
		case copier.WatchCommit:
			commits = append(commits, struct {
				at  int
				ids []string
			}{seq, append([]string(nil), ids...)})
		}
	})()
	o := f.options()
	o.Workers, o.BatchSize = 4, 20
	st := f.mustRun(o)
	require.Equal(t, countFiles(t, f), st.Copied)
	f.checkComplete()

	require.Greater(t, len(commits), 4, "several batches")
	for _, c := range commits {
		for _, id := range c.ids {
			at, ok := stored[id]
			require.True(t, ok, "blob %s named by a commit was never stored in this run", id)
			durable := false
			for _, s := range syncs {
				if s.start > at && s.end < c.at {
					durable = true
					break
				}
			}
			require.True(t, durable, "blob %s (stored at event %d) named by the commit at event %d before a syncfs covered it", id, at, c.at)
		}
	}
}
