package demo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/hfs/macroman"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loopdev/probe"
)

// The media of an image reader's demo and end-to-end tests: a FAT12
// floppy made by mkfs.fat and mtools, and a Rock Ridge + Joliet CD-ROM made
// by xorriso — media the kernel here cannot mount and ntt-pipeline --read
// image reads from their images. Each comes with the tree that was put on
// it, so that what the pipeline stored can be compared byte for byte.

// TreeEntry is one name put on a medium.
type TreeEntry struct {
	Type   byte   // 'f', 'd' or 'l'
	Data   []byte // a file's content
	Target string // a symlink's target
}

// Tree maps the paths put on a medium (relative, '/'-separated, no
// leading slash) to what they are.
type Tree map[string]TreeEntry

// Files counts the regular files of t.
func (t Tree) Files() int {
	n := 0
	for _, e := range t {
		if e.Type == 'f' {
			n++
		}
	}
	return n
}

// Medium is a generated image with the tree put on it.
type Medium struct {
	Hash  string // md5 of the image, as the seed's media are named
	Image string // <dir>/<hash>.img
	Tree  Tree
	// Forks are the resource forks put on the medium, by the catalog
	// path of each ("<file>/..namedfork/rsrc", relative); Tree holds each
	// where the copier's tree keeps it (imagefs.ForkTreePath).
	Forks map[string][]byte
}

// addForks puts the resource forks of the files at the keys of forks in
// m.Forks and m.Tree, with the directories their tree paths need.
func (m *Medium) addForks(forks map[string][]byte) {
	m.Forks = map[string][]byte{}
	for file, data := range forks {
		cat := string(imagefs.ForkPath([]byte(file), []byte(imagefs.ResourceFork)))
		m.Forks[cat] = data
		tp := imagefs.ForkTreePath(cat)
		m.Tree[tp] = TreeEntry{Type: 'f', Data: data}
		for d := path.Dir(tp); d != "." && m.Tree[d].Type == 0; d = path.Dir(d) {
			m.Tree[d] = TreeEntry{Type: 'd'}
		}
	}
}

// Floppy builds a 1.44 MB FAT12 floppy in dir as <md5>.img: long VFAT
// names (non-ASCII, 200 characters), 8.3 names, empty files, files of one
// cluster and of many, nested directories, a directory of 40 files, two
// files with the same content, and a deleted file and directory (which must
// not come back). It needs mkfs.fat and mtools.
func Floppy(dir string) (*Medium, error) {
	spec := testimg.FATSample(12, 40)
	// mtools writes names as UCS-2: a character outside the BMP (the
	// sample's emoji) would not be put on the medium as given.
	kept := spec.Entries[:0]
	for _, e := range spec.Entries {
		bmp := true
		for _, r := range e.Path {
			bmp = bmp && r <= 0xFFFF
		}
		if bmp {
			kept = append(kept, e)
		}
	}
	spec.Entries = kept
	spec.Entries = append(spec.Entries, testimg.Entry{Path: "DOCS/copy of readme.txt", Kind: testimg.File,
		Data: spec.Entries[0].Content(), Mtime: spec.Entries[0].Mtime})
	tmp := filepath.Join(dir, "floppy.tmp")
	if err := testimg.BuildFATImage(tmp, spec); err != nil {
		return nil, err
	}
	return named(dir, tmp, filesTree(testimg.FATTree(spec)))
}

