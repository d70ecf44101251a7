package enumerate

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// Matcher decides which paths an ignore file leaves out. The walk and the
// loader use the same Matcher so that both leave out the same paths.
//
// An ignore file holds one regular expression (Go RE2 syntax) per line.
// Lines whose first non-blank character is '#' are comments; blank lines are
// skipped; leading and trailing blanks (and a CR before the newline) are
// trimmed. A path is left out when any pattern matches anywhere in it
// (unanchored: use ^ and $ to anchor). Paths are matched as raw bytes; an
// invalid UTF-8 byte matches only patterns that accept any character there.
//
// Walk matches the path exactly as it appears in the record (the walked
// path, e.g. "/mnt/ntt/<hash>/p1/etc/x"); to leave out the same records, a
// reader of the raw file matches the record's Path, not a path made
// relative to the medium root.
//
// A nil *Matcher matches nothing. A Matcher is safe for concurrent use.
type Matcher struct {
	re       *regexp.Regexp
	patterns []string
}

// PatternError reports a line of an ignore file that is not a valid regular
// expression.
type PatternError struct {
	Line    int    // 1-based line number
	Pattern string // the line, trimmed
	Err     error
}

func (e *PatternError) Error() string {
	return fmt.Sprintf("ignore pattern on line %d (%q): %v", e.Line, e.Pattern, e.Err)
}

func (e *PatternError) Unwrap() error { return e.Err }

// LoadIgnore reads an ignore file. It returns a nil Matcher, with no error,
// when the file holds no pattern.
func LoadIgnore(r io.Reader) (*Matcher, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var pats []string
	for line := 1; sc.Scan(); line++ {
		p := strings.TrimSpace(sc.Text())
		if p == "" || p[0] == '#' {
			continue
		}
		if _, err := regexp.Compile(p); err != nil {
			return nil, &PatternError{Line: line, Pattern: p, Err: err}
		}
		pats = append(pats, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading ignore patterns: %w", err)
	}
	return NewMatcher(pats)
}

// LoadIgnoreFile reads the ignore file at path; errors name the file.
func LoadIgnoreFile(path string) (*Matcher, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ignore file: %w", err)
	}
	defer f.Close()
	m, err := LoadIgnore(f)
	if err != nil {
		return nil, fmt.Errorf("ignore file %s: %w", path, err)
	}
	return m, nil
}

// NewMatcher compiles patterns into one Matcher (nil when there are none).
func NewMatcher(patterns []string) (*Matcher, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	var b strings.Builder
	for i, p := range patterns {
		if _, err := regexp.Compile(p); err != nil {
			return nil, &PatternError{Line: i + 1, Pattern: p, Err: err}
		}
		if i > 0 {
			b.WriteByte('|')
		}
		// One alternation is one pass over the path instead of one per
		// pattern; the group keeps each pattern's own alternations inside.
		b.WriteString("(?:")
		b.WriteString(p)
		b.WriteString(")")
	}
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("combining ignore patterns: %w", err)
	}
	return &Matcher{re: re, patterns: append([]string(nil), patterns...)}, nil
}

// Match reports whether path is left out.
func (m *Matcher) Match(path []byte) bool {
	if m == nil {
		return false
	}
	return m.re.Match(path)
}

// Patterns returns the patterns in file order.
func (m *Matcher) Patterns() []string {
	if m == nil {
		return nil
	}
	return append([]string(nil), m.patterns...)
}
