package ntfs_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
)

// semanticsSpec holds what NTFS allows and Windows does not show, or
// shows its own way: names differing only by case in one directory,
// a name of characters illegal on Windows (legal in the POSIX
// namespace ntfs-3g writes), a file with a Win32 name, its DOS alias and
// a POSIX hardlink beside it, a file emptied after it grew non-resident,
// and a directory with a stream.
func semanticsSpec() testimg.NTFSSpec {
	s := testimg.NTFSSpec{Size: 8 << 20, Label: "Sem"}
	add := func(st testimg.NTFSStep) {
		st.Seed = uint64(len(s.Steps) + 1)
		s.Steps = append(s.Steps, st)
	}
	file := func(p string, size int64) {
		add(testimg.NTFSStep{Entry: testimg.Entry{Path: p, Kind: testimg.File, Size: size}})
	}
	file("Case", 10)
	file("case", 20)
	add(testimg.NTFSStep{Entry: testimg.Entry{Path: "CASE", Kind: testimg.Dir}})
	file(`a*b?c"d<e>f|g\h:i `, 30)
	file("nrzero", 5000) // emptied by TestSemantics (ntfs-3g would make it resident)
	file("nrzero2", 5000)
	file("both names.txt", 50)
	add(testimg.NTFSStep{Entry: testimg.Entry{Path: "both names.txt"}, DOSName: "BOTHNA~1.TXT"})
	add(testimg.NTFSStep{Entry: testimg.Entry{Path: "both posix", Kind: testimg.Hardlink, Target: "both names.txt"}})
	// A sparse file five times the volume's size: its hole is one run of
	// more clusters than the volume has.
	file("bigger than the volume", 40<<20)
	s.Steps[len(s.Steps)-1].Sparse = true
	// A Windows symlink whose reparse point is too long for its record
	// (non-resident).
	file("longlink", 0)
	add(testimg.NTFSStep{Entry: testimg.Entry{Path: "longlink"}, Reparse: testimg.SymlinkReparse(longTarget, true)})
	add(testimg.NTFSStep{Entry: testimg.Entry{Path: "adsdir", Kind: testimg.Dir}})
	add(testimg.NTFSStep{Entry: testimg.Entry{Path: "adsdir", Kind: testimg.File, Size: 7}, Stream: "s"})
	return s
}