// HFSFloppy builds a 1.44 MB classic HFS (Mac OS Standard) floppy in dir
// as <md5>.img with hfsutils (hformat, hmkdir, hcopy -r): MacRoman names
// with spaces, accents and a '/' (shown as ':' by a reader, as Linux's hfs
// driver shows it), nested and empty directories, an empty file, a file of
// many allocation blocks, two files with the same content, and resource
// forks (hcopy -m): one beside a data fork, one of a file with an empty
// data fork.
func HFSFloppy(dir string) (*Medium, error) {
	spec := testimg.HFSSpec{Label: "NTT Mac Floppy"}
	add := func(p string, k testimg.Kind, size int64, seed uint64) {
		spec.Steps = append(spec.Steps, testimg.HFSStep{Entry: testimg.Entry{Path: p, Kind: k, Size: size, Seed: seed}})
	}
	add("Read Me", testimg.File, 1200, 1)
	spec.Steps[0].Rsrc = seeded(11, 5000)
	add("empty", testimg.File, 0, 2)
	add("Interview 1/2", testimg.File, 7000, 3)
	add("Ärger über Öl", testimg.File, 2048, 4)
	add("scan.pict", testimg.File, 300000, 5)
	add("Letters", testimg.Dir, 0, 0)
	add("Letters:copy of Read Me", testimg.File, 1200, 1)
	add("Letters:Drafts", testimg.Dir, 0, 0)
	add("Letters:Drafts:draft 1", testimg.File, 333, 6)
	add("Letters:empty folder", testimg.Dir, 0, 0)
	add("Letters:Drafts:only a resource fork", testimg.File, 0, 7)
	spec.Steps[len(spec.Steps)-1].Rsrc = seeded(12, 70000)
	tmp := filepath.Join(dir, "hfs-floppy.tmp")
	if err := testimg.BuildHFSImage(tmp, spec); err != nil {
		return nil, err
	}
	m, err := named(dir, tmp, filesTree(testimg.HFSTree(spec)))
	if err != nil {
		return nil, err
	}
	m.addForks(testimg.HFSForks(spec))
	return m, nil
}

// NTFSDisk builds a 16 MiB NTFS volume in dir as <md5>.img with mkntfs
// and ntfs-3g (testimg.NTFSSample): nested directories, names in several
// scripts, resident and multi-cluster files, hardlinks in two directories,
// alternate data streams (two on a hardlinked file, one on a directory),
// an Interix symlink, a Windows symlink and a junction, a sparse file,
// compressed files, and a deleted file (which must not come back). Its
// Forks are the streams, by catalog path ("<file>/..namedfork/<stream>",
// under every name of a hardlinked file). It needs root and FUSE.
func NTFSDisk(dir string) (*Medium, error) {
	for _, tool := range testimg.NTFSTools {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := exec.LookPath("/usr/sbin/" + tool); err != nil {
				return nil, fmt.Errorf("demo: %s is not installed (scripts/deps.sh installs ntfs-3g): %w", tool, err)
			}
		}
	}
	spec := testimg.NTFSSample()
	tmp := filepath.Join(dir, "ntfs-disk.tmp")
	if err := testimg.BuildNTFSImage(tmp, spec); err != nil {
		return nil, err
	}
	m, err := named(dir, tmp, Tree{})
	if err != nil {
		return nil, err
	}
	m.Forks = map[string][]byte{}
	for p, e := range testimg.NTFSTree(spec) {
		switch {
		case strings.Contains(p, "/"+imagefs.ForkDir+"/"):
			m.Forks[p] = e.Content()
			tp := imagefs.ForkTreePath(p)
			m.Tree[tp] = TreeEntry{Type: 'f', Data: e.Content()}
			for d := path.Dir(tp); d != "." && m.Tree[d].Type == 0; d = path.Dir(d) {
				m.Tree[d] = TreeEntry{Type: 'd'}
			}
		case e.Kind == testimg.Dir:
			m.Tree[p] = TreeEntry{Type: 'd'}
		case e.Kind == testimg.Symlink:
			m.Tree[p] = TreeEntry{Type: 'l', Target: e.Target}
		default:
			m.Tree[p] = TreeEntry{Type: 'f', Data: e.Content()}
		}
	}
	// The reparse points, as the reader shows them.
	m.Tree["winlink"] = TreeEntry{Type: 'l', Target: "docs/sub"}
	m.Tree["junction"] = TreeEntry{Type: 'l', Target: "C:/Users/Public"}
	return m, nil
}

