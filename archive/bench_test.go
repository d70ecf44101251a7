package archive

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchImage is the image to benchmark: NTT_BENCH_IMAGE (a path to
// <hash>.img, e.g. one bench/archive.sh built under /var/tmp/ntt-bench), or
// a 256 MiB sparse image made here.
func benchImage(b *testing.B) (dir, hash string, size int64) {
	b.Helper()
	img := os.Getenv("NTT_BENCH_IMAGE")
	if img == "" {
		dir = b.TempDir()
		img = filepath.Join(dir, testHash+".img")
		writeImage(b, img, 256<<20, 9, true)
	}
	st, err := os.Stat(img)
	if err != nil {
		b.Fatal(err)
	}
	return filepath.Dir(img), strings.TrimSuffix(filepath.Base(img), ".img"), st.Size()
}

// BenchmarkSealImage seals one image, read-back verification included.
func BenchmarkSealImage(b *testing.B) {
	dir, hash, size := benchImage(b)
	b.SetBytes(size)
	for b.Loop() {
		dest := b.TempDir()
		if _, err := Seal(context.Background(), Spec{Medium: hash, ImagesDirs: []string{dir}, Dest: dest,
			Members: []string{hash + ".img"}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyArchive verifies a sealed archive of the image.
func BenchmarkVerifyArchive(b *testing.B) {
	dir, hash, size := benchImage(b)
	res, err := Seal(context.Background(), Spec{Medium: hash, ImagesDirs: []string{dir}, Dest: b.TempDir(),
		Members: []string{hash + ".img"}})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	for b.Loop() {
		if _, err := Verify(context.Background(), res.Path); err != nil {
			b.Fatal(err)
		}
	}
}
