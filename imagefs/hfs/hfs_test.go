package hfs_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/HRDAG/ntt/imagefs"
	"github.com/HRDAG/ntt/imagefs/hfs"
	"github.com/HRDAG/ntt/imagefs/imagefstest"
	"github.com/HRDAG/ntt/internal/testimg"
)

// walked is one entry of a walk, with its content.
type walked struct {
	e    *imagefs.Entry
	data []byte
	err  error
}

// openWalk opens the image at path, walks it whole and reads every file.
func openWalk(t *testing.T, img []byte) (*hfs.Volume, map[string]walked, []string, []*imagefs.Problem) {
	t.Helper()
	var probs []*imagefs.Problem
	opts := imagefs.Options{Report: func(p *imagefs.Problem) { probs = append(probs, p) }}
	v, err := hfs.Open(bytes.NewReader(img), int64(len(img)), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	got := map[string]walked{}
	var order []string
	imagefstest.ReadWalk(t, v, &opts, func(p string, e *imagefs.Entry, data []byte, err error) {
		got[p] = walked{e: e, data: data, err: err}
		order = append(order, p)
	})
	return v, got, order, probs
}

func sampleSpec(n int) testimg.HFSSpec {
	t0 := time.Date(2001, 9, 9, 1, 46, 40, 0, time.UTC)
	s := testimg.HFSSpec{Label: "NTT Sample"}
	add := func(p string, k testimg.Kind, size int64) {
		i := len(s.Steps)
		s.Steps = append(s.Steps, testimg.HFSStep{Entry: testimg.Entry{Path: p, Kind: k, Size: size, Seed: uint64(i + 1), Mtime: t0.Add(time.Duration(i) * time.Minute)}})
	}
	add("ReadMe", testimg.File, 1000)
	add("empty", testimg.File, 0)
	add("with spaces in it.txt", testimg.File, 5000)
	add("a/b slash", testimg.File, 77)
	add("Ärger über Öl ©π∞", testimg.File, 2048)
	add("big.bin", testimg.File, 300000)
	add("Docs", testimg.Dir, 0)
	add("Docs:Sub Dir", testimg.Dir, 0)
	add("Docs:Sub Dir:deeper", testimg.Dir, 0)
	add("Docs:Sub Dir:deeper:leaf.txt", testimg.File, 12)
	add("Docs:note", testimg.File, 1)
	add("Docs:empty dir", testimg.Dir, 0)
	if n > 0 {
		add("many", testimg.Dir, 0)
		for i := 0; i < n; i++ {
			add(fmt.Sprintf("many:file %04d with a long name", i), testimg.File, int64(i*37%3000))
		}
	}
	return s
}

// checkTree compares a walk with the tree put on the medium: paths, types,
// sizes, mtimes, bytes, link counts.
func checkTree(t *testing.T, spec testimg.HFSSpec, got map[string]walked, built time.Time) {
	t.Helper()
	want := testimg.HFSTree(spec)
	forks := testimg.HFSForks(spec)
	if len(got) != len(want)+len(forks)+1 {
		t.Errorf("walk has %d entries, the medium %d, %d resource forks and the root", len(got), len(want), len(forks))
	}
	for p, data := range forks {
		if g := got["/"+p+"/..namedfork/rsrc"]; g.e == nil || g.err != nil || !bytes.Equal(g.data, data) {
			t.Errorf("%q: resource fork differs", p)
		}
	}
	root, ok := got["/"]
	if !ok || root.e.ID != hfs.RootID || root.e.Type != 'd' {
		t.Fatalf("root: %+v", root.e)
	}
	for p, w := range want {
		g, ok := got["/"+p]
		if !ok {
			t.Errorf("%q missing from the walk", p)
			continue
		}
		if w.Kind == testimg.Dir {
			if g.e.Type != 'd' || len(g.e.Runs) != 1 || g.e.Runs[0].Length < 70+7 {
				t.Errorf("%q: type %c runs %v, want a directory whose run is its catalog record", p, g.e.Type, g.e.Runs)
			}
			continue
		}
		if g.e.Type != 'f' || g.e.Size != w.FileSize() || g.e.Nlink != 1 {
			t.Errorf("%q: type %c size %d nlink %d, want f %d 1", p, g.e.Type, g.e.Size, g.e.Nlink, w.FileSize())
		}
		if g.err != nil || !bytes.Equal(g.data, w.Content()) {
			t.Errorf("%q: content differs (%d bytes read, err %v)", p, len(g.data), g.err)
		}
		// hcopy stamps files with the time of the copy, in local time
		// (TZ=UTC), which the reader takes as UTC.
		if g.e.Mtime.Before(built.Add(-time.Minute)) || g.e.Mtime.After(time.Now().Add(time.Second)) {
			t.Errorf("%q: mtime %v, the volume was built at %v", p, g.e.Mtime, built)
		}
	}
	// Nlink of a directory: 2 + its subdirectories.
	for p, g := range got {
		if g.e.Type != 'd' {
			continue
		}
		sub := uint64(0)
		prefix := strings.TrimSuffix(p, "/") + "/"
		for q, h := range got {
			if h.e.Type == 'd' && strings.HasPrefix(q, prefix) && !strings.Contains(q[len(prefix):], "/") && q != p {
				sub++
			}
		}
		if g.e.Nlink != 2+sub {
			t.Errorf("%q: nlink %d, want %d", p, g.e.Nlink, 2+sub)
		}
	}
}

func TestFloppy(t *testing.T) {
	spec := sampleSpec(0)
	built := time.Now().Truncate(time.Second)
	img, err := os.ReadFile(testimg.BuildHFS(t, spec))
	if err != nil {
		t.Fatal(err)
	}
	v, got, _, probs := openWalk(t, img)
	if len(probs) != 0 {
		t.Errorf("problems on a sound volume: %v", probs)
	}
	if info := v.Info(); info.Label != "NTT Sample" {
		t.Errorf("label %q", info.Label)
	}
	checkTree(t, spec, got, built)
	// The '/' in a name is shown as ':', as Linux shows it.
	if _, ok := got["/a:b slash"]; !ok {
		t.Errorf("no /a:b slash in %v", keys(got))
	}
	// Registered under probe's type name.
	fsys, err := imagefs.Open("hfs", bytes.NewReader(img), int64(len(img)), imagefs.Options{})
	if err != nil || fsys.Type() != "hfs" {
		t.Fatalf("imagefs.Open hfs: %v", err)
	}
}

func keys(m map[string]walked) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestHcopyOut: every file's bytes as the reader gives them equal what
// hcopy -r (hfsutils, the reference reader; The Sleuth Kit reads HFS+ only
// and refuses classic HFS) copies out, and hls lists the same names.
func TestHcopyOut(t *testing.T) {
	testimg.RequireHFSTools(t, "hls")
	spec := sampleSpec(0)
	path := testimg.BuildHFS(t, spec)
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, got, _, _ := openWalk(t, img)
	home := t.TempDir()
	hfsutil := func(args ...string) []byte {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "HOME="+home, "TZ=UTC", "LC_ALL=C")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out
	}
	hfsutil("hmount", path)
	defer hfsutil("humount")
	n := 0
	for p, w := range got {
		if w.e.Type != 'f' {
			continue
		}
		// Back to an HFS path: '/' separates, ':' in a name was '/'.
		parts := strings.Split(p[1:], "/")
		for i := range parts {
			parts[i] = strings.ReplaceAll(parts[i], ":", "/")
		}
		raw, ok := hfs.EncodeName(strings.Join(parts, ":"))
		if !ok {
			t.Fatalf("%q: not MacRoman", p)
		}
		out := filepath.Join(t.TempDir(), "out")
		hfsutil("hcopy", "-r", ":"+string(raw), out)
		b, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(b, w.data) {
			t.Errorf("%q: hcopy gives %d bytes, the reader %d (%v)", p, len(b), len(w.data), err)
		}
		n++
	}
	if n != 8 {
		t.Errorf("compared %d files, want 8", n)
	}
	// hls -1a of every directory lists the names the walk found in it.
	for dir, w := range got {
		if w.e.Type != 'd' {
			continue
		}
		hpath := ":"
		if dir != "/" {
			parts := strings.Split(dir[1:], "/")
			for i := range parts {
				parts[i] = strings.ReplaceAll(parts[i], ":", "/")
			}
			raw, _ := hfs.EncodeName(strings.Join(parts, ":"))
			hpath = ":" + string(raw) + ":"
		}
		var want []string
		if out := strings.TrimSpace(string(hfsutil("hls", "-1a", hpath))); out != "" {
			for _, l := range strings.Split(out, "\n") {
				name, _ := hfs.DecodeName([]byte(l))
				want = append(want, string(name))
			}
		}
		prefix := strings.TrimSuffix(dir, "/") + "/"
		var have []string
		for p := range got {
			if p != "/" && p != dir && strings.HasPrefix(p, prefix) && !strings.Contains(p[len(prefix):], "/") {
				have = append(have, p[len(prefix):])
			}
		}
		sort.Strings(want)
		sort.Strings(have)
		if strings.Join(want, "|") != strings.Join(have, "|") {
			t.Errorf("%s: hls lists %q, the reader %q", dir, want, have)
		}
	}
}

