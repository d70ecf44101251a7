// Package mountinfo reads /proc/self/mountinfo, the kernel's list of the
// mounts this process sees: one parser for every package that asks what is
// mounted where (enumerate, diagnose, copier, the test images).
//
// A line is "id parent maj:min root point options [optional fields…] - type
// source superoptions"; paths carry the kernel's octal escapes (\040 for a
// space), which Parse undoes.
package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Entry is one mount.
type Entry struct {
	ID           uint64
	Dev          uint64 // the device the filesystem is mounted from (unix.Mkdev)
	MajorMinor   string // the same, as the kernel writes it: "7:3"
	Root         string // the directory of the filesystem mounted here
	MountPoint   string
	Options      string // this mount's options: "ro,nosuid,…"
	FSType       string
	Source       string // "/dev/loop3"
	SuperOptions string // the filesystem's (superblock's) options
}

// SuperReadOnly reports whether the filesystem itself is read-only, not
// only this mount of it.
func (e Entry) SuperReadOnly() bool { return hasOption(e.SuperOptions, "ro") }

// ReadOnly reports whether this mount is read-only.
func (e Entry) ReadOnly() bool { return hasOption(e.Options, "ro") }

func hasOption(opts, o string) bool {
	for _, x := range strings.Split(opts, ",") {
		if x == o {
			return true
		}
	}
	return false
}

// Parse reads one line; false if it is not a mountinfo line.
func Parse(line string) (Entry, bool) {
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 7 || sep < 0 || sep+2 >= len(f) {
		return Entry{}, false
	}
	id, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return Entry{}, false
	}
	maj, mnr, ok := strings.Cut(f[2], ":")
	if !ok {
		return Entry{}, false
	}
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(mnr, 10, 32)
	if err1 != nil || err2 != nil {
		return Entry{}, false
	}
	e := Entry{ID: id, Dev: unix.Mkdev(uint32(ma), uint32(mi)), MajorMinor: f[2], Root: Unescape(f[3]), MountPoint: Unescape(f[4]),
		Options: f[5], FSType: f[sep+1], Source: Unescape(f[sep+2])}
	if sep+3 < len(f) {
		e.SuperOptions = f[sep+3]
	}
	return e, true
}

// Scan parses every line of r; a line that does not parse is an error
// naming it.
func Scan(r io.Reader) ([]Entry, error) {
	var es []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		e, ok := Parse(sc.Text())
		if !ok {
			return nil, fmt.Errorf("mountinfo line %d: malformed: %.80q", n, sc.Text())
		}
		es = append(es, e)
	}
	return es, sc.Err()
}

// Read returns this process's mounts.
func Read() ([]Entry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	es, err := Scan(f)
	if err != nil {
		return nil, fmt.Errorf("/proc/self/mountinfo: %w", err)
	}
	return es, nil
}

// Unescape undoes the kernel's octal escapes (\040 for a space, \011, \012,
// \134); anything else is kept as it is.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOct(s[i+1]) && isOct(s[i+2]) && isOct(s[i+3]) && s[i+1] <= '3' {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOct(c byte) bool { return '0' <= c && c <= '7' }
