package copier

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Concurrency. Options.Workers is an upper bound; how many workers copy at
// once is found while the run goes, by hill climbing on the measured
// throughput (see doc.go, "Concurrency", for the measurements behind it):
//
//   - Every worker goroutine of the bound exists (the bound is no more
//     than the medium's batches, see Run), but only limit of them
//     may hold a batch (claim, read, hash, store); the others wait, holding
//     no claim. The limit starts at tuneStart.
//   - Every tunePeriod, the work done in the period is weighed: bytes read
//     plus tuneFileCost per file (a small file's cost is its open and its
//     first block, not its size). Against the period before: a gain of more
//     than tuneGain keeps the direction of the last step (one more worker,
//     or one fewer); a loss of more than tuneGain reverses it; in between,
//     the limit stays, and the next period probes again in the same
//     direction. The limit stays within [1, bound].
//
// A step only shows once the workers let in (or out) have started (ended)
// a batch, so the period is long against a batch of small files on a
// cold medium (a few hundred milliseconds).
var (
	tuneStart    = 2
	tunePeriod   = 2 * time.Second
	tuneGain     = 0.05
	tuneFileCost = int64(32 << 10)
)

// tuner is the gate the workers pass before each batch, and the climber
// that moves it.
type tuner struct {
	bound int
	mu    sync.Mutex
	cond  sync.Cond
	limit int
	in    int // workers holding a batch
	fixed bool

	work atomic.Int64 // weighed work done (bytes + tuneFileCost per file)

	// climbing
	dir      int
	lastRate float64
	steps    []tuneStep // the limit's history, for the log and tests
}

type tuneStep struct {
	At    time.Duration
	Limit int
	Rate  float64 // weighed work per second in the period before
}

func newTuner(bound int, fixed bool) *tuner {
	t := &tuner{bound: bound, limit: tuneFirst(bound, fixed), dir: 1, fixed: fixed}
	t.cond.L = &t.mu
	return t
}

// tuneFirst is how many of bound workers copy at the start.
func tuneFirst(bound int, fixed bool) int {
	if fixed {
		return bound
	}
	return min(max(tuneStart, 1), bound)
}

// enter waits until the worker may take a batch; false if ctx ended first.
func (t *tuner) enter(ctx context.Context) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.in >= t.limit {
		stop := context.AfterFunc(ctx, func() {
			t.mu.Lock()
			t.cond.Broadcast()
			t.mu.Unlock()
		})
		defer stop()
		for t.in >= t.limit && ctx.Err() == nil {
			t.cond.Wait()
		}
	}
	if ctx.Err() != nil {
		return false
	}
	t.in++
	return true
}

// leave ends a worker's batch.
func (t *tuner) leave() {
	t.mu.Lock()
	t.in--
	t.cond.Broadcast()
	t.mu.Unlock()
}

// done counts a processed file.
func (t *tuner) done(bytes int64) { t.work.Add(bytes + tuneFileCost) }

// step is one period's decision, given the weighed work rate measured in
// it; it returns the new limit.
func (t *tuner) step(rate float64, at time.Duration) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fixed {
		return t.limit
	}
	switch {
	case t.lastRate == 0:
		// The first period sets the reference; then probe upwards.
	case rate > t.lastRate*(1+tuneGain):
		// better: keep going
	case rate < t.lastRate*(1-tuneGain):
		t.dir = -t.dir
	default:
		t.lastRate = rate
		t.steps = append(t.steps, tuneStep{At: at, Limit: t.limit, Rate: rate})
		return t.limit
	}
	t.lastRate = rate
	next := min(max(t.limit+t.dir, 1), t.bound)
	if next == t.limit {
		t.dir = -t.dir // at a bound: the next probe goes the other way
	}
	t.limit = next
	t.steps = append(t.steps, tuneStep{At: at, Limit: t.limit, Rate: rate})
	t.cond.Broadcast()
	return t.limit
}

// climb measures and steps every tunePeriod until ctx ends.
func (t *tuner) climb(ctx context.Context, onStep func(limit int, rate float64)) {
	if t.fixed || t.bound <= 1 {
		return
	}
	start := time.Now()
	tick := time.NewTicker(tunePeriod)
	defer tick.Stop()
	last, lastAt := t.work.Load(), start
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			w := t.work.Load()
			secs := now.Sub(lastAt).Seconds()
			if secs <= 0 {
				continue
			}
			rate := float64(w-last) / secs
			last, lastAt = w, now
			if rate == 0 || math.IsNaN(rate) {
				continue // nothing finished: no evidence either way
			}
			limit := t.step(rate, now.Sub(start))
			if onStep != nil {
				onStep(limit, rate)
			}
		}
	}
}

// current is the limit now.
func (t *tuner) current() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.limit
}
