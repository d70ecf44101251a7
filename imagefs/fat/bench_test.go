package fat

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/testimg"
)

// BenchmarkWalkFAT32 lists a FAT32 image of 3000 files in 30 directories
// (mkfs.fat and mtools), opening the volume each time: what enumerating
// such a medium costs the reader. go test -bench WalkFAT32 ./imagefs/fat
func BenchmarkWalkFAT32(b *testing.B) {
	spec := testimg.FATSpec{Bits: 32, Size: 64 << 20}
	for d := 0; d < 30; d++ {
		dir := fmt.Sprintf("directory %02d", d)
		spec.Entries = append(spec.Entries, testimg.Entry{Path: dir, Kind: testimg.Dir})
		for i := 0; i < 100; i++ {
			spec.Entries = append(spec.Entries, testimg.Entry{
				Path: fmt.Sprintf("%s/file number %03d.txt", dir, i), Kind: testimg.File, Size: int64(i * 31), Seed: uint64(i),
			})
		}
	}
	img := testimg.BuildFAT(b, spec)
	f, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		v, err := Open(f, st.Size(), imagefs.Options{})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		err = imagefs.Walk(context.Background(), v, nil, func(p []byte, e *imagefs.Entry) error {
			n++
			return nil
		})
		if err != nil || n != 1+30+3000 {
			b.Fatalf("walk: %d entries, %v", n, err)
		}
	}
	b.ReportMetric(float64(3031*b.N)/b.Elapsed().Seconds(), "entries/s")
}
