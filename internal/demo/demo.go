// Package demo generates the sample medium of `make demo` and of the
// pipeline's end-to-end tests: a rescued hard disk as an archivist receives
// it — <md5>.img with two partitions (ext4 and ext2) holding duplicate
// files (within and across partitions), hardlinks, symlinks, hostile names
// and empty files, beside a GNU ddrescue mapfile (<md5>.map, .map.bak) whose
// one unrescued region lies inside a known file, and a ddrescue log.
//
// As ddrescue does, the unrescued region reads as zeros in the image: the
// file is readable but wrong, which only the mapfile reveals.
package demo

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/HRDAG/ntt/internal/testimg"
)

// DamagedFile is the catalog path (relative to the medium root) of the file
// that overlaps the mapfile's unrescued region.
const DamagedFile = "/p1/scans/damaged-scan.tif"

// Sample describes a generated medium.
type Sample struct {
	Hash    string // md5 of the image, as the seed's media are named
	Image   string // <dir>/<hash>.img
	Mapfile string // <dir>/<hash>.map
	Members []string
	// BadStart and BadSize locate the unrescued region in the image.
	BadStart, BadSize int64
	// Files is how many regular-file names the sample holds (both
	// partitions, hardlinks counted once per name).
	Files int
}

const mib = 1 << 20

func p1Spec() testimg.Spec {
	var e []testimg.Entry
	file := func(p string, seed uint64, size int64) {
		e = append(e, testimg.Entry{Path: p, Kind: testimg.File, Seed: seed, Size: size})
	}
	file("reports/2003/annual.doc", 1, 300<<10)
	file("reports/2003/annual-copy.doc", 1, 300<<10) // same content: one blob
	file("reports/2004/summary.pdf", 2, 180<<10)
	file("scans/damaged-scan.tif", 3, 256<<10)
	file("scans/clean-scan.tif", 4, 200<<10)
	for i := 0; i < 40; i++ {
		// Forty letters, twenty different contents.
		file(fmt.Sprintf("letters/letter-%02d.txt", i), uint64(100+i%20), int64(2000+i%20*97))
	}
	e = append(e,
		testimg.Entry{Path: "reports/latest.doc", Kind: testimg.Hardlink, Target: "reports/2003/annual.doc"},
		testimg.Entry{Path: "current", Kind: testimg.Symlink, Target: "reports/2004"},
		testimg.Entry{Path: "dangling", Kind: testimg.Symlink, Target: "/no/such/file"},
		testimg.Entry{Path: "empty.txt", Kind: testimg.File, Data: []byte{}},
		testimg.Entry{Path: "empty-too.txt", Kind: testimg.File, Data: []byte{}},
		testimg.Entry{Path: "old/1969.txt", Kind: testimg.File, Data: []byte("before the epoch\n"), Mtime: time.Unix(-86400*200, 0)},
	)
	for i, n := range testimg.HostileNames() {
		e = append(e, testimg.Entry{Path: "names/" + n, Kind: testimg.File, Data: []byte(fmt.Sprintf("hostile name %d\n", i%5))})
	}
	return testimg.Spec{FSType: "ext4", Size: 16 * mib, Label: "DOCS", Entries: e}
}

func p2Spec() testimg.Spec {
	var e []testimg.Entry
	for i := 0; i < 24; i++ {
		// Photos: every third is a copy of another.
		e = append(e, testimg.Entry{Path: fmt.Sprintf("photos/img_%04d.jpg", i), Kind: testimg.File, Seed: uint64(200 + i - i%3), Size: 64 << 10})
	}
	e = append(e,
		testimg.Entry{Path: "backup/annual.doc", Kind: testimg.File, Seed: 1, Size: 300 << 10}, // dup across partitions
		testimg.Entry{Path: "backup/letter-00.txt", Kind: testimg.File, Seed: 100, Size: 2000},
		testimg.Entry{Path: "backup/photo-link.jpg", Kind: testimg.Hardlink, Target: "photos/img_0000.jpg"},
	)
	return testimg.Spec{FSType: "ext2", Size: 8 * mib, BlockSize: 1024, InodeSize: 128, Label: "PHOTOS", Entries: e}
}

func countFiles(s testimg.Spec) int {
	n := 0
	for _, e := range s.Entries {
		if e.Kind == testimg.File || e.Kind == testimg.Hardlink {
			n++
		}
	}
	return n
}

