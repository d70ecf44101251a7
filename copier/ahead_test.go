package copier

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeFiles opens inodes as descriptors that only count: how many are open
// now and at most, which were opened, and which are closed.
type fakeFiles struct {
	openNow, openMax atomic.Int64
	mu               sync.Mutex
	opened           []int64 // inode numbers, in the order open was called
	closed           map[int64]int
	delay            time.Duration
	block            chan struct{} // non-nil: opens of inode blockIno wait on it
	blockIno         int64
}

func (f *fakeFiles) open(n *inode) prepared {
	f.mu.Lock()
	f.opened = append(f.opened, n.Ino)
	f.mu.Unlock()
	if f.block != nil && n.Ino == f.blockIno {
		<-f.block
	}
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	now := f.openNow.Add(1)
	for {
		m := f.openMax.Load()
		if now <= m || f.openMax.CompareAndSwap(m, now) {
			break
		}
	}
	ino := n.Ino
	return prepared{of: &openedFile{done: func() {
		f.openNow.Add(-1)
		f.mu.Lock()
		f.closed[ino]++
		f.mu.Unlock()
	}}}
}

func fakeBatch(n int) []*inode {
	b := make([]*inode, n)
	for i := range b {
		b[i] = &inode{Ino: int64(1000 + i), Paths: [][]byte{[]byte("/f")}}
	}
	return b
}

// Every file is opened once, handed to the worker in the batch's order,
// and closed once; no more than the window is ever open.
func TestAheadOrderAndBound(t *testing.T) {
	f := &fakeFiles{closed: map[int64]int{}, delay: 100 * time.Microsecond}
	batch := fakeBatch(500)
	a := startAhead(batch, f.open, 8, 16)
	for i, n := range batch {
		p := a.take(i)
		require.NotNil(t, p.of, "file %d", i)
		f.mu.Lock()
		assert.Zero(t, f.closed[n.Ino], "file %d handed out after it was closed", i)
		f.mu.Unlock()
		assert.LessOrEqual(t, f.openNow.Load(), int64(16), "window")
		a.done(i)
	}
	a.stop()
	assert.LessOrEqual(t, f.openMax.Load(), int64(16), "at most the window's files are ever open")
	assert.Greater(t, f.openMax.Load(), int64(1), "files are opened ahead of the worker")
	assert.Zero(t, f.openNow.Load(), "every file closed")
	assert.Len(t, f.opened, len(batch), "each file opened once")
	for _, n := range batch {
		assert.Equal(t, 1, f.closed[n.Ino], "inode %d closed once", n.Ino)
	}
}

// One opener opens the files exactly in the batch's order; more openers
// never run further ahead than the window.
func TestAheadOpenOrder(t *testing.T) {
	f := &fakeFiles{closed: map[int64]int{}}
	batch := fakeBatch(100)
	a := startAhead(batch, f.open, 1, 4)
	for i := range batch {
		a.take(i)
		a.done(i)
	}
	a.stop()
	for i, ino := range f.opened {
		assert.Equal(t, int64(1000+i), ino, "open %d", i)
	}

	f = &fakeFiles{closed: map[int64]int{}}
	a = startAhead(batch, f.open, 8, 10)
	for i := range batch {
		a.take(i)
		f.mu.Lock()
		for _, ino := range f.opened {
			assert.Less(t, ino, int64(1000+i+10), "while the worker is on file %d", i)
		}
		f.mu.Unlock()
		a.done(i)
	}
	a.stop()
}

// A batch that ends early (cancellation, a failed store) closes what was
// opened ahead and opens nothing more.
func TestAheadStop(t *testing.T) {
	f := &fakeFiles{closed: map[int64]int{}}
	batch := fakeBatch(300)
	a := startAhead(batch, f.open, 8, 32)
	for i := range 10 {
		a.take(i)
		a.done(i)
	}
	a.take(10) // taken, not done: stop closes it too
	a.stop()
	assert.Zero(t, f.openNow.Load(), "every file opened ahead is closed")
	f.mu.Lock()
	n := len(f.opened)
	for ino, c := range f.closed {
		assert.Equal(t, 1, c, "inode %d closed once", ino)
	}
	f.mu.Unlock()
	assert.LessOrEqual(t, n, 10+32, "no file beyond the window was opened")
	time.Sleep(20 * time.Millisecond)
	f.mu.Lock()
	assert.Equal(t, n, len(f.opened), "nothing is opened after stop")
	f.mu.Unlock()
}

// An open that blocks (a failing medium) holds back only the worker that
// needs that file: the others are opened, and stop returns once it does.
func TestAheadBlockedOpen(t *testing.T) {
	f := &fakeFiles{closed: map[int64]int{}, block: make(chan struct{}), blockIno: 1005}
	batch := fakeBatch(50)
	a := startAhead(batch, f.open, 4, 20)
	for i := range 5 {
		a.take(i)
		a.done(i)
	}
	select {
	case <-a.slots[5].ready:
		t.Fatal("file 5 ready while its open blocks")
	case <-time.After(50 * time.Millisecond):
	}
	assert.Eventually(t, func() bool { return f.openNow.Load() >= 10 }, time.Second, time.Millisecond,
		"the files after the blocked one are opened meanwhile")
	stopped := make(chan struct{})
	go func() { a.stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stop returned while an opener is in an open")
	case <-time.After(20 * time.Millisecond):
	}
	close(f.block)
	<-stopped
	assert.Zero(t, f.openNow.Load(), "every file closed")
}
