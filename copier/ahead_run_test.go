package copier_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/HRDAG/ntt/copier"
	"github.com/stretchr/testify/assert"
)

// openBeneath counts this process's descriptors of files beneath dir (the
// mount itself excluded).
func openBeneath(t *testing.T, dir string) int64 {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("reading /proc/self/fd: %v", err)
	}
	var n int64
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(target, dir+"/") {
			n++
		}
	}
	return n
}

// On a real mount, the read-ahead keeps files open ahead of the worker,
// never more than its window (plus one name check per opener), and leaves
// none open when the run ends; every file is still read exactly once.
func TestReadAheadDescriptors(t *testing.T) {
	defer copier.SetReadAhead(3, 5)()
	f := newMedium(t, smallFiles(60))
	files := countFiles(t, f)
	var most atomic.Int64
	prog := &onFile{}
	prog.fn = func(int64) {
		n := openBeneath(t, f.mount)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
	}
	o := f.options()
	o.Progress = prog
	o.KernelOnly = true // the mount's descriptors; read from the device, none is opened
	st := f.mustRun(o)
	assert.Equal(t, files, st.Copied)
	assert.LessOrEqual(t, most.Load(), int64(5+3), "files open beneath the mount during the run")
	assert.Greater(t, most.Load(), int64(1), "files are opened ahead of the worker")
	assert.Zero(t, openBeneath(t, f.mount), "no descriptor left open after the run")
	var size int64
	for _, e := range smallFiles(60).Entries {
		size += e.Size
	}
	assert.Equal(t, size, st.BytesRead, "each byte read once")
	f.checkComplete()
}