// HFSPlusDisk builds an HFS+ (Mac OS Extended) volume in dir as
// <md5>.img with testimg.WriteHFSPlus (no mkfs for HFS+ exists here):
// Unicode names stored decomposed (NFD) as macOS stores them, mixed case,
// nested and empty folders, an empty file, a file in 12 extents (4 of
// them in extents-overflow records), resource forks (one beside a data
// fork, one of a file with an empty data fork), a symlink, a hardlinked
// file with a resource fork (two names of one indirect node), files
// compressed as macOS 10.6+ compresses them (decmpfs: zlib inline in the
// attribute, and in 64 KiB blocks in the resource fork), a directory
// hardlink (Mac OS X 10.5's, as Time Machine makes them), and two files
// with the same content.
func HFSPlusDisk(dir string) (*Medium, error) {
	f := func(p string, size int64, seed uint64) testimg.HFSPlusEntry {
		return testimg.HFSPlusEntry{Entry: testimg.Entry{Path: p, Kind: testimg.File, Size: size, Seed: seed}}
	}
	spec := testimg.HFSPlusSpec{Label: "NTT Mac Disk", Entries: []testimg.HFSPlusEntry{
		f("Read Me", 1200, 1),
		f("empty", 0, 2),
		f("Interviews/Café notes.txt", 7000, 3), // NFC as given; stored as given
		f("Interviews/Café transcript.txt", 9000, 4),
		f("Interviews/copy of Read Me", 1200, 1),
		f("Scans/page 1.tiff", 300000, 5),
		{Entry: testimg.Entry{Path: "Scans/fragmented.pdf", Kind: testimg.File, Size: 12*4096 - 100, Seed: 6}, Fragments: 12},
		{Entry: testimg.Entry{Path: "Letters/Letter to Ελλάδα", Kind: testimg.File, Size: 333, Seed: 7}, Rsrc: rsrc(8, 5000)},
		{Entry: testimg.Entry{Path: "Letters/Icon only", Kind: testimg.File}, Rsrc: rsrc(9, 70000)},
		{Entry: testimg.Entry{Path: "Letters/empty folder", Kind: testimg.Dir}},
		{Entry: testimg.Entry{Path: "latest letter", Kind: testimg.Symlink, Target: "Letters/Icon only"}},
		{Entry: testimg.Entry{Path: "Letters/Drafts/draft.txt", Kind: testimg.File, Size: 2500, Seed: 10}, Rsrc: rsrc(11, 700)},
		{Entry: testimg.Entry{Path: "Letters/draft (hardlink)", Kind: testimg.Hardlink, Target: "Letters/Drafts/draft.txt"}},
		{Entry: testimg.Entry{Path: "System/compressed inline.plist", Kind: testimg.File, Data: bytes.Repeat([]byte("<key>decmpfs</key>\n"), 100)}, Compress: testimg.DecmpfsInline},
		{Entry: testimg.Entry{Path: "System/compressed in rsrc.dylib", Kind: testimg.File, Data: bytes.Repeat([]byte("type 4, 64 KiB zlib blocks\n"), 10000)}, Compress: testimg.DecmpfsRsrc},
		{Entry: testimg.Entry{Path: "Backups/2020", Kind: testimg.Dir}},
		{Entry: testimg.Entry{Path: "Backups/2020/ledger.txt", Kind: testimg.File, Size: 4000, Seed: 12}},
		{Entry: testimg.Entry{Path: "Backups/latest", Kind: testimg.Hardlink, Target: "Backups/2020"}},
	}}
	// A hardlinked directory is entered once, at its first name: what
	// lies below its later name is catalogued and stored at the first.
	const notEntered = "Backups/latest"
	tmp := filepath.Join(dir, "hfsplus-disk.tmp")
	l, err := testimg.WriteHFSPlus(tmp, spec)
	if err != nil {
		return nil, err
	}
	tree := Tree{}
	forks := map[string][]byte{}
	for p, e := range l.Files {
		switch {
		case p == "" || strings.HasPrefix(p, notEntered+"/"):
		case e.Kind == testimg.Dir:
			tree[p] = TreeEntry{Type: 'd'}
		case e.Kind == testimg.Symlink:
			tree[p] = TreeEntry{Type: 'l', Target: string(e.Data)}
		default:
			tree[p] = TreeEntry{Type: 'f', Data: e.Data}
			if len(e.Rsrc) > 0 {
				forks[p] = e.Rsrc
			}
		}
	}
	m, err := named(dir, tmp, tree)
	if err != nil {
		return nil, err
	}
	m.addForks(forks)
	return m, nil
}

