package loopdev

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// MountInfo is one line of /proc/<pid>/mountinfo (see proc(5)).
type MountInfo struct {
	// ID is the mount's unique id (field 1).
	ID int
	// Parent is the parent mount's id (field 2).
	Parent int
	// Major and Minor are st_dev of files on this mount (field 3).
	Major, Minor uint32
	// Root is the path within the filesystem that forms this mount's root
	// (field 4, octal escapes decoded).
	Root string
	// Mountpoint relative to the process's root (field 5, decoded).
	Mountpoint string
	// Options are the per-mount options (field 6), e.g. "ro,nosuid,noatime".
	Options string
	// Optional are the tagged fields before the "-" separator (shared:N …).
	Optional []string
	// FSType is the filesystem type after the separator, e.g. "ext4".
	FSType string
	// Source is the mount source, e.g. "/dev/loop3" (decoded).
	Source string
	// VFSOptions are the per-superblock options, e.g. "ro,norecovery".
	VFSOptions string
}

// MountFilter decides for each entry whether to skip it and whether to
// stop reading (moby/sys/mountinfo's FilterFunc).
type MountFilter func(*MountInfo) (skip, stop bool)

// MountpointFilter keeps the entries mounted exactly at path or below it.
func MountpointFilter(path string) MountFilter {
	return func(m *MountInfo) (bool, bool) {
		return !(m.Mountpoint == path || strings.HasPrefix(m.Mountpoint, strings.TrimSuffix(path, "/")+"/")), false
	}
}

// DeviceFilter keeps the entries of block device major:minor.
func DeviceFilter(major, minor uint32) MountFilter {
	return func(m *MountInfo) (bool, bool) { return m.Major != major || m.Minor != minor, false }
}

// ParseMountinfo reads mountinfo text from r. A nil filter keeps all
// entries. A malformed line is an error naming its line number.
func ParseMountinfo(r io.Reader, filter MountFilter) ([]*MountInfo, error) {
	var out []*MountInfo
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if text == "" {
			continue
		}
		m, err := parseMountinfoLine(text)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", line, err)
		}
		if filter != nil {
			skip, stop := filter(m)
			if !skip {
				out = append(out, m)
			}
			if stop {
				break
			}
			continue
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return out, nil
}

func parseMountinfoLine(s string) (*MountInfo, error) {
	f := strings.Split(s, " ")
	if len(f) < 10 {
		return nil, fmt.Errorf("%d fields, want at least 10: %q", len(f), s)
	}
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(f) < sep+4 {
		return nil, fmt.Errorf("no \" - \" separator followed by three fields: %q", s)
	}
	m := &MountInfo{}
	var err error
	if m.ID, err = strconv.Atoi(f[0]); err != nil {
		return nil, fmt.Errorf("mount id %q: %w", f[0], err)
	}
	if m.Parent, err = strconv.Atoi(f[1]); err != nil {
		return nil, fmt.Errorf("parent id %q: %w", f[1], err)
	}
	maj, min, ok := strings.Cut(f[2], ":")
	if !ok {
		return nil, fmt.Errorf("major:minor %q", f[2])
	}
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("major:minor %q", f[2])
	}
	m.Major, m.Minor = uint32(ma), uint32(mi)
	m.Root = unescapeOctal(f[3])
	m.Mountpoint = unescapeOctal(f[4])
	m.Options = f[5]
	if sep > 6 {
		m.Optional = append([]string(nil), f[6:sep]...)
	}
	m.FSType = unescapeOctal(f[sep+1])
	m.Source = unescapeOctal(f[sep+2])
	m.VFSOptions = strings.Join(f[sep+3:], " ")
	return m, nil
}

// unescapeOctal decodes the kernel's \ooo escapes (space, tab, newline,
// backslash) in mountinfo paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && isOct(s, i+1) {
			v, _ := strconv.ParseUint(s[i+1:i+4], 8, 8)
			b.WriteByte(byte(v))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOct(s string, i int) bool {
	if i+3 > len(s) {
		return false
	}
	for _, c := range s[i : i+3] {
		if c < '0' || c > '7' {
			return false
		}
	}
	return s[i] <= '3'
}

// Mounts reads /proc/self/mountinfo.
func Mounts(filter MountFilter) ([]*MountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMountinfo(f, filter)
}
