package archive

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkSealImage seals the image named by NTT_BENCH_IMAGE (a path to
// <hash>.img, e.g. one that bench/archive.sh built under /var/tmp/ntt-bench)
// with read-back verification; it is skipped when the variable is unset.
func BenchmarkSealImage(b *testing.B) {
	img := os.Getenv("NTT_BENCH_IMAGE")
	if img == "" {
		b.Skip("set NTT_BENCH_IMAGE to a <hash>.img to benchmark sealing it")
	}
	hash := strings.TrimSuffix(filepath.Base(img), ".img")
	st, err := os.Stat(img)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(st.Size())
	for b.Loop() {
		dest := b.TempDir()
		if _, err := Seal(context.Background(), Spec{Medium: hash, ImagesDirs: []string{filepath.Dir(img)}, Dest: dest,
			Members: []string{hash + ".img"}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyArchive verifies the archive named by NTT_BENCH_ARCHIVE.
func BenchmarkVerifyArchive(b *testing.B) {
	path := os.Getenv("NTT_BENCH_ARCHIVE")
	if path == "" {
		b.Skip("set NTT_BENCH_ARCHIVE to a sealed .tar.zst to benchmark verifying it")
	}
	for b.Loop() {
		if _, err := Verify(context.Background(), path); err != nil {
			b.Fatal(err)
		}
	}
}
