package ntfs_test

import (
	"fmt"
	"io"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/imagefstest"
	"github.com/HRDAG/ntt/imagefs/ntfs"
	"github.com/HRDAG/ntt/internal/testimg"
)

// BenchmarkWalkNTFS lists an NTFS volume of 3000 files in 30 directories
// (mkntfs, written through ntfs-3g), opening the volume each time (which
// reads the whole MFT): what enumerating such a medium costs the reader.
// go test -run '^$' -bench WalkNTFS ./imagefs/ntfs
func BenchmarkWalkNTFS(b *testing.B) {
	spec := testimg.NTFSSpec{Size: 64 << 20}
	for d := range 30 {
		dir := fmt.Sprintf("directory %02d", d)
		spec.Steps = append(spec.Steps, testimg.NTFSStep{Entry: testimg.Entry{Path: dir, Kind: testimg.Dir}})
		for i := range 100 {
			spec.Steps = append(spec.Steps, testimg.NTFSStep{Entry: testimg.Entry{
				Path: fmt.Sprintf("%s/file number %03d.txt", dir, i), Kind: testimg.File, Size: int64(i * 31), Seed: uint64(i)}})
		}
	}
	imagefstest.BenchWalk(b, testimg.BuildNTFS(b, spec), func(r io.ReaderAt, size int64) (imagefs.FS, error) {
		return ntfs.Open(r, size, imagefs.Options{})
	}, 1+30+3000)
}
