package diagnose

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"os"
)

// Block statuses of a GNU ddrescue mapfile.
const (
	StatusNonTried   byte = '?' // not read yet
	StatusNonTrimmed byte = '*' // failed, edges not trimmed
	StatusNonScraped byte = '/' // failed, not scraped
	StatusBadSector  byte = '-' // failed for good
	StatusFinished   byte = '+' // rescued
)

// ErrMalformedMapfile matches every *MapfileError with errors.Is.
var ErrMalformedMapfile = errors.New("malformed ddrescue mapfile")

// MapfileError names the line of a mapfile that could not be parsed.
type MapfileError struct {
	Name   string // file name, or "" when parsed from a reader
	Line   int    // 1-based
	Text   string // the offending line (cut at 80 bytes)
	Reason string
}

func (e *MapfileError) Error() string {
	name := e.Name
	if name == "" {
		name = "mapfile"
	}
	return fmt.Sprintf("%s line %d: %s: %q", name, e.Line, e.Reason, e.Text)
}

// Is makes errors.Is(err, ErrMalformedMapfile) true.
func (e *MapfileError) Is(target error) bool { return target == ErrMalformedMapfile }

// Block is one line `pos size status` of a mapfile: Size bytes from byte
// Pos of the rescue domain (the image) have Status.
type Block struct {
	Pos, Size int64
	Status    byte
}

// End is the offset just past the block.
func (b Block) End() int64 { return b.Pos + b.Size }

// Range is a byte range [Pos, Pos+Size) of an image.
type Range struct {
	Pos  int64 `json:"pos"`
	Size int64 `json:"size"`
}

// End is the offset just past the range.
func (r Range) End() int64 { return r.Pos + r.Size }

// Mapfile is a parsed GNU ddrescue mapfile.
type Mapfile struct {
	// CurrentPos, CurrentStatus and CurrentPass come from the first
	// non-comment line (`current_pos current_status [current_pass]`);
	// HasCurrent is false when the file has none. CurrentPass is 0 for
	// mapfiles written before ddrescue 1.21 added it.
	CurrentPos    int64
	CurrentStatus byte
	CurrentPass   int
	HasCurrent    bool
	// Blocks in file order: sorted, non-overlapping.
	Blocks []Block
}

// ReadMapfile parses the mapfile at path. A missing file is an error that
// matches fs.ErrNotExist; use HealthOf for the "no mapfile" case.
func ReadMapfile(path string) (*Mapfile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := ParseMapfile(f)
	if err != nil {
		if me, ok := errors.AsType[*MapfileError](err); ok {
			me.Name = path
			return nil, me
		}
		return nil, fmt.Errorf("reading mapfile %s: %w", path, err)
	}
	return m, nil
}

// ParseMapfile parses a ddrescue mapfile: `#` comment lines anywhere, the
// current-position line, then `pos size status` block lines. Numbers are
// hexadecimal with a 0x prefix or decimal; CRLF line ends and blank lines are
// accepted. Blocks must be in order and must not overlap (gaps are allowed
// and count as not rescued). Any other line is a *MapfileError naming it.
func ParseMapfile(r io.Reader) (*Mapfile, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	m := &Mapfile{}
	var fields [4][]byte
	var end int64
	line := 0
	seenData := false
	for sc.Scan() {
		line++
		text := sc.Bytes()
		n := splitFields(text, &fields)
		if n == 0 || fields[0][0] == '#' {
			continue
		}
		bad := func(reason string) error {
			t := string(bytes.TrimRight(text, "\r"))
			if len(t) > 80 {
				t = t[:80]
			}
			return &MapfileError{Line: line, Text: t, Reason: reason}
		}
		if !seenData {
			seenData = true
			// The current-position line has a status character where a
			// block line has its size. A single character there that is no
			// digit is a status, if not a valid one: say so, rather than
			// call it a block size that is not a number.
			if n >= 2 && n <= 3 && len(fields[1]) == 1 && !isDigit(fields[1][0]) && !isCurrentStatus(fields[1][0]) {
				return nil, bad(fmt.Sprintf("current-position line: status %q (field 2) is not one of ? * / - F G +", short(fields[1])))
			}
			if n >= 2 && len(fields[1]) == 1 && isCurrentStatus(fields[1][0]) {
				if n > 3 {
					return nil, bad("current-position line has more than 3 fields")
				}
				pos, ok := parseNum(fields[0])
				if !ok {
					return nil, bad(fmt.Sprintf("current-position line: position %q (field 1) is not a number", short(fields[0])))
				}
				m.CurrentPos, m.CurrentStatus, m.HasCurrent = pos, fields[1][0], true
				if n == 3 {
					pass, ok := parseNum(fields[2])
					if !ok || pass > 1<<30 {
						return nil, bad(fmt.Sprintf("current-position line: pass %q (field 3) is not a number", short(fields[2])))
					}
					m.CurrentPass = int(pass)
				}
				continue
			}
		}
		if n != 3 {
			return nil, bad("want `pos size status`")
		}
		pos, ok := parseNum(fields[0])
		if !ok {
			return nil, bad(fmt.Sprintf("block position %q (field 1) is not a number", short(fields[0])))
		}
		size, ok := parseNum(fields[1])
		if !ok {
			return nil, bad(fmt.Sprintf("block size %q (field 2) is not a number", short(fields[1])))
		}
		if len(fields[2]) != 1 || !isBlockStatus(fields[2][0]) {
			return nil, bad(fmt.Sprintf("block status %q (field 3) is not one of + - * / ?", short(fields[2])))
		}
		if size > (1<<63-1)-pos {
			return nil, bad("block end overflows")
		}
		if pos < end {
			return nil, bad("block overlaps or precedes the previous block")
		}
		m.Blocks = append(m.Blocks, Block{Pos: pos, Size: size, Status: fields[2][0]})
		end = pos + size
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &MapfileError{Line: line + 1, Reason: "line longer than 1 MiB"}
		}
		return nil, err
	}
	return m, nil
}

