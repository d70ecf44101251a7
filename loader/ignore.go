package loader

import (
	"bytes"
	"regexp/syntax"
	"unicode/utf8"

	"github.com/HRDAG/ntt/enumerate"
)

// ignoreFilter answers Matcher.Match faster for the common case of a path
// that matches nothing: every pattern is reduced to literals of which a
// match must contain one (".DS_Store" for `/\.DS_Store$`), and only paths
// holding one of them are handed to the regular expression. Patterns
// without such literals (`.*`, `(?i)…`, classes) turn the filter off.
type ignoreFilter struct {
	m        *enumerate.Matcher
	literals [][]byte // nil: no prefilter, always ask m
}

const maxFilterLiterals = 16

func newIgnoreFilter(m *enumerate.Matcher) *ignoreFilter {
	f := &ignoreFilter{m: m}
	var lits [][]byte
	for _, p := range m.Patterns() {
		re, err := syntax.Parse(p, syntax.Perl)
		if err != nil {
			return f
		}
		set := requiredLiterals(re.Simplify())
		if set == nil {
			return f
		}
		for _, l := range set {
			// A part of a required literal is required too; '/' is in
			// every path, so a literal starting with it is slow to find.
			if t := bytes.TrimLeft(l, "/"); len(t) > 0 {
				l = t
			}
			lits = append(lits, l)
		}
	}
	if len(lits) > maxFilterLiterals {
		return f
	}
	f.literals = lits
	return f
}

// Match reports whether path is left out, exactly as the Matcher does.
func (f *ignoreFilter) Match(path []byte) bool {
	if f.m == nil {
		return false
	}
	if f.literals != nil {
		hit := false
		for _, l := range f.literals {
			if bytes.Contains(path, l) {
				hit = true
				break
			}
		}
		if !hit {
			return false
		}
	}
	return f.m.Match(path)
}

// requiredLiterals returns literals one of which every match of re
// contains, or nil when it cannot tell.
func requiredLiterals(re *syntax.Regexp) [][]byte {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 || len(re.Rune) == 0 {
			return nil
		}
		var b []byte
		for _, r := range re.Rune {
			// U+FFFD also matches any invalid byte, which its encoding
			// would not find.
			if r == utf8.RuneError {
				return nil
			}
			b = utf8.AppendRune(b, r)
		}
		return [][]byte{b}
	case syntax.OpCapture, syntax.OpPlus:
		return requiredLiterals(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return requiredLiterals(re.Sub[0])
		}
	case syntax.OpConcat:
		// Any one part's literals will do; take the part whose shortest
		// literal is longest (the most selective).
		var best [][]byte
		score := 0
		for _, sub := range re.Sub {
			set := requiredLiterals(sub)
			if set == nil {
				continue
			}
			s := len(set[0])
			for _, l := range set {
				s = min(s, len(l))
			}
			if best == nil || s > score {
				best, score = set, s
			}
		}
		return best
	case syntax.OpAlternate:
		var all [][]byte
		for _, sub := range re.Sub {
			set := requiredLiterals(sub)
			if set == nil {
				return nil
			}
			all = append(all, set...)
		}
		return all
	}
	return nil
}
