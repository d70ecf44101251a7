package testimg

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/HRDAG/ntt/internal/testenv"
	"golang.org/x/sys/unix"
)

// NTFSTools are the commands BuildNTFSImage and MountNTFS run (Debian
// package ntfs-3g: mkntfs and the FUSE driver).
var NTFSTools = []string{"mkntfs", "ntfs-3g"}

// RequireNTFSTools fails the test under CI, or skips it, if mkntfs,
// ntfs-3g (scripts/deps.sh installs both), /dev/fuse or root is missing.
func RequireNTFSTools(t testing.TB) {
	t.Helper()
	for _, name := range NTFSTools {
		if _, err := exec.LookPath(name); err != nil {
			if _, err := exec.LookPath("/usr/sbin/" + name); err != nil {
				testenv.SkipOrFail(t, name+" is not installed (scripts/deps.sh installs ntfs-3g)")
			}
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.SkipOrFail(t, "no /dev/fuse: ntfs-3g cannot mount")
	}
	testenv.RequireRoot(t)
}

// NTFSStep is one step of building an NTFS volume through ntfs-3g, in a
// path relative to the root with '/' between components:
//   - an Entry: a File (Sparse: its first and last SparseBlock bytes
//     written, the size set by truncate between, which ntfs-3g keeps as a
//     sparse run), a Dir, a Symlink (ntfs-3g writes an Interix symlink), or
//     a Hardlink to Target;
//   - with Stream, the alternate data stream Stream of the file at Path,
//     holding Entry.Content() (written as the xattr user.<Stream>, which
//     ntfs-3g's streams_interface=xattr maps to a named $DATA stream);
//   - with Compress, the directory at Path marked compressed
//     (FILE_ATTRIBUTE_COMPRESSED in system.ntfs_attrib_be): ntfs-3g writes
//     the files created in it later LZNT1-compressed;
//   - with Reparse, the file or directory at Path (which must exist) given
//     that reparse point (system.ntfs_reparse_data; see SymlinkReparse and
//     JunctionReparse);
//   - with DOSName, the file at Path given that DOS 8.3 name
//     (system.ntfs_dos_name: its own name becomes a Win32 one);
//   - with Append, Entry.Content() appended to the file at Path (steps
//     appending to two files in turn fragment both);
//   - with Delete, the file at Path removed (its record stays, not in use).
type NTFSStep struct {
	Entry
	Stream   string
	Compress bool
	Reparse  []byte
	DOSName  string
	Append   bool
	Delete   bool
}

// NTFSSpec describes an NTFS volume made by mkntfs -Q and written through
// ntfs-3g. ntfs-3g stamps files with the time of writing: Mtime is not kept.
type NTFSSpec struct {
	Size        int64 // bytes; 0 means 16 MiB
	ClusterSize int   // bytes (mkntfs -c); 0 lets mkntfs choose (4096)
	Label       string
	Steps       []NTFSStep
}

// BuildNTFS builds spec's volume in the test's temporary directory and
// returns its path.
func BuildNTFS(t testing.TB, spec NTFSSpec) string {
	t.Helper()
	RequireNTFSTools(t)
	p := filepath.Join(t.TempDir(), "ntfs.img")
	if err := BuildNTFSImage(p, spec); err != nil {
		t.Fatal(err)
	}
	return p
}

// BuildNTFSImage makes the volume of spec at path (replacing it): mkntfs
// -F -Q on the file, then every step through an ntfs-3g mount in a
// temporary directory, unmounted (and ntfs-3g waited for, so every write
// is on the image) before it returns.
func BuildNTFSImage(path string, spec NTFSSpec) (err error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("testimg: NTFS image %s: %s", path, fmt.Sprintf(format, args...))
	}
	size := spec.Size
	if size == 0 {
		size = 16 << 20
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
		label = "NTT"
	}
	args := []string{"-F", "-Q", "-q", "-L", label}
	if spec.ClusterSize > 0 {
		args = append(args, "-c", fmt.Sprint(spec.ClusterSize))
	}
	if out, err := exec.Command(ntfsTool("mkntfs"), append(args, path)...).CombinedOutput(); err != nil {
		return fail("mkntfs: %v: %s", err, out)
	}
	dir, err := os.MkdirTemp("", "ntt-ntfs-mnt")
	if err != nil {
		return fail("%v", err)
	}
	defer os.Remove(dir)
	umount, err := mountNTFS(path, dir, false)
	if err != nil {
		return fail("%v", err)
	}
	defer func() {
		if uerr := umount(); err == nil && uerr != nil {
			err = fail("%v", uerr)
		}
	}()
	for i, s := range spec.Steps {
		if err := ntfsStep(dir, s); err != nil {
			return fail("step %d (%q): %v", i, s.Path, err)
		}
	}
	return nil
}

func ntfsTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return "/usr/sbin/" + name
}

// mountNTFS mounts image at dir with ntfs-3g in the foreground (no_detach,
// so that unmounting can wait for it to have written everything) and
// returns how to unmount it.
func mountNTFS(image, dir string, ro bool) (func() error, error) {
	o := "no_detach,streams_interface=xattr"
	if ro {
		o += ",ro"
	}
	cmd := exec.Command(ntfsTool("ntfs-3g"), "-o", o, image, dir)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for deadline := time.Now().Add(20 * time.Second); ; {
		if ok, _ := Mounted(dir); ok {
			break
		}
		select {
		case err := <-done:
			return nil, fmt.Errorf("ntfs-3g %s: exited before mounting: %v: %s", image, err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			return nil, fmt.Errorf("ntfs-3g %s: not mounted after 20 s: %s", image, out.String())
		}
	}
	return func() error {
		if err := unmount(dir); err != nil {
			cmd.Process.Kill()
			<-done
			return err
		}
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("ntfs-3g %s: %v: %s", image, err, out.String())
			}
			return nil
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("ntfs-3g %s: still running 30 s after unmounting", image)
		}
	}, nil
}

// MountNTFS mounts image read-only with ntfs-3g (streams as user.* xattrs)
// until the test ends, and returns the mount point: ntfs-3g's own view,
// the reference the reader's is compared with.
func MountNTFS(t testing.TB, image string) string {
	t.Helper()
	RequireNTFSTools(t)
	dir := t.TempDir()
	umount, err := mountNTFS(image, dir, true)
	if err != nil {
		t.Fatalf("testimg: %v", err)
	}
	t.Cleanup(func() {
		if err := umount(); err != nil {
			t.Errorf("testimg: %v", err)
		}
	})
	return dir
}

