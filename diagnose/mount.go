package diagnose

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/HRDAG/ntt/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// MountEntry is one line of /proc/self/mountinfo, the fields we use.
type MountEntry struct {
	MajorMinor string // "7:3": the device the filesystem is mounted from
	Root       string // the mounted directory of that filesystem
	MountPoint string // unescaped
	FSType     string
	Source     string // "/dev/loop3"
	Options    string // per-mount options (ro,nosuid,…)
}

// FindMount returns the entry mounted last at mountPoint in mountinfo text
// (the one a path lookup sees when mounts are stacked).
func FindMount(r io.Reader, mountPoint string) (MountEntry, bool, error) {
	es, err := mountinfo.Scan(r)
	if err != nil {
		return MountEntry{}, false, err
	}
	var found MountEntry
	ok := false
	for _, e := range es {
		if e.MountPoint == mountPoint {
			found = MountEntry{MajorMinor: e.MajorMinor, Root: e.Root, MountPoint: e.MountPoint, Options: e.Options,
				FSType: e.FSType, Source: e.Source}
			ok = true
		}
	}
	return found, ok, nil
}

// MountStatus is the answer of CheckMount.
type MountStatus struct {
	MountPoint string `json:"mount_point"`
	Device     string `json:"device"` // the expected device, e.g. loop3
	Mounted    bool   `json:"mounted"`
	// Source and MajorMinor of what is mounted there now.
	Source     string `json:"source,omitempty"`
	MajorMinor string `json:"major_minor,omitempty"`
	FSType     string `json:"fs_type,omitempty"`
	// Matches: what is mounted there is the expected device.
	Matches  bool   `json:"matches"`
	Readable bool   `json:"readable"`
	Problem  string `json:"problem,omitempty"`
	// FSBytes is the size the filesystem claims for its data (statfs
	// f_blocks × f_bsize, metadata overhead excluded), DeviceBytes the size
	// of the device, ImageBytes that of a loop device's backing file and
	// LoopEnd where the loop device's view of it ends (offset + size).
	FSBytes     int64 `json:"fs_bytes,omitempty"`
	DeviceBytes int64 `json:"device_bytes,omitempty"`
	ImageBytes  int64 `json:"image_bytes,omitempty"`
	LoopEnd     int64 `json:"loop_end,omitempty"`
	// Truncated: the filesystem claims more than its device holds, or the
	// loop device reaches past the end of its image. Reads of what lies
	// beyond fail (EIO, or ENOMEM from ext4 for metadata) or are refused.
	Truncated bool   `json:"truncated"`
	SizeNote  string `json:"size_note,omitempty"`
}

// Healthy: mounted from the expected device and readable.
func (s MountStatus) Healthy() bool { return s.Mounted && s.Matches && s.Readable }

// CheckMount says whether mountPoint is still a mount of device (loop3 or
// /dev/loop3) and its root directory can be read. Reading a directory of a
// failing filesystem can block: ctx bounds the wait. The returned error is
// for failures of the check itself (mountinfo unreadable); an unhealthy
// mount is a status, with Problem saying why.
func CheckMount(ctx context.Context, mountPoint, device string) (MountStatus, error) {
	mountPoint = filepath.Clean(mountPoint)
	s := MountStatus{MountPoint: mountPoint, Device: DeviceName(device)}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return s, fmt.Errorf("checking mount %s: %w", mountPoint, err)
	}
	e, ok, err := FindMount(f, mountPoint)
	f.Close()
	if err != nil {
		return s, fmt.Errorf("checking mount %s: %w", mountPoint, err)
	}
	if !ok {
		s.Problem = "not mounted"
		return s, nil
	}
	s.Mounted, s.Source, s.MajorMinor, s.FSType = true, e.Source, e.MajorMinor, e.FSType
	want, err := os.ReadFile(filepath.Join("/sys/class/block", s.Device, "dev"))
	if err != nil {
		s.Problem = fmt.Sprintf("device %s: %v", s.Device, err)
		return s, nil
	}
	s.Matches = strings.TrimSpace(string(want)) == e.MajorMinor
	if !s.Matches {
		s.Problem = fmt.Sprintf("mounted from %s (%s), not %s", e.Source, e.MajorMinor, s.Device)
		return s, nil
	}
	_, err = runBounded(ctx, func() (struct{}, error) { return struct{}{}, readDirOnce(mountPoint) })
	if err != nil {
		s.Problem = "root directory unreadable: " + err.Error()
		return s, nil
	}
	s.Readable = true
	sizes(ctx, &s)
	return s, nil
}

