package ntfs_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/imagefstest"
	"github.com/HRDAG/ntt/imagefs/ntfs"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"golang.org/x/sys/unix"
)

// The sample volume is built once per test binary (mkntfs and ntfs-3g take
// a few seconds) and read by every test from a copy of its bytes.
var sample struct {
	once sync.Once
	img  []byte
	err  error
}

func sampleImage(t testing.TB) []byte {
	t.Helper()
	testimg.RequireNTFSTools(t)
	sample.once.Do(func() {
		dir, err := os.MkdirTemp("", "ntt-ntfs-sample")
		if err != nil {
			sample.err = err
			return
		}
		defer os.RemoveAll(dir)
		p := filepath.Join(dir, "sample.img")
		if sample.err = testimg.BuildNTFSImage(p, testimg.NTFSSample()); sample.err == nil {
			sample.img, sample.err = os.ReadFile(p)
		}
	})
	if sample.err != nil {
		t.Fatal(sample.err)
	}
	return bytes.Clone(sample.img)
}

// samplePath writes the sample to a file of the test's (for TSK, ntfs-3g).
func samplePath(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "sample.img")
	if err := os.WriteFile(p, sampleImage(t), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type walked struct {
	e    *imagefs.Entry
	data []byte
	err  error
}

// openWalk opens img, walks it whole and reads every file and stream.
func openWalk(t *testing.T, img []byte) (*ntfs.Volume, map[string]walked, []*imagefs.Problem) {
	t.Helper()
	var probs []*imagefs.Problem
	opts := imagefs.Options{Report: func(p *imagefs.Problem) { probs = append(probs, p) }}
	v, err := ntfs.Open(bytes.NewReader(img), int64(len(img)), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	got := map[string]walked{}
	imagefstest.ReadWalk(t, v, &opts, func(p string, e *imagefs.Entry, data []byte, err error) {
		got[p] = walked{e: e, data: data, err: err}
	})
	return v, got, probs
}

// TestSample: the reader's view of the sample equals what was written
// through ntfs-3g — every name, type, size and byte, streams at
// <file>/..namedfork/<stream> under every name of their file, hardlinks as
// one ID, symlinks and reparse points with their targets, holes where the
// sparse and compressed files have them — and nothing else: no deleted
// file, no metadata file.
func TestSample(t *testing.T) {
	v, got, probs := openWalk(t, sampleImage(t))
	for _, p := range probs {
		t.Errorf("problem on an undamaged volume: %v", p)
	}
	want := testimg.NTFSTree(testimg.NTFSSample())
	targets := map[string]string{"link": "docs/sub", "winlink": "docs/sub", "junction": "C:/Users/Public"}
	for p, tgt := range targets {
		want[p] = testimg.Entry{Path: p, Kind: testimg.Symlink, Target: tgt}
	}
	for p, e := range want {
		g, ok := got["/"+p]
		if !ok {
			t.Errorf("%q missing", p)
			continue
		}
		switch e.Kind {
		case testimg.File:
			if g.e.Type != 'f' || g.err != nil || !bytes.Equal(g.data, e.Content()) {
				t.Errorf("%q: type %c, %d bytes (%v), want a file of %d", p, g.e.Type, len(g.data), g.err, len(e.Content()))
			}
		case testimg.Dir:
			if g.e.Type != 'd' {
				t.Errorf("%q: type %c, want d", p, g.e.Type)
			}
		case testimg.Symlink:
			if g.e.Type != 'l' || string(g.e.Target) != e.Target || g.e.Size != int64(len(e.Target)) {
				t.Errorf("%q: type %c target %q, want a symlink to %q", p, g.e.Type, g.e.Target, e.Target)
			}
		}
	}
	for p := range got {
		if p != "/" && want[p[1:]].Path == "" {
			t.Errorf("%q read, not written", p)
		}
	}
	big := got["/big.bin"].e
	for _, p := range []string{"/docs/hard 2", "/hard 3"} {
		if e := got[p].e; e == nil || e.ID != big.ID || e.Nlink != 3 {
			t.Errorf("%q: %+v, want id %d nlink 3 (a hardlink of big.bin)", p, e, big.ID)
		}
	}
	for _, p := range []string{"/big.bin/..namedfork/thumb", "/hard 3/..namedfork/thumb"} {
		if e := got[p].e; e == nil || e.ID&(1<<48-1) != big.ID || e.ID == big.ID || e.ID != imagefs.ForkID(big.ID, int(e.ID>>48)) {
			t.Errorf("%q: %+v, want a fork ID of %d", p, e, big.ID)
		}
	}
	if got["/big.bin/..namedfork/thumb"].e.ID == got["/big.bin/..namedfork/Zone.Identifier"].e.ID {
		t.Errorf("two streams of big.bin with one ID")
	}
	holes := func(p string) (hole, stored int64) {
		for _, r := range got[p].e.Runs {
			if r.Hole {
				hole += r.Length
			} else {
				stored += r.Length
			}
		}
		return
	}
	if h, s := holes("/sparse.img"); h < 3<<20-2*testimg.SparseBlock || s < 2*testimg.SparseBlock {
		t.Errorf("sparse.img: %d bytes of holes, %d stored; want the middle a hole", h, s)
	}
	if h, s := holes("/packed/text.txt"); s == 0 || s > got["/packed/text.txt"].e.Size/4 || h == 0 {
		t.Errorf("packed/text.txt: %d bytes stored, %d holes, for %d: not stored compressed", s, h, got["/packed/text.txt"].e.Size)
	}
	// Records with extension records: the file of 31 names, the two of
	// 400 fragments.
	if n := v.Info().Extended; n < 3 {
		t.Errorf("%d records with extension records, want the 3 built so", n)
	}
	if e := got["/many names/original"].e; e == nil || e.Nlink != 31 {
		t.Errorf("many names/original: %+v, want 31 names", e)
	}
	for _, p := range []string{"/frag/a", "/frag/b"} {
		if n := len(got[p].e.Runs); n < 300 {
			t.Errorf("%q: %d runs, want it fragmented", p, n)
		}
	}
	if e := got["/docs/a long name with spaces.and.dots"].e; e == nil || e.Nlink != 1 {
		t.Errorf("a file with a DOS name: %+v, want one link", e)
	}
	if _, ok := got["/gone.txt"]; ok {
		t.Errorf("the deleted gone.txt is listed")
	}
	// A file not Encoded is its runs' bytes on the volume; a compressed
	// one is Encoded.
	img := sampleImage(t)
	for p, g := range got {
		if g.e.Type != 'f' || g.e.Encoded {
			continue
		}
		raw, err := io.ReadAll(io.NewSectionReader(imagefs.NewRunReader(bytes.NewReader(img), int64(len(img)), g.e.Runs, g.e.Size), 0, g.e.Size))
		if err != nil || !bytes.Equal(raw, g.data) {
			t.Errorf("%q: its runs on the volume hold other bytes than its content (%v)", p, err)
		}
	}
	if r := got["/resident.bin"].e; !r.Encoded || len(r.Runs) != 1 || r.Runs[0].Offset%1024+600 < 512 {
		t.Errorf("resident.bin: %+v, want one run inside its MFT record, across a stride end, Encoded", r)
	}
	for _, p := range []string{"/packed/text.txt", "/packed/random.bin", "/packed/sparse"} {
		if !got[p].e.Encoded {
			t.Errorf("%q: compressed, not Encoded", p)
		}
	}
}

// otherReparse are the sample's Windows reparse points, whose targets
// ntfs-3g shows its own way (a junction mapped into its mount, a Windows
// symlink as "unsupported reparse tag 0xa000000c" without its plugin):
// TestSample checks their targets against what was written.
var otherReparse = map[string]bool{"/junction": true, "/winlink": true}

// TestNTFS3G: the reader's view equals ntfs-3g's own of the same image,
// mounted read-only with streams as user.* xattrs: the same paths, types,
// sizes, bytes, mtimes (to the 100 ns), symlink targets (but
// otherReparse's) and streams.
func TestNTFS3G(t *testing.T) {
	img := samplePath(t)
	_, got, _ := openWalk(t, sampleImage(t))
	mnt := testimg.MountNTFS(t, img)
	compareNTFS3G(t, mnt, got, func(rel, p string, fi fs.FileInfo, g walked) error {
		if !fi.ModTime().Equal(g.e.Mtime) {
			t.Errorf("%q: ntfs-3g: mtime %v; reader: %v", rel, fi.ModTime(), g.e.Mtime)
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			tgt, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if g.e.Type != 'l' || (!otherReparse[rel] && string(g.e.Target) != tgt) {
				t.Errorf("%q: ntfs-3g: a symlink to %q; reader: %c %q", rel, tgt, g.e.Type, g.e.Target)
			}
		case fi.IsDir():
			if g.e.Type != 'd' {
				t.Errorf("%q: ntfs-3g: a directory; reader: %c", rel, g.e.Type)
			}
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if g.e.Type != 'f' || g.e.Size != fi.Size() || !bytes.Equal(g.data, b) {
				t.Errorf("%q: ntfs-3g: %d bytes; reader: %c of %d, %d read", rel, len(b), g.e.Type, g.e.Size, len(g.data))
			}
		}
		return nil
	})
}

// compareNTFS3G walks ntfs-3g's mount of a volume (streams as user.*
// xattrs) against the reader's walk got: every path ntfs-3g lists is
// passed to check with its Lstat and the reader's entry, every stream of a
// non-symlink is compared byte for byte with the reader's fork, and the
// two must list the same paths.
func compareNTFS3G(t *testing.T, mnt string, got map[string]walked, check func(rel, p string, fi fs.FileInfo, g walked) error) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, mnt), "/")
		seen[rel] = true
		g, ok := got[rel]
		if !ok {
			t.Errorf("%q: ntfs-3g lists it, the reader does not", rel)
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if err := check(rel, p, fi, g); err != nil || fi.Mode()&fs.ModeSymlink != 0 {
			return err
		}
		for name, val := range userXattrs(t, p) {
			fp := strings.TrimSuffix(rel, "/") + "/" + imagefs.ForkDir + "/" + name
			seen[fp] = true
			if f, ok := got[fp]; !ok || !bytes.Equal(f.data, val) {
				t.Errorf("%q: ntfs-3g: stream of %d bytes; reader: %d", fp, len(val), len(f.data))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range got {
		if !seen[p] {
			t.Errorf("%q: the reader lists it, ntfs-3g does not", p)
		}
	}
}

// userXattrs are a path's user.* extended attributes: its streams, as
// ntfs-3g shows them.
func userXattrs(t *testing.T, p string) map[string][]byte {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	out := map[string][]byte{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		val := make([]byte, 1<<20)
		m, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		out[strings.TrimPrefix(name, "user.")] = val[:m]
	}
	return out
}

// TestTSK: The Sleuth Kit's listing (fls -r -p) of the allocated user
// files equals the reader's — the same paths, inode numbers (the MFT record
// is the ID) and directory/file types — and icat gives every file's and
// stream's bytes as the reader reads them (a stream by its attribute,
// <inode>-128-<id>).
func TestTSK(t *testing.T) {
	for _, tool := range []string{"fls", "icat"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.SkipOrFail(t, tool+" is not installed (scripts/deps.sh installs sleuthkit)")
		}
	}
	img := samplePath(t)
	_, got, _ := openWalk(t, sampleImage(t))
	out, err := exec.Command("fls", "-r", "-p", "-u", img).Output()
	if err != nil {
		t.Fatalf("fls: %v", err)
	}
	line := regexp.MustCompile(`^([-a-zV])/([-a-zV]) (\d+)(?:-(\d+)-(\d+))?:\t(.*)$`)
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("fls line %q", l)
		}
		name := m[6]
		if strings.HasPrefix(name, "$") {
			continue // metadata files and $Extend, left out by the reader
		}
		inode, _ := strconv.ParseUint(m[3], 10, 64)
		p := "/" + name
		if i := strings.LastIndexByte(name, ':'); i >= 0 {
			// A directory's stream is listed as "dir/.:stream".
			p = "/" + strings.TrimSuffix(name[:i], "/.") + "/" + imagefs.ForkDir + "/" + name[i+1:]
		}
		seen[p] = true
		g, ok := got[p]
		if !ok {
			t.Errorf("fls lists %q (%s), the reader does not", p, l)
			continue
		}
		if g.e.ID&(1<<48-1) != inode {
			t.Errorf("%q: fls inode %d, reader ID %d", p, inode, g.e.ID)
		}
		if m[2] == "d" && g.e.Type != 'd' && g.e.Type != 'l' {
			t.Errorf("%q: fls d, reader %c", p, g.e.Type)
		}
		if g.e.Type != 'f' || m[4] != "128" {
			continue // a directory's index ($I30) is not content
		}
		b, err := exec.Command("icat", img, m[3]+"-"+m[4]+"-"+m[5]).Output()
		if err != nil {
			t.Errorf("icat %s: %v", m[3], err)
			continue
		}
		if !bytes.Equal(b, g.data) {
			t.Errorf("%q: icat gives %d bytes, the reader %d, not the same", p, len(b), len(g.data))
		}
	}
	for p, g := range got {
		if p != "/" && !seen[p] && g.e.Type != 'l' {
			t.Errorf("%q: the reader lists it, fls does not", p)
		}
	}
}

