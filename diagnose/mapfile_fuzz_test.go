package diagnose

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParseMapfile: no input makes the parser panic; an accepted mapfile has
// ordered, non-overlapping blocks and a rescued count within its size; a
// refused one is a *MapfileError naming a line of the input.
func FuzzParseMapfile(f *testing.F) {
	f.Add([]byte("# Mapfile. Created by GNU ddrescue version 1.27\n# current_pos  current_status  current_pass\n0x00000000     +               1\n#      pos        size  status\n0x00000000  0x00100000  +\n0x00100000  0x00001000  -\n0x00101000  0x000FF000  +\n"))
	f.Add([]byte("0 ?\n0 1024 *\n1024 512 /\n2048 10 +\r\n"))
	f.Add([]byte("0x0 0x10 X\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := ParseMapfile(bytes.NewReader(in))
		if err != nil {
			var me *MapfileError
			if errors.As(err, &me) && (me.Line < 1 || me.Line > bytes.Count(in, []byte("\n"))+2) {
				t.Fatalf("error names line %d of a %d-line input: %v", me.Line, bytes.Count(in, []byte("\n"))+1, err)
			}
			return
		}
		var end int64
		for i, b := range m.Blocks {
			if b.Pos < end || b.Size < 0 {
				t.Fatalf("block %d (%+v) overlaps or precedes the previous one ending at %d", i, b, end)
			}
			end = b.End()
		}
		if r := m.Rescued(); r < 0 || r > m.Size() {
			t.Fatalf("rescued %d of %d bytes", r, m.Size())
		}
		for _, r := range m.BadRanges() {
			if r.Pos < 0 || r.Size <= 0 || r.End() > m.Size() {
				t.Fatalf("bad range %+v outside the mapfile's %d bytes", r, m.Size())
			}
		}
	})
}
