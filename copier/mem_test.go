package copier

import (
	"runtime"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// A worker's buffers are outside the Go heap (so the collector does not
// pace the heap on them), aligned for O_DIRECT, and freed by close.
func TestWorkerBuffersOutsideHeap(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	w := &worker{}
	small, stream := w.buffer(smallMax+1), w.buffer(streamMem)
	small[0], small[smallMax], stream[streamMem-1] = 1, 2, 3 // mapped and writable
	runtime.ReadMemStats(&after)
	require.Less(t, after.HeapAlloc, before.HeapAlloc+1<<20,
		"%d bytes of heap for %d bytes of buffers", after.HeapAlloc-before.HeapAlloc, smallMax+1+streamMem)
	for _, b := range [][]byte{small, stream} {
		require.Zero(t, uintptr(unsafe.Pointer(&b[0]))%4096, "buffer not aligned for O_DIRECT")
	}
	require.Len(t, small, smallMax+1)
	require.Len(t, stream, streamMem)
	require.Len(t, w.free, 2)
	w.close()
	require.Nil(t, w.free)
	require.Nil(t, w.buf)
}
