package diagnose

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const mountinfoFixture = `22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
36 22 7:3 / /mnt/ntt/c9894f1681b5b542eb3a4b75967e9aea ro,nosuid,nodev,noexec,noatime shared:50 - ext4 /dev/loop3 ro,norecovery
37 22 7:4 / /mnt/ntt/with\040space ro,nosuid - vfat /dev/loop4 ro
38 36 7:5 / /mnt/ntt/c9894f1681b5b542eb3a4b75967e9aea ro shared:51 master:2 - ext4 /dev/loop5 ro
`

func TestFindMount(t *testing.T) {
	e, ok, err := FindMount(strings.NewReader(mountinfoFixture), "/mnt/ntt/c9894f1681b5b542eb3a4b75967e9aea")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "7:5", e.MajorMinor, "the mount on top wins")
	assert.Equal(t, "/dev/loop5", e.Source)
	assert.Equal(t, "ext4", e.FSType)

	e, ok, err = FindMount(strings.NewReader(mountinfoFixture), "/mnt/ntt/with space")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "vfat", e.FSType)

	_, ok, err = FindMount(strings.NewReader(mountinfoFixture), "/mnt/ntt/absent")
	require.NoError(t, err)
	assert.False(t, ok)

	_, _, err = FindMount(strings.NewReader(mountinfoFixture+"garbage\n"), "/x")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "line 5")
}

func TestFilesystemSize(t *testing.T) {
	// ext4 as mke2fs makes it (64bit feature on).
	img := testimg.Build(t, testimg.Spec{FSType: "ext4", Size: 12 << 20})
	head := make([]byte, superblockSpan)
	f, err := os.Open(img)
	require.NoError(t, err)
	_, err = f.ReadAt(head, 0)
	f.Close()
	require.NoError(t, err)
	assert.Equal(t, int64(12<<20), FilesystemSize(head))

	// ext2 with 1 KiB blocks.
	img = testimg.Build(t, testimg.Spec{FSType: "ext2", BlockSize: 1024, Size: 3 << 20})
	f, err = os.Open(img)
	require.NoError(t, err)
	_, err = f.ReadAt(head, 0)
	f.Close()
	require.NoError(t, err)
	assert.Equal(t, int64(3<<20), FilesystemSize(head))

	// A 1.44 MB FAT12 floppy boot sector.
	fat := make([]byte, superblockSpan)
	binary.LittleEndian.PutUint16(fat[11:], 512)
	binary.LittleEndian.PutUint16(fat[19:], 2880)
	copy(fat[54:], "FAT12   ")
	fat[510], fat[511] = 0x55, 0xAA
	assert.Equal(t, int64(1474560), FilesystemSize(fat))
	// FAT32: 16-bit count 0, 32-bit count used.
	binary.LittleEndian.PutUint16(fat[19:], 0)
	binary.LittleEndian.PutUint32(fat[32:], 1<<21)
	copy(fat[54:], "        ")
	copy(fat[82:], "FAT32   ")
	assert.Equal(t, int64(1<<30), FilesystemSize(fat))

	// ISO 9660: volume space size × logical block size.
	iso := make([]byte, superblockSpan)
	iso[32<<10] = 1
	copy(iso[32<<10+1:], "CD001")
	binary.LittleEndian.PutUint32(iso[32<<10+80:], 244800)
	binary.LittleEndian.PutUint16(iso[32<<10+128:], 2048)
	assert.Equal(t, int64(244800*2048), FilesystemSize(iso))

	assert.Zero(t, FilesystemSize(make([]byte, superblockSpan)))
	assert.Zero(t, FilesystemSize(nil))
}
