package imagefs_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/HRDAG/ntt/imagefs"
	hfsreader "github.com/HRDAG/ntt/imagefs/hfs"
	"github.com/HRDAG/ntt/internal/testenv"
	"github.com/HRDAG/ntt/internal/testimg"
	"github.com/HRDAG/ntt/loopdev"
)

// hybridSpec is the tree put on the hybrid discs: names with spaces and
// accents (Rock Ridge on the ISO side, MacRoman on the HFS side), nested
// and deep directories, an empty file, a file of many sectors and two
// files with the same content.
func hybridSpec() testimg.Spec {
	return testimg.Spec{Entries: []testimg.Entry{
		{Path: "README.TXT", Kind: testimg.File, Data: []byte("Testimony archive, a disc for Macs and PCs.\n")},
		{Path: "Interviews", Kind: testimg.Dir},
		{Path: "Interviews/witness one.txt", Kind: testimg.File, Seed: 1, Size: 40000},
		{Path: "Interviews/witness two.txt", Kind: testimg.File, Seed: 2, Size: 52000},
		{Path: "Interviews/copy of one.txt", Kind: testimg.File, Seed: 1, Size: 40000},
		{Path: "Scans", Kind: testimg.Dir},
		{Path: "Scans/page-001.tif", Kind: testimg.File, Seed: 4, Size: 300000},
		{Path: "Scans/empty.tif", Kind: testimg.File, Data: []byte{}},
		{Path: "Notes", Kind: testimg.Dir},
		{Path: "Notes/Ärger über Öl.txt", Kind: testimg.File, Data: []byte("Umlauts in the name.\n")},
		{Path: "deep/1/2/3/4/5/6/7/8/9/bottom.txt", Kind: testimg.File, Data: []byte("nine levels down\n")},
		// A Mac file: its data fork, and its resource fork with its type
		// and creator in the AppleDouble file beside it, which
		// genisoimage --osx-double takes as the HFS side's forks.
		{Path: "Letter", Kind: testimg.File, Data: []byte("Dear archivist,\n")},
		{Path: "._Letter", Kind: testimg.File, Data: testimg.AppleDouble(letterFork, "TEXT", "ttxt")},
	}}
}

// letterFork is the resource fork of the hybrid discs' "Letter".
var letterFork = func() []byte {
	b := make([]byte, 5000)
	testimg.ContentAt(31, b, 0)
	return b
}()

// sideFile is one file of a hybrid disc's side as the image reader gives it.
type sideFile struct {
	data []byte
	runs []imagefs.Run // image offsets
}

// readSide walks volume v and returns its files by path (relative, no
// leading '/'), its directories, and its files' forks by their catalog
// path (<file>/..namedfork/<name>).
func readSide(t *testing.T, m *imagefs.Medium, v *imagefs.Volume) (files map[string]sideFile, dirs map[string]bool, forks map[string]sideFile) {
	t.Helper()
	files, dirs, forks = map[string]sideFile{}, map[string]bool{}, map[string]sideFile{}
	require.NoError(t, m.Walk(context.Background(), v, func(p []byte, e *imagefs.Entry) error {
		rel := string(bytes.TrimPrefix(p, []byte("/")))
		if rel == "" {
			return nil
		}
		if e.IsDir() {
			dirs[rel] = true
			return nil
		}
		into := files
		if strings.Contains(rel, "/"+imagefs.ForkDir+"/") {
			into = forks
		}
		r, err := v.FS.Open(e)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(io.NewSectionReader(r, 0, e.Size))
		if err != nil {
			return err
		}
		into[rel] = sideFile{data: b, runs: v.ImageRuns(e.Runs)}
		return nil
	}))
	return files, dirs, forks
}

