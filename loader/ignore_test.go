package loader

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/HRDAG/ntt/enumerate"
)

// The prefilter never changes an answer of the Matcher.
func TestIgnoreFilterAgreesWithMatcher(t *testing.T) {
	patterns := [][]string{
		{`/\.DS_Store$`, `/Thumbs\.db$`, `/\._[^/]*$`, `/\.Trash-1000/`},
		{`(?i)thumbs\.db$`},
		{`\.(tmp|bak)$`, `~$`},
		{`^/mnt/ntt/[0-9a-f]+/p2/`},
		{`(cache|Cache)+/`, `x{2,}y`},
		{`.*`},
		{`\x{fffd}`},
		{`é+`, `a|b|c|d|e|f|g|h|i|j|k|l|m|n|o|p|q|r`},
		{`(?s)a.b`, `[\x00-\x1f]`},
	}
	alphabet := []string{"/", "a", "b", "x", "y", ".", "DS_Store", "Thumbs.db", "THUMBS.DB", "._", "Trash-1000", "tmp", "bak",
		"~", "cache", "Cache", "é", "\xff", "\xef\xbf\xbd", "\n", "\x1c", "p2", "/mnt/ntt/abc"}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, ps := range patterns {
		m, err := enumerate.NewMatcher(ps)
		if err != nil {
			t.Fatal(err)
		}
		f := newIgnoreFilter(m)
		for i := 0; i < 20000; i++ {
			var p []byte
			for j := rng.IntN(12); j >= 0; j-- {
				p = append(p, alphabet[rng.IntN(len(alphabet))]...)
			}
			if got, want := f.Match(p), m.Match(p); got != want {
				t.Fatalf("patterns %q, path %q: filter says %v, matcher %v", ps, p, got, want)
			}
		}
		t.Logf("patterns %q: prefilter literals %q", ps, f.literals)
	}
	if f := newIgnoreFilter(nil); f.Match([]byte("/x")) {
		t.Error("nil matcher matched")
	}
	m, _ := enumerate.NewMatcher([]string{`/\.DS_Store$`, `/Thumbs\.db$`})
	if f := newIgnoreFilter(m); fmt.Sprint(f.literals) == "[]" || f.literals == nil {
		t.Errorf("no prefilter for plain literal patterns")
	}
}

func BenchmarkIgnore(b *testing.B) {
	m, _ := enumerate.NewMatcher([]string{`/\.DS_Store$`, `/Thumbs\.db$`, `/\._[^/]*$`, `/\.Trash-1000/`})
	var paths [][]byte
	for i := 0; i < 1000; i++ {
		paths = append(paths, []byte(fmt.Sprintf("/mnt/ntt/00000000000000000000000000b10ad0/p1/report %04d/letter interview %05d.doc", i/50, i)))
	}
	f := newIgnoreFilter(m)
	b.Run("matcher", func(b *testing.B) {
		for b.Loop() {
			for _, p := range paths {
				m.Match(p)
			}
		}
	})
	b.Run("filter", func(b *testing.B) {
		for b.Loop() {
			for _, p := range paths {
				f.Match(p)
			}
		}
	})
}
