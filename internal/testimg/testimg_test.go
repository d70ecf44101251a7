package testimg

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestEveryKindRoundTrip builds the every-kind tree on each filesystem
// type, mounts it read-only through a loop device and checks every entry
// with lstat/readlink byte for byte.
func TestEveryKindRoundTrip(t *testing.T) {
	RequireRoot(t)
	for _, fstype := range []string{"ext4", "ext3", "ext2"} {
		t.Run(fstype, func(t *testing.T) {
			spec := EveryKind()
			spec.FSType = fstype
			if fstype == "ext2" {
				// The ext2 driver reads 32-bit seconds: keep the times it can show.
				var es []Entry
				for _, e := range spec.Entries {
					if u := e.Mtime.Unix(); e.Mtime.IsZero() || (e.Mtime.Nanosecond() == 0 && u >= -1<<31 && u < 1<<31) {
						es = append(es, e)
					}
				}
				spec.Entries = append(es, Entry{Path: "times/ext2-negative", Kind: File, Mtime: time.Unix(-86400*365*30, 0)})
			}
			img := Build(t, spec)
			dir := MountImage(t, img, 0, 0, fstype)
			if err := Check(dir, spec); err != nil {
				t.Fatal(err)
			}
			// Spot checks independent of Check, on the raw syscalls.
			var st unix.Stat_t
			mustLstat(t, filepath.Join(dir, "names", "field\x1csep"), &st)
			if st.Mode&unix.S_IFMT != unix.S_IFREG {
				t.Errorf("names/field\\x1csep: mode %#o, want a regular file", st.Mode)
			}
			var a, b, c unix.Stat_t
			mustLstat(t, filepath.Join(dir, "hard-a"), &a)
			mustLstat(t, filepath.Join(dir, "hard-b"), &b)
			mustLstat(t, filepath.Join(dir, "dir", "hard-c"), &c)
			if a.Ino != b.Ino || a.Ino != c.Ino || a.Nlink != 3 {
				t.Errorf("hardlinks: inodes %d %d %d nlink %d, want one inode with 3 links", a.Ino, b.Ino, c.Ino, a.Nlink)
			}
			mustLstat(t, filepath.Join(dir, "blockdev"), &st)
			if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != 259 || unix.Minor(st.Rdev) != 1048575 {
				t.Errorf("blockdev: mode %#o rdev %d:%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
			}
			buf := make([]byte, 64)
			n, err := unix.Readlink(filepath.Join(dir, "link-hostile"), buf)
			if err != nil || string(buf[:n]) != "new\nline/\x1c/\xff" {
				t.Errorf("link-hostile: %q, %v", buf[:n], err)
			}
			if fstype != "ext2" {
				mustLstat(t, filepath.Join(dir, "times", "file4"), &st)
				if st.Mtim.Sec != 4102444800 || st.Mtim.Nsec != 123456789 {
					t.Errorf("times/file4: mtime %d.%09d, want 4102444800.123456789", st.Mtim.Sec, st.Mtim.Nsec)
				}
			}
			mustLstat(t, filepath.Join(dir, "times", "file0"), &st)
			if st.Mtim.Sec != -86400*365*30 {
				t.Errorf("times/file0: mtime %d, want %d", st.Mtim.Sec, -86400*365*30)
			}
		})
	}
}

func mustLstat(t *testing.T, path string, st *unix.Stat_t) {
	t.Helper()
	if err := unix.Lstat(path, st); err != nil {
		t.Fatalf("lstat %q: %v", path, err)
	}
}

// TestDeepTreeBeyondPathMax builds a path longer than PATH_MAX; it can only
// be reached relative to open directories, which is how Build and Check work.
func TestDeepTreeBeyondPathMax(t *testing.T) {
	RequireRoot(t)
	p := DeepPath(20, 250)
	if len(p) <= 4096 {
		t.Fatalf("DeepPath is %d bytes, want more than PATH_MAX", len(p))
	}
	spec := Spec{BlockSize: 1024, Entries: []Entry{
		{Path: p, Kind: File, Data: []byte("at the bottom\n"), Mtime: time.Unix(42, 0)},
		{Path: p + "-link", Kind: Symlink, Target: "leaf"},
	}}
	dir := MountImage(t, Build(t, spec), 0, 0, "ext4")
	if err := Check(dir, spec); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, p), &st); !errors.Is(err, unix.ENAMETOOLONG) {
		t.Errorf("lstat by full path: %v, want ENAMETOOLONG (else the test does not go past PATH_MAX)", err)
	}
}

