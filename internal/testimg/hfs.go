package testimg

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/HRDAG/ntt/imagefs/hfs/macroman"
	"github.com/HRDAG/ntt/internal/testenv"
)

// HFSTools are the hfsutils commands BuildHFSImage runs.
var HFSTools = []string{"hformat", "hmount", "humount", "hmkdir", "hcopy", "hdel", "hvol"}

// RequireHFSTools fails the test under CI, or skips it, if an hfsutils
// command (or one of more) is missing (scripts/deps.sh installs hfsutils).
func RequireHFSTools(t testing.TB, more ...string) {
	t.Helper()
	for _, name := range append(append([]string(nil), HFSTools...), more...) {
		if _, err := exec.LookPath(name); err != nil {
			testenv.SkipOrFail(t, name+" is not installed (scripts/deps.sh installs hfsutils)")
		}
	}
}

// HFSStep is one step of building an HFS volume: an Entry to write (File
// or Dir) at Path, an HFS path relative to the root with ':' between
// components (so a name may hold '/'), names in UTF-8 that MacRoman can
// write; or, with Delete, the removal of the file at Path (hdel), which
// leaves its blocks free for later files, fragmenting them.
//
// With Fill, the step writes a file of zeros at Path as large as the free
// space of the volume (as hvol says it), so that the next files go into the
// holes deleted files leave; a later step must delete it (HFSTree does not
// know its size).
//
// With Rsrc, a File step's file gets that resource fork too (hcopy -m of
// a MacBinary II file holding both forks, type and creator "TEXTttxt").
type HFSStep struct {
	Entry
	Delete bool
	Fill   bool
	Rsrc   []byte
}

// HFSSpec describes a classic HFS volume made by hfsutils: hformat, then
// hmkdir and hcopy -r (the raw data fork) for each step, in order. hcopy
// stamps every file and directory with the time of the copy: the steps'
// Mtime is not kept.
type HFSSpec struct {
	Size  int64  // bytes; 0 means 1474560 (a 1.44 MB floppy)
	Label string // the volume name (hformat -l), at most 27 bytes
	Steps []HFSStep
}

// BuildHFS builds spec's volume in the test's temporary directory and
// returns its path.
func BuildHFS(t testing.TB, spec HFSSpec) string {
	t.Helper()
	RequireHFSTools(t)
	p := filepath.Join(t.TempDir(), "hfs.img")
	if err := BuildHFSImage(p, spec); err != nil {
		t.Fatal(err)
	}
	return p
}