// rsrc is n bytes of seeded content for a resource fork.
func rsrc(seed uint64, n int) []byte {
	b := make([]byte, n)
	testimg.ContentAt(seed, b, 0)
	return b
}

// CDROM builds an ISO 9660 CD-ROM with Rock Ridge and Joliet in dir as
// <md5>.img, with xorriso: names Joliet cannot hold (over 64 characters,
// mixed case, spaces), a directory tree nine levels deep (relocated by
// Rock Ridge), symlinks (one dangling), a hardlink, empty files, a file of
// 3 MB, and duplicate contents.
func CDROM(dir string) (*Medium, error) {
	if _, err := exec.LookPath("xorriso"); err != nil {
		return nil, fmt.Errorf("demo: xorriso is not installed (scripts/deps.sh installs it): %w", err)
	}
	stage, err := os.MkdirTemp(dir, "cd-stage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	tree := Tree{}
	put := func(p string, data []byte) error {
		full := filepath.Join(stage, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		tree[p] = TreeEntry{Type: 'f', Data: data}
		return os.WriteFile(full, data, 0o644)
	}
	files := []struct {
		p    string
		data []byte
	}{
		{"README.TXT", []byte("Testimony archive, disc 1.\n")},
		{"Interviews/2003/Interview with a witness, part one.txt", seeded(1, 40000)},
		{"Interviews/2003/Interview with a witness, part two.txt", seeded(2, 52000)},
		{"Interviews/2003/copy of part one.txt", seeded(1, 40000)},
		{"Interviews/2004/" + strings.Repeat("a very long file name ", 5) + "end.txt", seeded(3, 1234)},
		{"Scans/page-001.tif", seeded(4, 3<<20)},
		{"Scans/page-002.tif", seeded(5, 200000)},
		{"Scans/empty.tif", nil},
		{"Notes/Ärger über Öl.txt", []byte("Umlauts in the name.\n")},
		{"Notes/empty", []byte{}},
		{"deep/1/2/3/4/5/6/7/8/9/bottom.txt", []byte("nine levels down\n")},
	}
	for _, f := range files {
		if err := put(f.p, f.data); err != nil {
			return nil, err
		}
	}
	for d := "deep/1/2/3/4/5/6/7/8/9"; d != "."; d = filepath.Dir(d) {
		tree[d] = TreeEntry{Type: 'd'}
	}
	for _, d := range []string{"Interviews", "Interviews/2003", "Interviews/2004", "Scans", "Notes"} {
		tree[d] = TreeEntry{Type: 'd'}
	}
	links := []struct{ p, target string }{
		{"latest", "Interviews/2004"},
		{"Scans/first-page.tif", "page-001.tif"},
		{"dangling", "/no/such/file"},
	}
	for _, l := range links {
		if err := os.Symlink(l.target, filepath.Join(stage, l.p)); err != nil {
			return nil, err
		}
		tree[l.p] = TreeEntry{Type: 'l', Target: l.target}
	}
	if err := os.Link(filepath.Join(stage, "Scans/page-002.tif"), filepath.Join(stage, "Scans/page-002-link.tif")); err != nil {
		return nil, err
	}
	tree["Scans/page-002-link.tif"] = tree["Scans/page-002.tif"]
	// Fixed times, so that the same call builds the same image.
	t0 := time.Date(2004, 5, 6, 7, 8, 9, 0, time.UTC)
	if err := filepath.WalkDir(stage, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return exec.Command("touch", "-h", "-d", t0.Format(time.RFC3339), p).Run()
	}); err != nil {
		return nil, err
	}
	tmp := filepath.Join(dir, "cdrom.tmp")
	os.Remove(tmp)
	cmd := exec.Command("xorriso", "-report_about", "FAILURE", "-hardlinks", "on", "-joliet", "on",
		"-compliance", "joliet_long_names", "-volid", "TESTIMONY_1", "-outdev", "stdio:"+tmp, "-map", stage, "/", "-commit")
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+fmt.Sprint(t0.Unix()))
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("demo: xorriso: %v: %s", err, out)
	}
	return named(dir, tmp, tree)
}

