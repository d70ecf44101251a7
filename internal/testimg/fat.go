package testimg

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/HRDAG/ntt/internal/testenv"
)

// FATSpec describes a FAT image built the way FAT media are made: mkfs.fat
// (dosfstools) formats it and mtools (mmd, mcopy -m, mdel) fills it, with
// long names as VFAT writes them. mtools writes 8.3 names in code page 850
// (its default), times as UTC (TZ=UTC), and names from UTF-8 (C.UTF-8).
type FATSpec struct {
	// Bits is 12, 16 or 32.
	Bits int
	// Size of the image in bytes (a multiple of 1024); 0 means 1474560 (a
	// 1.44 MB floppy) for FAT12, 16 MiB for FAT16, 40 MiB for FAT32.
	Size int64
	// SectorsPerCluster is mkfs.fat -s; 0 leaves mkfs.fat's choice (1 for
	// FAT32, so that 40 MiB holds the 65525 clusters FAT32 needs).
	SectorsPerCluster int
	// RootEntries is the size of the FAT12/16 root directory in records
	// (mkfs.fat -r); 0 leaves mkfs.fat's choice.
	RootEntries int
	// Label is the volume label (mkfs.fat -n), at most 11 bytes; "" none.
	Label string
	// Entries is the tree: File and Dir entries only (FAT has no other
	// kinds). Names must be valid VFAT names. Mtime (even seconds, 1980 to
	// 2107; zero means DefaultMtime) is kept by mcopy -m for files.
	Entries []Entry
	// Deleted lists paths of Entries that mdel (files) or mdeltree
	// (directories) removes after the tree is written: their records stay
	// on the medium marked deleted.
	Deleted []string
}

func (s FATSpec) size() int64 {
	switch {
	case s.Size != 0:
		return s.Size
	case s.Bits == 12:
		return 1474560
	case s.Bits == 16:
		return 16 << 20
	}
	return 40 << 20
}

// FATVolumeID is the volume serial number of every FAT image built here,
// so that the same FATSpec gives the same boot sector.
const FATVolumeID = "4E545446" // "NTTF"

// FATTools are the commands BuildFATImage runs.
var FATTools = []string{"mkfs.fat", "mmd", "mcopy", "mdel", "mdeltree"}

// RequireFATTools fails the test under CI, or skips it, if a FAT tool is
// missing (scripts/deps.sh installs dosfstools and mtools).
func RequireFATTools(t testing.TB, more ...string) {
	t.Helper()
	for _, name := range append(append([]string(nil), FATTools...), more...) {
		if _, err := exec.LookPath(name); err != nil {
			testenv.SkipOrFail(t, name+" is not installed (scripts/deps.sh installs dosfstools, mtools and sleuthkit)")
		}
	}
}

// MtoolsEnv is the environment mtools runs in here: no drive config, no
// disk geometry checks, UTF-8 names, UTC times.
func MtoolsEnv() []string {
	return append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "MTOOLSRC=/dev/null", "LC_ALL=C.UTF-8", "TZ=UTC")
}

// BuildFAT builds the FAT image of spec in the test's temporary directory
// and returns its path; it fails the test if that cannot be done.
func BuildFAT(t testing.TB, spec FATSpec) string {
	t.Helper()
	RequireFATTools(t)
	p := filepath.Join(t.TempDir(), fmt.Sprintf("fat%d.img", spec.Bits))
	if err := BuildFATImage(p, spec); err != nil {
		t.Fatal(err)
	}
	return p
}

// BuildFATImage formats a new image at path (replacing it) and writes the
// spec's tree into it: mkfs.fat, then one mmd per directory and mcopy -m
// for the files (consecutive files of a directory in one call), in Entries
// order, then the deletions.
func BuildFATImage(path string, spec FATSpec) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("testimg: FAT image %s: %s", path, fmt.Sprintf(format, args...))
	}
	switch spec.Bits {
	case 12, 16, 32:
	default:
		return fail("FAT width %d: want 12, 16 or 32", spec.Bits)
	}
	size := spec.size()
	if size%1024 != 0 || size <= 0 {
		return fail("size %d is not a positive multiple of 1024", size)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fail("%v", err)
	}
	args := []string{"-C", "-F", strconv.Itoa(spec.Bits), "-i", FATVolumeID}
	spc := spec.SectorsPerCluster
	if spc == 0 && spec.Bits == 32 {
		spc = 1
	}
	if spc != 0 {
		args = append(args, "-s", strconv.Itoa(spc))
	}
	if spec.RootEntries != 0 {
		args = append(args, "-r", strconv.Itoa(spec.RootEntries))
	}
	if spec.Label != "" {
		args = append(args, "-n", spec.Label)
	}
	args = append(args, path, strconv.FormatInt(size/1024, 10))
	if out, err := fatTool("mkfs.fat", args...); err != nil {
		return fail("mkfs.fat %s: %v: %s", strings.Join(args, " "), err, out)
	}
	stage, err := os.MkdirTemp("", "ntt-fat-stage")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(stage)
	// Consecutive files of one directory go in one mcopy, in order.
	var batch []string
	batchDir := ""
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		args := append(append([]string{"-m", "-i", path}, batch...), "::/"+batchDir)
		if batchDir != "" {
			args[len(args)-1] += "/"
		}
		out, err := fatTool("mcopy", args...)
		for _, src := range batch {
			os.RemoveAll(filepath.Dir(src))
		}
		batch = batch[:0]
		if err != nil {
			return fail("mcopy into %q: %v: %s", "/"+batchDir, err, out)
		}
		return nil
	}
	for i, e := range spec.Entries {
		if e.Path == "" || strings.HasPrefix(e.Path, "/") {
			return fail("entry %d: path %q must be relative and not empty", i, e.Path)
		}
		dir, name := split(e.Path)
		if dir != batchDir || len(batch) >= 200 || e.Kind != File {
			if err := flush(); err != nil {
				return err
			}
			batchDir = dir
		}
		switch e.Kind {
		case Dir:
			if out, err := fatTool("mmd", "-i", path, "::/"+e.Path); err != nil {
				return fail("mmd %q: %v: %s", e.Path, err, out)
			}
		case File:
			// Each file is staged under its own name in a directory of
			// its own, so that mcopy gives it that name.
			src := filepath.Join(stage, strconv.Itoa(i), name)
			err := os.Mkdir(filepath.Dir(src), 0o755)
			var f *os.File
			if err == nil {
				f, err = os.Create(src)
			}
			if err == nil {
				_, err = f.ReadFrom(e.ContentReader())
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			if err == nil {
				err = os.Chtimes(src, e.mtime(), e.mtime())
			}
			if err != nil {
				return fail("staging %q: %v", e.Path, err)
			}
			batch = append(batch, src)
		default:
			return fail("entry %q: kind %v; FAT holds files and directories only", e.Path, e.Kind)
		}
	}
	if err := flush(); err != nil {
		return err
	}
	for _, d := range spec.Deleted {
		tool := "mdel"
		for _, e := range spec.Entries {
			if e.Path == d && e.Kind == Dir {
				tool = "mdeltree"
			}
		}
		if out, err := fatTool(tool, "-i", path, "::/"+d); err != nil {
			return fail("%s %q: %v: %s", tool, d, err, out)
		}
	}
	return nil
}

