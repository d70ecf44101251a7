package loopdev

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const mountinfoFixture = `22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
101 22 7:3 / /mnt/ntt/c9894f1681b5b542eb3a4b75967e9aea ro,nosuid,nodev,noexec,noatime shared:50 - ext4 /dev/loop3 ro,norecovery
102 22 7:4 / /mnt/ntt/ece03c6779caa14be2b00d380add8475/p1 ro,nosuid,nodev,noexec,noatime - ext2 /dev/loop4 ro
103 22 7:5 / /mnt/ntt/ece03c6779caa14be2b00d380add8475/p2 ro,nosuid,nodev,noexec,noatime master:3 shared:9 - vfat /dev/loop5 ro,fmask=0022
104 22 7:6 /sub /mnt/with\040space\011tab\134back\012nl ro - ext4 /dev/loop6 ro
105 22 7:7 / /mnt/ntt/c9894f1681b5b542eb3a4b75967e9aea-other ro - ext4 /dev/loop7 ro
`

func TestParseMountinfo(t *testing.T) {
	all, err := ParseMountinfo(strings.NewReader(mountinfoFixture), nil)
	require.NoError(t, err)
	require.Len(t, all, 7)

	m := all[2]
	require.Equal(t, 101, m.ID)
	require.Equal(t, 22, m.Parent)
	require.Equal(t, uint32(7), m.Major)
	require.Equal(t, uint32(3), m.Minor)
	require.Equal(t, "/", m.Root)
	require.Equal(t, "/mnt/ntt/c9894f1681b5b542eb3a4b75967e9aea", m.Mountpoint)
	require.Equal(t, "ro,nosuid,nodev,noexec,noatime", m.Options)
	require.Equal(t, []string{"shared:50"}, m.Optional)
	require.Equal(t, "ext4", m.FSType)
	require.Equal(t, "/dev/loop3", m.Source)
	require.Equal(t, "ro,norecovery", m.VFSOptions)

	require.Empty(t, all[3].Optional)
	require.Equal(t, []string{"master:3", "shared:9"}, all[4].Optional)
	require.Equal(t, "vfat", all[4].FSType)

	// Octal escapes for space, tab, backslash and newline are decoded.
	require.Equal(t, "/mnt/with space\ttab\\back\nnl", all[5].Mountpoint)
	require.Equal(t, "/sub", all[5].Root)
}

func TestMountinfoFilters(t *testing.T) {
	// The prefix filter takes the path and what is below it, not siblings
	// sharing a prefix of the name.
	got, err := ParseMountinfo(strings.NewReader(mountinfoFixture),
		MountpointFilter("/mnt/ntt/c9894f1681b5b542eb3a4b75967e9aea"))
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "/dev/loop3", got[0].Source)

	got, err = ParseMountinfo(strings.NewReader(mountinfoFixture),
		MountpointFilter("/mnt/ntt/ece03c6779caa14be2b00d380add8475"))
	require.NoError(t, err)
	require.Len(t, got, 2)

	got, err = ParseMountinfo(strings.NewReader(mountinfoFixture), DeviceFilter(7, 5))
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "/mnt/ntt/ece03c6779caa14be2b00d380add8475/p2", got[0].Mountpoint)

	stopAt := func(m *MountInfo) (bool, bool) { return false, m.ID == 23 }
	got, err = ParseMountinfo(strings.NewReader(mountinfoFixture), stopAt)
	require.NoError(t, err)
	require.Len(t, got, 2)
}

func TestParseMountinfoErrors(t *testing.T) {
	for _, bad := range []string{
		"22 1 252:0 / / rw shared:1 ext4 /dev/vda rw extra", // no separator
		"x 1 252:0 / / rw - ext4 /dev/vda rw",
		"22 1 2520 / / rw - ext4 /dev/vda rw",
		"22 1 252:0 / /",
	} {
		_, err := ParseMountinfo(strings.NewReader(mountinfoFixture+bad+"\n"), nil)
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), "line 8")
	}
}

func TestMountsReadsProc(t *testing.T) {
	ms, err := Mounts(MountpointFilter("/"))
	require.NoError(t, err)
	require.NotEmpty(t, ms)
}

// A fixture sysfs tree: the kernel's " (deleted)" suffix makes a stale loop;
// a file really named "… (deleted)" that exists is not one.
func TestListFromSysfsFixture(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "keep (deleted)")
	require.NoError(t, os.WriteFile(real, nil, 0o644))
	write := func(n, backing, offset, sizelimit, autoclear string) {
		d := filepath.Join(dir, "sys", "loop"+n, "loop")
		require.NoError(t, os.MkdirAll(d, 0o755))
		for name, v := range map[string]string{"backing_file": backing + "\n", "offset": offset + "\n",
			"sizelimit": sizelimit + "\n", "autoclear": autoclear + "\n"} {
			require.NoError(t, os.WriteFile(filepath.Join(d, name), []byte(v), 0o644))
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, "sys", "loop"+n, "ro"), []byte("1\n"), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "sys", "loop"+n, "dev"), []byte("7:"+n+"\n"), 0o644))
	}
	write("27", "/data/fast/img/bb226d2a.img (deleted)", "0", "0", "0")
	write("3", "/data/fast/img/c9894f16.img", "1048576", "2097152", "1")
	write("4", real, "0", "0", "0")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "sys", "loop9"), 0o755)) // free device: no loop/ dir
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "sys", "vda"), 0o755))

	oldSys, oldDev := sysBlock, devDir
	sysBlock, devDir = filepath.Join(dir, "sys"), filepath.Join(dir, "dev")
	t.Cleanup(func() { sysBlock, devDir = oldSys, oldDev })

	ls, err := List()
	require.NoError(t, err)
	require.Len(t, ls, 3)
	require.Equal(t, 3, ls[0].Number)
	require.Equal(t, int64(1048576), ls[0].Offset)
	require.Equal(t, int64(2097152), ls[0].SizeLimit)
	require.True(t, ls[0].Autoclear)
	require.True(t, ls[0].ReadOnly)
	require.False(t, ls[0].Deleted)
	require.Equal(t, uint32(7), ls[0].Major)
	require.Equal(t, uint32(3), ls[0].Minor)

	require.Equal(t, 4, ls[1].Number)
	require.Equal(t, real, ls[1].BackingFile)
	require.False(t, ls[1].Deleted, "an existing file named '(deleted)' is not deleted")

	require.Equal(t, 27, ls[2].Number)
	require.Equal(t, "/data/fast/img/bb226d2a.img", ls[2].BackingFile)
	require.True(t, ls[2].Deleted)
	require.True(t, ls[2].Stale())
	require.Equal(t, filepath.Join(dir, "dev", "loop27"), ls[2].Device)
}
