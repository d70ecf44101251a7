package copier

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/stretchr/testify/require"
)

// device is a ReaderAt over data that counts its reads and fails those
// that touch [badFrom, badTo). With gate set, a read of a whole chunk
// waits for gate to close (loading counts those waiting).
type device struct {
	data           []byte
	reads          atomic.Int64
	badFrom, badTo int64
	gate           chan struct{}
	loading        atomic.Int64
}

var errDeviceIO = errors.New("input/output error")

func (d *device) ReadAt(p []byte, off int64) (int, error) {
	d.reads.Add(1)
	if d.gate != nil && len(p) == chunkSize {
		d.loading.Add(1)
		<-d.gate
	}
	if off < d.badTo && off+int64(len(p)) > d.badFrom {
		n := max(0, int(d.badFrom-off))
		copy(p, d.data[off:off+int64(n)])
		return n, errDeviceIO
	}
	return bytes.NewReader(d.data).ReadAt(p, off)
}

func newDevice(size int) *device {
	d := &device{data: make([]byte, size), badFrom: -1, badTo: -1}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range d.data {
		d.data[i] = byte(rng.Uint32())
	}
	return d
}

func newTestChunks(t *testing.T, d *device) *chunkCache {
	c, err := newChunkCache(d, -1, int64(len(d.data)))
	require.NoError(t, err)
	t.Cleanup(c.close)
	return c
}

// compareRead reads n bytes at off through c and straight from d, and
// requires the same count, bytes and error.
func compareRead(t *testing.T, c *chunkCache, d *device, off int64, n int) {
	t.Helper()
	got, want := make([]byte, n), make([]byte, n)
	gn, gerr := c.ReadAt(got, off)
	wn, werr := d.ReadAt(want, off)
	require.Equal(t, wn, gn, "read of %d at %d", n, off)
	require.Equal(t, want[:wn], got[:gn], "read of %d at %d", n, off)
	require.Equal(t, werr, gerr, "read of %d at %d", n, off)
}

// Reads through the chunks return what the device returns, for reads of
// every shape: inside a chunk, across two, larger than one, at and past
// the device's end (a last chunk shorter than the others), empty.
func TestChunksReadAsTheDevice(t *testing.T) {
	d := newDevice(5*chunkSize + 12345)
	c := newTestChunks(t, d)
	size := int64(len(d.data))
	cases := [][2]int64{{0, 1}, {0, 4096}, {chunkSize - 10, 20}, {chunkSize, chunkSize}, {100, chunkSize},
		{100, 2 * chunkSize}, {size - 100, 100}, {size - 100, 200}, {size, 10}, {size + 5, 10}, {77, 0},
		{5 * chunkSize, 12345}, {5*chunkSize - 1, 2}}
	for _, tc := range cases {
		compareRead(t, c, d, tc[0], int(tc[1]))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		off := rng.Int64N(size + 10)
		n := rng.IntN(3 * chunkSize / 2)
		compareRead(t, c, d, off, n)
	}
	requireNoRefs(t, c)
}

// Small reads in order cost one read of the device per chunk, not one
// each; with more chunks than slots, the oldest are given up.
func TestChunksOneReadPerChunk(t *testing.T) {
	d := newDevice(3 * chunkSlots * chunkSize)
	c := newTestChunks(t, d)
	for off := int64(0); off+3000 <= int64(len(d.data)); off += 3000 {
		compareRead(t, c, d, off, 3000)
	}
	chunks := int64(len(d.data)) / chunkSize
	files := int64(len(d.data)) / 3000
	require.Equal(t, chunks+files, d.reads.Load(), "one read per chunk (and the test's own read per file)")
	require.Len(t, c.where, chunkSlots)
}

// requireNoRefs requires that no read holds a chunk.
func requireNoRefs(t *testing.T, c *chunkCache) {
	t.Helper()
	for i := range c.slots {
		require.Zero(t, c.slots[i].refs, "slot %d still referenced", i)
	}
}

// A chunk whose read fails is not kept: reads inside it go to the device,
// which fails exactly those that touch the bad bytes; the chunks around it
// are still served; and it is never read whole again, even once every
// slot has held other chunks since.
func TestChunksFailedRead(t *testing.T) {
	d := newDevice((chunkSlots + 4) * chunkSize)
	d.badFrom, d.badTo = 2*chunkSize+1000, 2*chunkSize+1512
	c := newTestChunks(t, d)
	for _, off := range []int64{0, chunkSize + 5, 2 * chunkSize, 2*chunkSize + 900, 2*chunkSize + 1500, 2*chunkSize + 4096, 3*chunkSize - 100, 3 * chunkSize} {
		compareRead(t, c, d, off, 512)
	}
	before := d.reads.Load()
	got := make([]byte, 512)
	n, err := c.ReadAt(got, 2*chunkSize+4096)
	require.NoError(t, err)
	require.Equal(t, 512, n)
	require.Equal(t, before+1, d.reads.Load(), "a read inside the failed chunk goes to the device")
	_, err = c.ReadAt(got, 2*chunkSize+1100)
	require.ErrorIs(t, err, errDeviceIO)
	requireNoRefs(t, c)

	for idx := int64(3); idx < chunkSlots+4; idx++ {
		compareRead(t, c, d, idx*chunkSize, 100)
	}
	before = d.reads.Load()
	_, err = c.ReadAt(got, 2*chunkSize+8192)
	require.NoError(t, err)
	require.Equal(t, before+1, d.reads.Load(), "the failed chunk is not read whole again")
	requireNoRefs(t, c)
}