var longTarget = strings.Repeat(`sub\`, 300) + "end"

// TestSemantics reads semanticsSpec's volume and holds it against
// ntfs-3g's view (paths, types, sizes, bytes, a file's link count,
// streams) and The Sleuth Kit's (fls paths and inodes).
func TestSemantics(t *testing.T) {
	path := testimg.BuildNTFS(t, semanticsSpec())
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// nrzero and nrzero2 become files of 0 bytes whose $DATA is
	// non-resident: nrzero emptied as Windows leaves it (no runs, last VCN
	// -1), nrzero2 with its clusters still allocated.
	_, before, _ := openWalk(t, img)
	for _, p := range []string{"/nrzero", "/nrzero2"} {
		a := attrAt(t, img, recordAt(img, before[p].e.ID), 0x80)
		if img[a+8] != 1 {
			t.Fatalf("%s: its $DATA is resident", p)
		}
		le.PutUint64(img[a+0x30:], 0) // data size
		le.PutUint64(img[a+0x38:], 0) // initialized size
		if p == "/nrzero" {
			le.PutUint64(img[a+0x18:], ^uint64(0)) // last VCN -1
			le.PutUint64(img[a+0x28:], 0)          // allocated size
			img[a+int64(le.Uint16(img[a+0x20:]))] = 0
		}
	}
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	_, got, probs := openWalk(t, img)
	for _, p := range probs {
		t.Errorf("problem on an undamaged volume: %v", p)
	}
	if g := got["/bigger than the volume"]; g.e == nil || g.e.Size != 40<<20 || g.err != nil || !bytes.Equal(g.data, testimg.NTFSTree(semanticsSpec())["bigger than the volume"].Content()) {
		t.Errorf("bigger than the volume: %+v (%v), want the sparse file of 40 MiB", g.e, g.err)
	}
	if g := got["/longlink"]; g.e == nil || g.e.Type != 'l' || string(g.e.Target) != strings.ReplaceAll(longTarget, `\`, "/") {
		t.Errorf("longlink: %+v, want a symlink (its reparse point non-resident)", g.e)
	}
	for _, p := range []string{"/Case", "/case", "/CASE", `/a*b?c"d<e>f|g\h:i `, "/nrzero", "/both names.txt", "/both posix", "/adsdir/..namedfork/s"} {
		if _, ok := got[p]; !ok {
			t.Errorf("%q missing", p)
		}
	}
	if e := got["/both names.txt"].e; e == nil || e.Nlink != 2 || got["/both posix"].e.ID != e.ID {
		t.Errorf("both names.txt: %+v, want 2 links (a Win32 name with its DOS alias, and a POSIX one)", e)
	}
	for _, p := range []string{"/nrzero", "/nrzero2"} {
		if g := got[p]; g.e == nil || g.e.Size != 0 || len(g.data) != 0 || g.err != nil || len(g.e.Runs) != 0 {
			t.Errorf("%s: %+v, want an empty file", p, g.e)
		}
	}

	mnt := testimg.MountNTFS(t, path)
	compareNTFS3G(t, mnt, got, func(rel, p string, fi fs.FileInfo, g walked) error {
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if g.e.Type != 'f' || g.e.Size != fi.Size() || !bytes.Equal(g.data, b) {
				t.Errorf("%q: ntfs-3g: %d bytes; reader: %c of %d", rel, len(b), g.e.Type, g.e.Size)
			}
			// ntfs-3g's count is the record's link count, which counts
			// a DOS alias as a name of its own; the reader's is the
			// names the walk finds the file by.
			alias := uint64(0)
			if strings.HasPrefix(rel, "/both ") {
				alias = 1
			}
			if n := fi.Sys().(*syscall.Stat_t).Nlink; uint64(n) != g.e.Nlink+alias {
				t.Errorf("%q: ntfs-3g: %d links; reader: %d", rel, n, g.e.Nlink)
			}
		} else if fi.IsDir() != (g.e.Type == 'd') {
			t.Errorf("%q: ntfs-3g mode %v; reader %c", rel, fi.Mode(), g.e.Type)
		}
		return nil
	})

	if _, err := exec.LookPath("fls"); err != nil {
		testenv.SkipOrFail(t, "fls is not installed (scripts/deps.sh installs sleuthkit)")
	}
	out, err := exec.Command("fls", "-r", "-p", "-u", path).Output()
	if err != nil {
		t.Fatalf("fls: %v", err)
	}
	line := regexp.MustCompile(`^([-a-zV])/([-a-zV]) (\d+)(?:-(\d+)-(\d+))?:\t(.*)$`)
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil || strings.HasPrefix(m[6], "$") {
			continue
		}
		p := "/" + m[6]
		if _, ok := got[p]; !ok {
			if i := strings.LastIndexByte(m[6], ':'); i >= 0 { // "dir/.:stream" or "file:stream"
				p = "/" + strings.TrimSuffix(m[6][:i], "/.") + "/" + imagefs.ForkDir + "/" + m[6][i+1:]
			}
		}
		g, ok := got[p]
		if !ok {
			t.Errorf("fls lists %q (%s), the reader does not", p, l)
			continue
		}
		if inode, _ := strconv.ParseUint(m[3], 10, 64); g.e.ID&(1<<48-1) != inode {
			t.Errorf("%q: fls inode %d, reader ID %d", p, inode, g.e.ID)
		}
	}
}

// TestCompressedInitialized: a compressed stream's bytes past its
// initialized size read as zeros, as ntfs-3g reads them.
func TestCompressedInitialized(t *testing.T) {
	img := sampleImage(t)
	_, ref, _ := openWalk(t, img)
	const init = 100_000
	e := ref["/packed/text.txt"].e
	if e == nil || e.Size <= init {
		t.Fatalf("packed/text.txt: %+v", e)
	}
	a := attrAt(t, img, recordAt(img, e.ID), 0x80)
	le.PutUint64(img[a+0x38:], init)
	path := filepath.Join(t.TempDir(), "init.img")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	_, got, _ := openWalk(t, img)
	mnt := testimg.MountNTFS(t, path)
	want, err := os.ReadFile(filepath.Join(mnt, "packed", "text.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(want)) != e.Size || !bytes.Equal(want[:init], ref["/packed/text.txt"].data[:init]) || bytes.ContainsFunc(want[init:], func(r rune) bool { return r != 0 }) {
		t.Fatalf("ntfs-3g reads %d bytes, not the first %d and zeros", len(want), init)
	}
	if g := got["/packed/text.txt"]; g.err != nil || !bytes.Equal(g.data, want) {
		t.Errorf("the reader reads %d bytes (%v), not ntfs-3g's: the first %d and zeros", len(g.data), g.err, init)
	}
}