// A hybrid ISO 9660 / HFS CD as genisoimage makes it, with and without an
// Apple partition map, and a UDF bridge disc with an HFS side: two views of one medium, read as two partitions —
// p1 the ISO side (the whole disc), p2 the HFS side. Every file is on both
// sides, its bytes the same sectors of the disc; the HFS side adds the
// Finder's desktop files, whose bytes hfsutils' own reader agrees with.
func TestMediumHybridCD(t *testing.T) {
	testimg.RequireHFSTools(t)
	if _, err := exec.LookPath("genisoimage"); err != nil {
		testenv.SkipOrFail(t, "genisoimage is not installed (scripts/deps.sh installs it)")
	}
	for _, c := range []struct {
		name  string
		args  []string
		table string
		view  string
		at    int64 // the HFS side's first byte in the image
	}{
		{"no map", []string{"-hfs"}, "", "HFS side: the whole disc, its volume header at byte 1024", 0},
		{"apple partition map", []string{"-hfs", "-part"}, "apm", "HFS side: Apple partition map entry 2", -1},
		{"udf bridge", []string{"-udf", "-hfs"}, "", "HFS side: the whole disc, its volume header at byte 1024", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := hybridSpec()
			argv := append(append([]string{"genisoimage", "-quiet", "-r", "-J", "--osx-double", "-V", "HYBRID"}, c.args...),
				"-o", testimg.ISOImage, testimg.ISOTree)
			img := testimg.ISO(t, spec, argv...)
			m, err := imagefs.OpenMediumFile(context.Background(), img, imagefs.MediumOptions{Medium: testHash, Root: "/mnt/ntt"})
			require.NoError(t, err)
			defer m.Close()
			require.Equal(t, loopdev.LayoutMulti, m.Layout.Layout)
			require.Equal(t, c.table, m.Layout.Table)
			require.Len(t, m.Volumes, 2)
			iso, hfs := m.Volumes[0], m.Volumes[1]
			require.Equal(t, []any{1, "/p1", "iso9660", int64(0)}, []any{iso.Num, iso.Prefix, iso.FSType, iso.Offset})
			require.Equal(t, []any{2, "/p2", "hfs"}, []any{hfs.Num, hfs.Prefix, hfs.FSType})
			if c.at >= 0 {
				require.Equal(t, c.at, hfs.Offset)
			} else {
				require.Positive(t, hfs.Offset, "the map's Apple_HFS entry")
			}
			require.Len(t, m.Layout.Partitions, 2)
			side := "ISO 9660"
			if slices.Contains(c.args, "-udf") {
				side = "UDF and ISO 9660" // read by its ISO 9660 side
			}
			require.Equal(t, side+" side: the whole disc", m.Layout.Partitions[0].View)
			require.Equal(t, c.view, m.Layout.Partitions[1].View)
			for i, p := range m.Layout.Partitions {
				require.Equal(t, imagefs.StatusRead, p.Status, "partition %d", p.Num)
				require.Equal(t, "/mnt/ntt/"+testHash+m.Volumes[i].Prefix, p.Mount)
			}
			require.Empty(t, m.Skipped())

			isoFiles, isoDirs, isoForks := readSide(t, m, iso)
			hfsFiles, hfsDirs, hfsForks := readSide(t, m, hfs)
			hu := hfsutils(t, img)
			// The HFS side holds what hfsutils lists, and nothing else.
			var names []string
			for p := range hfsFiles {
				names = append(names, p)
			}
			for p := range hfsDirs {
				names = append(names, p)
			}
			require.ElementsMatch(t, hu.list(), names, "hls -R lists the HFS side")
			// The ISO side holds the files put on the disc, nothing else;
			// each is on the HFS side too, in the same sectors, under the
			// same name where genisoimage kept it (it writes a UTF-8 name's
			// bytes as Latin-1 characters in MacRoman: Ä becomes Ã_).
			matched := map[string]bool{}
			files := 0
			for _, e := range spec.Entries {
				if e.Kind == testimg.Dir {
					require.True(t, isoDirs[e.Path], "ISO side: directory %q", e.Path)
					require.True(t, hfsDirs[e.Path], "HFS side: directory %q", e.Path)
					continue
				}
				if strings.HasPrefix(filepath.Base(e.Path), "._") {
					continue // an AppleDouble file: the forks of its file on the HFS side, not a file of either side
				}
				files++
				a, ok := isoFiles[e.Path]
				require.True(t, ok, "ISO side: %q missing", e.Path)
				require.Equal(t, e.Content(), a.data, "ISO side: %q", e.Path)
				twin := ""
				for p, b := range hfsFiles {
					if (len(a.runs) > 0 && reflect.DeepEqual(a.runs, b.runs)) || (len(a.runs) == 0 && p == e.Path) {
						twin = p
					}
				}
				require.NotEmpty(t, twin, "HFS side: no file in the sectors of %q", e.Path)
				require.Equal(t, e.Content(), hfsFiles[twin].data, "HFS side: %q", twin)
				if isASCII(e.Path) {
					require.Equal(t, e.Path, twin)
				}
				matched[twin] = true
			}
			require.Len(t, isoFiles, files)
			// The ISO side has no forks (genisoimage also writes the
			// resource fork as an ISO 9660 associated file, which Linux and
			// this reader do not show); the HFS side has Letter's, as
			// hfsutils reads it.
			require.Empty(t, isoForks)
			require.Len(t, hfsForks, 1)
			rsrc := hfsForks["Letter/..namedfork/rsrc"]
			require.Equal(t, letterFork, rsrc.data, "Letter's resource fork")
			require.Equal(t, letterFork, hu.resourceFork("Letter"), "hcopy -m's resource fork of Letter")
			var extra []string
			for p := range hfsFiles {
				if !matched[p] {
					extra = append(extra, p)
				}
			}
			require.ElementsMatch(t, []string{"Desktop DB", "Desktop DF"}, extra, "genisoimage adds the Finder's desktop files to the HFS side")
			for _, name := range extra {
				require.Equal(t, hu.copyRaw(name), hfsFiles[name].data, "%q: ours and hcopy -r's", name)
			}
		})
	}
}

