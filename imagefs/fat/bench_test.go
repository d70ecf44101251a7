package fat

import (
	"fmt"
	"io"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/imagefstest"
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
	imagefstest.BenchWalk(b, testimg.BuildFAT(b, spec), func(r io.ReaderAt, size int64) (imagefs.FS, error) {
		return Open(r, size, imagefs.Options{})
	}, 1+30+3000)
}