// TestOpenErrors: a volume that is not NTFS is a FormatError naming the
// field, wrapping ErrNotNTFS and imagefs.ErrCorrupt.
func TestOpenErrors(t *testing.T) {
	img := sampleImage(t)
	for name, mutate := range map[string]func(b []byte){
		"oem":     func(b []byte) { copy(b[3:], "MSDOS5.0") },
		"sector":  func(b []byte) { b[0x0B], b[0x0C] = 0x00, 0x03 },
		"cluster": func(b []byte) { b[0x0D] = 3 },
		"mft":     func(b []byte) { copy(b[0x30:], []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}) },
		"record":  func(b []byte) { b[0x40] = 0 },
	} {
		b := bytes.Clone(img[:64<<10])
		mutate(b)
		_, err := ntfs.Open(bytes.NewReader(b), int64(len(b)), imagefs.Options{})
		var fe *ntfs.FormatError
		if !errors.As(err, &fe) || !errors.Is(err, ntfs.ErrNotNTFS) || !errors.Is(err, imagefs.ErrCorrupt) {
			t.Errorf("%s: %v, want a FormatError", name, err)
		}
	}
}

// TestDriver: imagefs.Open finds the reader by probe's type name.
func TestDriver(t *testing.T) {
	img := sampleImage(t)
	fsys, err := imagefs.Open("ntfs", bytes.NewReader(img), int64(len(img)), imagefs.Options{})
	if err != nil || fsys.Type() != "ntfs" {
		t.Fatalf("imagefs.Open: %v", err)
	}
}