// Readers meeting a chunk whose read fails, concurrently, each get the
// device's answer, and let go of the chunk.
func TestChunksFailedReadConcurrent(t *testing.T) {
	d := newDevice(4 * chunkSize)
	d.badFrom, d.badTo = chunkSize+60000, chunkSize+61000
	c := newTestChunks(t, d)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 5))
			for range 500 {
				off := chunkSize/2 + rng.Int64N(chunkSize)
				n := 1 + rng.IntN(4096)
				got := make([]byte, n)
				k, err := c.ReadAt(got, off)
				bad := off < d.badTo && off+int64(n) > d.badFrom
				if bad != errors.Is(err, errDeviceIO) || !bytes.Equal(got[:k], d.data[off:off+int64(k)]) || !bad && k != n {
					t.Errorf("read of %d at %d: %d, %v", n, off, k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	requireNoRefs(t, c)
}

// When every slot is held by a read in progress, a read of another chunk
// goes to the device at once instead of waiting for a slot.
func TestChunksAllSlotsInUse(t *testing.T) {
	d := newDevice((chunkSlots + 1) * chunkSize)
	d.gate = make(chan struct{})
	c := newTestChunks(t, d)
	var wg sync.WaitGroup
	for idx := range int64(chunkSlots) {
		wg.Go(func() {
			got := make([]byte, 10)
			n, err := c.ReadAt(got, idx*chunkSize+5)
			if err != nil || n != 10 || !bytes.Equal(got, d.data[idx*chunkSize+5:idx*chunkSize+15]) {
				t.Errorf("chunk %d: %d, %v", idx, n, err)
			}
		})
	}
	require.Eventually(t, func() bool { return d.loading.Load() == chunkSlots }, 10*time.Second, time.Millisecond)
	compareRead(t, c, d, chunkSlots*chunkSize+7, 100)
	require.Equal(t, int64(chunkSlots), d.loading.Load(), "no slot was waited for")
	close(d.gate)
	wg.Wait()
	requireNoRefs(t, c)
}

// Advice is given once per chunk, not for a chunk already read, and for
// the bytes asked for only where a chunk failed or a run is larger than
// a chunk.
func TestChunksAdvice(t *testing.T) {
	d := newDevice(8 * chunkSize)
	d.badFrom, d.badTo = 5*chunkSize, 5*chunkSize+10
	c := newTestChunks(t, d)
	compareRead(t, c, d, 0, 10)               // chunk 0 read
	compareRead(t, c, d, 5*chunkSize+100, 10) // chunk 5 failed
	runs := []imagefs.Run{
		{Logical: 0, Offset: 100, Length: 4096},                                // chunk 0: read already
		{Logical: 4096, Offset: chunkSize - 10, Length: 4096},                  // chunks 0 and 1
		{Logical: 8192, Offset: 2*chunkSize + 5, Length: 4096},                 // chunk 2
		{Logical: 12288, Offset: 2*chunkSize + 9000, Length: 4096},             // chunk 2 again
		{Logical: 16384, Length: 4096, Hole: true},                             // nothing
		{Logical: 20480, Offset: 3 * chunkSize, Length: 2 * chunkSize},         // larger than a chunk
		{Logical: 20480 + 2*chunkSize, Offset: 5*chunkSize + 50, Length: 4096}, // the failed chunk
		{Logical: 24576 + 2*chunkSize, Offset: 7 * chunkSize, Length: 4096},    // past n
	}
	c.advise(runs, 24576+2*chunkSize)
	require.Equal(t, map[int64]struct{}{1: {}, 2: {}}, c.advised)
}

// Concurrent readers (workers and openers) get the device's bytes while
// chunks are read, shared and given up under them.
func TestChunksConcurrent(t *testing.T) {
	d := newDevice(2 * chunkSlots * chunkSize)
	c := newTestChunks(t, d)
	size := int64(len(d.data))
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			buf := make([]byte, chunkSize)
			for range 3000 {
				off := rng.Int64N(size)
				n := min(int(size-off), 1+rng.IntN(8192))
				k, err := c.ReadAt(buf[:n], off)
				if err != nil || k != n || !bytes.Equal(buf[:n], d.data[off:off+int64(n)]) {
					t.Errorf("read of %d at %d: %d, %v, bytes equal %v", n, off, k, err, bytes.Equal(buf[:k], d.data[off:off+int64(k)]))
					return
				}
			}
		})
	}
	wg.Wait()
	requireNoRefs(t, c)
	_, err := c.ReadAt(make([]byte, 10), size)
	require.ErrorIs(t, err, io.EOF)
}

// After close, reads go to the device (which the source closes next).
func TestChunksClosed(t *testing.T) {
	d := newDevice(2 * chunkSize)
	c := newTestChunks(t, d)
	compareRead(t, c, d, 10, 100)
	c.close()
	before := d.reads.Load()
	compareRead(t, c, d, 10, 100)
	require.Equal(t, before+2, d.reads.Load(), "the read went to the device")
}