// sizes fills the size fields and Truncated. Missing information leaves a
// field zero and decides nothing.
func sizes(ctx context.Context, s *MountStatus) {
	if sectors, err := readSysInt(filepath.Join("/sys/class/block", s.Device, "size")); err == nil {
		s.DeviceBytes = sectors * 512
	}
	// The superblock says how big the filesystem was made; statfs only
	// gives its data blocks (a lower bound: ext4 leaves out the journal).
	sb, err := runBounded(ctx, func() ([]byte, error) { return readHead("/dev/"+s.Device, superblockSpan) })
	if err == nil {
		s.FSBytes = FilesystemSize(sb)
	}
	if s.FSBytes == 0 {
		st, err := runBounded(ctx, func() (unix.Statfs_t, error) {
			var st unix.Statfs_t
			err := unix.Statfs(s.MountPoint, &st)
			return st, err
		})
		if err == nil && st.Bsize > 0 {
			s.FSBytes = int64(st.Blocks) * st.Bsize
		}
	}
	if s.DeviceBytes > 0 && s.FSBytes > s.DeviceBytes {
		s.Truncated = true
		s.SizeNote = fmt.Sprintf("filesystem claims %d bytes of data, device %s holds %d", s.FSBytes, s.Device, s.DeviceBytes)
	}
	if l, err := Loop(s.Device); err == nil && !strings.HasSuffix(l.BackingFile, " (deleted)") {
		if fi, err := os.Stat(l.BackingFile); err == nil && l.Backs(fi) {
			s.ImageBytes = fi.Size()
			s.LoopEnd = l.Offset + l.Size
			if s.LoopEnd > s.ImageBytes {
				s.Truncated = true
				note := fmt.Sprintf("%s reads to byte %d of %s, which has %d", s.Device, s.LoopEnd, l.BackingFile, s.ImageBytes)
				s.SizeNote = strings.TrimPrefix(s.SizeNote+"; "+note, "; ")
			}
		}
	}
}

func readDirOnce(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	_, err = unix.Getdents(fd, buf)
	return err
}

// superblockSpan covers the superblocks FilesystemSize reads (ISO 9660's
// primary volume descriptor ends at 34 KiB).
const superblockSpan = 36 << 10

func readHead(path string, n int) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b := make([]byte, n)
	got := 0
	for got < n {
		m, err := unix.Pread(fd, b[got:], int64(got))
		if err != nil {
			return nil, err
		}
		if m == 0 {
			break
		}
		got += m
	}
	return b[:got], nil
}

// FilesystemSize is the size in bytes that the superblock at the start of
// b says its filesystem has: ext2/3/4 (block count × block size), FAT
// (total sectors × sector size) or ISO 9660 (volume space size × logical
// block size); 0 when b holds none of them. A device smaller than this is a
// truncated medium.
func FilesystemSize(b []byte) int64 {
	le16 := func(o int) int64 { return int64(b[o]) | int64(b[o+1])<<8 }
	le32 := func(o int) int64 { return le16(o) | le16(o+2)<<16 }
	// ext2/3/4: superblock at 1024, magic 0xEF53 at +56.
	if len(b) >= 2048 && le16(1024+56) == 0xEF53 {
		logBlock := le32(1024 + 24)
		if logBlock <= 6 {
			blocks := le32(1024 + 4)
			if le32(1024+0x60)&0x80 != 0 { // INCOMPAT_64BIT: high half of the count
				blocks |= le32(1024+0x150) << 32
			}
			return blocks * (1024 << logBlock)
		}
	}
	// ISO 9660: primary volume descriptor at 32 KiB, "CD001".
	const pvd = 32 << 10
	if len(b) >= pvd+2048 && b[pvd] == 1 && string(b[pvd+1:pvd+6]) == "CD001" {
		return le32(pvd+80) * le16(pvd+128)
	}
	// FAT: boot sector signature, a sane sector size, a FAT type string.
	if len(b) >= 512 && b[510] == 0x55 && b[511] == 0xAA {
		bps := le16(11)
		fat := string(b[54:57]) == "FAT" || string(b[82:85]) == "FAT"
		if fat && bps >= 512 && bps <= 4096 && bps&(bps-1) == 0 {
			total := le16(19)
			if total == 0 {
				total = le32(32)
			}
			return total * bps
		}
	}
	return 0
}
