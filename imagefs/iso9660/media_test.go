package iso9660

import (
	"strings"
	"testing"

	"github.com/HRDAG/ntt/internal/testimg"
)

// xorriso always writes Rock Ridge (its mkisofs -R is the default), so a
// Joliet-only medium comes from genisoimage.

// medium is one way the tools master the test tree.
type medium struct {
	name string
	tool string
	argv []string
	long bool   // the tree has a 200-byte name (Rock Ridge media only)
	want want   // how the reader must show the tree ("" naming: not compared)
	tsk  Naming // the tree TSK reads, compared with the reader's view of it
	// moved is where the primary tree holds a directory that Rock Ridge
	// relocation moved away from its place deeper than 8 levels.
	moved string
}

var (
	img  = testimg.ISOImage
	tree = testimg.ISOTree
	// genisoimage needs the names' charset spelled out for Joliet.
	geniso = []string{"genisoimage", "-quiet", "-input-charset", "utf-8"}
)

var media = []medium{
	{name: "xorriso -R -J", tool: "xorriso",
		argv: []string{"xorriso", "-as", "mkisofs", "-R", "-J", "-o", img, tree}, long: true,
		want: want{naming: RockRidge, hardlinks: true, attrs: true}, tsk: Joliet},
	{name: "xorriso new_rr hardlinks", tool: "xorriso",
		argv: []string{"xorriso", "-outdev", img, "-compliance", "new_rr", "-hardlinks", "on", "-joliet", "on", "-map", tree, "/"}, long: true,
		want: want{naming: RockRidge, hardlinks: true, attrs: true}, tsk: Joliet},
	{name: "genisoimage -R -J", tool: "genisoimage",
		argv: append(append([]string{}, geniso...), "-R", "-J", "-o", img, tree), long: true,
		want: want{naming: RockRidge, extra: []string{"/rr_moved"}, hardlinks: true, attrs: true}, tsk: Joliet, moved: "/rr_moved/d007_x"},
	{name: "genisoimage -r", tool: "genisoimage",
		argv: append(append([]string{}, geniso...), "-r", "-o", img, tree), long: true,
		want: want{naming: RockRidge, extra: []string{"/rr_moved"}, hardlinks: true, attrs: true}, tsk: Primary, moved: "/rr_moved/d007_x"},
	{name: "genisoimage -rock", tool: "genisoimage",
		argv: append(append([]string{}, geniso...), "-rock", "-o", img, tree), long: true,
		want: want{naming: RockRidge, extra: []string{"/rr_moved"}, hardlinks: true, attrs: true}, tsk: Primary, moved: "/rr_moved/d007_x"},
	{name: "genisoimage -J", tool: "genisoimage",
		argv: append(append([]string{}, geniso...), "-J", "-o", img, tree),
		want: want{naming: Joliet, noLinks: true, maxDepth: 7}, tsk: Joliet},
	{name: "genisoimage level 1", tool: "genisoimage",
		argv: append(append([]string{}, geniso...), "-iso-level", "1", "-o", img, tree),
		tsk:  Primary},
}

// TestMedia masters the tree with each tool and option set, reads it
// back, and compares the walk with the tree and with The Sleuth Kit.
func TestMedia(t *testing.T) {
	for _, m := range media {
		t.Run(m.name, func(t *testing.T) {
			requireTools(t, m.tool, "fls", "icat")
			spec := treeSpec(m.long)
			path := testimg.ISO(t, spec, m.argv...)
			l := openImage(t, path, 0, -1, "")
			if m.want.naming != "" {
				checkTree(t, l, spec, m.want)
			} else if l.fs.Naming() != Primary {
				t.Errorf("naming %s, want %s", l.fs.Naming(), Primary)
			}
			if m.moved != "" {
				// Relocation happened: the primary tree has the deep
				// directory in rr_moved, the Rock Ridge view at its place
				// and nothing in rr_moved.
				if e := openImage(t, path, 0, -1, Primary).entries[m.moved]; e == nil || e.Type != 'd' {
					t.Errorf("primary tree has no %s: nothing was relocated", m.moved)
				}
				for p := range l.entries {
					if strings.HasPrefix(p, "/rr_moved/") {
						t.Errorf("%s: listed inside rr_moved", p)
					}
				}
			}
			if m.tsk != "" {
				checkTSK(t, path, 0, openImage(t, path, 0, -1, m.tsk))
			}
		})
	}
}