// BuildHFSImage makes the volume of spec at path (replacing it). hfsutils
// keep the mounted volume in $HOME/.hcwd: each build runs with a HOME of
// its own, and with TZ=UTC so that the local times HFS stores are UTC.
func BuildHFSImage(path string, spec HFSSpec) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("testimg: HFS image %s: %s", path, fmt.Sprintf(format, args...))
	}
	size := spec.Size
	if size == 0 {
		size = 1474560
	}
	home, err := os.MkdirTemp("", "ntt-hfs-home")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(home)
	output := func(args ...string) ([]byte, error) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "HOME="+home, "TZ=UTC", "LC_ALL=C")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return nil, fail("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return out, nil
	}
	run := func(args ...string) error {
		_, err := output(args...)
		return err
	}
	f, err := os.Create(path)
	if err == nil {
		err = f.Truncate(size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fail("%v", err)
	}
	label := spec.Label
	if label == "" {
		label = "Untitled"
	}
	if err := run("hformat", "-l", label, path); err != nil {
		return err
	}
	defer run("humount")
	for i, s := range spec.Steps {
		raw, ok := macroman.Encode(s.Path)
		if !ok || s.Path == "" || strings.HasPrefix(s.Path, ":") {
			return fail("step %d: path %q must be relative, not empty, and in MacRoman", i, s.Path)
		}
		target := ":" + string(raw)
		switch {
		case s.Delete:
			err = run("hdel", target)
		case s.Fill:
			out, err := output("hvol")
			if err != nil {
				return err
			}
			m := regexp.MustCompile(`Volume has (\d+) bytes free`).FindSubmatch(out)
			if m == nil {
				return fail("hvol says no free space: %s", out)
			}
			free, _ := strconv.ParseInt(string(m[1]), 10, 64)
			s.Data = make([]byte, free)
			s.Kind = File
			fallthrough
		case s.Kind == Dir:
			if s.Kind == Dir {
				err = run("hmkdir", target)
				break
			}
			fallthrough
		case s.Kind == File:
			src := filepath.Join(home, "stage"+strconv.Itoa(i))
			content, mode := s.Content(), "-r"
			if len(s.Rsrc) > 0 {
				// Stamped with the time of the copy, as hcopy -r stamps
				// files (HFS keeps local time; TZ is UTC here).
				content, mode = MacBinary(raw[bytes.LastIndexByte(raw, ':')+1:], content, s.Rsrc, time.Now()), "-m"
			}
			if err := os.WriteFile(src, content, 0o644); err != nil {
				return fail("%v", err)
			}
			err = run("hcopy", mode, src, target)
			os.Remove(src)
		default:
			return fail("step %d: kind %v; HFS is built here with files and directories only", i, s.Kind)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// HFSTree returns what spec leaves on the volume, by the path a reader
// gives it: components joined by '/', a '/' inside a name shown as ':' (as
// Linux's hfs driver shows it).
func HFSTree(spec HFSSpec) map[string]Entry {
	out := map[string]Entry{}
	for _, s := range spec.Steps {
		p := hfsReaderPath(s.Path)
		if s.Delete {
			delete(out, p)
			continue
		}
		out[p] = s.Entry
	}
	return out
}

// HFSForks returns the resource forks spec leaves on the volume, by the
// path of their file as HFSTree gives it.
func HFSForks(spec HFSSpec) map[string][]byte {
	out := map[string][]byte{}
	for _, s := range spec.Steps {
		p := hfsReaderPath(s.Path)
		delete(out, p)
		if !s.Delete && len(s.Rsrc) > 0 {
			out[p] = s.Rsrc
		}
	}
	return out
}

// hfsReaderPath is an HFS path as a reader gives it.
func hfsReaderPath(hfsPath string) string {
	parts := strings.Split(hfsPath, ":")
	for i := range parts {
		parts[i] = strings.ReplaceAll(parts[i], "/", ":")
	}
	return strings.Join(parts, "/")
}

// MacBinary encodes a Mac file as MacBinary II (the format hcopy -m
// reads): a 128-byte header naming it (name in MacRoman, at most 63
// bytes; type and creator "TEXTttxt") with its forks' lengths, mtime as
// its creation and modification dates (Mac epoch, mtime's wall clock) and
// the header's CRC-16/XMODEM, then the data fork and the resource fork,
// each padded to 128 bytes.
func MacBinary(name, data, rsrc []byte, mtime time.Time) []byte {
	pad := func(n int) int { return (n + 127) / 128 * 128 }
	out := make([]byte, 128+pad(len(data))+pad(len(rsrc)))
	h := out[:128]
	h[1] = byte(copy(h[2:65], name))
	copy(h[65:], "TEXTttxt")
	binary.BigEndian.PutUint32(h[83:], uint32(len(data)))
	binary.BigEndian.PutUint32(h[87:], uint32(len(rsrc)))
	_, off := mtime.Zone()
	mac := uint32(mtime.Unix() + int64(off) + 2082844800) // seconds 1904 → 1970
	binary.BigEndian.PutUint32(h[91:], mac)
	binary.BigEndian.PutUint32(h[95:], mac)
	h[122], h[123] = 129, 129
	crc := uint16(0)
	for _, c := range h[:124] {
		crc ^= uint16(c) << 8
		for k := 0; k < 8; k++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	binary.BigEndian.PutUint16(h[124:], crc)
	copy(out[128:], data)
	copy(out[128+pad(len(data)):], rsrc)
	return out
}
