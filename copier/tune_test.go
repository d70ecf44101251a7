package copier

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The climber adds workers while the throughput grows, turns back when it
// falls, holds on a plateau, and stays within [1, bound].
func TestTunerClimb(t *testing.T) {
	tu := newTuner(6, false)
	assert.Equal(t, min(tuneStart, 6), tu.current())
	start := tu.current()
	assert.Equal(t, start+1, tu.step(100, 0), "first period: reference, then a probe upwards")
	assert.Equal(t, start+2, tu.step(150, 0), "gain: one more")
	assert.Equal(t, start+3, tu.step(200, 0), "gain: one more")
	assert.Equal(t, start+2, tu.step(120, 0), "loss: back")
	assert.Equal(t, start+2, tu.step(122, 0), "plateau: stay")
	assert.Equal(t, start+1, tu.step(160, 0), "gain going down: keep going down")
	assert.Equal(t, start+2, tu.step(100, 0), "loss: turn again")
	for range 10 {
		tu.step(1e9*float64(tu.current()), 0) // always better with more
	}
	assert.Equal(t, 6, tu.current(), "never above the bound")
	tu = newTuner(6, false)
	for range 10 {
		tu.step(1e9/float64(tu.current()), 0) // always better with fewer
	}
	assert.LessOrEqual(t, tu.current(), 2, "down to the least that works")
	assert.GreaterOrEqual(t, tu.current(), 1, "never below one")

	fixed := newTuner(5, true)
	assert.Equal(t, 5, fixed.current())
	fixed.step(1, 0)
	fixed.step(1000, 0)
	assert.Equal(t, 5, fixed.current(), "FixedWorkers: no climbing")
}

// No more workers than the limit hold a batch at once; a raised limit lets
// waiting workers in at once; a cancelled context frees the waiters.
func TestTunerGate(t *testing.T) {
	tu := newTuner(8, false)
	tu.mu.Lock()
	tu.limit = 2
	tu.mu.Unlock()
	var in, most atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if !tu.enter(ctx) {
					return
				}
				n := in.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				time.Sleep(100 * time.Microsecond)
				in.Add(-1)
				tu.leave()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(2), most.Load(), "at most the limit at once, and the limit used")

	// Two inside, a third waits until the limit rises.
	assert.True(t, tu.enter(ctx))
	assert.True(t, tu.enter(ctx))
	entered := make(chan bool)
	go func() { entered <- tu.enter(ctx) }()
	select {
	case <-entered:
		t.Fatal("a third worker entered under a limit of 2")
	case <-time.After(30 * time.Millisecond):
	}
	tu.mu.Lock()
	tu.limit = 3
	tu.cond.Broadcast()
	tu.mu.Unlock()
	assert.True(t, <-entered, "let in when the limit rises")

	go func() { entered <- tu.enter(ctx) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	select {
	case ok := <-entered:
		assert.False(t, ok, "a cancelled wait does not enter")
	case <-time.After(time.Second):
		t.Fatal("cancellation did not free a waiting worker")
	}
}
