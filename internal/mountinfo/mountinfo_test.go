package mountinfo

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	e, ok := Parse(`36 35 98:0 /sub /mnt/with\040space\134x rw,noatime master:1 shared:2 - ext4 /dev/loop3 ro,errors=continue`)
	require.True(t, ok)
	require.Equal(t, Entry{ID: 36, Dev: unix.Mkdev(98, 0), MajorMinor: "98:0", Root: "/sub", MountPoint: `/mnt/with space\x`,
		Options: "rw,noatime", FSType: "ext4", Source: "/dev/loop3", SuperOptions: "ro,errors=continue"}, e)
	require.True(t, e.SuperReadOnly())
	require.False(t, e.ReadOnly())

	e, ok = Parse(`37 35 7:1 / /m ro - ext4 /dev/loop1 rw,relatime`)
	require.True(t, ok)
	require.True(t, e.ReadOnly())
	require.False(t, e.SuperReadOnly(), "a read-only bind of a read-write superblock")

	for _, bad := range []string{``, `36 35 7:1 / /m ro`, `x 35 7:1 / /m ro - ext4 /dev/loop1 rw`, `36 35 71 / /m ro - ext4 /dev/loop1 rw`} {
		_, ok := Parse(bad)
		require.False(t, ok, bad)
	}
	_, err := Scan(strings.NewReader("36 35 7:1 / /m ro - ext4 /dev/loop1 rw\nbroken\n"))
	require.ErrorContains(t, err, "line 2")
	require.Equal(t, `a\999b\`, Unescape(`a\999b\`))
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/a\040b`:   "/mnt/a b",
		`/x\011y\012z`:  "/x\ty\nz",
		`/back\134here`: `/back\here`,
		`/plain`:        "/plain",
		`/short\04`:     `/short\04`,
	} {
		require.Equal(t, want, Unescape(in), in)
	}
}

func TestReadSeesRoot(t *testing.T) {
	es, err := Read()
	require.NoError(t, err)
	found := false
	for _, e := range es {
		found = found || e.MountPoint == "/"
	}
	require.True(t, found, "/ is mounted")
}
