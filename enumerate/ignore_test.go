package enumerate

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoadIgnore(t *testing.T) {
	m, err := LoadIgnore(strings.NewReader("# comment\n\n   \n  \\.DS_Store$\r\n/\\.Trash-[0-9]+(/|$)\n  # indented comment\n^/mnt/x/skip$\n"))
	require.NoError(t, err)
	require.Equal(t, []string{`\.DS_Store$`, `/\.Trash-[0-9]+(/|$)`, `^/mnt/x/skip$`}, m.Patterns())
	for path, want := range map[string]bool{
		"/mnt/x/a/.DS_Store":         true,
		"/mnt/x/a/.DS_Store/inner":   false,
		"/mnt/x/.Trash-1000":         true,
		"/mnt/x/.Trash-1000/files/f": true,
		"/mnt/x/.Trash-me":           false,
		"/mnt/x/skip":                true,
		"/mnt/x/skip/not":            false,
		"/mnt/x/\xff\xfe/.DS_Store":  true,
		"/mnt/x/# comment":           false,
		"/mnt/x/plain\x1cname\nfile": false,
	} {
		require.Equal(t, want, m.Match([]byte(path)), path)
	}
}

func TestLoadIgnoreEmpty(t *testing.T) {
	m, err := LoadIgnore(strings.NewReader("# only comments\n\n"))
	require.NoError(t, err)
	require.Nil(t, m)
	require.False(t, m.Match([]byte("/anything")))
}

func TestLoadIgnoreBadPattern(t *testing.T) {
	_, err := LoadIgnore(strings.NewReader("ok\n# c\n(unclosed\n"))
	var pe *PatternError
	require.ErrorAs(t, err, &pe)
	require.Equal(t, 3, pe.Line)
	require.Equal(t, "(unclosed", pe.Pattern)
}

func TestMatcherPatternsStayApart(t *testing.T) {
	// An alternation inside one pattern must not leak into the others.
	m, err := NewMatcher([]string{"^a|b$", "^c"})
	require.NoError(t, err)
	require.True(t, m.Match([]byte("ax")))
	require.True(t, m.Match([]byte("xb")))
	require.True(t, m.Match([]byte("cx")))
	require.False(t, m.Match([]byte("xcx")))
}
