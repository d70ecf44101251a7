package imagefs_test

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/HRDAG/ntt/imagefs"
	_ "github.com/HRDAG/ntt/imagefs/all"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loopdev"
)

const testHash = "c9894f1681b5b542eb3a4b75967e9aea"

// layoutFS stands in for an ext4 reader in the layout tests only: it
// opens a volume whose ext4 magic is where it belongs and holds an empty
// root. No real reader registers ext2/3/4, and the layout decision is the
// same whatever the filesystem.
type layoutFS struct{}

func (layoutFS) Type() string { return "ext4" }
func (layoutFS) Root() (*imagefs.Entry, error) {
	return &imagefs.Entry{ID: 2, Type: 'd', Name: []byte("/")}, nil
}
func (layoutFS) ReadDir(*imagefs.Entry) ([]*imagefs.Entry, error) { return nil, nil }
func (layoutFS) Open(*imagefs.Entry) (io.ReaderAt, error)         { return nil, errors.New("no content") }

func init() {
	imagefs.Register(imagefs.Driver{Types: []string{"ext2", "ext3", "ext4"}, Open: func(r io.ReaderAt, size int64, _ imagefs.Options) (imagefs.FS, error) {
		b := make([]byte, 2)
		if _, err := r.ReadAt(b, 1080); err != nil || b[0] != 0x53 || b[1] != 0xEF {
			return nil, errors.New("no ext superblock")
		}
		return layoutFS{}, nil
	}})
}

func small(t *testing.T, name string) string {
	return testimg.Build(t, testimg.Spec{Size: 4 << 20, BlockSize: 1024, Entries: []testimg.Entry{{Path: name, Data: []byte(name)}}})
}

// The image reader reads exactly the volumes a mount mounts, at the same
// paths, and skips the same partitions for the same reasons.
func TestMediumLayoutAgreesWithMount(t *testing.T) {
	testimg.RequireRoot(t)
	dir := t.TempDir()
	a, b := small(t, "a"), small(t, "b")
	cases := []struct {
		name     string
		parts    []testimg.DiskPart
		truncate int64 // cut the disk to this many bytes (0: keep)
		kind     string
		reasons  map[int]string // of the partitions not read
	}{
		{name: "multi", parts: []testimg.DiskPart{{Image: a}, {Image: b}}, kind: loopdev.LayoutMulti},
		{name: "single-with-skips", parts: []testimg.DiskPart{{Image: a}, {Size: 1 << 20}, {Image: b}}, truncate: 4<<20 + 4<<20,
			kind: loopdev.LayoutSingle, reasons: map[int]string{2: loopdev.ReasonNoFilesystem, 3: loopdev.ReasonTruncated}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			disk := filepath.Join(dir, c.name+".img")
			_, err := testimg.ComposeDisk(disk, testimg.Disk{Table: "mbr", Parts: c.parts})
			require.NoError(t, err)
			if c.truncate > 0 {
				require.NoError(t, testimg.Truncate(disk, c.truncate))
			}
			root := filepath.Join(dir, c.name+"-mnt")
			require.NoError(t, os.MkdirAll(root, 0o755))
			m, err := imagefs.OpenMediumFile(context.Background(), disk, imagefs.MediumOptions{Medium: testHash, Root: root})
			require.NoError(t, err)
			defer m.Close()

			testenv.Shared(t, testenv.StaleLoops) // Mount reaps NTT's stale loops: not another test's on purpose
			lay, err := loopdev.Mount(context.Background(), loopdev.MountSpec{Medium: testHash, Image: disk, Root: root, Timeout: 10 * time.Second})
			require.NoError(t, err)
			t.Cleanup(func() { loopdev.Unmount(context.Background(), testHash, root, nil) })

			require.Equal(t, c.kind, lay.Layout)
			require.Equal(t, lay.Layout, m.Layout.Layout)
			require.Equal(t, lay.Mount, m.Layout.Mount)
			require.Len(t, m.Layout.Partitions, len(lay.Partitions))
			mounted := map[int]string{}
			for i, p := range lay.Partitions {
				q := m.Layout.Partitions[i]
				require.Equal(t, p.Num, q.Num)
				if p.Status == loopdev.StatusMounted {
					require.Equal(t, imagefs.StatusRead, q.Status, "partition %d", p.Num)
					require.Equal(t, p.Mount, q.Mount)
					mounted[p.Num] = p.Mount
					continue
				}
				require.Equal(t, p.Status, q.Status, "partition %d", p.Num)
				require.Equal(t, p.Reason, q.Reason, "partition %d", p.Num)
				require.Equal(t, c.reasons[p.Num], q.Reason, "partition %d", p.Num)
			}
			require.Len(t, m.Volumes, len(mounted))
			require.Len(t, m.Skipped(), len(lay.Partitions)-len(mounted))
			for _, v := range m.Volumes {
				mp, ok := mounted[v.Num]
				require.True(t, ok, "volume %d is not mounted by the kernel", v.Num)
				// The prefix is where the mount shows the volume below the
				// medium root.
				require.Equal(t, lay.Mount+v.Prefix, mp)
				require.Equal(t, lay.Partitions[v.Num-1].Offset, v.Offset)
				require.Equal(t, lay.Partitions[v.Num-1].Size, v.Size)
			}
		})
	}
}

