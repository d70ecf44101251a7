package ntfs

import (
	"fmt"
	"testing"
)

// TestNameCap: a record's names (its own and its extension records') are
// kept up to maxNames — NTFS allows 1024 links, each with a DOS alias —
// and the rest dropped, so that a crafted record of a million names
// cannot make every listing of its directories quadratic; presentedNames
// of that many distinct names keeps each once.
func TestNameCap(t *testing.T) {
	var ri recInfo
	var more []fileName
	for i := range 3 * maxNames {
		more = append(more, fileName{parent: 5, name: fmt.Sprint(i), ns: nsPOSIX})
	}
	if dropped := ri.addNames(more[:10]); dropped != 0 || len(ri.names) != 10 {
		t.Fatalf("10 names: %d kept, %d dropped", len(ri.names), dropped)
	}
	if dropped := ri.addNames(more[10:]); dropped != 3*maxNames-maxNames || len(ri.names) != maxNames {
		t.Errorf("%d names: %d kept, %d dropped; want %d kept", len(more), len(ri.names), dropped, maxNames)
	}
	if n := len(presentedNames(ri.names)); n != maxNames {
		t.Errorf("presentedNames: %d of %d distinct names", n, maxNames)
	}
	dup := append(append([]fileName(nil), ri.names...), ri.names...)
	if n := len(presentedNames(dup)); n != maxNames {
		t.Errorf("presentedNames of every name twice: %d, want %d", n, maxNames)
	}
}
