package diagnose

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseKernelRecord(t *testing.T) {
	// A real record of Linux 6.18 (bio_check_eod): the device line is part of
	// the same record, its newline escaped as \x0a.
	rec, err := ParseKernelRecord([]byte(`6,344,305441152,-;cat: attempt to access beyond end of device\x0aloop0: rw=524288, sector=10320, nr_sectors = 2048 limit=12000` + "\n"))
	require.NoError(t, err)
	assert.Equal(t, 6, rec.Level)
	assert.Equal(t, 0, rec.Facility)
	assert.Equal(t, uint64(344), rec.Seq)
	assert.Equal(t, 305441152*time.Microsecond, rec.Time)
	assert.Equal(t, "cat: attempt to access beyond end of device\nloop0: rw=524288, sector=10320, nr_sectors = 2048 limit=12000", rec.Message)

	rec, err = ParseKernelRecord([]byte("3,117,1000170,-,caller=T12;I/O error, dev sda, sector 1\n SUBSYSTEM=block\n DEVICE=b8:0\n"))
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"SUBSYSTEM": "block", "DEVICE": "b8:0"}, rec.Dict)

	for _, bad := range []string{"no semicolon here", "x,1,2,-;msg", "6,1;short header"} {
		_, err := ParseKernelRecord([]byte(bad))
		assert.True(t, errors.Is(err, ErrMalformedKernelRecord), bad)
	}
}

func readFixture(t *testing.T, name string) *KernelLog {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	k := NewKernelLog(f)
	require.NoError(t, k.Poll())
	return k
}

// Real lines of Linux 6.18: an ext4 image on loop0 whose loop device was
// shrunk under the mount (LOOP_SET_CAPACITY after truncating the image),
// then files past the new end read.
func TestKernelLogRealBeyondEOF(t *testing.T) {
	k := readFixture(t, "kmsg-linux-6.18-shrunk-loop.txt")
	ev := k.Events([]string{"/dev/loop0"})
	require.Contains(t, ev, "loop0")
	l0 := ev["loop0"]
	assert.Equal(t, 6, l0.BeyondEOF)
	assert.Zero(t, l0.IOErrors)
	assert.Zero(t, l0.FSErrors, "mount and capacity notices are not errors")
	first := l0.Recent[0]
	assert.Equal(t, EventBeyondEOF, first.Kind)
	assert.Equal(t, int64(10320), first.Sector)
	assert.Equal(t, int64(2048), first.Sectors)
	assert.Equal(t, uint64(344), first.Seq)
	// Nothing is blamed on other loop devices.
	assert.Empty(t, k.Events([]string{"loop1", "loop00", "loop"}))
	assert.Zero(t, k.Lost())
}

// Real lines of Linux 6.18: the image file truncated under an attached,
// mounted loop device (no capacity change): the loop driver fails reads
// past the backing file's end with EIO.
func TestKernelLogRealIOError(t *testing.T) {
	k := readFixture(t, "kmsg-linux-6.18-truncated-backing.txt")
	ev := k.Events([]string{"loop0"})
	assert.Equal(t, 5, ev["loop0"].IOErrors)
	assert.Zero(t, ev["loop0"].BeyondEOF)
	assert.Equal(t, int64(12368), ev["loop0"].Recent[0].Sector)
}