// TestBuildIsDeterministic: the same spec gives the same bytes; a
// different seed gives different bytes.
func TestBuildIsDeterministic(t *testing.T) {
	RequireRoot(t)
	spec := EveryKind()
	a, b := fileHash(t, Build(t, spec)), fileHash(t, Build(t, spec))
	if a != b {
		t.Fatalf("two builds of one spec differ: %x vs %x", a, b)
	}
	spec.Entries[3].Seed++
	if c := fileHash(t, Build(t, spec)); c == a {
		t.Fatal("changing a file's seed did not change the image")
	}
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// TestCheckFindsDifferences: Check is only worth something if it fails.
func TestCheckFindsDifferences(t *testing.T) {
	RequireRoot(t)
	spec := Spec{Entries: []Entry{
		{Path: "a", Kind: File, Data: []byte("alpha")},
		{Path: "b", Kind: File, Size: 10000, Seed: 1},
		{Path: "l", Kind: Symlink, Target: "a"},
		{Path: "d", Kind: Dir, Mode: 0o700},
		{Path: "c", Kind: CharDev, Major: 4, Minor: 5},
		{Path: "h", Kind: Hardlink, Target: "a"},
		{Path: "gone", Kind: File},
		{Path: "t", Kind: File, Mtime: time.Unix(4102444800, 5)},
	}}
	dir := MountImage(t, Build(t, spec), 0, 0, "ext4")
	if err := Check(dir, spec); err != nil {
		t.Fatalf("unchanged spec: %v", err)
	}
	wrong := Spec{Entries: []Entry{
		{Path: "a", Kind: File, Data: []byte("alphA")},
		{Path: "b", Kind: File, Size: 10000, Seed: 2},
		{Path: "l", Kind: Symlink, Target: "b"},
		{Path: "d", Kind: Dir, Mode: 0o755},
		{Path: "c", Kind: CharDev, Major: 4, Minor: 6},
		{Path: "h", Kind: File, Data: []byte("alpha")},
		{Path: "t", Kind: File, Mtime: time.Unix(4102444800, 6)},
		{Path: "missing", Kind: File},
	}}
	err := Check(dir, wrong)
	if err == nil {
		t.Fatal("Check found no difference")
	}
	for _, want := range []string{
		`"a": content differs at byte 4`,
		`"b": content differs at byte 0`,
		`"l": symlink target "a", want "b"`,
		`"d": mode 040700, want 040755`,
		`"c": device 4:5, want 4:6`,
		`"a": nlink 2, want 1`,
		`"t": mtime 4102444800.000000005, want 4102444800.000000006`,
		`"missing": lstat`,
		`"gone": present but not in the spec`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check error lacks %q:\n%v", want, err)
		}
	}
}

// TestSparseFileKeepsHoles: a Sparse entry is a real sparse file in the image.
func TestSparseFileKeepsHoles(t *testing.T) {
	RequireRoot(t)
	spec := Spec{Entries: []Entry{{Path: "s", Kind: File, Size: 8 << 20, Seed: 3, Sparse: true}}}
	dir := MountImage(t, Build(t, spec), 0, 0, "ext4")
	if err := Check(dir, spec); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	mustLstat(t, filepath.Join(dir, "s"), &st)
	if used := st.Blocks * 512; used > 64<<10 {
		t.Errorf("sparse 8 MiB file uses %d bytes on disk, want at most 64 KiB", used)
	}
}

func TestContent(t *testing.T) {
	full := make([]byte, 100)
	ContentAt(5, full, 0)
	part := make([]byte, 37)
	ContentAt(5, part, 13)
	if !bytes.Equal(part, full[13:50]) {
		t.Error("ContentAt is not position-addressable")
	}
	other := make([]byte, 100)
	ContentAt(6, other, 0)
	if bytes.Equal(full, other) {
		t.Error("seeds 5 and 6 give the same content")
	}
	e := Entry{Kind: File, Size: 3 * SparseBlock, Seed: 5, Sparse: true}
	c := e.Content()
	if int64(len(c)) != e.Size || !bytes.Equal(c[:100], full) {
		t.Fatalf("sparse content: %d bytes", len(c))
	}
	if !bytes.Equal(c[SparseBlock:2*SparseBlock], make([]byte, SparseBlock)) {
		t.Error("sparse middle is not zeros")
	}
	if bytes.Equal(c[2*SparseBlock:], make([]byte, SparseBlock)) {
		t.Error("sparse last block is zeros")
	}
	if got := (Entry{Kind: File}).Content(); len(got) != 0 {
		t.Errorf("empty file content %q", got)
	}
}

