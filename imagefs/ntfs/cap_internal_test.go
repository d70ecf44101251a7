package ntfs

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/HRDAG/ntt/imagefs"
)

// TestNameCap: a record's names (its own and its extension records') are
// kept up to maxNames — NTFS allows 1024 links, each with a DOS alias —
// and the rest dropped, so that a crafted record of a million names
// cannot make every listing of its directories quadratic; presentedNames
// of that many distinct names keeps each once.
func TestNameCap(t *testing.T) {
	var ri recInfo
	var more []fileName
	for i := range 3 * maxNames {
		more = append(more, fileName{parent: 5, name: fmt.Sprint(i), ns: nsPOSIX})
	}
	if dropped := ri.addNames(more[:10]); dropped != 0 || len(ri.names) != 10 {
		t.Fatalf("10 names: %d kept, %d dropped", len(ri.names), dropped)
	}
	if dropped := ri.addNames(more[10:]); dropped != 3*maxNames-maxNames || len(ri.names) != maxNames {
		t.Errorf("%d names: %d kept, %d dropped; want %d kept", len(more), len(ri.names), dropped, maxNames)
	}
	if n := len(presentedNames(ri.names)); n != maxNames {
		t.Errorf("presentedNames: %d of %d distinct names", n, maxNames)
	}
	dup := append(append([]fileName(nil), ri.names...), ri.names...)
	if n := len(presentedNames(dup)); n != maxNames {
		t.Errorf("presentedNames of every name twice: %d, want %d", n, maxNames)
	}
}

// TestCompressedManyRuns: a compressed stream of 2^20 runs (the most a
// stream keeps) is read unit by unit without going over every run for
// every unit (2^16 units × 2^20 runs would not end in the test's time).
func TestCompressedManyRuns(t *testing.T) {
	const cluster, n = 512, maxRuns
	v := &Volume{r: bytes.NewReader(make([]byte, 1<<20)), size: 1 << 20, clusterSize: cluster}
	runs := make([]imagefs.Run, n)
	for i := range runs {
		runs[i] = imagefs.Run{Logical: int64(i) * cluster, Length: cluster, Hole: true}
	}
	s := &stream{size: n * cluster, init: n * cluster, compressed: true, unit: 16}
	c := &compReader{v: v, s: s, runs: runs, unit: s.unit * cluster, cur: -1}
	buf := make([]byte, 1<<20)
	done := make(chan error, 1)
	go func() {
		var err error
		for off := int64(0); off < s.size && err == nil; off += int64(len(buf)) {
			_, err = c.ReadAt(buf, off)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("reading 2^16 compression units of a 2^20-run stream took over 60 s")
	}
}