// splitFields splits a line on spaces and tabs (and a trailing CR) into at
// most 4 fields without allocating; it returns the field count, 4 meaning
// "4 or more".
func splitFields(b []byte, out *[4][]byte) int {
	n := 0
	i := 0
	for i < len(b) {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r') {
			i++
		}
		if i == len(b) {
			break
		}
		j := i
		for j < len(b) && b[j] != ' ' && b[j] != '\t' && b[j] != '\r' {
			j++
		}
		if n == 4 {
			return 4
		}
		out[n] = b[i:j]
		n++
		i = j
	}
	return n
}

// parseNum reads a non-negative hexadecimal (0x…) or decimal int64.
func parseNum(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v uint64
	if len(b) > 2 && b[0] == '0' && (b[1] == 'x' || b[1] == 'X') {
		b = b[2:]
		if len(b) > 16 {
			return 0, false
		}
		for _, c := range b {
			var d byte
			switch {
			case '0' <= c && c <= '9':
				d = c - '0'
			case 'a' <= c && c <= 'f':
				d = c - 'a' + 10
			case 'A' <= c && c <= 'F':
				d = c - 'A' + 10
			default:
				return 0, false
			}
			v = v<<4 | uint64(d)
		}
	} else {
		if len(b) > 19 {
			return 0, false
		}
		for _, c := range b {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + uint64(c-'0')
		}
	}
	if v > 1<<63-1 {
		return 0, false
	}
	return int64(v), true
}