func TestSpecValidation(t *testing.T) {
	long := strings.Repeat("x", 256)
	for name, spec := range map[string]Spec{
		"empty component":    {Entries: []Entry{{Path: "a//b", Kind: File}}},
		"leading slash":      {Entries: []Entry{{Path: "/a", Kind: File}}},
		"dot":                {Entries: []Entry{{Path: "a/./b", Kind: File}}},
		"dotdot":             {Entries: []Entry{{Path: "../x", Kind: File}}},
		"NUL":                {Entries: []Entry{{Path: "a\x00b", Kind: File}}},
		"256-byte name":      {Entries: []Entry{{Path: long, Kind: File}}},
		"duplicate":          {Entries: []Entry{{Path: "a", Kind: File}, {Path: "a", Kind: Dir}}},
		"root not a dir":     {Entries: []Entry{{Path: "", Kind: File}}},
		"hardlink forward":   {Entries: []Entry{{Path: "h", Kind: Hardlink, Target: "a"}, {Path: "a", Kind: File}}},
		"hardlink to dir":    {Entries: []Entry{{Path: "d", Kind: Dir}, {Path: "h", Kind: Hardlink, Target: "d"}}},
		"hardlink symlink":   {Entries: []Entry{{Path: "l", Kind: Symlink, Target: "x"}, {Path: "h", Kind: Hardlink, Target: "l"}}},
		"empty target":       {Entries: []Entry{{Path: "l", Kind: Symlink}}},
		"fs type":            {FSType: "vfat"},
		"mtime before 1901":  {Entries: []Entry{{Path: "a", Kind: File, Mtime: time.Unix(-1<<31-1, 0)}}},
		"mtime after 2446":   {Entries: []Entry{{Path: "a", Kind: File, Mtime: time.Unix(maxWideTime+1, 0)}}},
		"ext2 after 2038":    {FSType: "ext2", Entries: []Entry{{Path: "a", Kind: File, Mtime: time.Unix(1<<31, 0)}}},
		"ext2 nanoseconds":   {FSType: "ext2", Entries: []Entry{{Path: "a", Kind: File, Mtime: time.Unix(5, 1)}}},
		"small inode future": {InodeSize: 128, Entries: []Entry{{Path: "a", Kind: File, Mtime: time.Unix(1<<31, 0)}}},
	} {
		err := BuildImage(filepath.Join(t.TempDir(), "x.img"), spec)
		if err == nil {
			t.Errorf("%s: BuildImage accepted an invalid spec", name)
		}
	}
	// A parent created before its own entry is fine for directories.
	if _, err := (Spec{Entries: []Entry{{Path: "a/b", Kind: File}, {Path: "a", Kind: Dir, Mode: 0o700}}}).validate(); err != nil {
		t.Errorf("implied parent then explicit dir: %v", err)
	}
}

func TestImpliedParentThenExplicit(t *testing.T) {
	RequireRoot(t)
	spec := Spec{Entries: []Entry{
		{Path: "a/b/c", Kind: File, Data: []byte("c")},
		{Path: "a", Kind: Dir, Mode: 0o711, Mtime: time.Unix(99, 0)},
	}}
	dir := MountImage(t, Build(t, spec), 0, 0, "ext4")
	if err := Check(dir, spec); err != nil {
		t.Fatal(err)
	}
	bad := Spec{Entries: []Entry{{Path: "a/b", Kind: File}, {Path: "a", Kind: File}}}
	if err := BuildImage(filepath.Join(t.TempDir(), "x.img"), bad); err == nil {
		t.Error("a file named like an earlier entry's parent was accepted")
	}
}

func TestGUID(t *testing.T) {
	const s = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	g := MustGUID(s)
	if g.String() != s {
		t.Errorf("round trip %q -> %q", s, g.String())
	}
	// On-disk order: first three fields little-endian.
	if want := []byte{0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79}; !bytes.Equal(g[:10], want) {
		t.Errorf("on-disk bytes % x", g[:10])
	}
	for _, bad := range []string{"", "0FC63DAF84834772-8E79-3D69D8477DE4x", "zFC63DAF-8483-4772-8E79-3D69D8477DE4"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) accepted", bad)
		}
	}
}

// readAll reads the whole file.
func readAll(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var le = binary.LittleEndian

// crcOK reports whether a GPT header's CRC field matches its bytes.
func crcOK(h []byte) bool {
	c := bytes.Clone(h[:92])
	le.PutUint32(c[16:], 0)
	return crc32.ChecksumIEEE(c) == le.Uint32(h[16:])
}

func crc32IEEE(b []byte) uint32 { return crc32.ChecksumIEEE(b) }
