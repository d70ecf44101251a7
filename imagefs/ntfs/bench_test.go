package ntfs_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/ntfs"
	"github.com/HRDAG/ntt/internal/testimg"
)

// BenchmarkWalkNTFS lists an NTFS volume of 3000 files in 30 directories
// (mkntfs, written through ntfs-3g), opening the volume each time (which
// reads the whole MFT): what enumerating such a medium costs the reader.
// go test -run '^$' -bench WalkNTFS ./imagefs/ntfs
func BenchmarkWalkNTFS(b *testing.B) {
	spec := testimg.NTFSSpec{Size: 64 << 20}
	for d := 0; d < 30; d++ {
		dir := fmt.Sprintf("directory %02d", d)
		spec.Steps = append(spec.Steps, testimg.NTFSStep{Entry: testimg.Entry{Path: dir, Kind: testimg.Dir}})
		for i := 0; i < 100; i++ {
			spec.Steps = append(spec.Steps, testimg.NTFSStep{Entry: testimg.Entry{
				Path: fmt.Sprintf("%s/file number %03d.txt", dir, i), Kind: testimg.File, Size: int64(i * 31), Seed: uint64(i),
			}})
		}
	}
	img := testimg.BuildNTFS(b, spec)
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
		v, err := ntfs.Open(f, st.Size(), imagefs.Options{})
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
