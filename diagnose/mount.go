package diagnose

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

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
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var found MountEntry
	ok := false
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || sep+2 >= len(f) {
			return MountEntry{}, false, fmt.Errorf("mountinfo line %d: malformed: %.80q", line, sc.Text())
		}
		mp := unescapeMount(f[4])
		if mp != mountPoint {
			continue
		}
		found = MountEntry{
			MajorMinor: f[2], Root: unescapeMount(f[3]), MountPoint: mp, Options: f[5],
			FSType: f[sep+1], Source: unescapeMount(f[sep+2]),
		}
		ok = true
	}
	return found, ok, sc.Err()
}

// unescapeMount undoes the kernel's octal escapes (\040 for space, …).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOct(s[i+1]) && isOct(s[i+2]) && isOct(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOct(c byte) bool { return '0' <= c && c <= '7' }

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
	return s, nil
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