// A hybrid ISO 9660 / HFS+ CD as xorriso makes it (-as mkisofs -hfsplus):
// an Apple partition map whose entry 3 is the HFS+ side, over the same
// sectors as the ISO side. p1 is the ISO side, p2 the HFS+ side; every
// file of the ISO side has its twin in the same sectors on the HFS+ side.
func TestMediumHybridHFSPlusCD(t *testing.T) {
	if _, err := exec.LookPath("xorriso"); err != nil {
		testenv.SkipOrFail(t, "xorriso is not installed (scripts/deps.sh installs it)")
	}
	spec := hybridSpec()
	img := testimg.ISO(t, spec, "xorriso", "-as", "mkisofs", "-quiet", "-r", "-J", "-hfsplus", "-V", "HYBRIDPLUS",
		"-o", testimg.ISOImage, testimg.ISOTree)
	m, err := imagefs.OpenMediumFile(context.Background(), img, imagefs.MediumOptions{Medium: testHash, Root: "/mnt/ntt"})
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, loopdev.LayoutMulti, m.Layout.Layout)
	require.Equal(t, "apm", m.Layout.Table)
	require.Len(t, m.Layout.Partitions, 2)
	require.Equal(t, "ISO 9660 side: the whole disc", m.Layout.Partitions[0].View)
	require.Equal(t, "HFS+ side: Apple partition map entry 3", m.Layout.Partitions[1].View)
	require.Equal(t, "hfsplus", m.Layout.Partitions[1].FSType)
	iso := m.Volume(1)
	require.NotNil(t, iso)
	require.Equal(t, "/p1", iso.Prefix)
	isoFiles, _, _ := readSide(t, m, iso)
	for _, e := range spec.Entries {
		if e.Kind == testimg.File {
			require.Equal(t, e.Content(), isoFiles[e.Path].data, "ISO side: %q", e.Path)
		}
	}
	plus := m.Volume(2)
	require.NotNil(t, plus)
	require.Empty(t, m.Skipped())
	require.Equal(t, "/p2", plus.Prefix)
	plusFiles, _, _ := readSide(t, m, plus)
	for _, e := range spec.Entries {
		if e.Kind != testimg.File || len(e.Content()) == 0 {
			continue
		}
		a := isoFiles[e.Path]
		found := false
		for _, b := range plusFiles {
			if reflect.DeepEqual(a.runs, b.runs) {
				require.Equal(t, e.Content(), b.data, "HFS+ side: the file in the sectors of %q", e.Path)
				found = true
			}
		}
		require.True(t, found, "HFS+ side: no file in the sectors of %q", e.Path)
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// hfsutil runs hfsutils, the reference reader of classic HFS, on the HFS
// volume of one image (its first HFS partition, or the whole image).
type hfsutil struct {
	t    *testing.T
	home string // hfsutils keeps the current volume in $HOME/.hcwd
}

func hfsutils(t *testing.T, img string) *hfsutil {
	h := &hfsutil{t: t, home: t.TempDir()}
	h.run("hmount", img)
	t.Cleanup(func() { h.run("humount") })
	return h
}

func (h *hfsutil) run(args ...string) []byte {
	h.t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "HOME="+h.home, "LC_ALL=C")
	out, err := cmd.Output()
	require.NoError(h.t, err, "%v", args)
	return out
}

// list is every path of the volume as hls -R -1a lists it, decoded from
// MacRoman as the reader decodes names.
func (h *hfsutil) list() []string {
	var out []string
	dir := ""
	for _, l := range strings.Split(string(h.run("hls", "-R", "-1a")), "\n") {
		switch {
		case l == "":
		case strings.HasPrefix(l, ":") && strings.HasSuffix(l, ":"):
			var parts []string
			for _, c := range strings.Split(strings.Trim(l, ":"), ":") {
				n, _ := hfsreader.DecodeName([]byte(c))
				parts = append(parts, string(n))
			}
			dir = strings.Join(parts, "/") + "/"
		default:
			n, _ := hfsreader.DecodeName([]byte(l))
			out = append(out, dir+string(n))
		}
	}
	return out
}

// resourceFork reads the resource fork of the file name in the volume's
// root: hcopy -m writes MacBinary II, a 128-byte header (the data fork's
// length at 83, the resource fork's at 87), the data fork padded to 128
// bytes, then the resource fork.
func (h *hfsutil) resourceFork(name string) []byte {
	out := filepath.Join(h.t.TempDir(), "out.bin")
	h.run("hcopy", "-m", ":"+name, out)
	b, err := os.ReadFile(out)
	require.NoError(h.t, err)
	require.GreaterOrEqual(h.t, len(b), 128)
	dlen, rlen := int(binary.BigEndian.Uint32(b[83:])), int(binary.BigEndian.Uint32(b[87:]))
	at := 128 + (dlen+127)/128*128
	require.GreaterOrEqual(h.t, len(b), at+rlen, "MacBinary of %q", name)
	return b[at : at+rlen]
}

// copyRaw reads the data fork of the file name in the volume's root.
func (h *hfsutil) copyRaw(name string) []byte {
	out := filepath.Join(h.t.TempDir(), "out")
	h.run("hcopy", "-r", ":"+name, out)
	b, err := os.ReadFile(out)
	require.NoError(h.t, err)
	return b
}