// HybridCD builds a hybrid ISO 9660 / HFS CD in dir as <md5>.img with
// genisoimage -hfs -part (Rock Ridge and Joliet on the ISO side, an Apple
// partition map whose entry 2 is the HFS side): one medium, two views of
// the same sectors, read as /p1 (the ISO side) and /p2 (the HFS side). Its
// tree holds p1/… as staged and p2/… as hfsutils reads the HFS side (hls
// -R, hcopy -m): the staged files again, a name with umlauts as
// genisoimage writes it in MacRoman, a file's resource fork (where the
// copier's tree keeps it, p2/Letters/..namedfork/Dear archivist/rsrc), and
// the Finder's Desktop DB and Desktop DF that genisoimage adds. It needs
// genisoimage and hfsutils.
func HybridCD(dir string) (*Medium, error) {
	for _, tool := range []string{"genisoimage", "hmount", "hls", "hcopy", "humount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("demo: %s is not installed (scripts/deps.sh installs it): %w", tool, err)
		}
	}
	stage, staged, err := stageFiles(dir, map[string][]byte{
		"README.TXT":                        []byte("Testimony archive, disc 2, for Macs and PCs.\n"),
		"Interviews/witness one.txt":        seeded(11, 40000),
		"Interviews/witness two.txt":        seeded(12, 52000),
		"Interviews/copy of one.txt":        seeded(11, 40000),
		"Scans/page-001.tif":                seeded(14, 1<<20),
		"Scans/empty.tif":                   {},
		"Notes/Ärger über Öl.txt":           []byte("Umlauts in the name.\n"),
		"deep/1/2/3/4/5/6/7/8/9/bottom.txt": []byte("nine levels down\n"),
		// A Mac file with a resource fork: genisoimage --osx-double takes
		// the AppleDouble file beside it as its forks on the HFS side.
		"Letters/Dear archivist":   []byte("Dear archivist,\n"),
		"Letters/._Dear archivist": testimg.AppleDouble(seeded(15, 7000), "TEXT", "ttxt"),
	})
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	delete(staged, "Letters/._Dear archivist")
	tree := Tree{"p1": {Type: 'd'}, "p2": {Type: 'd'}}
	for p, e := range staged {
		tree["p1/"+p] = e
	}
	// genisoimage relocates the ninth level into /rr_moved, which Rock
	// Ridge readers (Linux's too) show as an empty directory.
	tree["p1/rr_moved"] = TreeEntry{Type: 'd'}
	tmp := filepath.Join(dir, "hybrid.tmp")
	os.Remove(tmp)
	cmd := exec.Command("genisoimage", "-quiet", "-r", "-J", "-hfs", "-part", "--osx-double", "-V", "TESTIMONY_2", "-o", tmp, stage)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("demo: genisoimage: %v: %s", err, out)
	}
	side, forks, err := hfsSide(tmp, dir)
	if err != nil {
		return nil, err
	}
	for p, e := range side {
		tree["p2/"+p] = e
	}
	m, err := named(dir, tmp, tree)
	if err != nil {
		return nil, err
	}
	onP2 := map[string][]byte{}
	for p, data := range forks {
		onP2["p2/"+p] = data
	}
	m.addForks(onP2)
	return m, nil
}

