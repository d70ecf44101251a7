package enumerate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/extfs"
	"github.com/HRDAG/ntt/internal/extfs/extfstest"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/require"
)

// A walk of a mounted ext medium reads its used inode tables ahead through
// the loop device (all of them: exactly the bytes the layout names), and
// its directory blocks; the records are find's either way; the device is
// closed when Walk returns; without Options.Prefetch, or with a root below
// the filesystem's root, nothing is read ahead.
func TestWalkPrefetchesExtMedium(t *testing.T) {
	testimg.RequireRoot(t)
	extfstest.RequireE2fsTools(t)
	for _, tc := range extfstest.PrefetchLayouts {
		t.Run(tc.Name, func(t *testing.T) {
			spec, _ := extfstest.PrefetchTree(tc.Spec)
			img := testimg.Build(t, spec)
			f, err := os.Open(img)
			require.NoError(t, err)
			fi, err := f.Stat()
			require.NoError(t, err)
			l, err := extfs.ReadLayout(f, fi.Size())
			require.NoError(t, err)
			require.NoError(t, f.Close())
			fsType := "ext4"
			if tc.Spec.FSType != "" {
				fsType = tc.Spec.FSType
			}
			mnt := testimg.MountImage(t, img, 0, 0, fsType)
			want, stderr := findRecords(t, mnt)
			require.Empty(t, stderr)

			opens := func() (n int) {
				fds, err := os.ReadDir("/proc/self/fd")
				require.NoError(t, err)
				for _, fd := range fds {
					if target, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); strings.HasPrefix(target, "/dev/loop") {
						n++
					}
				}
				return n
			}
			before := opens()
			got, res, _ := walkRecords(t, []string{mnt}, Options{Prefetch: true, prefetchFirst: true, KernelOnly: true})
			requireSameRecords(t, want, got)
			require.Len(t, res.Prefetch.Devices, 1, "skipped: %q", res.Prefetch.Skipped)
			dev := res.Prefetch.Devices[0]
			require.True(t, strings.HasPrefix(dev, "/dev/loop"), dev)
			require.Equal(t, l.InodeTableBytes(), res.Prefetch.InodeTableBytes)
			require.Positive(t, res.Prefetch.DirectoryBytes)
			require.Less(t, res.Prefetch.DirectoryBytes, fi.Size())
			require.Empty(t, res.Prefetch.Skipped)
			require.Positive(t, res.Prefetch.Elapsed)
			require.Less(t, res.Prefetch.Elapsed, res.Elapsed, "prefetchFirst: the read-ahead ends before the walk")
			require.Equal(t, before, opens(), "the device is still open after Walk returned")

			got, res, _ = walkRecords(t, []string{mnt}, Options{prefetchFirst: true, KernelOnly: true})
			requireSameRecords(t, want, got)
			require.Zero(t, res.Prefetch.InodeTableBytes)
			require.Empty(t, res.Prefetch.Devices)

			sub := filepath.Join(mnt, "d03")
			want, _ = findRecords(t, sub)
			got, res, _ = walkRecords(t, []string{sub}, Options{Prefetch: true, prefetchFirst: true, KernelOnly: true})
			requireSameRecords(t, want, got)
			require.Empty(t, res.Prefetch.Devices)
			require.Zero(t, res.Prefetch.InodeTableBytes)
			require.Len(t, res.Prefetch.Skipped, 1)
			require.Contains(t, res.Prefetch.Skipped[0], "not the root of an ext filesystem")
		})
	}
}