// bigSpec is a 20 MB volume with a directory of n files (its records fill
// several catalog leaf nodes) and a file written into the holes left by
// deleting every other of 40 small files once the volume is full, so that it needs more than the
// three extents of its catalog record: extents-overflow records.
func bigSpec(n int) testimg.HFSSpec {
	s := sampleSpec(n)
	s.Size = 20 << 20
	add := func(p string, k testimg.Kind, size int64, del bool) {
		i := len(s.Steps)
		s.Steps = append(s.Steps, testimg.HFSStep{Entry: testimg.Entry{Path: p, Kind: k, Size: size, Seed: uint64(i + 1)}, Delete: del})
	}
	add("frag", testimg.Dir, 0, false)
	for i := 0; i < 40; i++ {
		add(fmt.Sprintf("frag:small %02d", i), testimg.File, 512, false)
	}
	s.Steps = append(s.Steps, testimg.HFSStep{Entry: testimg.Entry{Path: "filler"}, Fill: true})
	for i := 0; i < 40; i += 2 {
		add(fmt.Sprintf("frag:small %02d", i), testimg.File, 0, true)
	}
	add("frag:fragmented", testimg.File, 15*512+100, false)
	// Its resource fork takes the last 4 holes: one extent past the 3 of
	// its catalog record, in a record of fork type 0xFF.
	s.Steps[len(s.Steps)-1].Rsrc = make([]byte, 3*512+5)
	testimg.ContentAt(99, s.Steps[len(s.Steps)-1].Rsrc, 0)
	add("filler", testimg.File, 0, true)
	return s
}