// HybridHFSPlusCD builds a hybrid ISO 9660 / HFS+ CD in dir as <md5>.img
// with xorriso -as mkisofs -hfsplus: an Apple partition map whose entry 3
// is the HFS+ side over the ISO side's sectors, read as /p1 (the ISO side)
// and /p2 (the HFS+ side). Its tree holds p1/… as staged and p2/… as The
// Sleuth Kit reads the HFS+ side (fls -r -p, icat): the same files, names
// in Unicode decomposed (NFD) as HFS+ stores them. It needs xorriso and
// sleuthkit.
func HybridHFSPlusCD(dir string) (*Medium, error) {
	for _, tool := range []string{"xorriso", "fls", "icat"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("demo: %s is not installed (scripts/deps.sh installs it): %w", tool, err)
		}
	}
	stage, staged, err := stageFiles(dir, map[string][]byte{
		"README.TXT":                 []byte("Testimony archive, disc 3, for Macs and PCs.\n"),
		"Interviews/witness one.txt": seeded(31, 40000),
		"Interviews/copy of one.txt": seeded(31, 40000),
		"Scans/page-001.tif":         seeded(32, 1<<20),
		"Scans/empty.tif":            {},
		"Notes/Ärger über Öl.txt":    []byte("Umlauts in the name.\n"),
	})
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	tree := Tree{"p1": {Type: 'd'}, "p2": {Type: 'd'}}
	for p, e := range staged {
		tree["p1/"+p] = e
	}
	tmp := filepath.Join(dir, "hybrid-plus.tmp")
	os.Remove(tmp)
	cmd := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-r", "-J", "-hfsplus", "-V", "TESTIMONY_3", "-o", tmp, stage)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("demo: xorriso: %v: %s", err, out)
	}
	side, err := tskSide(tmp, "Apple_HFS")
	if err != nil {
		return nil, err
	}
	for p, e := range side {
		tree["p2/"+p] = e
	}
	return named(dir, tmp, tree)
}

// partitionSector is the first 512-byte sector, as fls -o takes it, of
// the partition of img whose table type is ptype.
func partitionSector(img, ptype string) (string, error) {
	f, err := os.Open(img)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	res, err := probe.Probe(f, st.Size())
	if err != nil {
		return "", err
	}
	for _, p := range res.Partitions {
		if p.Type == ptype {
			return fmt.Sprint(p.Start / 512), nil
		}
	}
	return "", fmt.Errorf("demo: no %s partition in %s", ptype, img)
}

// tskSide reads the filesystem in the partition of img whose table type
// is ptype with The Sleuth Kit: every directory and regular file (fls -r
// -p, icat), by path, leaving out TSK's own virtual files ($CatalogFile …).
func tskSide(img, ptype string) (Tree, error) {
	sector, err := partitionSector(img, ptype)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command("fls", "-r", "-p", "-o", sector, img).Output()
	if err != nil {
		return nil, fmt.Errorf("demo: fls -r -p -o %s %s: %w", sector, img, err)
	}
	tree := Tree{}
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		// "r/r 17:\tDocs/a.txt": type, inode, path.
		kind, rest, ok := strings.Cut(l, " ")
		inode, p, ok2 := strings.Cut(rest, ":\t")
		if !ok || !ok2 || strings.HasPrefix(p, "$") {
			continue
		}
		switch kind {
		case "d/d":
			tree[p] = TreeEntry{Type: 'd'}
		case "r/r":
			b, err := exec.Command("icat", "-o", sector, img, inode).Output()
			if err != nil {
				return nil, fmt.Errorf("demo: icat -o %s %s %s: %w", sector, img, inode, err)
			}
			tree[p] = TreeEntry{Type: 'f', Data: b}
		default:
			return nil, fmt.Errorf("demo: fls lists %q, which this sample does not hold", l)
		}
	}
	return tree, nil
}

// UDFDisc builds a UDF-only disc in dir as <md5>.img with mkudffs (UDF
// 2.01, no ISO 9660 side): a medium no image reader reads yet, which must
// be named as such. Its tree is empty (the kernel here cannot mount UDF to
// put files on it).
func UDFDisc(dir string) (*Medium, error) {
	if _, err := exec.LookPath("mkudffs"); err != nil {
		return nil, fmt.Errorf("demo: mkudffs is not installed (scripts/deps.sh installs udftools): %w", err)
	}
	tmp := filepath.Join(dir, "udf.tmp")
	if err := os.WriteFile(tmp, nil, 0o644); err != nil {
		return nil, err
	}
	if err := os.Truncate(tmp, 8<<20); err != nil {
		return nil, err
	}
	if out, err := exec.Command("mkudffs", "--media-type=cdrw", "--label=UDF ONLY", tmp).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("demo: mkudffs: %v: %s", err, out)
	}
	return named(dir, tmp, Tree{})
}

