package diagnose

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const mapHeader = `# Mapfile. Created by GNU ddrescue version 1.27
# Command line: ddrescue -d -r3 /dev/sr0 c9894f1681b5b542eb3a4b75967e9aea.img c9894f1681b5b542eb3a4b75967e9aea.map
# Start time:   2025-10-08 14:30:45
# Current time: 2025-10-08 15:02:11
# Trimming failed blocks... (forwards)
# current_pos  current_status  current_pass
0x1C8F280000     *               1
#      pos        size  status
`

// mapWith returns a mapfile of total bytes whose first rescued bytes are
// '+' and the rest split into '-' and '?' blocks.
func mapWith(rescued, total int64) string {
	var b strings.Builder
	b.WriteString(mapHeader)
	if rescued > 0 {
		fmt.Fprintf(&b, "0x%08X  0x%08X  +\n", 0, rescued)
	}
	if rest := total - rescued; rest > 0 {
		half := rest / 2
		if half > 0 {
			fmt.Fprintf(&b, "0x%08X  0x%08X  -\n", rescued, half)
		}
		fmt.Fprintf(&b, "0x%08X  0x%08X  ?\n", rescued+half, rest-half)
	}
	return b.String()
}

func TestHealthThresholds(t *testing.T) {
	cases := []struct {
		name           string
		rescued, total int64
		want           Health
		pct            float64
	}{
		{"100%", 10000, 10000, HealthOK, 100},
		{"99.99%", 9999, 10000, HealthIncomplete, 99.99},
		{"90%", 9000, 10000, HealthIncomplete, 90},
		{"89.99%", 8999, 10000, HealthCorrupt, 89.99},
		{"20%", 2000, 10000, HealthCorrupt, 20},
		{"19.99%", 1999, 10000, HealthFailed, 19.99},
		{"0%", 0, 10000, HealthFailed, 0},
		// One byte short on a 478 MB CD: still incomplete, never ok.
		{"one byte short", 500_000_000 - 1, 500_000_000, HealthIncomplete, 99.9999998},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := ParseMapfile(strings.NewReader(mapWith(c.rescued, c.total)))
			require.NoError(t, err)
			assert.Equal(t, c.want, m.Health())
			assert.Equal(t, c.total, m.Size())
			assert.Equal(t, c.rescued, m.Rescued())
			assert.InDelta(t, c.pct, m.RescuedPct(), 1e-6)
			r := m.Report("x.map")
			assert.Equal(t, c.total-c.rescued, r.BadBytes)
			if c.rescued < c.total {
				assert.Equal(t, 1, r.BadRanges, "adjacent - and ? blocks are one bad range")
			}
		})
	}
}

func TestHealthEmptyHeaderOnlyMissing(t *testing.T) {
	m, err := ParseMapfile(strings.NewReader(""))
	require.NoError(t, err)
	assert.Equal(t, HealthUnknown, m.Health(), "empty")
	assert.Zero(t, m.RescuedPct())

	m, err = ParseMapfile(strings.NewReader(mapHeader))
	require.NoError(t, err)
	assert.Equal(t, HealthUnknown, m.Health(), "header only")
	assert.True(t, m.HasCurrent)
	assert.Equal(t, int64(0x1C8F280000), m.CurrentPos)
	assert.Equal(t, byte('*'), m.CurrentStatus)
	assert.Equal(t, 1, m.CurrentPass)

	r, mm, err := HealthOf(filepath.Join(t.TempDir(), "absent.map"))
	require.NoError(t, err, "no mapfile is not an error")
	assert.Nil(t, mm)
	assert.Equal(t, HealthUnknown, r.Health)
	assert.False(t, r.Present)
	assert.Nil(t, HealthUnknown.DBValue(), "unknown is NULL in medium.health")
	assert.Equal(t, "incomplete", HealthIncomplete.DBValue())
}

func TestHealthDegraded(t *testing.T) {
	assert.False(t, HealthOK.Degraded())
	assert.False(t, HealthIncomplete.Degraded())
	assert.True(t, HealthCorrupt.Degraded())
	assert.True(t, HealthFailed.Degraded())
	assert.True(t, HealthUnknown.Degraded())
	assert.True(t, Health("").Degraded())
}

func TestMapfileMalformedLineNumber(t *testing.T) {
	cases := []struct {
		name, text string
		line       int
	}{
		{"garbage", mapHeader + "0x00000000  0x00001000  +\nthis is not a block\n", 10},
		{"bad status", mapHeader + "0x0 0x1000 x\n", 9},
		{"bad number", mapHeader + "0x0 0x10G0 +\n", 9},
		{"too many fields", mapHeader + "0x0 0x1000 + extra\n", 9},
		{"overlap", mapHeader + "0x0 0x1000 +\n0x800 0x1000 -\n", 10},
		{"out of order", mapHeader + "0x1000 0x1000 +\n0x0 0x1000 -\n", 10},
		{"negative-looking", mapHeader + "-1 0x1000 +\n", 9},
		{"hex overflow", mapHeader + "0xFFFFFFFFFFFFFFFFF 0x1 +\n", 9},
		{"end overflows", mapHeader + "0x7FFFFFFFFFFFFFFF 0x2 +\n", 9},
		{"garbage first", "hello world\n", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseMapfile(strings.NewReader(c.text))
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrMalformedMapfile))
			me, ok := errors.AsType[*MapfileError](err)
			require.True(t, ok)
			assert.Equal(t, c.line, me.Line, "%v", err)
			assert.Contains(t, err.Error(), fmt.Sprintf("line %d", c.line))
		})
	}

	path := filepath.Join(t.TempDir(), "bad.map")
	require.NoError(t, os.WriteFile(path, []byte(cases[0].text), 0o644))
	_, _, err := HealthOf(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path+" line 10", "the error names the file and line")
}