func TestManyFilesAndOverflowExtents(t *testing.T) {
	spec := bigSpec(400)
	built := time.Now().Truncate(time.Second)
	img, err := os.ReadFile(testimg.BuildHFS(t, spec))
	if err != nil {
		t.Fatal(err)
	}
	v, got, _, probs := openWalk(t, img)
	if len(probs) != 0 {
		t.Errorf("problems on a sound volume: %v", probs)
	}
	checkTree(t, spec, got, built)
	// 400 records of ~70-byte keys and 102-byte data: many 512-byte leaves.
	if n := v.Info().CatalogRecords; n < 400 {
		t.Errorf("%d catalog records", n)
	}
	f := got["/frag/fragmented"]
	if f.e == nil || len(f.e.Runs) != 16 {
		t.Fatalf("the fragmented file has runs %+v: want 16 one-block extents, 13 of them in extents-overflow records", f.e)
	}
	rsrc := testimg.HFSForks(spec)["frag/fragmented"]
	fr := got["/frag/fragmented/..namedfork/rsrc"]
	if fr.e == nil || len(fr.e.Runs) != 4 || fr.err != nil || !bytes.Equal(fr.data, rsrc) {
		t.Fatalf("the fragmented file's resource fork: %+v, %v; want 4 one-block extents (one in an extents-overflow record of fork 0xFF) read as put", fr.e, fr.err)
	}
}