func ntfsStep(root string, s NTFSStep) error {
	p := filepath.Join(root, filepath.FromSlash(s.Path))
	switch {
	case s.Delete:
		return os.Remove(p)
	case s.Compress:
		// FILE_ATTRIBUTE_COMPRESSED (0x800) added to what it has.
		b := make([]byte, 4)
		if _, err := unix.Getxattr(p, "system.ntfs_attrib_be", b); err != nil {
			return err
		}
		binary.BigEndian.PutUint32(b, binary.BigEndian.Uint32(b)|0x800)
		return unix.Setxattr(p, "system.ntfs_attrib_be", b, 0)
	case s.Reparse != nil:
		return unix.Setxattr(p, "system.ntfs_reparse_data", s.Reparse, 0)
	case s.DOSName != "":
		return unix.Setxattr(p, "system.ntfs_dos_name", []byte(s.DOSName), 0)
	case s.Stream != "":
		return unix.Setxattr(p, "user."+s.Stream, s.Content(), 0)
	case s.Append:
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		_, err = f.Write(s.Content())
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	switch s.Kind {
	case Dir:
		return os.Mkdir(p, 0o755)
	case Symlink:
		return os.Symlink(s.Target, p)
	case Hardlink:
		return os.Link(filepath.Join(root, filepath.FromSlash(s.Target)), p)
	case File:
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		c := s.Content()
		if s.Sparse && s.Size > 2*SparseBlock {
			_, err = f.Write(c[:SparseBlock])
			if err == nil {
				err = f.Truncate(s.Size - SparseBlock)
			}
			if err == nil {
				_, err = f.WriteAt(c[s.Size-SparseBlock:], s.Size-SparseBlock)
			}
		} else {
			_, err = f.Write(c)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return fmt.Errorf("kind %v: NTFS is built here with files, directories, symlinks and hardlinks", s.Kind)
}

// SymlinkReparse is the reparse data of a Windows symlink (tag
// IO_REPARSE_TAG_SYMLINK) to target, relative (flag 1) if rel, with target
// as both its substitute and its print name.
func SymlinkReparse(target string, rel bool) []byte {
	flags := uint32(0)
	if rel {
		flags = 1
	}
	return reparse(0xA000000C, target, target, &flags)
}

// JunctionReparse is the reparse data of a junction (mount point) to
// target, a Windows path such as `C:\Data`: substitute name `\??\` +
// target, print name target.
func JunctionReparse(target string) []byte {
	return reparse(0xA0000003, `\??\`+target, target, nil)
}

func reparse(tag uint32, sub, print string, flags *uint32) []byte {
	enc := func(s string) []byte {
		u := utf16.Encode([]rune(s))
		b := make([]byte, 2*len(u))
		for i, c := range u {
			binary.LittleEndian.PutUint16(b[2*i:], c)
		}
		return b
	}
	sb, pb := enc(sub), enc(print)
	var body []byte
	le := binary.LittleEndian
	body = le.AppendUint16(body, 0)
	body = le.AppendUint16(body, uint16(len(sb)))
	body = le.AppendUint16(body, uint16(len(sb)+2))
	body = le.AppendUint16(body, uint16(len(pb)))
	if flags != nil {
		body = le.AppendUint32(body, *flags)
	}
	body = append(append(append(append(body, sb...), 0, 0), pb...), 0, 0)
	b := le.AppendUint32(nil, tag)
	b = le.AppendUint16(b, uint16(len(body)))
	b = le.AppendUint16(b, 0)
	return append(b, body...)
}

// NTFSTree returns what spec leaves on the volume by path: files,
// directories, symlinks and hardlinks as their Entry (a hardlink as the
// Entry it links to, under its own Path), and each stream as a File at
// <file>/..namedfork/<stream>. Reparse points are not in it (their reading
// depends on the reader); neither are deleted files.
func NTFSTree(spec NTFSSpec) map[string]Entry {
	out := map[string]Entry{}
	names := map[string][]string{} // a file's path → all its names
	for _, s := range spec.Steps {
		switch {
		case s.Delete:
			delete(out, s.Path)
		case s.Compress || s.Reparse != nil || s.DOSName != "":
		case s.Append:
			e := out[s.Path]
			e.Data = append(e.Content(), s.Content()...)
			out[s.Path] = e
		case s.Stream != "":
			for _, p := range append([]string{s.Path}, names[s.Path]...) {
				e := s.Entry
				e.Path = p + "/..namedfork/" + s.Stream
				e.Kind = File
				out[e.Path] = e
			}
		case s.Kind == Hardlink:
			e := out[s.Target]
			e.Path = s.Path
			out[s.Path] = e
			names[s.Target] = append(names[s.Target], s.Path)
		default:
			out[s.Path] = s.Entry
		}
	}
	return out
}

// NTFSSample is a small volume with every kind the NTFS reader reads:
// nested directories, names in several scripts (one with a DOS 8.3 name
// beside its long one), an empty file, two
// resident files (one across a 512-byte stride of its record) and a
// multi-cluster file, hardlinks in two directories, an Interix
// symlink, a Windows symlink and a junction (reparse points), two
// alternate data streams on a hardlinked file and one on a directory, a
// sparse file, compressed files (compressible, incompressible, and sparse
// inside) in a compressed directory, a file of 31 names and two files of
// 400 fragments (records with extension records), and a deleted file.
func NTFSSample() NTFSSpec {
	s := NTFSSpec{Label: "Sample"}
	add := func(st NTFSStep) {
		if st.Seed == 0 {
			st.Seed = uint64(len(s.Steps) + 1)
		}
		s.Steps = append(s.Steps, st)
	}
	file := func(p string, size int64) { add(NTFSStep{Entry: Entry{Path: p, Kind: File, Size: size}}) }
	file("small.txt", 100)
	file("resident.bin", 600) // in its MFT record, across a stride end
	file("empty", 0)
	file("big.bin", 300_000)
	add(NTFSStep{Entry: Entry{Path: "docs", Kind: Dir}})
	add(NTFSStep{Entry: Entry{Path: "docs/sub", Kind: Dir}})
	file("docs/sub/Größe ÄÖÜ.txt", 5000)
	file("docs/日本語 файл.txt", 1234)
	file("docs/a long name with spaces.and.dots", 77)
	add(NTFSStep{Entry: Entry{Path: "docs/a long name with spaces.and.dots"}, DOSName: "ALONGN~1.AND"})
	add(NTFSStep{Entry: Entry{Path: "docs/hard 2", Kind: Hardlink, Target: "big.bin"}})
	add(NTFSStep{Entry: Entry{Path: "hard 3", Kind: Hardlink, Target: "big.bin"}})
	add(NTFSStep{Entry: Entry{Path: "big.bin", Kind: File, Size: 40}, Stream: "Zone.Identifier"})
	add(NTFSStep{Entry: Entry{Path: "big.bin", Kind: File, Size: 9000}, Stream: "thumb"})
	add(NTFSStep{Entry: Entry{Path: "docs", Kind: File, Size: 33}, Stream: "dirstream"})
	add(NTFSStep{Entry: Entry{Path: "link", Kind: Symlink, Target: "docs/sub"}})
	file("sparse.img", 3<<20)
	s.Steps[len(s.Steps)-1].Sparse = true
	add(NTFSStep{Entry: Entry{Path: "packed", Kind: Dir}})
	add(NTFSStep{Entry: Entry{Path: "packed"}, Compress: true})
	add(NTFSStep{Entry: Entry{Path: "packed/text.txt", Kind: File, Data: []byte(strings.Repeat("All work and no play makes Jack a dull boy.\n", 5000))}})
	file("packed/random.bin", 100_000)
	file("packed/sparse", 1<<20)
	s.Steps[len(s.Steps)-1].Sparse = true
	// Records with extension records: a file of 30 names too long for one
	// record's $FILE_NAMEs, and two files written a cluster at a time in
	// turn, whose runlists (3 bytes a run) outgrow their records.
	add(NTFSStep{Entry: Entry{Path: "many names", Kind: Dir}})
	file("many names/original", 10)
	for i := range 30 {
		add(NTFSStep{Entry: Entry{Path: fmt.Sprintf("many names/link %02d %s", i, strings.Repeat("x", 80)), Kind: Hardlink, Target: "many names/original"}})
	}
	add(NTFSStep{Entry: Entry{Path: "frag", Kind: Dir}})
	file("frag/a", 4096)
	file("frag/b", 4096)
	for i := range 400 {
		for j, f := range []string{"frag/a", "frag/b"} {
			add(NTFSStep{Entry: Entry{Path: f, Kind: File, Size: 4096, Seed: uint64(1000 + 2*i + j)}, Append: true})
		}
	}
	file("gone.txt", 5000)
	add(NTFSStep{Entry: Entry{Path: "gone.txt"}, Delete: true})
	file("winlink", 0)
	add(NTFSStep{Entry: Entry{Path: "winlink"}, Reparse: SymlinkReparse(`docs\sub`, true)})
	add(NTFSStep{Entry: Entry{Path: "junction", Kind: Dir}})
	add(NTFSStep{Entry: Entry{Path: "junction"}, Reparse: JunctionReparse(`C:\Users\Public`)})
	return s
}