// BridgeDisc builds a UDF bridge disc in dir as <md5>.img with
// genisoimage -udf (UDF and ISO 9660 with Rock Ridge over the same files):
// read through its ISO 9660 side until a UDF reader exists.
func BridgeDisc(dir string) (*Medium, error) {
	if _, err := exec.LookPath("genisoimage"); err != nil {
		return nil, fmt.Errorf("demo: genisoimage is not installed (scripts/deps.sh installs it): %w", err)
	}
	stage, tree, err := stageFiles(dir, map[string][]byte{
		"VIDEO_TS/VIDEO_TS.IFO":  []byte("not really a DVD\n"),
		"Interviews/witness.txt": seeded(21, 70000),
		"Interviews/copy.txt":    seeded(21, 70000),
		"empty":                  {},
	})
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	tmp := filepath.Join(dir, "bridge.tmp")
	os.Remove(tmp)
	if out, err := exec.Command("genisoimage", "-quiet", "-udf", "-r", "-V", "BRIDGE", "-o", tmp, stage).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("demo: genisoimage: %v: %s", err, out)
	}
	return named(dir, tmp, tree)
}

// stageFiles writes files (by relative path) into a new directory in dir,
// to be mastered onto a disc, and returns it with their Tree (the files
// and every directory above them).
func stageFiles(dir string, files map[string][]byte) (string, Tree, error) {
	stage, err := os.MkdirTemp(dir, "stage-")
	if err != nil {
		return "", nil, err
	}
	tree := Tree{}
	for p, data := range files {
		full := filepath.Join(stage, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			os.RemoveAll(stage)
			return "", nil, err
		}
		if err := os.WriteFile(full, data, 0o644); err != nil {
			os.RemoveAll(stage)
			return "", nil, err
		}
		tree[p] = TreeEntry{Type: 'f', Data: data}
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			tree[d] = TreeEntry{Type: 'd'}
		}
	}
	return stage, tree, nil
}

// seeded is n bytes of testimg's content for seed.
func seeded(seed uint64, n int) []byte {
	b := make([]byte, n)
	testimg.ContentAt(seed, b, 0)
	return b
}

// hfsSide reads the HFS volume of img with hfsutils, the reference reader
// of classic HFS: every directory and file (its data fork, hcopy -m), by
// path with names decoded from MacRoman and a '/' in a name shown as ':',
// and the non-empty resource forks by their file's path.
func hfsSide(img, dir string) (Tree, map[string][]byte, error) {
	home, err := os.MkdirTemp(dir, "hfsutils-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(home)
	run := func(args ...string) ([]byte, error) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "HOME="+home, "LC_ALL=C") // hfsutils keeps its volume in $HOME/.hcwd
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("demo: %s: %w", strings.Join(args, " "), err)
		}
		return out, nil
	}
	if _, err := run("hmount", img); err != nil {
		return nil, nil, err
	}
	defer run("humount")
	out, err := run("hls", "-R", "-1a")
	if err != nil {
		return nil, nil, err
	}
	type name struct{ raw, path string } // raw: hcopy's HFS path; path: the tree's
	var names []name
	dirs := map[string]bool{}
	rawDir, pathDir := ":", ""
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case l == "":
		case strings.HasPrefix(l, ":") && strings.HasSuffix(l, ":"):
			rawDir = l
			var parts []string
			for _, c := range strings.Split(strings.Trim(l, ":"), ":") {
				parts = append(parts, macRoman(c))
			}
			pathDir = strings.Join(parts, "/") + "/"
			dirs[strings.TrimSuffix(pathDir, "/")] = true
		default:
			names = append(names, name{rawDir + l, pathDir + macRoman(l)})
		}
	}
	tree, forks := Tree{}, map[string][]byte{}
	copied := filepath.Join(home, "fork")
	for _, n := range names {
		if dirs[n.path] {
			tree[n.path] = TreeEntry{Type: 'd'}
			continue
		}
		if _, err := run("hcopy", "-m", n.raw, copied); err != nil {
			return nil, nil, err
		}
		b, err := os.ReadFile(copied)
		if err != nil {
			return nil, nil, err
		}
		os.Remove(copied)
		data, rsrc, err := macBinary(b)
		if err != nil {
			return nil, nil, fmt.Errorf("demo: hcopy -m %q: %w", n.raw, err)
		}
		tree[n.path] = TreeEntry{Type: 'f', Data: data}
		if len(rsrc) > 0 {
			forks[n.path] = rsrc
		}
	}
	return tree, forks, nil
}