// TestMedium: a whole-disk HFS floppy is probed as "hfs" and read by this
// reader through imagefs.OpenMediumFile, with every file.
func TestMedium(t *testing.T) {
	spec := sampleSpec(0)
	path := testimg.BuildHFS(t, spec)
	var probs []*imagefs.MediumProblem
	m, err := imagefs.OpenMediumFile(context.Background(), path, imagefs.MediumOptions{
		Medium: "0123456789abcdef0123456789abcdef", Report: func(p *imagefs.MediumProblem) { probs = append(probs, p) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(m.Volumes) != 1 || m.Volumes[0].FSType != "hfs" || m.Volumes[0].Num != 0 {
		t.Fatalf("volumes %+v, want one whole-disk hfs", m.Volumes)
	}
	n := 0
	if err := m.Walk(context.Background(), m.Volumes[0], func(p []byte, e *imagefs.Entry) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != len(testimg.HFSTree(spec))+1 || len(probs) != 0 {
		t.Errorf("%d entries, want %d; problems %v", n, len(testimg.HFSTree(spec))+1, probs)
	}
}

// TestResourceForks: files put with resource forks (hcopy -m of MacBinary)
// have them in Entry.Forks, named "rsrc" with ForkID(file, 1), read byte
// for byte as put and as hcopy -m copies them out; a file without one has
// none; the walk visits each at <file>/..namedfork/rsrc.
func TestResourceForks(t *testing.T) {
	rsrc := func(seed uint64, n int) []byte {
		b := make([]byte, n)
		testimg.ContentAt(seed, b, 0)
		return b
	}
	spec := testimg.HFSSpec{Label: "Forks"}
	spec.Steps = []testimg.HFSStep{
		{Entry: testimg.Entry{Path: "both", Kind: testimg.File, Size: 3000, Seed: 1}, Rsrc: rsrc(2, 700)},
		{Entry: testimg.Entry{Path: "rsrc only", Kind: testimg.File, Size: 0, Seed: 3}, Rsrc: rsrc(4, 20000)},
		{Entry: testimg.Entry{Path: "data only", Kind: testimg.File, Size: 100, Seed: 5}},
		{Entry: testimg.Entry{Path: "d", Kind: testimg.Dir}},
		{Entry: testimg.Entry{Path: "d:deep", Kind: testimg.File, Size: 1, Seed: 6}, Rsrc: rsrc(7, 1)},
	}
	path := testimg.BuildHFS(t, spec)
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, got, order, probs := openWalk(t, img)
	if len(probs) != 0 {
		t.Errorf("problems: %v", probs)
	}
	for _, s := range spec.Steps {
		if s.Kind != testimg.File {
			continue
		}
		p := "/" + strings.ReplaceAll(s.Path, ":", "/")
		f, fork := got[p], got[p+"/..namedfork/rsrc"]
		if f.err != nil || !bytes.Equal(f.data, s.Content()) {
			t.Errorf("%s: data fork differs: %d bytes, %v", p, len(f.data), f.err)
		}
		if len(s.Rsrc) == 0 {
			if fork.e != nil || len(f.e.Forks) != 0 {
				t.Errorf("%s: a resource fork where none was put", p)
			}
			continue
		}
		if fork.e == nil || len(f.e.Forks) != 1 || fork.e != f.e.Forks[0] {
			t.Fatalf("%s: no resource fork walked", p)
		}
		if fork.e.ID != imagefs.ForkID(f.e.ID, 1) || string(fork.e.Name) != "rsrc" || fork.e.Size != int64(len(s.Rsrc)) {
			t.Errorf("%s: fork %+v", p, fork.e)
		}
		if fork.err != nil || !bytes.Equal(fork.data, s.Rsrc) {
			t.Errorf("%s: resource fork differs: %d bytes, %v", p, len(fork.data), fork.err)
		}
		// The fork follows its file in the walk.
		for i, q := range order {
			if q == p && (i+1 >= len(order) || order[i+1] != p+"/..namedfork/rsrc") {
				t.Errorf("%s: the walk does not visit its fork right after it", p)
			}
		}
		// hcopy -m (the reference reader) copies out the same fork.
		out := filepath.Join(t.TempDir(), "out.bin")
		home := t.TempDir()
		for _, args := range [][]string{{"hmount", path}, {"hcopy", "-m", ":" + s.Path, out}, {"humount"}} {
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Env = append(os.Environ(), "HOME="+home, "TZ=UTC", "LC_ALL=C")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v: %v: %s", args, err, b)
			}
		}
		mb, err := os.ReadFile(out)
		if err != nil || len(mb) < 128 {
			t.Fatalf("hcopy -m: %v", err)
		}
		dl, rl := int(be.Uint32(mb[83:])), int(be.Uint32(mb[87:]))
		start := 128 + (dl+127)/128*128
		if rl != len(fork.data) || start+rl > len(mb) || !bytes.Equal(mb[start:start+rl], fork.data) {
			t.Errorf("%s: hcopy -m gives a resource fork of %d bytes, the reader %d", p, rl, len(fork.data))
		}
	}
}