// short is a field as quoted in an error: at most 40 bytes of it.
func short(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isBlockStatus(c byte) bool {
	switch c {
	case StatusNonTried, StatusNonTrimmed, StatusNonScraped, StatusBadSector, StatusFinished:
		return true
	}
	return false
}

// isCurrentStatus: the phases ddrescue records in the current-position line
// (copying, trimming, scraping, retrying, filling, generating, finished).
func isCurrentStatus(c byte) bool {
	switch c {
	case '?', '*', '/', '-', 'F', 'G', '+':
		return true
	}
	return false
}

// Size is the extent the map covers: the end of its last block.
func (m *Mapfile) Size() int64 {
	if len(m.Blocks) == 0 {
		return 0
	}
	return m.Blocks[len(m.Blocks)-1].End()
}

// Rescued is the number of bytes with status '+'.
func (m *Mapfile) Rescued() int64 {
	var n int64
	for _, b := range m.Blocks {
		if b.Status == StatusFinished {
			n += b.Size
		}
	}
	return n
}

// RescuedPct is Rescued as a percentage of Size (0 for an empty map).
func (m *Mapfile) RescuedPct() float64 {
	size := m.Size()
	if size == 0 {
		return 0
	}
	return float64(m.Rescued()) * 100 / float64(size)
}

// BadRanges are the maximal runs of bytes that were not rescued (any status
// but '+', and gaps between blocks), in order.
func (m *Mapfile) BadRanges() []Range {
	var out []Range
	var pos int64
	add := func(p, end int64) {
		if end <= p {
			return
		}
		if n := len(out); n > 0 && out[n-1].End() == p {
			out[n-1].Size += end - p
			return
		}
		out = append(out, Range{Pos: p, Size: end - p})
	}
	for _, b := range m.Blocks {
		add(pos, b.Pos) // gap: nothing is known of these bytes
		if b.Status != StatusFinished {
			add(b.Pos, b.End())
		}
		pos = b.End()
	}
	return out
}

// Health of a medium, from its mapfile; stored in medium.health.
type Health string

// The health values. HealthUnknown (no usable mapfile) is NULL in the
// database and is never reported as failed.
const (
	HealthOK         Health = "ok"
	HealthIncomplete Health = "incomplete"
	HealthCorrupt    Health = "corrupt"
	HealthFailed     Health = "failed"
	HealthUnknown    Health = "unknown"
)

// Degraded reports whether the retry policy should use its degraded
// thresholds: a medium whose health is unknown, corrupt or failed.
func (h Health) Degraded() bool {
	return h != HealthOK && h != HealthIncomplete
}

// DBValue is the value for medium.health: NULL for HealthUnknown.
func (h Health) DBValue() any {
	switch h {
	case HealthOK, HealthIncomplete, HealthCorrupt, HealthFailed:
		return string(h)
	}
	return nil
}

// Health grades the rescue: every byte rescued is ok, at least 90% is
// incomplete (so 99.99% is incomplete, not ok and never failed), at least
// 20% corrupt, less failed. A map with no blocks says nothing: unknown. The
// comparison is exact integer arithmetic, so a map one byte short of a
// threshold falls below it.
func (m *Mapfile) Health() Health {
	size := m.Size()
	if size <= 0 {
		return HealthUnknown
	}
	rescued := m.Rescued()
	switch {
	case rescued == size:
		return HealthOK
	case atLeastPct(rescued, size, 90):
		return HealthIncomplete
	case atLeastPct(rescued, size, 20):
		return HealthCorrupt
	}
	return HealthFailed
}

// atLeastPct reports part*100 >= whole*pct without overflow.
func atLeastPct(part, whole int64, pct uint64) bool {
	hiA, loA := bits.Mul64(uint64(part), 100)
	hiB, loB := bits.Mul64(uint64(whole), pct)
	return hiA > hiB || hiA == hiB && loA >= loB
}

// HealthReport is the summary of a mapfile that pre-flight shows and
// records; JSON field names are those of `ntt-diagnose health`.
type HealthReport struct {
	Mapfile      string  `json:"mapfile"`
	Present      bool    `json:"present"`
	Health       Health  `json:"health"`
	RescuedPct   float64 `json:"rescued_pct"`
	RescuedBytes int64   `json:"rescued_bytes"`
	TotalBytes   int64   `json:"total_bytes"`
	BadRanges    int     `json:"bad_ranges"`
	BadBytes     int64   `json:"bad_bytes"`
	CurrentPass  int     `json:"current_pass,omitempty"`
	// Finished is true when ddrescue's current status is '+'.
	Finished bool `json:"finished"`
}

// Report summarises m; name is the mapfile's path.
func (m *Mapfile) Report(name string) HealthReport {
	r := HealthReport{
		Mapfile:      name,
		Present:      true,
		Health:       m.Health(),
		RescuedPct:   m.RescuedPct(),
		RescuedBytes: m.Rescued(),
		TotalBytes:   m.Size(),
		CurrentPass:  m.CurrentPass,
		Finished:     m.HasCurrent && m.CurrentStatus == '+',
	}
	for _, b := range m.BadRanges() {
		r.BadRanges++
		r.BadBytes += b.Size
	}
	return r
}

// HealthOf reads the mapfile at path and grades it. No mapfile is not an
// error: the report says Present=false and HealthUnknown. A malformed
// mapfile is an error (a *MapfileError naming the line).
func HealthOf(path string) (HealthReport, *Mapfile, error) {
	m, err := ReadMapfile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return HealthReport{Mapfile: path, Health: HealthUnknown}, nil, nil
	}
	if err != nil {
		return HealthReport{Mapfile: path, Health: HealthUnknown}, nil, err
	}
	return m.Report(path), m, nil
}