// Generate writes the sample medium into dir and returns where it is.
func Generate(dir string) (*Sample, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(dir, ".demo-build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	s1, s2 := p1Spec(), p2Spec()
	p1, p2 := filepath.Join(work, "p1.img"), filepath.Join(work, "p2.img")
	if err := testimg.BuildImage(p1, s1); err != nil {
		return nil, fmt.Errorf("demo: building partition 1: %w", err)
	}
	if err := testimg.BuildImage(p2, s2); err != nil {
		return nil, fmt.Errorf("demo: building partition 2: %w", err)
	}
	// Where does the damaged file's third block lie in partition 1?
	blk, err := physicalBlock(p1, strings.TrimPrefix(DamagedFile, "/p1"), 2)
	if err != nil {
		return nil, err
	}
	disk := filepath.Join(work, "disk.img")
	placed, err := testimg.ComposeDisk(disk, testimg.Disk{Table: "mbr", Parts: []testimg.DiskPart{{Image: p1}, {Image: p2}}})
	if err != nil {
		return nil, fmt.Errorf("demo: composing the disk: %w", err)
	}
	const bs = 4096
	bad := placed[0].Start + blk*bs
	// ddrescue leaves what it could not read as zeros.
	if err := testimg.Zero(disk, bad, bs); err != nil {
		return nil, err
	}
	sum, size, err := md5File(disk)
	if err != nil {
		return nil, err
	}
	s := &Sample{Hash: sum, BadStart: bad, BadSize: bs, Files: countFiles(s1) + countFiles(s2)}
	s.Image = filepath.Join(dir, sum+".img")
	s.Mapfile = filepath.Join(dir, sum+".map")
	if err := os.Rename(disk, s.Image); err != nil {
		return nil, err
	}
	m := mapfile(sum, size, bad, bs)
	logText := fmt.Sprintf("GNU ddrescue 1.27\nCommand line: ddrescue -d -r3 /dev/sdb %s.img %s.map\nrescued: %d B, errsize: %d B, errors: 1\nFinished\n", sum, sum, size-bs, bs)
	for name, content := range map[string]string{
		sum + ".map":          m,
		sum + ".map.bak":      m,
		sum + "-ddrescue.log": logText,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	s.Members = []string{sum + ".img", sum + ".map", sum + ".map.bak", sum + "-ddrescue.log"}
	return s, nil
}

// physicalBlock asks debugfs which block of the filesystem image holds
// logical block n of the file at path (a plain name: no hostile bytes).
func physicalBlock(image, path string, n int) (int64, error) {
	out, err := exec.Command("debugfs", "-R", fmt.Sprintf("bmap %s %d", path, n), image).Output()
	if err != nil {
		return 0, fmt.Errorf("demo: debugfs bmap %s: %w", path, err)
	}
	fields := strings.Fields(string(out))
	if len(fields) == 0 {
		return 0, fmt.Errorf("demo: debugfs bmap %s printed nothing", path)
	}
	b, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
	if err != nil || b == 0 {
		return 0, fmt.Errorf("demo: debugfs bmap %s: unexpected %q", path, out)
	}
	return b, nil
}

// ImageHash is the name the seed gives a medium: the md5 of its image
// file, in hex.
func ImageHash(path string) (string, error) {
	sum, _, err := md5File(path)
	return sum, err
}

func md5File(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := md5.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// mapfile renders a finished ddrescue mapfile: everything rescued but one
// region of n bytes at bad.
func mapfile(hash string, size, bad, n int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Mapfile. Created by GNU ddrescue version 1.27\n")
	fmt.Fprintf(&b, "# Command line: ddrescue -d -r3 /dev/sdb %s.img %s.map\n", hash, hash)
	fmt.Fprintf(&b, "# Start time:   2025-10-08 14:30:45\n# Current time: 2025-10-08 14:52:10\n# Finished\n")
	fmt.Fprintf(&b, "# current_pos  current_status  current_pass\n0x%08X     +               3\n", bad)
	fmt.Fprintf(&b, "#      pos        size  status\n")
	fmt.Fprintf(&b, "0x%08X  0x%08X  +\n", 0, bad)
	fmt.Fprintf(&b, "0x%08X  0x%08X  -\n", bad, n)
	fmt.Fprintf(&b, "0x%08X  0x%08X  +\n", bad+n, size-bad-n)
	return b.String()
}