// Formats of older kernels and other filesystems, written from the
// kernel's format strings (this machine cannot mount FAT, ISO 9660 or UDF).
func TestKernelLogSyntheticFormats(t *testing.T) {
	k := readFixture(t, "kmsg-synthetic.txt")
	all := k.Events([]string{"loop1", "loop10", "loop11", "loop12", "loop13", "loop14", "loop15", "sda", "loop2"})

	l1 := all["loop1"]
	assert.Equal(t, 1, l1.BeyondEOF, "two-record beyond-end (before 5.10)")
	assert.Equal(t, int64(2882), l1.Recent[0].Sector)
	assert.Contains(t, l1.Recent[0].Message, "attempt to access beyond end of device\nloop1: rw=0")
	assert.Equal(t, 3, l1.IOErrors, "blk_update_request, Buffer I/O, and loop1p2 counted for loop1")
	assert.Equal(t, 2, l1.FSErrors, "FAT error and bread failure; not the dirty-volume warning")

	assert.Equal(t, 1, all["loop10"].IOErrors, "loop10 is not loop1")
	assert.Equal(t, 1, all["loop11"].IOErrors, "isofs bread failed, dev=loop11")
	assert.Equal(t, 1, all["loop12"].FSErrors, "UDF error, not the warning")
	assert.Equal(t, 1, all["loop13"].FSErrors, "BTRFS error (device …)")
	assert.Equal(t, 1, all["loop14"].FSErrors, "XFS (loop14): metadata I/O error")
	assert.Equal(t, 1, all["loop15"].FSErrors, "EXT4-fs error (device …); not the mount notice")
	assert.Equal(t, 1, all["sda"].IOErrors)
	assert.NotContains(t, all, "loop2")
}

func TestAttributeDoesNotConfuseDevices(t *testing.T) {
	var a Attributor
	rec := KernelRecord{Level: 3, Message: "I/O error, dev loop3, sector 0 op 0x0:(READ)"}
	ev, ok := a.Attribute(rec)
	require.True(t, ok)
	assert.Equal(t, "loop3", ev.Device)
	// A beyond-end header waits for its device line; anything else drops it.
	_, ok = a.Attribute(KernelRecord{Level: 6, Message: "attempt to access beyond end of device"})
	assert.False(t, ok)
	_, ok = a.Attribute(KernelRecord{Level: 6, Message: "random: crng reseeded"})
	assert.False(t, ok)
	_, ok = a.Attribute(KernelRecord{Level: 6, Message: "loop4: rw=0, want=10, limit=8"})
	assert.False(t, ok, "a device line without its header is not an event")

	_, ok = a.Attribute(KernelRecord{Level: 3, Facility: 1, Message: "I/O error, dev loop3, sector 0"})
	assert.False(t, ok, "user-space records written to /dev/kmsg are not the kernel's")

	assert.Equal(t, "loop3", DeviceName("/dev/loop3"))
	assert.Equal(t, "loop3", DeviceName("loop3p12"))
	assert.Equal(t, "loopy", DeviceName("loopy"))
	assert.Equal(t, "nvme0n1p2", DeviceName("nvme0n1p2"))
}

func TestKernelLogKeepsRecentPerDevice(t *testing.T) {
	var b strings.Builder
	for i := range 40 {
		fmt.Fprintf(&b, "3,%d,%d,-;I/O error, dev loop7, sector %d op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2\n", 1000+i, i, i)
	}
	fmt.Fprintf(&b, "3,%d,99,-;I/O error, dev loop7, sector 99 op 0x0:(READ)\n", 1045) // 5 records lost
	k := NewKernelLog(strings.NewReader(b.String()))
	require.NoError(t, k.Poll())
	d := k.Events([]string{"loop7"})["loop7"]
	assert.Equal(t, 41, d.IOErrors)
	require.Len(t, d.Recent, eventsPerDevice)
	assert.Equal(t, int64(99), d.Recent[eventsPerDevice-1].Sector)
	assert.Equal(t, int64(25), d.Recent[0].Sector)
	assert.Equal(t, uint64(5), k.Lost())
}

func TestReadKernelRecordsNamesBadLine(t *testing.T) {
	err := ReadKernelRecords(strings.NewReader("6,1,1,-;ok\n 	KEY=v\ngarbage line\n"), func(KernelRecord) error { return nil })
	require.Error(t, err)
	assert.Contains(t, err.Error(), "line 3")
}

// Real ext4 error lines of Linux 6.18 (a corrupt directory block, mounts
// that failed), with notices and a rate-limit line around them.
func TestKernelLogRealExt4Errors(t *testing.T) {
	k := readFixture(t, "kmsg-linux-6.18-ext4-errors.txt")
	d := k.Events([]string{"loop0"})["loop0"]
	assert.Equal(t, 4, d.FSErrors)
	assert.Zero(t, d.BeyondEOF+d.IOErrors)
	assert.Contains(t, d.Recent[3].Message, "Directory block failed checksum")
}