// macBinary splits a MacBinary II file (hcopy -m) into its forks: a
// 128-byte header with the data fork's length at 83 and the resource
// fork's at 87, then each fork padded to 128 bytes.
func macBinary(b []byte) (data, rsrc []byte, err error) {
	if len(b) < 128 {
		return nil, nil, fmt.Errorf("MacBinary of %d bytes", len(b))
	}
	dlen, rlen := int64(binary.BigEndian.Uint32(b[83:])), int64(binary.BigEndian.Uint32(b[87:]))
	at := 128 + (dlen+127)/128*128
	if 128+dlen > int64(len(b)) || at+rlen > int64(len(b)) {
		return nil, nil, fmt.Errorf("MacBinary of %d bytes holds no forks of %d and %d bytes", len(b), dlen, rlen)
	}
	return b[128 : 128+dlen], b[at : at+rlen], nil
}

// CatalogTree is m's tree as the catalog has it (paths relative to the
// medium root, no leading '/'): the forks at their catalog paths
// (<file>/..namedfork/<name>, m.Forks), not where the copier's tree keeps
// them, and without the tree's ..namedfork directories.
func (m *Medium) CatalogTree() Tree {
	out := Tree{}
	for p, e := range m.Tree {
		if !slices.Contains(strings.Split(p, "/"), imagefs.ForkDir) {
			out[p] = e
		}
	}
	for p, data := range m.Forks {
		out[p] = TreeEntry{Type: 'f', Data: data}
	}
	return out
}

// macRoman decodes an HFS name from MacRoman, '/' shown as ':' (as Linux's
// hfs driver shows it).
func macRoman(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '/':
			b.WriteByte(':')
		case c < 0x80:
			b.WriteByte(c)
		default:
			b.WriteRune(macroman.Runes[c-0x80])
		}
	}
	return b.String()
}

// named renames the image at tmp to <md5>.img in dir.
// filesTree is the Tree of a medium of files and directories only, as a
// testimg spec of it says it holds them.
func filesTree(entries map[string]testimg.Entry) Tree {
	tree := Tree{}
	for p, e := range entries {
		switch e.Kind {
		case testimg.Dir:
			tree[p] = TreeEntry{Type: 'd'}
		default:
			tree[p] = TreeEntry{Type: 'f', Data: e.Content()}
		}
	}
	return tree
}

func named(dir, tmp string, tree Tree) (*Medium, error) {
	hash, err := ImageHash(tmp)
	if err != nil {
		return nil, err
	}
	img := filepath.Join(dir, hash+".img")
	if err := os.Rename(tmp, img); err != nil {
		return nil, err
	}
	return &Medium{Hash: hash, Image: img, Tree: tree}, nil
}

// CheckTree compares the directory root (a medium's archived tree, or a
// mount) with tree: every file byte for byte, every directory, every
// symlink's target, and nothing else.
func CheckTree(root string, tree Tree) error {
	var errs []error
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		seen[rel] = true
		want, ok := tree[rel]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: not put on the medium", rel))
			return nil
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil || want.Type != 'l' || t != want.Target {
				errs = append(errs, fmt.Errorf("%s: symlink to %q (%v), want %c %q", rel, t, err, want.Type, want.Target))
			}
		case d.IsDir():
			if want.Type != 'd' {
				errs = append(errs, fmt.Errorf("%s: a directory, want %c", rel, want.Type))
			}
		default:
			b, err := os.ReadFile(p)
			if err != nil || want.Type != 'f' || !bytes.Equal(b, want.Data) {
				errs = append(errs, fmt.Errorf("%s: %d bytes (%v), want %c of %d bytes, identical", rel, len(b), err, want.Type, len(want.Data)))
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	var missing []string
	for p := range tree {
		if !seen[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	for _, p := range missing {
		errs = append(errs, fmt.Errorf("%s: put on the medium, missing", p))
	}
	return errors.Join(errs...)
}
