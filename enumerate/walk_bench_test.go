package enumerate

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkWalk walks a 20,000-entry tree on the test machine's temporary
// filesystem with a warm cache (the kernel's stat path dominates; compare
// with bench/enum.sh for the whole binary against find on an ext4 image).
func BenchmarkWalk(b *testing.B) {
	root := b.TempDir()
	for d := 0; d < 200; d++ {
		dir := filepath.Join(root, fmt.Sprintf("d%03d", d/20), fmt.Sprintf("e%03d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := 0; f < 99; f++ {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("file-%05d", f)), nil, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, workers := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			var n int64
			for b.Loop() {
				res, err := Walk(context.Background(), []string{root}, Options{Workers: workers}, io.Discard)
				if err != nil {
					b.Fatal(err)
				}
				n = res.Records
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
