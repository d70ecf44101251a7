package iso9660

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/testimg"
)

// BenchmarkList opens and walks a Rock Ridge + Joliet disc of 5000 files in
// 50 directories (made by xorriso in the benchmark's setup), as enumeration
// does: every entry, no content.
func BenchmarkList(b *testing.B) {
	requireTools(b, "xorriso")
	var es []testimg.Entry
	for i := range 5000 {
		es = append(es, testimg.Entry{Path: fmt.Sprintf("dir%02d/file-with-a-longer-name-%04d.txt", i%50, i), Kind: testimg.File, Size: int64(i % 1500), Seed: uint64(i)})
	}
	path := filepath.Join(b.TempDir(), "list.iso")
	if err := testimg.BuildISO(path, testimg.Spec{Entries: es}, "xorriso", "-as", "mkisofs", "-R", "-J", "-o", img, tree); err != nil {
		b.Fatal(err)
	}
	fh, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer fh.Close()
	st, _ := fh.Stat()
	b.ResetTimer()
	for b.Loop() {
		f, err := Open(fh, st.Size(), imagefs.Options{})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		err = imagefs.Walk(context.Background(), f, &f.opts, func([]byte, *imagefs.Entry) error { n++; return nil })
		if err != nil || n != 5051 {
			b.Fatalf("walk: %d entries, %v", n, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/5051, "ns/entry")
}