// The runbook typed by hand: a status character ddrescue never writes
// was reported as "block size is not a number". Each error names the field
// that is wrong and quotes it.
func TestMapfileErrorNamesTheBadField(t *testing.T) {
	const currentLine = "# current_pos  current_status  current_pass\n"
	const blocksHeader = "#      pos        size  status\n"
	cases := []struct {
		name, text string
		want       string
		not        string
	}{
		{"bad current status", "# Mapfile\n" + currentLine + "0x1C8F280000     X               1\n" + blocksHeader + "0x0 0x1000 +\n",
			`current-position line: status "X" (field 2) is not one of`, "block size"},
		{"bad current status, no pass", currentLine + "0x1C8F280000 x\n",
			`status "x" (field 2)`, "block size"},
		{"bad block status", mapHeader + "0x00000000  0x00001000  x\n",
			`block status "x" (field 3) is not one of + - * / ?`, ""},
		{"bad block size", mapHeader + "0x00000000  0x10G0  +\n",
			`block size "0x10G0" (field 2) is not a number`, ""},
		{"bad block position", mapHeader + "0xZZ  0x1000  +\n",
			`block position "0xZZ" (field 1) is not a number`, ""},
		{"bad current position", "0xQQ * 1\n",
			`current-position line: position "0xQQ" (field 1) is not a number`, ""},
		{"bad pass", "0x0 * many\n",
			`current-position line: pass "many" (field 3) is not a number`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseMapfile(strings.NewReader(c.text))
			require.ErrorIs(t, err, ErrMalformedMapfile)
			assert.Contains(t, err.Error(), c.want)
			if c.not != "" {
				assert.NotContains(t, err.Error(), c.not)
			}
		})
	}
}

func TestMapfileVariants(t *testing.T) {
	// ddrescue before 1.21: no current_pass; CRLF line ends; decimal numbers;
	// blank lines; a gap between blocks counts as not rescued.
	text := "# Mapfile. Created by GNU ddrescue version 1.19\r\n" +
		"# current_pos  current_status\r\n" +
		"0x00000000     +\r\n" +
		"\r\n" +
		"#      pos        size  status\r\n" +
		"0  4096  +\r\n" +
		"4096\t512\t-\r\n" +
		"8192  4096  +\r\n" // gap 4608..8192
	m, err := ParseMapfile(strings.NewReader(text))
	require.NoError(t, err)
	assert.Zero(t, m.CurrentPass)
	assert.Equal(t, byte('+'), m.CurrentStatus)
	require.Len(t, m.Blocks, 3)
	assert.Equal(t, Block{Pos: 4096, Size: 512, Status: '-'}, m.Blocks[1])
	assert.Equal(t, int64(12288), m.Size())
	assert.Equal(t, int64(8192), m.Rescued())
	assert.Equal(t, []Range{{Pos: 4096, Size: 8192 - 4096}}, m.BadRanges())
	assert.Equal(t, HealthCorrupt, m.Health())

	// No current-position line at all: blocks only.
	m, err = ParseMapfile(strings.NewReader("0x0 0x200 +\n0x200 0x200 /\n0x400 0x200 +\n0x600 0x200 *\n"))
	require.NoError(t, err)
	assert.False(t, m.HasCurrent)
	assert.Equal(t, []Range{{0x200, 0x200}, {0x600, 0x200}}, m.BadRanges())
}

// TestSeedPreflightMap is the seed's candidate 1 (99.4% recovered, trimming):
// incomplete, never failed.
func TestSeedPreflightMap(t *testing.T) {
	total := int64(477 << 20)
	m, err := ParseMapfile(strings.NewReader(mapWith(474<<20, total)))
	require.NoError(t, err)
	r := m.Report("c9894f1681b5b542eb3a4b75967e9aea.map")
	assert.Equal(t, HealthIncomplete, r.Health)
	assert.InDelta(t, 99.37, r.RescuedPct, 0.01)
	assert.False(t, r.Finished)
}

// bigMapfile is a mapfile of n block lines alternating + and -.
func bigMapfile(n int) []byte {
	var b bytes.Buffer
	b.Grow(n * 32)
	b.WriteString(mapHeader)
	pos := int64(0)
	for i := range n {
		size := int64(512 * (1 + i%7))
		st := byte('+')
		if i%2 == 1 {
			st = "-*/?"[i/2%4]
		}
		fmt.Fprintf(&b, "0x%08X  0x%08X  %c\n", pos, size, st)
		pos += size
	}
	return b.Bytes()
}

func TestParseLargeMapfile(t *testing.T) {
	m, err := ParseMapfile(bytes.NewReader(bigMapfile(100_000)))
	require.NoError(t, err)
	assert.Len(t, m.Blocks, 100_000)
	assert.Len(t, m.BadRanges(), 50_000)
}

// BenchmarkParseMapfile1M parses a 1,000,000-line mapfile (target: ≤ 1 s).
func BenchmarkParseMapfile1M(b *testing.B) {
	data := bigMapfile(1_000_000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := ParseMapfile(bytes.NewReader(data))
		if err != nil || len(m.Blocks) != 1_000_000 {
			b.Fatal(err)
		}
	}
}

func TestReadMapfileMissingIsNotExist(t *testing.T) {
	_, err := ReadMapfile(filepath.Join(t.TempDir(), "x.map"))
	assert.True(t, errors.Is(err, fs.ErrNotExist))
}