func mkfsFAT(t *testing.T, path, blocks string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.fat"); err != nil {
		testenv.SkipOrFail(t, "mkfs.fat is not installed (scripts/deps.sh installs dosfstools)")
	}
	out, err := exec.Command("mkfs.fat", append(append([]string{"-C"}, args...), path, blocks)...).CombinedOutput()
	require.NoError(t, err, "mkfs.fat: %s", out)
}

func haveReader(typ string) bool {
	for _, t := range imagefs.Types() {
		if t == typ {
			return true
		}
	}
	return false
}

// A floppy is a whole-disk FAT (its boot sector is not an MBR); a Zip disk
// keeps its FAT in MBR slot 4 at sector 32. Without a FAT reader, both are
// refused with ErrNoReader, which is what ntt-pipeline --read auto needs to
// know.
func TestMediumFloppyAndZip(t *testing.T) {
	dir := t.TempDir()
	floppy := filepath.Join(dir, "floppy.img")
	mkfsFAT(t, floppy, "1440", "-F", "12", "-n", "FLOPPY")

	zip := filepath.Join(dir, "zip.img")
	fat := filepath.Join(dir, "zipfs.img")
	mkfsFAT(t, fat, fat16Blocks, "-F", "16", "-n", "ZIP")
	f, err := os.Create(zip)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, testimg.Place(zip, 16384, fat))
	require.NoError(t, testimg.WriteMBR(zip, testimg.MBR{Primary: []testimg.MBRPartition{{}, {}, {}, {Type: 0x06, Start: 16384, Size: fileSize(t, fat)}}}))

	for _, c := range []struct {
		image  string
		num    int
		offset int64
	}{{floppy, 0, 0}, {zip, 4, 16384}} {
		m, err := imagefs.OpenMediumFile(context.Background(), c.image, imagefs.MediumOptions{Medium: testHash})
		require.NotNil(t, m, "%s", c.image)
		if !haveReader("vfat") {
			require.ErrorIs(t, err, imagefs.ErrNothingReadable)
			require.ErrorIs(t, err, imagefs.ErrNoReader)
			if c.num > 0 {
				require.Len(t, m.Layout.Partitions, 1)
				require.Equal(t, c.num, m.Layout.Partitions[0].Num)
				require.Equal(t, c.offset, m.Layout.Partitions[0].Offset)
				require.Equal(t, imagefs.ReasonNoReader, m.Layout.Partitions[0].Reason)
			}
			continue
		}
		require.NoError(t, err, "%s", c.image)
		require.Len(t, m.Volumes, 1)
		v := m.Volumes[0]
		require.Equal(t, c.num, v.Num)
		require.Equal(t, c.offset, v.Offset)
		require.Equal(t, "", v.Prefix)
		require.Equal(t, "vfat", v.FSType)
		require.Equal(t, loopdev.LayoutSingle, m.Layout.Layout)
		m.Close()
	}
}

const fat16Blocks = "32768" // 32 MiB in 1 KiB blocks: FAT16

func fileSize(t *testing.T, p string) int64 {
	st, err := os.Stat(p)
	require.NoError(t, err)
	return st.Size()
}

func TestMediumRefusesWhatIsNotADisk(t *testing.T) {
	dir := t.TempDir()
	gz := filepath.Join(dir, "x.img")
	require.NoError(t, os.WriteFile(gz, append([]byte{0x1f, 0x8b, 8, 0}, make([]byte, 4096)...), 0o644))
	_, err := imagefs.OpenMediumFile(context.Background(), gz, imagefs.MediumOptions{Medium: testHash})
	require.ErrorIs(t, err, loopdev.ErrNotADisk)
	_, err = imagefs.OpenMediumFile(context.Background(), gz, imagefs.MediumOptions{Medium: "not-a-hash"})
	require.Error(t, err)
}

// A disc that is UDF only (no ISO 9660 side, as mkudffs makes it): the
// probe names it, and without a UDF reader the error says so in words an
// operator reads ("UDF: no image reader yet") and wraps ErrNoReader, which
// ntt-pipeline records and reports.
func TestMediumUDFHasNoReaderYet(t *testing.T) {
	if _, err := exec.LookPath("mkudffs"); err != nil {
		testenv.SkipOrFail(t, "mkudffs is not installed (scripts/deps.sh installs udftools)")
	}
	if haveReader("udf") {
		t.Fatal("a UDF reader exists: this test's expectation is out of date")
	}
	img := filepath.Join(t.TempDir(), "udf.img")
	require.NoError(t, os.WriteFile(img, nil, 0o644))
	require.NoError(t, os.Truncate(img, 8<<20))
	out, err := exec.Command("mkudffs", "--media-type=hd", "--label=UDFDISC", img).CombinedOutput()
	require.NoError(t, err, "%s", out)

	m, err := imagefs.OpenMediumFile(context.Background(), img, imagefs.MediumOptions{Medium: testHash})
	require.NotNil(t, m, "the probe still says what the image holds")
	require.ErrorIs(t, err, imagefs.ErrNothingReadable)
	require.ErrorIs(t, err, imagefs.ErrNoReader)
	require.Contains(t, err.Error(), "(udf): UDF: no image reader yet")
	require.Contains(t, err.Error(), "image readers exist for")
	require.Equal(t, 1, strings.Count(err.Error(), "no image reader yet"), "said once: %s", err)
	require.Empty(t, m.Volumes)
}
