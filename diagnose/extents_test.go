package diagnose

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestDamagedRanges(t *testing.T) {
	const off = 1 << 20 // the partition's offset in the image
	exts := []Extent{
		{Logical: 0, Physical: 0x10000, Length: 0x4000},
		{Logical: 0x4000, Physical: 0x30000, Length: 0x2000},
		{Logical: 0x6000, Physical: 0x50000, Length: 0x1000, Flags: FiemapExtentUnknown},
	}
	bad := []Range{
		{Pos: off + 0x11000, Size: 0x800},  // inside extent 0
		{Pos: off + 0x13800, Size: 0x1000}, // the end of extent 0 and beyond
		{Pos: off + 0x2F000, Size: 0x1800}, // before and into extent 1
		{Pos: off + 0x50000, Size: 0x1000}, // under the unknown extent: not counted
	}
	got := DamagedRanges(exts, off, 0, bad)
	assert.Equal(t, []Damage{
		{FileOffset: 0x1000, ImageOffset: off + 0x11000, Length: 0x800},
		{FileOffset: 0x3800, ImageOffset: off + 0x13800, Length: 0x800},
		{FileOffset: 0x4000, ImageOffset: off + 0x30000, Length: 0x800},
	}, got)

	// The image ends inside extent 1: from there on, past its end.
	got = DamagedRanges(exts, off, off+0x31000, nil)
	assert.Equal(t, []Damage{{FileOffset: 0x5000, ImageOffset: off + 0x31000, Length: 0x1000, BeyondImage: true}}, got)

	// A bad range running past the image's end is not counted twice.
	got = DamagedRanges(exts[1:2], off, off+0x31000, []Range{{Pos: off + 0x30800, Size: 0x10000}})
	assert.Equal(t, []Damage{
		{FileOffset: 0x4800, ImageOffset: off + 0x30800, Length: 0x800},
		{FileOffset: 0x5000, ImageOffset: off + 0x31000, Length: 0x1000, BeyondImage: true},
	}, got)

	// Adjacent pieces merge.
	got = DamagedRanges(exts[:1], off, 0, []Range{{Pos: off + 0x10000, Size: 0x1000}, {Pos: off + 0x11000, Size: 0x1000}})
	assert.Equal(t, []Damage{{FileOffset: 0, ImageOffset: off + 0x10000, Length: 0x2000}}, got)

	// An encoded (compressed) extent touching a bad range is damaged whole.
	enc := []Extent{{Logical: 0, Physical: 0x10000, Length: 0x4000, Flags: FiemapExtentEncoded}}
	got = DamagedRanges(enc, 0, 0, []Range{{Pos: 0x12000, Size: 0x200}})
	assert.Equal(t, []Damage{{FileOffset: 0, ImageOffset: 0x10000, Length: 0x4000}}, got)

	assert.Empty(t, DamagedRanges(exts, off, 0, nil))
}

func TestAppendClipped(t *testing.T) {
	var out []Extent
	out = appendClipped(out, Extent{Logical: 0, Physical: 4096, Length: 4096}, 10000)
	out = appendClipped(out, Extent{Logical: 4096, Physical: 8192, Length: 4096}, 10000)
	out = appendClipped(out, Extent{Logical: 8192, Physical: 20480, Length: 4096, Flags: FiemapExtentLast}, 10000)
	out = appendClipped(out, Extent{Logical: 12288, Physical: 40960, Length: 4096}, 10000)
	assert.Equal(t, []Extent{
		{Logical: 0, Physical: 4096, Length: 8192},
		{Logical: 8192, Physical: 20480, Length: 10000 - 8192, Flags: FiemapExtentLast},
	}, out)
}