func fatTool(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = MtoolsEnv()
	out, err := cmd.CombinedOutput()
	return bytes.TrimSpace(out), err
}

// FATTree returns what a FATSpec leaves on the medium: every path that is
// not deleted (nor under a deleted directory), with its entry.
func FATTree(spec FATSpec) map[string]Entry {
	gone := func(p string) bool {
		for _, d := range spec.Deleted {
			if p == d || strings.HasPrefix(p, d+"/") {
				return true
			}
		}
		return false
	}
	out := map[string]Entry{}
	for _, e := range spec.Entries {
		if !gone(e.Path) {
			out[e.Path] = e
		}
	}
	return out
}

// FATSample returns a FAT spec with what FAT media hold: a volume label,
// long names (mixed case, spaces, 205 characters, non-ASCII: Latin, Greek,
// CJK, a symbol; not outside the BMP: mtools cuts such a character to 16
// bits), names that fit 8.3 in lowercase and
// uppercase, empty files, files of one cluster exactly and of several,
// nested directories, a directory of n files (a few hundred fill several
// clusters of it), and a deleted file and directory. Mtimes are distinct
// even seconds.
func FATSample(bits int, n int) FATSpec {
	t0 := time.Date(2001, 9, 9, 1, 46, 40, 0, time.UTC)
	at := func(i int) time.Time { return t0.Add(time.Duration(2*i) * time.Second) }
	s := FATSpec{Bits: bits, Label: "NTT SAMPLE"}
	add := func(e Entry) {
		e.Mtime = at(len(s.Entries))
		s.Entries = append(s.Entries, e)
	}
	file := func(p string, size int64) {
		add(Entry{Path: p, Kind: File, Size: size, Seed: uint64(len(s.Entries) + 1)})
	}
	dir := func(p string) { add(Entry{Path: p, Kind: Dir}) }
	file("README.TXT", 1000)
	file("readme.txt~", 10)
	file("lower.txt", 3)
	file("Mixed Case Name.Document", 5000)
	file("empty", 0)
	file("EMPTY2.DAT", 0)
	file(strings.Repeat("L", 200)+".long", 77)
	file("Ärger über Öl.txt", 2048)
	file("ελληνικά.txt", 513)
	file("日本語のファイル.txt", 4096)
	file("music ♫ note.bin", 65536+7)
	file("big.bin", 300000)
	dir("DOCS")
	dir("DOCS/Sub Dir")
	dir("DOCS/Sub Dir/deeper")
	dir("DOCS/Sub Dir/deeper/deepest")
	file("DOCS/Sub Dir/deeper/deepest/leaf.txt", 12)
	file("DOCS/Sub Dir/note.md", 1)
	dir("DOCS/empty dir")
	dir("many")
	for i := 0; i < n; i++ {
		file(fmt.Sprintf("many/file %04d with a long name.txt", i), int64(i*37%3000))
	}
	file("to be deleted.txt", 5000)
	dir("gone")
	file("gone/inside.txt", 100)
	s.Deleted = []string{"to be deleted.txt", "gone"}
	return s
}

// FATPaths returns the tree's paths sorted, directories included.
func FATPaths(spec FATSpec) []string {
	var out []string
	for p := range FATTree(spec) {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// FATZipDisk lays the FAT image fsImage out as an Iomega Zip disk at disk:
// an MBR whose only partition is in slot 4 (as Zip disks have it), type
// 0x06 (FAT16), starting at sector 32 (byte 16384). It returns the
// partition's byte offset and size.
func FATZipDisk(disk, fsImage string) (start, size int64, err error) {
	st, err := os.Stat(fsImage)
	if err != nil {
		return 0, 0, fmt.Errorf("testimg: %w", err)
	}
	start, size = 32*SectorSize, st.Size()
	if err := os.Remove(disk); err != nil && !os.IsNotExist(err) {
		return 0, 0, fmt.Errorf("testimg: %w", err)
	}
	if err := Place(disk, start, fsImage); err != nil {
		return 0, 0, err
	}
	m := MBR{Signature: 0x5A495031, Primary: []MBRPartition{{}, {}, {}, {Type: 0x06, Start: start, Size: size}}}
	return start, size, WriteMBR(disk, m)
}
