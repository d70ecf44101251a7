package imagefs

import (
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// graphFS is a filesystem given as a graph of directories, as a hostile
// image can lay them out: dirs[k] lists the entries of the directory whose
// content starts at volume offset k.
type graphFS map[int64][]*Entry

func dirAt(name string, id uint64, off int64) *Entry {
	return &Entry{ID: id, Type: 'd', Name: []byte(name), Runs: []Run{{Offset: off, Length: 512}}}
}

func (g graphFS) Type() string                       { return "graph" }
func (g graphFS) Root() (*Entry, error)              { return dirAt("", 1, 0), nil }
func (g graphFS) ReadDir(d *Entry) ([]*Entry, error) { return g[d.Runs[0].Offset], nil }
func (g graphFS) Open(*Entry) (io.ReaderAt, error)   { return nil, io.EOF }

func TestWalkEntersEachDirectoryOnce(t *testing.T) {
	// Ten levels, each holding two names for the one directory of the next
	// level: walked naively that is 2^10 visits of the deepest level.
	g := graphFS{}
	for lvl := int64(0); lvl < 10; lvl++ {
		next := (lvl + 1) * 512
		g[lvl*512] = []*Entry{dirAt("a", uint64(10*lvl+2), next), dirAt("b", uint64(10*lvl+3), next)}
	}
	// The deepest level holds its own parent: a cycle.
	g[10*512] = []*Entry{dirAt("up", 99, 9*512), {ID: 100, Type: 'f', Name: []byte("leaf")}}

	var problems []string
	var paths []string
	opts := &Options{Report: func(p *Problem) { problems = append(problems, p.Kind) }}
	err := Walk(context.Background(), g, opts, func(p []byte, e *Entry) error {
		paths = append(paths, string(p))
		return nil
	})
	require.NoError(t, err)
	// Root, then per level both names (only "a" entered), then the deepest
	// level's two entries.
	require.Len(t, paths, 1+2*10+2)
	require.Contains(t, paths, "/a/a/a/a/a/a/a/a/a/a/leaf")
	require.Equal(t, "/b", paths[len(paths)-1], "depth first: the root's second name comes last")
	require.Contains(t, problems, "cycle")
	cross := 0
	for _, k := range problems {
		if k == "cross_linked" {
			cross++
		}
	}
	require.Equal(t, 10, cross, "every second name of a level is reported, not walked")
}

// A filesystem whose directories have no runs (their records live in a
// catalog) is walked by ID: consecutive IDs are different directories.
func TestWalkDirectoriesByID(t *testing.T) {
	g := idFS{1: {{ID: 22, Type: 'd', Name: []byte("a")}, {ID: 23, Type: 'd', Name: []byte("b")}},
		22: {{ID: 30, Type: 'f', Name: []byte("x")}}, 23: {{ID: 31, Type: 'f', Name: []byte("y")}}}
	var paths []string
	var problems []*Problem
	err := Walk(context.Background(), g, &Options{Report: func(p *Problem) { problems = append(problems, p) }},
		func(p []byte, e *Entry) error { paths = append(paths, string(p)); return nil })
	require.NoError(t, err)
	require.Empty(t, problems)
	require.Equal(t, []string{"/", "/a", "/a/x", "/b", "/b/y"}, paths)
}

type idFS map[uint64][]*Entry

func (g idFS) Type() string                       { return "ids" }
func (g idFS) Root() (*Entry, error)              { return &Entry{ID: 1, Type: 'd'}, nil }
func (g idFS) ReadDir(d *Entry) ([]*Entry, error) { return g[d.ID], nil }
func (g idFS) Open(*Entry) (io.ReaderAt, error)   { return nil, io.EOF }

func TestForkTreePath(t *testing.T) {
	for rel, want := range map[string]string{
		"d/file/..namedfork/rsrc":  "d/..namedfork/file/rsrc",
		"file/..namedfork/rsrc":    "..namedfork/file/rsrc",
		"a/b/f/..namedfork/Zone.x": "a/b/..namedfork/f/Zone.x",
		"a/b/f":                    "a/b/f",
		"f":                        "f",
		"":                         "",
		"..namedfork/rsrc":         "..namedfork/rsrc",
		"a/..namedfork":            "a/..namedfork",
	} {
		if got := ForkTreePath(rel); got != want {
			t.Errorf("ForkTreePath(%q) = %q, want %q", rel, got, want)
		}
	}
	if got := string(ForkPath([]byte("/d/f"), []byte(ResourceFork))); got != "/d/f/..namedfork/rsrc" {
		t.Errorf("ForkPath = %q", got)
	}
	if id := ForkID(42, 1); id != 42|1<<48 {
		t.Errorf("ForkID = %#x", id)
	}
}

// A file's forks are visited right after it, at <file>/..namedfork/<name>.
func TestWalkVisitsForks(t *testing.T) {
	rsrc := &Entry{ID: ForkID(30, 1), Type: 'f', Name: []byte(ResourceFork), Size: 7}
	g := idFS{1: {{ID: 22, Type: 'd', Name: []byte("a")}, {ID: 31, Type: 'f', Name: []byte("y")}},
		22: {{ID: 30, Type: 'f', Name: []byte("x"), Forks: []*Entry{rsrc}}}}
	var paths []string
	err := Walk(context.Background(), g, nil, func(p []byte, e *Entry) error {
		paths = append(paths, string(p))
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []string{"/", "/a", "/a/x", "/a/x/..namedfork/rsrc", "/y"}, paths)
}
